"""Draw the three plot views with plotext as ANSI text of a given size. Numbers come from
``core.plotdata`` and the evaluation records; this module only draws. plotext keeps global
state, so these functions run on the UI thread only."""
from __future__ import annotations

from typing import TYPE_CHECKING

import plotext as plt

from core.analysis import MatrixAnalysis
from core.methods import short_label
from core.plotdata import histogram_data, linear_ticks, values_data

if TYPE_CHECKING:
    from core.evaluation import SweepReport

# One colour and one marker per method, so the legend reads with or without colour.
STYLE = {"bema": ("red", "•"), "broadening": ("cyan", "+")}
DEFAULT_STYLE = ("magenta", "x")
VIEWS = ("histogram", "values", "sweep")
VIEW_TITLES = {"histogram": "histogram of s + MP fits", "values": "sorted singular values (log)",
               "sweep": "accuracy and Avew vs kept rank"}


def style(method: str):
    color, marker = STYLE.get(method, DEFAULT_STYLE)
    return color, marker, short_label(method)


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


def draw_histogram(a: MatrixAnalysis, width: int, height: int, color: bool = True) -> str:
    h = histogram_data(a, bins=max(10, min(80, width - 12)))
    _start(width, height, color)
    plt.bar(h.centers.tolist(), h.density.tolist(), width=0.9, color=_c(color, "gray"), marker="sd",
            label=_label("singular values", height))
    top = max(float(h.density.max()), *[float(c.y.max()) for c in h.mp]) if h.mp else float(h.density.max())
    for curve in h.mp:
        c, m, label = style(curve.method)
        plt.plot(curve.x.tolist(), curve.y.tolist(), color=_c(color, c), marker=m,
                 label=_label(f"{label} MP fit", height))
    for method, tau in h.thresholds.items():
        if tau <= h.x_max:
            _vline(tau, 0.0, top * 1.05, method, color, f"τ={tau:.3g}", height)
    plt.xlim(0, h.x_max)
    plt.xticks(*linear_ticks(0.0, h.x_max, max(2, width // 14)))
    plt.ylim(0, top * 1.1 if top > 0 else 1)
    plt.title(VIEW_TITLES["histogram"])
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
    plt.plot(ks, [pt.accuracy for pt in rep.points], color=_c(color, "green"), marker="o",
             label=_label("accuracy (left)", height))
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
    plt.title(f"{VIEW_TITLES['sweep']} — {rep.layer}")
    plt.xlabel("kept rank k")
    return plt.build()


