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
