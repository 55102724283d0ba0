"""BEMA with a Tracy–Widom margin (Ke, Ma & Lin 2023), SPEC §3."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from core.rmt.methods.base import NotApplicable, Param, Threshold, ThresholdMethod, count_above
from core.rmt.mp import MarchenkoPastur, tracy_widom_quantile
from core.rmt.spectrum import MatrixShape, eigenvalues


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
class Bema(ThresholdMethod):
    alpha: float = 0.2  # fraction trimmed from each end of the bulk
    beta: float = 0.1  # tail probability of the Tracy–Widom edge margin

    name: ClassVar[str] = "bema"
    label: ClassVar[str] = "BEMA"
    short: ClassVar[str] = "BEMA"
    needs: ClassVar[str] = "match a bulk"
    params: ClassVar[tuple[Param, ...]] = (
        Param("alpha", "--alpha", float, "BEMA bulk trimming α", "alpha", 0.0, 0.5, open_high=True),
        Param("beta", "--beta", float, "BEMA Tracy–Widom tail probability β", "beta", 0.001, 0.5),
    )

    def _fit(self, sv: np.ndarray, shape: MatrixShape) -> Threshold:
        p, N, c = shape.p, shape.N, shape.c
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
