"""Signal strengths and estimated singular-vector cosines (Benaych-Georges & Nadakuditi 2012),
and the Avew metric (Nishikawa et al., arXiv:2512.12911), SPEC §5–§6. Values only."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.rmt.spectrum import MatrixShape


def theta_hat(sv: np.ndarray, sigma2: float, shape: MatrixShape) -> np.ndarray:
    """Signal strength θ̂ of each observed value; 0 inside the bulk (z ≤ 1 + √c)."""
    c = shape.c
    z2 = (np.asarray(sv, dtype=np.float64) / math.sqrt(sigma2 * shape.N)) ** 2
    b = z2 - 1.0 - c
    outside = z2 > (1.0 + math.sqrt(c)) ** 2
    disc = np.where(outside, b * b - 4.0 * c, 0.0)
    th2 = np.where(outside, (b + np.sqrt(np.maximum(disc, 0.0))) / 2.0, 0.0)
    return np.sqrt(th2)


def squared_cosines(theta: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """(φ²_small, φ²_large): squared cosines on the p-side and the N-side; 0 for θ ≤ c^¼."""
    th2 = np.asarray(theta, dtype=np.float64) ** 2
    sep = th2 > math.sqrt(c)
    t = np.where(sep, th2, 1.0)
    small = 1.0 - c * (1.0 + t) / (t * (t + c))
    large = 1.0 - (c + t) / (t * (t + 1.0))
    return np.where(sep, np.clip(small, 0.0, 1.0), 0.0), np.where(sep, np.clip(large, 0.0, 1.0), 0.0)


@dataclass(frozen=True)
class Cosines:
    """Estimated |cos| between the observed and the signal singular vectors, per component."""

    left: np.ndarray
    right: np.ndarray

    @property
    def product(self) -> np.ndarray:
        return self.left * self.right


def estimated_cosines(sv: np.ndarray, sigma2: float, shape: MatrixShape) -> Cosines:
    small2, large2 = squared_cosines(theta_hat(sv, sigma2, shape), shape.c)
    small, large = np.sqrt(small2), np.sqrt(large2)
    # Left vectors live in R^m: on the small side exactly when m ≤ n.
    return Cosines(left=small, right=large) if shape.left_is_small else Cosines(left=large, right=small)


def empirical_cosines(sv: np.ndarray, rank: int, shape: MatrixShape) -> Cosines:
    """Cosines from the empirical D-transform of the bulk below the cut (Benaych-Georges &
    Nadakuditi 2012; OptShrink), SPEC §12: with the bulk b = s_{r+1..p} and, for a kept z = s_i,
    φ_small(z) = (1/(p−r)) Σ z/(z² − b²), φ_large(z) = (1/(N−r)) [Σ z/(z² − b²) + (N−p)/z],
    D = φ_small φ_large: θ̂² = 1/D, cos²(small) = −2 φ_small/(θ̂² D′), cos²(large) = −2 φ_large/(θ̂² D′).
    Nothing about the bulk's shape is assumed; components at or below the cut get 0 (the estimate
    diverges at the edge)."""
    s = np.asarray(sv, dtype=np.float64)
    p, N = shape.p, shape.N
    small2, large2 = np.zeros(p), np.zeros(p)
    r = int(rank)
    if 0 < r < p:
        b2 = s[r:] ** 2
        z = s[:r, None]
        z2 = z * z
        d = z2 - b2[None, :]
        ok = (d > 0).all(axis=1)  # a kept value tied with the bulk's top has no estimate
        d = np.where(d > 0, d, np.inf)
        g = (z / d).sum(axis=1)  # Σ z/(z² − b²)
        dg = (-(z2 + b2[None, :]) / (d * d)).sum(axis=1)
        zz = s[:r]
        phi_s, dphi_s = g / (p - r), dg / (p - r)
        phi_l, dphi_l = (g + (N - p) / zz) / (N - r), (dg - (N - p) / zz ** 2) / (N - r)
        D = phi_s * phi_l
        dD = dphi_s * phi_l + phi_s * dphi_l
        with np.errstate(divide="ignore", invalid="ignore"):
            # θ̂² = 1/D, so −2φ/(θ̂² D′) = −2 φ D / D′.
            cs, cl = -2.0 * phi_s * D / dD, -2.0 * phi_l * D / dD
        small2[:r] = np.where(ok & np.isfinite(cs), np.clip(cs, 0.0, 1.0), 0.0)
        large2[:r] = np.where(ok & np.isfinite(cl), np.clip(cl, 0.0, 1.0), 0.0)
    small, large = np.sqrt(small2), np.sqrt(large2)
    return Cosines(left=small, right=large) if shape.left_is_small else Cosines(left=large, right=small)


def _weights(sv: np.ndarray, weighting: str) -> np.ndarray:
    if weighting == "uniform":
        return np.ones_like(sv, dtype=np.float64)
    if weighting == "sv":
        return np.asarray(sv, dtype=np.float64)
    raise ValueError(f"unknown Avew weighting {weighting!r}; use 'uniform' or 'sv'")


def avew_curve(values: np.ndarray, sv: np.ndarray, weighting: str = "uniform") -> np.ndarray:
    """Avew(k) for k = 1 … p: the weighted mean of ``values`` over the top k components."""
    w = _weights(sv, weighting)
    return np.cumsum(w * values) / np.cumsum(w)


@dataclass(frozen=True)
class Avew:
    """Avew at a kept rank: product (the metric), and its left-only and right-only versions."""

    product: float | None
    left: float | None
    right: float | None


def avew_at(cos: Cosines, sv: np.ndarray, k: int, weighting: str = "uniform") -> Avew:
    """Averages over the top k components; all None when k = 0 (Avew is undefined)."""
    if k <= 0:
        return Avew(None, None, None)
    w = _weights(sv[:k], weighting)
    mean = lambda v: float(np.dot(w, v[:k]) / w.sum())  # noqa: E731
    return Avew(mean(cos.product), mean(cos.left), mean(cos.right))
