"""Marchenko–Pastur fit to a Gaussian-broadened spectral density (Staats, Thamm & Rosenow 2023), SPEC §4."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from core.rmt.methods.base import MIN_P, NotApplicable, Param, Threshold, ThresholdMethod, count_above
from core.rmt.mp import MarchenkoPastur
from core.rmt.spectrum import MatrixShape

GRID_POINTS = 256
MAX_PASSES = 6


def broadened_density(levels: np.ndarray, a: int, grid: np.ndarray) -> np.ndarray:
    """ρ̂(x) = mean_i N(x; ν_i, w_i²) with w_i = ½ (ν_(i+a) − ν_(i−a)), indices clipped."""
    p = levels.size
    idx = np.arange(p)
    w = 0.5 * (levels[np.minimum(idx + a, p - 1)] - levels[np.maximum(idx - a, 0)])
    # Guard against zero widths (repeated values): never narrower than a tiny fraction of the span.
    floor = max(1e-3 * float(np.median(w)), 1e-9 * max(float(levels[-1]), 1e-300))
    inv_w = 1.0 / np.maximum(w, floor)
    # The grid × levels kernel matrix is the fit's main cost: build it in place in float32 (ample
    # for a least-squares target; z is dimensionless, so the scale of W does not matter), sum in float64.
    z = ((grid[:, None] - levels[None, :]) * inv_w[None, :]).astype(np.float32)
    z *= z
    z *= np.float32(-0.5)
    np.exp(z, out=z)
    return z.dot(inv_w.astype(np.float32)).astype(np.float64) / (p * math.sqrt(2.0 * math.pi))


@lru_cache(maxsize=256)
def _unit_median(c: float) -> float:
    """Median of ν = s/√N for σ = 1 (a Newton solve; models repeat a few shapes)."""
    return float(MarchenkoPastur(c).singular_values(1.0).ppf(0.5))


def fit_sigma(levels: np.ndarray, c: float, a: int) -> float:
    """Least-squares σ of the MP ν-density against the broadened density of ``levels``."""
    from scipy.optimize import minimize_scalar  # here, not at import: see core/spectrum.py

    grid = np.linspace(levels[0], levels[-1], GRID_POINTS)
    target = broadened_density(levels, a, grid)
    # ρ_σ(x) = √((σ²ν₊² − x²)(x² − σ²ν₋²)) / (π σ² c x), ν± = 1 ± √c (SPEC §4). The product under
    # the root is negative exactly outside the support, so clipping it at 0 is the support test.
    # Written out on the fixed grid (not through MarchenkoPastur.pdf) because this loss is the
    # fit's inner loop: a third less time per fit, the same σ to 1e-9.
    x2 = grid * grid
    inv_x = np.divide(1.0 / (math.pi * c), grid, out=np.zeros_like(grid), where=grid > 0)
    hi2, lo2 = (1.0 + math.sqrt(c)) ** 2, (1.0 - math.sqrt(c)) ** 2

    def residual(s2):  # s2: σ² as a float or a column of them
        return np.sqrt(np.maximum((s2 * hi2 - x2) * (x2 - s2 * lo2), 0.0)) * inv_x / s2 - target

    # Start from the median (robust to outliers), scan ln σ coarsely, then refine in the best cell.
    scan = math.log(float(np.median(levels)) / _unit_median(c)) + np.log(np.geomspace(0.4, 2.5, 61))
    scan_losses = np.sum(residual(np.exp(2.0 * scan)[:, None]) ** 2, axis=1)
    i = int(np.argmin(scan_losses))
    res = minimize_scalar(lambda v: float(np.dot(r := residual(math.exp(2.0 * v)), r)),
                          bounds=(scan[max(i - 1, 0)], scan[min(i + 1, scan.size - 1)]),
                          method="bounded", options={"xatol": 1e-7})
    return math.exp(res.x if res.fun <= scan_losses[i] else scan[i])


@dataclass(frozen=True)
class Broadening(ThresholdMethod):
    a: int = 4  # neighbours on each side that set a level's kernel width
    delta: float = 0.02  # relative margin above the fitted edge before a level counts as an outlier

    name: ClassVar[str] = "broadening"
    label: ClassVar[str] = "Gaussian broadening"
    short: ClassVar[str] = "GB"
    params: ClassVar[tuple[Param, ...]] = (
        Param("a", "--width", int, "broadening neighbour count a", "width a", 1),
        Param("delta", "--delta", float, "broadening outlier margin δ", "delta", 0.0, 1.0, open_high=True),
    )

    def min_p(self) -> int:
        return max(MIN_P, 2 * self.a + 2)

    def _fit(self, sv: np.ndarray, shape: MatrixShape) -> Threshold:
        p, N, c = shape.p, shape.N, shape.c
        nu = np.sort(np.asarray(sv, dtype=np.float64)) / math.sqrt(N)
        keep = np.ones(p, dtype=bool)
        passes = 0
        while True:
            passes += 1
            levels = nu[keep]
            if levels.size < 2 * self.a + 2 or levels[-1] <= levels[0]:
                raise NotApplicable("too few distinct levels remain after removing outliers")
            sigma = fit_sigma(levels, c, self.a)
            new_keep = nu <= sigma * (1.0 + math.sqrt(c)) * (1.0 + self.delta)
            if np.array_equal(new_keep, keep) or passes >= MAX_PASSES:
                break
            keep = new_keep
        tau = sigma * (math.sqrt(N) + math.sqrt(p))
        return Threshold(sigma * sigma, tau, count_above(sv, tau),
                         {"passes": passes, "excluded": int(p - keep.sum())})
