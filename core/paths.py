"""Where the project's files live: the bundled demo models and the on-disk cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = Path(os.environ.get("RMT_TUI_DEMO_DIR", REPO_ROOT / "demo_models"))
DEFAULT_DEMO_MODEL = DEMO_DIR / "mlp_bs16.safetensors"


def cache_dir() -> Path:
    """$RMT_TUI_CACHE_DIR, else $XDG_CACHE_HOME/rmt-tui, else ~/.cache/rmt-tui."""
    if env := os.environ.get("RMT_TUI_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmt-tui"
