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
