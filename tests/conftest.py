import os

import numpy as np
import pytest

# Keep every test's cache away from the user's ~/.cache.
os.environ.setdefault("RMT_TUI_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache-unused"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RMT_TUI_CACHE_DIR", str(tmp_path / "cache"))


def planted(m, n, thetas, sigma=1.0, seed=0):
    """W = σ√N Σ θ_k a_k b_kᵀ + E (E i.i.d. N(0, σ²)); returns W, A (m×r), B (n×r)."""
    rng = np.random.default_rng(seed)
    r = len(thetas)
    A = np.linalg.qr(rng.standard_normal((m, r)))[0]
    B = np.linalg.qr(rng.standard_normal((n, r)))[0]
    N = max(m, n)
    W = sigma * np.sqrt(N) * (A * np.asarray(thetas)) @ B.T + sigma * rng.standard_normal((m, n))
    return W, A, B


async def settle(app, pilot, rounds: int = 1):
    """Let the app's workers finish; more rounds when a finished job starts the next one."""
    for _ in range(rounds):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


def rendered(renderable, width: int = 200) -> str:
    """A Rich renderable as plain text, as it would print."""
    import io

    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def panel_text(app) -> str:
    from rmt_tui.widgets import ResultsPanel

    return rendered(app.query_one(ResultsPanel).content)
