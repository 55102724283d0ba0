import os

import pytest

# Keep every test's cache away from the user's ~/.cache.
os.environ.setdefault("RMT_TUI_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache-unused"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RMT_TUI_CACHE_DIR", str(tmp_path / "cache"))
