"""Gavish & Donoho's optimal hard threshold for unknown noise (IEEE TIT 60, 2014), SPEC §12:
τ = ω(β)·median(s) with the exact ω(β) = λ*(β)/√μ_β (μ_β the median of the unit MP law in
eigenvalue units, from its quantile function — not the paper's cubic fit). The implied noise
level σ̂ = median(s)/√(N μ_β) is reported as σ̂². The rule trusts that everything but a few spikes
is MP: in wider bulks its cut falls inside the noise (see the README's Methods)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from core.rmt.methods.base import NotApplicable, Param, Threshold, ThresholdMethod, count_above
from core.rmt.mp import MarchenkoPastur
from core.rmt.spectrum import MatrixShape


def lambda_star(beta: float) -> float:
    """The known-σ optimal threshold coefficient λ*(β) (τ = λ*(β)·σ·√N, N the larger side)."""
    return math.sqrt(2.0 * (beta + 1.0) + 8.0 * beta / (beta + 1.0 + math.sqrt(beta * beta + 14.0 * beta + 1.0)))


@lru_cache(maxsize=256)
def mp_median(beta: float) -> float:
    """μ_β: the median of the unit-variance MP law with ratio β, in eigenvalue units."""
    return float(MarchenkoPastur(beta).ppf(0.5))


def omega(beta: float) -> float:
    """ω(β) = λ*(β)/√μ_β, exact."""
    return lambda_star(beta) / math.sqrt(mp_median(beta))


@dataclass(frozen=True)
class GavishDonoho(ThresholdMethod):
    name: ClassVar[str] = "gavish-donoho"
    label: ClassVar[str] = "Gavish–Donoho"
    short: ClassVar[str] = "GD"
    mark: ClassVar[str] = "D"
    needs: ClassVar[str] = "take a median"
    params: ClassVar[tuple[Param, ...]] = ()

    def _fit(self, sv: np.ndarray, shape: MatrixShape) -> Threshold:
        med = float(np.median(sv))
        if not med > 0:
            raise NotApplicable("the median singular value is zero: the matrix has too low a rank")
        beta = shape.c
        tau = omega(beta) * med
        sigma2 = med * med / (shape.N * mp_median(beta))
        return Threshold(sigma2, tau, count_above(sv, tau), {"omega": omega(beta), "median": med})
