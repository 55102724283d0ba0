"""Draw the plot views (VIEW_TITLES) with plotext as ANSI text of a given size. Numbers come from
``core.plotdata`` and the evaluation records; this module only draws. plotext keeps global
state, so these functions run on the UI thread only."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import plotext as plt

from core.plotdata import OverlayData, histogram_data, linear_ticks, values_data
from core.rmt.analysis import MatrixAnalysis
from core.rmt.methods import METHODS, short_label

if TYPE_CHECKING:
    from core.evaluate.outcomes import SweepReport

# One colour and one marker per method, so the legend reads with or without colour: the n-th
# registered method takes the n-th pair (a new method needs no entry here).
METHOD_STYLES = (("red", "•"), ("cyan", "+"), ("magenta", "x"), ("green", "*"), ("yellow", "o"), ("blue", "#"))
VIEWS = ("histogram", "values", "sweep", "whitened")
# Views of several checkpoints, in the cycle when two or more are open (delta: when a base is marked).
COMPARE_VIEWS = ("compare-density", "compare-values", "trajectory")
VIEW_TITLES = {"histogram": "histogram of s + MP fits", "values": "sorted singular values (log)",
               "sweep": "metric and Avew vs kept rank", "whitened": "W·L (whitened): histogram + MP fits",
               "compare-density": "overlay: density of s",
               "compare-values": "overlay: sorted s (log)",
               "trajectory": "ŝ and σ̂² across checkpoints", "delta": "ΔW = tuned − base: histogram + MP fits"}
# One colour (or, without colour, one marker) per checkpoint in the overlays.
SERIES_COLORS = ("red", "cyan", "green", "yellow", "magenta", "blue", "orange", "white")
SERIES_MARKERS = ("•", "+", "x", "o", "*", "#", "@", "%")


class MethodStyle(NamedTuple):
    color: str
    marker: str
    label: str  # the method's short label


def style(method: str) -> MethodStyle:
    names = list(METHODS)
    i = names.index(method) if method in names else len(METHOD_STYLES) - 1
    return MethodStyle(*METHOD_STYLES[i % len(METHOD_STYLES)], short_label(method))


def _marks_key(o: OverlayData, what: str) -> str:
    """'• τ BEMA · + τ GB': the threshold marks the overlay draws, in registry order."""
    shown = {m for s in o.series for m in s.marks}
    return " · ".join(f"{style(m).marker} {what} {style(m).label}" for m in METHODS if m in shown)


LEGEND_MIN_HEIGHT = 16  # below this the legend would cover the data; the results panel keys the markers


def _label(text: str, height: int) -> str | None:
    return text if height >= LEGEND_MIN_HEIGHT else None


def _start(width: int, height: int, color: bool) -> None:
    plt.clear_figure()
    plt.plotsize(max(width, 20), max(height, 6))
    plt.theme("pro" if color else "clear")


def _c(color: bool, name: str):
    return name if color else None


def _vline(x: float, y0: float, y1: float, method: str, color: bool, what: str, height: int) -> None:
    c, m, label = style(method)
    plt.plot([x, x], [y0, y1], color=_c(color, c), marker=m, label=_label(f"{label} {what}", height))


def draw_histogram(a: MatrixAnalysis, width: int, height: int, color: bool = True, title: str = "histogram",
                   braille: bool = False) -> str:
    """``braille``: the MP curves in braille dots (2 × 4 per cell: finer), where colour tells the
    methods apart; without colour the methods keep their markers."""
    h = histogram_data(a, bins=max(10, min(80, width - 12)))
    _start(width, height, color)
    plt.bar(h.centers.tolist(), h.density.tolist(), width=0.9, color=_c(color, "gray"), marker="sd",
            label=_label("singular values", height))
    top = max(float(h.density.max()), *[float(c.y.max()) for c in h.mp]) if h.mp else float(h.density.max())
    for curve in h.mp:
        c, m, label = style(curve.method)
        plt.plot(curve.x.tolist(), curve.y.tolist(), color=_c(color, c), marker="braille" if braille and color else m,
                 label=_label(f"{label} MP fit", height))
    for method, tau in h.thresholds.items():
        if tau <= h.x_max:
            _vline(tau, 0.0, top * 1.05, method, color, f"τ={tau:.3g}", height)
    plt.xlim(0, h.x_max)
    plt.xticks(*linear_ticks(0.0, h.x_max, max(2, width // 14)))
    plt.ylim(0, top * 1.1 if top > 0 else 1)
    plt.title(VIEW_TITLES.get(title, title))
    beyond = f" ({h.off_plot} more beyond, up to {a.sv[0]:.3g})" if h.off_plot else ""
    plt.xlabel(f"singular value s{beyond}")
    return plt.build()


def draw_values(a: MatrixAnalysis, width: int, height: int, color: bool = True) -> str:
    v = values_data(a, columns=width)
    _start(width, height, color)
    plt.plot(v.index.tolist(), v.log10_sv.tolist(), color=_c(color, "white"), marker="braille",
             label=_label("s_i", height))
    n = int(v.index[-1])
    for method, lt in v.log10_thresholds.items():
        c, m, label = style(method)
        plt.plot([1, n], [lt, lt], color=_c(color, c), marker=m, label=_label(f"{label} τ={10 ** lt:.3g}", height))
    plt.yticks(v.ticks, v.tick_labels)
    plt.xlim(1, max(n, 2))
    plt.xticks(*linear_ticks(1, n, max(2, width // 14)))
    plt.title(VIEW_TITLES["values"])
    plt.xlabel("index i (descending)")
    return plt.build()


def draw_sweep(rep: SweepReport, width: int, height: int, color: bool = True) -> str:
    _start(width, height, color)
    ks = [pt.rank for pt in rep.points]
    plt.plot(ks, [pt.metrics[rep.primary.key] for pt in rep.points], color=_c(color, "green"), marker="o",
             label=_label(f"{rep.primary.label} (left)", height))
    for method in rep.method_ranks:
        c, m, label = style(method)
        pts = [(pt.rank, pt.avew[method]) for pt in rep.points if pt.avew.get(method) is not None]
        if pts:
            plt.plot(*zip(*pts), color=_c(color, c), marker=m, label=_label(f"Avew, {label} σ̂ (right)", height),
                     yside="right")
    for method, k in rep.method_ranks.items():
        if k is not None:
            c, _, label = style(method)
            plt.vline(k, _c(color, c))
            plt.text(f"ŝ {label}", k, 0.5, color=_c(color, c), yside="right")
    plt.ylim(0, 1, yside="right")
    plt.xlim(0, rep.p)
    plt.xticks(*linear_ticks(0, rep.p, max(2, width // 14)))
    plt.title(f"{rep.primary.label} and Avew vs kept rank — {rep.layer}")
    plt.xlabel("kept rank k")
    return plt.build()


def series_style(i: int, color: bool) -> tuple[str | None, str]:
    return (SERIES_COLORS[i % len(SERIES_COLORS)], "braille") if color else (None, SERIES_MARKERS[i % 8])


def _mark_marker(method: str, i: int, color: bool) -> str:
    """Threshold marks: the method's marker in colour (the colour names the checkpoint), the
    checkpoint's marker without colour."""
    return style(method).marker if color else SERIES_MARKERS[i % len(SERIES_MARKERS)]


