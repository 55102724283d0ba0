"""The elementwise-shuffle null (SPEC §12): W′ is W with its entries permuted uniformly at random
(seeded), which keeps their distribution — heavy tails included — and destroys all structure; τ is
the median over n shuffles of s₁(W′). The top value comes from the Lanczos iteration (a few dozen
matrix–vector products), never a full SVD. No noise variance is implied."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from core.rmt.methods.base import NotApplicable, Param, Threshold, ThresholdMethod, count_above
from core.rmt.spectrum import MatrixShape

LANCZOS_TOL = 1e-6  # relative change of the top Ritz value at which the iteration stops
LANCZOS_STEPS = 80  # at most (a random matrix's top values are close together: it converges slowly)


def top_singular_value(a: np.ndarray, tol: float = LANCZOS_TOL, steps: int = LANCZOS_STEPS) -> float:
    """s₁ of a dense matrix by the Lanczos iteration on the smaller Gram operator x ↦ A(Aᵀx), with
    full reorthogonalisation (a few dozen matrix–vector products; no SVD). The top Ritz value of
    the tridiagonal matrix converges to s₁² from below."""
    if min(a.shape) < 2:
        return float(np.abs(a).max()) if a.size else 0.0
    g = a if a.shape[0] <= a.shape[1] else a.T  # x ↦ G(Gᵀx) on the p-dimensional side
    p = g.shape[0]
    q = np.full(p, 1.0 / np.sqrt(p), dtype=np.float64)  # a fixed start: the same matrix gives the same s₁
    basis, alpha, beta = [q], [], []
    top = prev = 0.0
    for k in range(min(steps, p)):
        v = (g @ (g.T @ basis[-1].astype(g.dtype))).astype(np.float64)
        alpha.append(float(basis[-1] @ v))
        q_mat = np.asarray(basis)
        v -= q_mat.T @ (q_mat @ v)  # full reorthogonalisation, twice (classical Gram–Schmidt is not enough once)
        v -= q_mat.T @ (q_mat @ v)
        b = float(np.linalg.norm(v))
        if k % 4 == 3 or b == 0.0:
            from scipy.linalg import eigvalsh_tridiagonal

            top = float(eigvalsh_tridiagonal(np.array(alpha), np.array(beta), select="i",
                                             select_range=(k, k))[0])
            if b == 0.0 or abs(top - prev) <= tol * top:
                break
            prev = top
        beta.append(b)
        basis.append(v / b)
    return float(np.sqrt(max(top, 0.0)))


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
