"""The Marchenko–Pastur law, as distribution objects in the manner of ``scipy.stats``.

``MarchenkoPastur(c, sigma2)`` is the law of the eigenvalues λ = s²/N of W Wᵀ/N for a p × N
noise matrix with entry variance σ² and c = p/N ∈ (0, 1]. ``.singular_values(N)`` gives the
law of s = √(N λ) for the same matrix (N = 1 gives ν = s/√N, the scale used by broadening).

The CDF uses the substitution λ = λ₋ + (λ₊ − λ₋)(1 − cos t)/2, which turns the density into a
smooth function of t on [0, π] (the square-root edges cancel against sin t), so Gauss–Legendre
quadrature is accurate to machine precision; the ppf inverts it by Newton's method in t.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# Tracy–Widom (β = 1) quantiles, for the BEMA edge margin: level → t.
TRACY_WIDOM_1 = {0.90: 0.450143, 0.95: 0.979316, 0.99: 2.023449}

# Within one table cell (π/1024 wide) the integrand is a low-degree polynomial to machine precision.
_GL8_X, _GL8_W = np.polynomial.legendre.leggauss(8)


def tracy_widom_quantile(level: float) -> float:
    """Quantile of the Tracy–Widom (β = 1) law: the SPEC's tabulated values at 0.90/0.95/0.99,
    otherwise computed from its Painlevé II representation (agrees with the table to 4e-7)."""
    for known, t in TRACY_WIDOM_1.items():
        if abs(level - known) < 1e-9:
            return t
    if not 0.001 <= level <= 0.999:
        raise ValueError(f"Tracy–Widom quantile level must be in [0.001, 0.999], got {level}")
    return _tw1_quantile(round(float(level), 12))


@lru_cache(maxsize=1)
def _tw1_solution():
    """Hastings–McLeod solution q of q'' = s q + 2 q³ (q ~ Ai at +∞), integrated from s = 10 down to
    −9 together with ∫_s^∞ q², ∫_s^∞ (x − s) q² and ∫_s^∞ q, so that
    F₁(s) = exp(−½ ∫_s^∞ q − ½ ∫_s^∞ (x − s) q²)."""
    from scipy.integrate import solve_ivp
    from scipy.special import airy

    s0 = 10.0
    ai, aip, _, _ = airy(s0)

    def rhs(s, y):
        q, dq, u, _, _ = y
        return [dq, s * q + 2.0 * q ** 3, -q * q, -u, -q]

    return solve_ivp(rhs, (s0, -9.0), [ai, aip, 0.0, 0.0, 0.0], method="DOP853", rtol=1e-12, atol=1e-15,
                     dense_output=True).sol


@lru_cache(maxsize=64)
def _tw1_quantile(level: float) -> float:
    from scipy.optimize import brentq

    sol = _tw1_solution()

    def cdf(s: float) -> float:
        _, _, _, v, w = sol(s)
        return math.exp(-0.5 * w - 0.5 * v)

    return float(brentq(lambda s: cdf(s) - level, -8.5, 9.5, xtol=1e-12))


class MarchenkoPastur:
    """Law of λ = s²/N. ``pdf``, ``cdf`` and ``ppf`` are vectorised over numpy arrays."""

    def __init__(self, c: float, sigma2: float = 1.0):
        if not (0.0 < c <= 1.0):
            raise ValueError(f"aspect ratio c = p/N must be in (0, 1], got {c}")
        if not (sigma2 > 0.0 and math.isfinite(sigma2)):
            raise ValueError(f"noise variance must be positive and finite, got {sigma2}")
        self.c = float(c)
        self.sigma2 = float(sigma2)
        self.lower = self.sigma2 * (1.0 - math.sqrt(c)) ** 2
        self.upper = self.sigma2 * (1.0 + math.sqrt(c)) ** 2

    def __repr__(self) -> str:
        return f"MarchenkoPastur(c={self.c:g}, sigma2={self.sigma2:g})"

    # -- in terms of t ∈ [0, π] ------------------------------------------------
    def _lam(self, t):
        return self.lower + (self.upper - self.lower) * (1.0 - np.cos(t)) / 2.0

    def _dcdf_dt(self, t):
        half = (self.upper - self.lower) / 2.0
        lam = self._lam(t)
        s2 = np.sin(t) ** 2
        if self.lower == 0.0:  # c = 1: sin²t / λ(t) = 2 (1 + cos t) / λ₊, no 0/0 at t = 0
            return half * half * 2.0 * (1.0 + np.cos(t)) / (2.0 * np.pi * self.sigma2 * self.c * self.upper)
        return half * half * s2 / (2.0 * np.pi * self.sigma2 * self.c * lam)

    def _cdf_t(self, t):
        """∫₀ᵗ: the tabulated integral up to the table node below t, plus Gauss–Legendre to t."""
        t = np.asarray(t, dtype=float)
        F, grid = _t_table(self.c)
        j = np.clip(np.searchsorted(grid, t, side="right") - 1, 0, grid.size - 2)
        a = grid[j]
        nodes = a[..., None] + ((t - a)[..., None] / 2.0) * (_GL8_X + 1.0)
        return F[j] + np.sum(self._dcdf_dt(nodes) * _GL8_W, axis=-1) * (t - a) / 2.0

    def _t_of(self, lam):
        u = (np.clip(lam, self.lower, self.upper) - self.lower) / (self.upper - self.lower)
        return np.arccos(np.clip(1.0 - 2.0 * u, -1.0, 1.0))

    # -- scipy.stats-like interface --------------------------------------------
    def pdf(self, x):
        x = np.asarray(x, dtype=float)
        inside = (x > self.lower) & (x < self.upper)
        xs = np.where(inside, x, (self.lower + self.upper) / 2.0)
        val = np.sqrt(np.maximum((self.upper - xs) * (xs - self.lower), 0.0)) / (
            2.0 * np.pi * self.sigma2 * self.c * xs)
        return np.where(inside, val, 0.0)

    def cdf(self, x):
        x = np.asarray(x, dtype=float)
        return np.clip(self._cdf_t(self._t_of(x)), 0.0, 1.0)

    def ppf(self, q):
        q = np.asarray(q, dtype=float)
        if np.any((q < 0) | (q > 1)):
            raise ValueError("ppf levels must lie in [0, 1]")
        t = _ppf_table_guess(self.c, q)
        cell = np.pi / (_TABLE_SIZE - 1)
        for _ in range(8):  # Newton in t from the table guess, never leaving its table cell's reach
            dens = self._dcdf_dt(t)
            step = np.where(dens > 1e-300, (self._cdf_t(t) - q) / np.maximum(dens, 1e-300), 0.0)
            step = np.clip(step, -cell, cell)
            t = np.clip(t - step, 0.0, np.pi)
            if np.max(np.abs(step), initial=0.0) < 1e-14:
                break
        return self._lam(t)

    def mean(self) -> float:
        return self.sigma2

    def singular_values(self, N: float) -> MPSingularValues:
        return MPSingularValues(self, N)


_TABLE_SIZE = 1025


@lru_cache(maxsize=256)
def _t_table(c: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative integral of the density in t at 1025 nodes on [0, π] (independent of σ²)."""
    mp = MarchenkoPastur(c)
    t = np.linspace(0.0, np.pi, _TABLE_SIZE)
    # cumulative integral, interval by interval, each with Gauss–Legendre
    x, w = np.polynomial.legendre.leggauss(16)
    a, b = t[:-1, None], t[1:, None]
    pieces = np.sum(mp._dcdf_dt(a + (b - a) * (x + 1.0) / 2.0) * w, axis=1) * (b - a)[:, 0] / 2.0
    return np.concatenate([[0.0], np.cumsum(pieces)]), t


def _ppf_table_guess(c: float, q: np.ndarray) -> np.ndarray:
    F, t = _t_table(float(c))
    return np.interp(q, F / F[-1], t)


class MPSingularValues:
    """Law of s = √(N λ) when λ follows ``law``; edges s± = σ(√N ± √p)."""

    def __init__(self, law: MarchenkoPastur, N: float):
        self.law = law
        self.N = float(N)
        self.lower = math.sqrt(self.N * law.lower)
        self.upper = math.sqrt(self.N * law.upper)

    def __repr__(self) -> str:
        return f"{self.law!r}.singular_values(N={self.N:g})"

    def pdf(self, s):
        s = np.asarray(s, dtype=float)
        return self.law.pdf(s * s / self.N) * 2.0 * s / self.N

    def cdf(self, s):
        s = np.asarray(s, dtype=float)
        return self.law.cdf(s * s / self.N)

    def ppf(self, q):
        return np.sqrt(self.N * self.law.ppf(q))
