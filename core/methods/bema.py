"""BEMA with a Tracy–Widom margin (Ke, Ma & Lin 2023), SPEC §3."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from ..mp import MarchenkoPastur, tracy_widom_quantile
from ..spectrum import MatrixShape, eigenvalues
from .base import MIN_P, NotApplicable, Threshold, count_above


@lru_cache(maxsize=256)
def _matched_quantiles(c: float, p: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The bulk levels k and the unit MP quantiles q_k they are matched to (cached: a model
    repeats a few shapes many times)."""
    k = np.arange(max(1, math.floor(alpha * p)), math.floor((1.0 - alpha) * p) + 1)
    q = MarchenkoPastur(c).ppf((k - 0.5) / p)
    k.setflags(write=False)
    q.setflags(write=False)
    return k, q


@dataclass(frozen=True)
class Bema:
    alpha: float = 0.2  # fraction trimmed from each end of the bulk
    beta: float = 0.1  # tail probability of the Tracy–Widom edge margin

    name: ClassVar[str] = "bema"
    label: ClassVar[str] = "BEMA"
    short: ClassVar[str] = "BEMA"

    def __post_init__(self):
        if not 0.0 <= self.alpha < 0.5:
            raise ValueError(f"BEMA alpha must be in [0, 0.5), got {self.alpha}")
        if not 0.001 <= self.beta <= 0.5:
            raise ValueError(f"BEMA beta (the edge's tail probability) must be in [0.001, 0.5], got {self.beta}")

    def too_small(self, shape: MatrixShape) -> str | None:
        return f"p = {shape.p} < {MIN_P}: too few singular values to match a bulk" if shape.p < MIN_P else None

    def fit(self, sv: np.ndarray, shape: MatrixShape) -> Threshold:
        p, N, c = shape.p, shape.N, shape.c
        if (why := self.too_small(shape)) is not None:
            raise NotApplicable(why)
        lam = eigenvalues(sv, shape)
        k, q = _matched_quantiles(c, p, self.alpha)
        sigma2 = float(np.dot(q, lam[k - 1]) / np.dot(q, q))
        if not sigma2 > 0.0:
            raise NotApplicable("the matched bulk is zero: the matrix has too low a rank")
        t = tracy_widom_quantile(1.0 - self.beta)
        sc = math.sqrt(c)
        lam_plus = sigma2 * ((1.0 + sc) ** 2 + t * N ** (-2.0 / 3.0) * c ** (-1.0 / 6.0) * (1.0 + sc) ** (4.0 / 3.0))
        tau = math.sqrt(N * lam_plus)
        return Threshold(sigma2, tau, count_above(sv, tau),
                         {"lambda_plus": lam_plus, "bulk_levels": int(k.size), "tw_quantile": t})
