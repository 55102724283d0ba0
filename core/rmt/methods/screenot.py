"""ScreeNOT: the adaptive optimal hard threshold of Donoho, Gavish & Romanov (Ann. Stat. 51, 2023),
SPEC §12. Scale-free and noise-model-free: the top k values are replaced by an imputed continuation
of the bulk, and τ is the root of y·D′(y)/D(y) = −4 above it, with D the empirical D-transform of
that pseudo-noise. The rule implies no noise variance, so σ̂² is not reported. Reference: PyPI
``screenot``, ``adaptiveHardThresholding(Y, k, strategy='i')`` (tests compare τ to 1e-6).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from core.rmt.methods.base import NotApplicable, Param, Threshold, ThresholdMethod, count_above
from core.rmt.spectrum import MatrixShape


def default_k(p: int) -> int:
    """⌈p/10⌉, within the imputation's limit 2k + 1 < p (so at most ⌊(p − 2)/2⌋)."""
    return max(1, min(math.ceil(p / 10), (p - 2) // 2))


def pseudo_noise(sv: np.ndarray, k: int) -> np.ndarray:
    """The values ascending with the top k imputed: f_(p+1−ℓ) = f_(p−k) + a_ℓ (f_(p−k) − f_(p−2k)),
    a_ℓ = (1 − ((ℓ−1)/k)^{2/3}) / (2^{2/3} − 1), ℓ = 1…k."""
    f = np.sort(np.asarray(sv, dtype=np.float64))
    p = f.size
    base, diff = f[p - k - 1], f[p - k - 1] - f[p - 2 * k - 1]
    ell = np.arange(1, k + 1)
    f[p - ell] = base + (1.0 - ((ell - 1) / k) ** (2.0 / 3.0)) / (2.0 ** (2.0 / 3.0) - 1.0) * diff
    return f


def _F(y: float, f2: np.ndarray, beta: float) -> float:
    """y·D′(y)/D(y), with Φ(y) = mean y/(y² − f²) and D(y) = Φ(y)(βΦ(y) + (1 − β)/y)."""
    d = y * y - f2
    phi = float(np.mean(y / d))
    dphi = float(np.mean(-(y * y + f2) / (d * d)))
    D = phi * (beta * phi + (1.0 - beta) / y)
    dD = dphi * (beta * phi + (1.0 - beta) / y) + phi * (beta * dphi - (1.0 - beta) / (y * y))
    return y * dD / D


def optimal_threshold(f: np.ndarray, beta: float) -> float:
    """The root of F(y) = −4 on y > max f (F increases there): bracketed by doubling, then bisected
    to the float's resolution."""
    f2 = f * f
    lo = float(f.max())
    hi = lo * 2.0 if lo > 0 else 1.0
    while _F(hi, f2, beta) < -4.0:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if _F(mid, f2, beta) < -4.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class ScreeNOT(ThresholdMethod):
    k: int | None = None  # the rank bound; None: default_k(p)

    name: ClassVar[str] = "screenot"
    label: ClassVar[str] = "ScreeNOT"
    short: ClassVar[str] = "SN"
    mark: ClassVar[str] = "S"
    implies_sigma2: ClassVar[bool] = False
    needs: ClassVar[str] = "impute a bulk"
    params: ClassVar[tuple[Param, ...]] = (
        Param("k", "--screenot-k", int, "ScreeNOT rank bound k (needs 2k + 1 < p; default ⌈p/10⌉)", "k", 1,
              optional=True),
    )

    def min_p(self) -> int:
        return max(super().min_p(), 2 * self.k + 2) if self.k is not None else super().min_p()

    def too_small(self, shape: MatrixShape) -> str | None:
        if self.k is not None and 2 * self.k + 1 >= shape.p:
            return f"k = {self.k} needs 2k + 1 < p = {shape.p}: use a smaller --screenot-k"
        return super().too_small(shape)

    def _fit(self, sv: np.ndarray, shape: MatrixShape) -> Threshold:
        k = self.k if self.k is not None else default_k(shape.p)
        f = pseudo_noise(sv, k)
        if not f.max() > 0:
            raise NotApplicable("the imputed bulk is zero: the matrix has too low a rank")
        tau = optimal_threshold(f, shape.c)
        return Threshold(None, tau, count_above(sv, tau), {"k": k})
