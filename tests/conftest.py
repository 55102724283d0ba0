import os

import pytest

# Keep every test's cache away from the user's ~/.cache.
os.environ.setdefault("RMT_TUI_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache-unused"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RMT_TUI_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def cli(capsys):
    """Run the command line in this process: cli("report", PATH, ...) → (exit code, stdout, stderr)."""
    from rmt_tui.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
