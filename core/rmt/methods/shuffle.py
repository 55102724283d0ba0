"""The elementwise-shuffle null (SPEC §12): W′ is W with its entries permuted uniformly at random
(seeded), which keeps their distribution — heavy tails included — and destroys all structure; τ is
the median over n shuffles of s₁(W′). The top value comes from ARPACK's Lanczos iteration (a few
dozen matrix–vector products), never a full SVD. No noise variance is implied."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from core.rmt.methods.base import NotApplicable, Param, Threshold, ThresholdMethod, count_above
from core.rmt.spectrum import MatrixShape

LANCZOS_TOL = 1e-7  # relative accuracy of s₁ (ARPACK's own default, 0, asks for machine precision)


def top_singular_value(a: np.ndarray) -> float:
    """s₁ of a dense matrix by ARPACK (one value, no vectors)."""
    from scipy.sparse.linalg import svds  # here, not at import: see core/rmt/spectrum.py

    if min(a.shape) < 2:
        return float(np.abs(a).max()) if a.size else 0.0
    v0 = np.ones(min(a.shape), dtype=a.dtype)  # a fixed start: the same matrix gives the same s₁
    return float(svds(a, k=1, tol=LANCZOS_TOL, return_singular_vectors=False, solver="arpack", v0=v0)[0])


def shuffled_tops(w: np.ndarray, n: int, seed: int) -> list[float]:
    """s₁ of ``n`` seeded elementwise shuffles of ``w``."""
    rng = np.random.default_rng(seed)
    flat = np.ascontiguousarray(w).ravel()
    return [top_singular_value(rng.permutation(flat).reshape(w.shape)) for _ in range(n)]


@dataclass(frozen=True)
class Shuffle(ThresholdMethod):
    shuffles: int = 3  # how many shuffles the median is over
    seed: int = 0  # of the permutations (the same matrix and seed give the same τ)

    name: ClassVar[str] = "shuffle"
    label: ClassVar[str] = "shuffle null"
    short: ClassVar[str] = "SH"
    mark: ClassVar[str] = "P"
    uses_matrix: ClassVar[bool] = True
    implies_sigma2: ClassVar[bool] = False
    needs: ClassVar[str] = "compare with a null"
    params: ClassVar[tuple[Param, ...]] = (
        Param("shuffles", "--shuffles", int, "shuffle null: number of seeded shuffles N", "N", 1, 1000),
        Param("seed", "--shuffle-seed", int, "shuffle null: seed of the permutations", "seed", 0),
    )

    def _fit(self, sv: np.ndarray, shape: MatrixShape, matrix: np.ndarray) -> Threshold:
        w = np.asarray(matrix)
        if w.dtype not in (np.float32, np.float64):
            w = w.astype(np.float32)
        tops = shuffled_tops(w, self.shuffles, self.seed)
        tau = float(np.median(tops))
        if not tau > 0:
            raise NotApplicable("every shuffle has s₁ = 0: the matrix is zero")
        return Threshold(None, tau, count_above(sv, tau), {"s1": tops})