def draw_overlay_density(o: OverlayData, width: int, height: int, color: bool = True) -> str:
    _start(width, height, color)
    top = max((float(s.y.max()) for s in o.series if s.y.size), default=1.0) or 1.0
    for i, s in enumerate(o.series):
        c, m = series_style(i, color)
        plt.plot(s.x.tolist(), s.y.tolist(), color=c, marker=m, label=_label(s.label, height))
        for method, tau in s.marks.items():
            if tau <= o.x_max:
                plt.plot([tau, tau], [0, top * 1.05], color=c, marker=_mark_marker(method, i, color))
    plt.xlim(0, o.x_max)
    plt.xticks(*linear_ticks(0.0, o.x_max, max(2, width // 14)))
    plt.ylim(0, top * 1.1)
    plt.title(VIEW_TITLES["compare-density"] + (" ÷ own edge s₊" if o.unit != "s" else ""))
    marks = _marks_key(o, "τ")
    plt.xlabel(f"{o.unit}   ({marks}{f'; {o.off_plot} beyond' if o.off_plot else ''})")
    return plt.build()


def draw_overlay_values(o: OverlayData, width: int, height: int, color: bool = True) -> str:
    _start(width, height, color)
    lo, hi = (o.ticks[0], o.ticks[-1]) if o.ticks else (0, 1)
    for i, s in enumerate(o.series):
        c, m = series_style(i, color)
        plt.plot(s.x.tolist(), s.y.tolist(), color=c, marker=m, label=_label(s.label, height))
        for method, k in s.marks.items():
            if k >= 1:
                plt.plot([k, k], [lo, hi], color=c, marker=_mark_marker(method, i, color))
    if o.ticks:
        plt.yticks(list(o.ticks), list(o.tick_labels))
    plt.xlim(1, max(o.x_max, 2))
    plt.xticks(*linear_ticks(1, o.x_max, max(2, width // 14)))
    plt.title(VIEW_TITLES["compare-values"] + (" ÷ own edge s₊" if o.unit != "s" else ""))
    marks = _marks_key(o, "ŝ")
    plt.xlabel(f"index i (descending)   ({marks})")
    return plt.build()


def draw_trajectory(labels: list[str], items: list[MatrixAnalysis | None], width: int, height: int,
                    color: bool = True) -> str:
    """ŝ per method (left axis) and BEMA's σ̂² (right axis) against the checkpoints, in order."""
    _start(width, height, color)
    xs = list(range(1, len(labels) + 1))
    methods = [m for m in METHODS if any(a is not None and m in a.methods for a in items)]
    for method in methods:
        c, m, label = style(method)
        pts = [(x, a.methods[method].rank) for x, a in zip(xs, items)
               if a is not None and method in a.methods and a.methods[method].ok]
        if pts:
            plt.plot(*zip(*pts), color=_c(color, c), marker=m, label=_label(f"ŝ {label} (left)", height))
    # σ̂² of the first method that estimates one (ScreeNOT and the shuffle null do not)
    first = next((m for m in methods if METHODS[m].implies_sigma2), None)
    pts = [(x, a.methods[first].sigma2) for x, a in zip(xs, items)
           if first and a is not None and first in a.methods and a.methods[first].ok]
    if pts:
        plt.plot(*zip(*pts), color=_c(color, "white"), marker="o", yside="right",
                 label=_label(f"σ̂² {style(first).label} (right)", height))
    plt.xticks(xs, labels)
    plt.xlim(0.7, len(labels) + 0.3)
    plt.title(VIEW_TITLES["trajectory"])
    plt.xlabel("checkpoint")
    return plt.build()
