"""Publication figures of the app's views, drawn with matplotlib (the optional extra [plots]) on the
headless Agg backend from the same numbers the terminal plots draw (``core.plotdata`` and the
analysis, sweep and delta records). Defaults fit one column of a paper: 3.5 × 2.6 inches, 8-point
text, 300 dpi for PNG. Nothing here is imported unless a figure is asked for."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.errors import MissingExtraError, UsageError
from core.rmt.methods import METHODS, short_label

INSTALL = "pip install 'rmt-tui[plots]'"
FORMATS = (".png", ".svg", ".pdf")
SIZE = (3.5, 2.6)  # inches: one column
DPI = 300
# One colour per method in registry order (print-safe), and one per checkpoint in the overlays.
METHOD_COLORS = ("tab:red", "tab:blue", "tab:purple", "tab:green", "tab:orange", "tab:brown")
SERIES_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                 "tab:gray")


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(f"figures need matplotlib: {INSTALL}") from None
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "legend.fontsize": 6, "axes.labelsize": 8,
                         "xtick.labelsize": 7, "ytick.labelsize": 7, "svg.fonttype": "none", "pdf.fonttype": 42})
    return plt


def check_output(out: Path) -> None:
    if Path(out).suffix.lower() not in FORMATS:
        raise UsageError(f"{out}: a figure is written as {', '.join(FORMATS)}; name the file with one of them")


def color(method: str) -> str:
    names = list(METHODS)
    return METHOD_COLORS[names.index(method) % len(METHOD_COLORS)] if method in names else "black"


def _legend_label(a, m: str) -> str:
    r = a.methods[m]
    return f"{short_label(m)} τ={r.threshold:.3g} ŝ={r.rank}" + (f" Avew={r.avew:.2f}" if r.avew is not None else "")


def caption(a) -> str:
    """The line under a spectrum figure: p, N, the first σ̂² and its KS."""
    first = next((m for m, r in a.methods.items() if r.ok and r.sigma2 is not None), None)
    r = a.methods[first] if first else None
    fit = f", σ̂² ({short_label(first)}) = {r.sigma2:.3g}, KS = {r.ks:.2f}" if r else ""
    return f"p = {a.shape.p}, N = {a.shape.N}{fit}" + (" (equalised W̃)" if a.equalised else "")


def draw_histogram(ax, a, title: str) -> None:
    from core.plotdata import histogram_data

    h = histogram_data(a)
    ax.bar(h.centers, h.density, width=h.width, color="0.75", edgecolor="none", label="singular values")
    for c in h.mp:
        ax.plot(c.x, c.y, color=color(c.method), lw=1, label=f"{short_label(c.method)} MP fit")
    for m, tau in h.thresholds.items():
        if tau <= h.x_max:
            ax.axvline(tau, color=color(m), lw=0.8, ls="--", label=_legend_label(a, m))
    ax.set_xlim(0, h.x_max)
    ax.set_xlabel("singular value s" + (f" ({h.off_plot} beyond)" if h.off_plot else ""))
    ax.set_ylabel("density")
    ax.set_title(title)


def draw_values(ax, a, title: str) -> None:
    ax.semilogy(np.arange(1, a.sv.size + 1), np.where(a.sv > 0, a.sv, np.nan), color="0.3", lw=1,
                label="singular values")
    for m, r in a.methods.items():
        if r.ok:
            ax.axhline(r.threshold, color=color(m), lw=0.8, ls="--", label=_legend_label(a, m))
    ax.set_xlabel("index i (descending)")
    ax.set_ylabel("s_i")
    ax.set_title(title)


def draw_sweep(ax, rep, title: str) -> None:
    ks = [pt.rank for pt in rep.points]
    ax.plot(ks, [pt.metrics[rep.primary.key] for pt in rep.points], color="black", marker="o", ms=2, lw=1,
            label=rep.primary.label)
    ax.set_xlabel("kept rank k")
    ax.set_ylabel(rep.primary.label)
    right = ax.twinx()
    for m in rep.method_ranks:
        pts = [(pt.rank, pt.avew[m]) for pt in rep.points if pt.avew.get(m) is not None]
        if pts:
            right.plot(*zip(*pts), color=color(m), lw=1, label=f"Avew ({short_label(m)} σ̂)")
    for m, k in rep.method_ranks.items():
        if k is not None:
            ax.axvline(k, color=color(m), lw=0.8, ls="--", label=f"ŝ {short_label(m)} = {k}")
    right.set_ylim(0, 1)
    right.set_ylabel("Avew")
    lines = ax.get_legend_handles_labels(), right.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], loc="best", framealpha=0.85, edgecolor="none")
    ax.set_title(title)


def draw_overlay(ax, labels: Sequence[str], analyses: Sequence, values: bool, title: str) -> None:
    from core.plotdata import overlay_density, overlay_values

    items = [(label, a) for label, a in zip(labels, analyses) if a is not None]
    o = overlay_values(items) if values else overlay_density(items)
    for i, s in enumerate(o.series):
        c = SERIES_COLORS[i % len(SERIES_COLORS)]
        ax.plot(s.x, s.y, color=c, lw=1, label=s.label)
        for x in s.marks.values():  # each method's τ (density) or ŝ (values), in the checkpoint's colour
            ax.axvline(x, color=c, lw=0.6, ls=":")
    if values:
        ax.set_yticks(list(o.ticks), list(o.tick_labels))
        ax.set_xlabel("index i (descending); dotted: ŝ")
        ax.set_ylabel(o.unit)
    else:
        ax.set_xlim(0, o.x_max)
        ax.set_xlabel(f"{o.unit}; dotted: τ")
        ax.set_ylabel("density")
    ax.set_title(title)


def draw_trajectory(ax, labels: Sequence[str], analyses: Sequence, title: str, xlabel: str = "checkpoint") -> None:
    xs = np.arange(1, len(labels) + 1)
    for m in METHODS:
        pts = [(x, a.methods[m].rank) for x, a in zip(xs, analyses)
               if a is not None and m in a.methods and a.methods[m].ok]
        if pts:
            ax.plot(*zip(*pts), color=color(m), marker="o", ms=3, lw=1, label=f"ŝ {short_label(m)}")
    ax.set_xticks(xs, labels, rotation=30 if max(map(len, labels)) > 4 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ŝ")
    ax.set_title(title)


def figure_of_view(view: str, title: str, analysis=None, sweep=None, compared=None, delta=None):
    """(draw, caption) of one app view: the same record the terminal plot draws."""
    if view in ("histogram", "values"):
        draw = draw_histogram if view == "histogram" else draw_values
        return (lambda ax: draw(ax, analysis, title)), caption(analysis)
    if view == "sweep":
        return (lambda ax: draw_sweep(ax, sweep, title)), None
    if view in ("compare-density", "compare-values"):
        return (lambda ax: draw_overlay(ax, compared.labels, compared.analyses, view == "compare-values", title)), None
    if view == "trajectory":
        return (lambda ax: draw_trajectory(ax, compared.labels, compared.analyses, title)), None
    if view == "delta":
        return (lambda ax: draw_histogram(ax, delta.analysis, f"ΔW: {title}")), caption(delta.analysis)
    if view == "whitened":  # ``analysis`` is W·L's
        return (lambda ax: draw_histogram(ax, analysis, f"W·L: {title}")), caption(analysis)
    raise UsageError(f"no figure for the {view!r} view")


def free_name(folder: Path, stem: str, suffix: str = ".png") -> Path:
    """``stem.png`` in ``folder``, or ``stem-2.png``, … : a new file, never an existing one."""
    import re

    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "figure"
    path, i = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, i = folder / f"{stem}-{i}{suffix}", i + 1
    return path


def save(draw, out: Path, size: tuple[float, float] = SIZE, dpi: int = DPI, caption: str | None = None,
         overwrite: bool = False) -> Path:
    """Draw with ``draw(ax)`` on a new figure and save it atomically as PNG, SVG or PDF (an existing
    file is replaced only with ``overwrite``)."""
    from core.paths import atomic_output, refuse_existing

    out = Path(out)
    check_output(out)
    refuse_existing(out, overwrite)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    try:
        draw(ax)
        if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", framealpha=0.85, edgecolor="none")
        if caption:
            fig.supxlabel(caption, fontsize=6, color="0.35")
        with atomic_output(out, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format=out.suffix[1:].lower(), dpi=dpi)
    finally:
        plt.close(fig)
    return out
