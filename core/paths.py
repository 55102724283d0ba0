"""Where the project's files live (the bundled demo models, the on-disk cache) and how outputs
are written (atomically)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: renamed onto ``path`` when the block ends
    without an error and removed otherwise, so no reader ever sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
