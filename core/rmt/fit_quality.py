"""Does the bulk look like Marchenko–Pastur? The KS distance of SPEC §7."""
from __future__ import annotations

import numpy as np

from core.rmt.mp import MarchenkoPastur
from core.rmt.spectrum import MatrixShape

# A fit is flagged as poor above this distance. Pure noise of a few hundred levels stays
# below ~0.05; the limit leaves room for finite-size effects but not for a bulk of another shape.
KS_LIMIT = 0.10


def ks_distance(sv: np.ndarray, sigma2: float, tau: float, shape: MatrixShape) -> float | None:
    """sup |F_bulk − F_MP| over the values s ≤ τ, with F_MP the fitted law of s; None if no bulk."""
    bulk = np.sort(np.asarray(sv, dtype=np.float64)[np.asarray(sv) <= tau])
    n = bulk.size
    if n == 0:
        return None
    F = MarchenkoPastur(shape.c, sigma2).singular_values(shape.N).cdf(bulk)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - F), np.max(F - (i - 1) / n)))
