"""Row and column variance equalisation (SPEC §12; Sinkhorn scaling, as in Landa & Kluger's Dyson
equaliser and biwhitening): positive x ∈ Rᵐ, y ∈ Rⁿ with diag(x)(W∘W)diag(y) having row sums n and
column sums m, and W̃ = diag(√x) W diag(√y). Noise whose variance is a row × column profile
becomes i.i.d.-like, so the MP law applies to W̃; correlated noise is not fixed by it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOLERANCE = 1e-6  # the largest relative deviation of a row or column sum from its target
MAX_SWEEPS = 500


class EqualiseError(ValueError):
    """Sinkhorn scaling did not apply (an all-zero row or column) or did not converge."""


@dataclass(frozen=True)
class Equalised:
    matrix: np.ndarray  # W̃, float64
    row_scale: np.ndarray  # √x
    col_scale: np.ndarray  # √y
    sweeps: int


def equalise(w, tolerance: float = TOLERANCE, max_sweeps: int = MAX_SWEEPS) -> Equalised:
    """W̃ = diag(√x) W diag(√y) by alternating row and column updates of x and y."""
    a = np.asarray(w, dtype=np.float64)
    m, n = a.shape
    v = a * a
    if not (v.sum(axis=1) > 0).all() or not (v.sum(axis=0) > 0).all():
        raise EqualiseError("an all-zero row or column has no variance to equalise")
    x, y = np.ones(m), np.ones(n)
    for sweep in range(1, max_sweeps + 1):  # noqa: B007 (the count is returned)
        x = n / (v @ y)
        colsum = x @ v  # (W∘W)ᵀ x
        y = m / colsum
        rows = x * (v @ y)  # column sums are exact after the y update; check the rows
        if np.max(np.abs(rows / n - 1.0)) <= tolerance:
            break
    else:
        raise EqualiseError(f"row/column scaling did not converge in {max_sweeps} sweeps")
    rs, cs = np.sqrt(x), np.sqrt(y)
    return Equalised(a * rs[:, None] * cs[None, :], rs, cs, sweep)
