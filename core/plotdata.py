"""The numbers behind each plot, computed from the analysis records (the app only draws them)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.rmt.analysis import MatrixAnalysis
from core.rmt.mp import MarchenkoPastur


@dataclass(frozen=True)
class Curve:
    method: str
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class HistogramData:
    centers: np.ndarray
    density: np.ndarray  # per unit of s, over all p values
    width: float
    mp: list[Curve]  # each method's fitted MP density of s
    thresholds: dict[str, float]
    x_max: float
    off_plot: int  # values beyond x_max (strong outliers), counted but not drawn


def histogram_data(a: MatrixAnalysis, bins: int = 60, points: int = 200) -> HistogramData:
    """Histogram of the singular values with each method's fitted MP density on the same scale.
    The x range stops a little past the largest threshold and fitted edge, so a few strong outliers
    do not squash the bulk; how many are beyond it is reported."""
    sv = a.sv
    shape = a.shape
    fitted = {m: r for m, r in a.methods.items() if r.ok}
    laws = {m: MarchenkoPastur(shape.c, r.sigma2).singular_values(shape.N) for m, r in fitted.items()
            if r.sigma2 is not None}  # ScreeNOT and the shuffle null imply no MP law: their τ only
    edge = max([r.threshold for r in fitted.values()] + [law.upper for law in laws.values()], default=sv[0])
    x_max = max(float(min(sv[0], 1.35 * edge)) if fitted else float(sv[0]), 1e-300)
    shown = sv[sv <= x_max]
    counts, edges = np.histogram(shown, bins=bins, range=(0.0, x_max))
    width = float(edges[1] - edges[0])
    density = counts / (sv.size * width)
    curves = []
    for m, law in laws.items():
        x = np.linspace(max(law.lower, 0.0), min(law.upper, x_max), points)
        curves.append(Curve(m, x, law.pdf(x)))
    return HistogramData((edges[:-1] + edges[1:]) / 2, density, width, curves,
                         {m: r.threshold for m, r in fitted.items()}, x_max, int(sv.size - shown.size))


@dataclass(frozen=True)
class ValuesData:
    index: np.ndarray  # 1-based rank of each plotted value
    log10_sv: np.ndarray
    log10_thresholds: dict[str, float]
    ticks: list[float]  # log10 positions of the y ticks
    tick_labels: list[str]


def _thin(n: int, columns: int) -> np.ndarray:
    """At most ~2 points per terminal column, always keeping the first and the last."""
    keep = max(2, 2 * columns)
    if n <= keep:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, keep)).astype(int))


def values_data(a: MatrixAnalysis, columns: int = 80) -> ValuesData:
    """Sorted singular values on a log axis (log10 plotted, with decade ticks labelled in real units)."""
    sv = a.sv
    positive = sv[sv > 0]
    idx = _thin(positive.size, columns)
    logs = np.log10(positive[idx])
    th = {m: math.log10(r.threshold) for m, r in a.methods.items() if r.ok and r.threshold > 0}
    lo = min([float(logs.min())] + list(th.values()))
    hi = max([float(logs.max())] + list(th.values()))
    ticks, labels = log_ticks(lo, hi)
    return ValuesData(idx + 1, logs, th, ticks, labels)


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick positions (log10) at 1, 2, 5 × 10^k when the range is short, decades when it is long."""
    span = hi - lo
    mults = (1, 2, 5) if span < 2.5 else (1,)
    ticks = []
    for k in range(math.floor(lo) - 1, math.ceil(hi) + 1):
        for m in mults:
            v = math.log10(m) + k
            if lo - 1e-9 <= v <= hi + 1e-9:
                ticks.append(v)
    if len(ticks) < 2:
        ticks = [lo, hi]
    step = max(1, len(ticks) // 8)
    ticks = ticks[::step]
    return ticks, [format(10 ** t, ".3g") for t in ticks]


def linear_ticks(lo: float, hi: float, target: int = 5) -> tuple[list[float], list[str]]:
    """Round tick values (1, 2, 2.5, 5 × 10^k steps) covering [lo, hi], with short labels."""
    if not hi > lo:
        return [lo], [format(lo, ".3g")]
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]
    return ticks, [format(t, ".4g") for t in ticks]


# ------------------------------------------------------------------ several checkpoints, one layer


@dataclass(frozen=True)
class Series:
    label: str
    x: np.ndarray
    y: np.ndarray
    marks: dict[str, float]  # method → where its threshold falls on the x axis (τ, or ŝ by index)


@dataclass(frozen=True)
class OverlayData:
    series: list[Series]
    x_max: float
    unit: str  # the x (density) or y (values) axis: "s" or "s / s₊"
    ticks: list[float] = ()  # log10 positions (values view)
    tick_labels: list[str] = ()
    off_plot: int = 0  # values beyond x_max, all series together (density view)


def _scale(a: MatrixAnalysis, normalise: bool) -> float | None:
    return (a.edge() if normalise else 1.0) or None


def overlay_density(items: list[tuple[str, MatrixAnalysis]], normalise: bool = False, bins: int = 40
                    ) -> OverlayData:
    """Each checkpoint's histogram density of s (or s/s₊) on shared bins, with its thresholds."""
    scaled = [(label, a, k) for label, a in items if (k := _scale(a, normalise)) and a.sv.size]
    taus = [r.threshold / k for _, a, k in scaled for r in a.methods.values() if r.ok]
    top = max((float(a.sv[0]) / k for _, a, k in scaled), default=1.0)
    x_max = max(min(top, 1.35 * max(taus)) if taus else top, 1e-300)
    edges = np.linspace(0.0, x_max, bins + 1)
    series, off = [], 0
    for label, a, k in scaled:
        s = a.sv / k
        counts, _ = np.histogram(s[s <= x_max], bins=edges)
        off += int(np.sum(s > x_max))
        series.append(Series(label, (edges[:-1] + edges[1:]) / 2, counts / (s.size * (edges[1] - edges[0])),
                             {m: r.threshold / k for m, r in a.methods.items() if r.ok}))
    return OverlayData(series, x_max, "s / s₊" if normalise else "s", off_plot=off)


def overlay_values(items: list[tuple[str, MatrixAnalysis]], normalise: bool = False, columns: int = 80
                   ) -> OverlayData:
    """Each checkpoint's sorted values (log10 of s or s/s₊) against their index, with ŝ marked."""
    series, lo, hi = [], math.inf, -math.inf
    for label, a in items:
        k = _scale(a, normalise)
        positive = a.sv[a.sv > 0]
        if not k or not positive.size:
            continue
        idx = _thin(positive.size, columns)
        logs = np.log10(positive[idx] / k)
        lo, hi = min(lo, float(logs.min())), max(hi, float(logs.max()))
        series.append(Series(label, idx + 1.0, logs, {m: float(r.rank) for m, r in a.methods.items() if r.ok}))
    if not series:
        return OverlayData([], 1.0, "s")
    ticks, labels = log_ticks(lo, hi)
    return OverlayData(series, max(float(s.x[-1]) for s in series), "s / s₊" if normalise else "s", ticks, labels)
