"""The results panel: the selected layer's numbers per method, the compare and delta views' numbers,
evaluations, and the running jobs. It renders records computed in core; it computes nothing."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.io.layers import Layer
from core.rmt.analysis import MatrixAnalysis
from core.rmt.methods import METHODS
from core.scan import LayerResult

from .plots import (
    COMPARE_VIEWS,
    series_style,
    style,
)
from .render import fmt, metric_value, noise_cell, ranks_summary, shown
from .session import ALL_LAYERS, Opened
from .widgets import Compared

if TYPE_CHECKING:
    from core.compare.delta import DeltaResult
    from core.evaluate.outcomes import EvalReport

def model_line(metadata: dict[str, str]) -> str:
    """What a GGUF file says about its model (architecture, name, size, quantisation), one line."""
    general = {k.removeprefix("general."): v for k, v in metadata.items() if k.startswith("general.")}
    if not general:
        return ""
    parts = [general.get(k) for k in ("architecture", "name", "size_label")]
    if "file_type" in general:
        parts.append(f"file type {general['file_type']}")
    if "quantization_version" in general:
        parts.append(f"quantisation v{general['quantization_version']}")
    return " · ".join(p for p in parts if p)


class ResultsPanel(Static):
    """Shape, per-method numbers and fit quality, evaluation outcomes, and running jobs."""

    def show(self, o: Opened | None, layer: Layer | None, result: LayerResult | None, jobs: list,
             error: str | None = None, view: str = "histogram", compare: Compared | None = None,
             delta: DeltaResult | None = None, no_color: bool = False, mode: str = "hard",
             whitened: LayerResult | None = None) -> None:
        parts: list[RenderableType] = []
        if o is not None and (about := model_line(o.ckpt.metadata)):
            parts.append(shown(about, "dim"))
        if layer is not None and view in COMPARE_VIEWS and compare is not None:
            parts += [shown(layer.name, "bold"), *self._compare_part(compare, no_color)]
        elif layer is not None and view == "delta":
            parts += [shown(layer.name, "bold"), *self._delta_part(delta)]
        elif layer is not None and view == "whitened" and whitened is not None:
            parts += self._layer_part(layer, whitened)
            if whitened.analysis is not None:
                parts.append(Text("numbers of W·L (whitened on the calibration data), not of W", style="dim"))
        elif layer is not None:
            parts += self._layer_part(layer, result)
        if layer is not None:
            parts.append(Text(f"truncation mode: {mode} (m cycles)", style="dim"))
        if o is not None and layer is not None and layer.name in o.evals:
            parts += self._eval_part("this layer", o.evals[layer.name], result)
        if o is not None and ALL_LAYERS in o.evals:
            parts += self._eval_part("all layers", o.evals[ALL_LAYERS], None)
        if jobs:
            parts.append(Text("\njobs", style="bold"))
            for j in jobs:
                frac = f" {j.done}/{j.total}" if j.total else ""
                parts.append(shown(f" {j.label}{frac} {j.what}".rstrip()))
        if error:
            parts.append(Text("\nerror: ", style="bold red") + shown(error, "bold red"))
        self.update(Group(*parts) if parts else Text("no layer selected", style="dim"))

    @staticmethod
    def _layer_part(layer: Layer, result: LayerResult | None) -> list[RenderableType]:
        head = shown(layer.name, "bold")
        head.append(f"\n{layer.kind} · {layer.dtype} · stored {'×'.join(map(str, layer.shape)) or 'scalar'}")
        if result is None:
            return [head, shown("analysing…" if layer.matrix else layer.reason, "dim")]
        a = result.analysis
        if result.reason is not None:
            head.append("\n").append_text(shown(f"not analysed: {result.reason}", "yellow"))
            return [head]
        sh = a.shape
        view = f"matrix {sh.m}×{sh.n}" + (" (conv reshaped: out × in·kh·kw)" if layer.kind == "conv"
                                            and layer.position is None else "")
        head.append(f"\n{view}\np={sh.p}  N={sh.N}  c={sh.c:.3g}  s_max={fmt(a.sv_max, '.4g')}")
        return [head, *ResultsPanel._methods_part(a)]

    @staticmethod
    def _methods_part(a: MatrixAnalysis) -> list[RenderableType]:
        """Each method's σ̂², τ, ŝ, Avew and fit: a column per method for up to two, a row per
        method beyond (the side panel is 44 columns wide); then how the numbers were made."""
        methods = [m for m in METHODS if m in a.methods] + [m for m in a.methods if m not in METHODS]
        t = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        t.add_column("")
        if len(methods) <= 2:
            for m in methods:
                c, mk, label = style(m)
                t.add_column(Text(f"{mk} {label}", style=c), justify="right")
            rows = [("σ̂²", "sigma2", ".4g"), ("τ", "threshold", ".4g"), ("ŝ", "rank", "d"),
                    ("Avew", "avew", ".3f"), ("  left", "avew_left", ".3f"), ("  right", "avew_right", ".3f"),
                    ("KS fit", "ks", ".3f")]
            for label, field, spec in rows:
                cells = []
                for m in methods:
                    r = a.methods[m]
                    cell = Text(fmt(getattr(r, field), spec))
                    if field == "ks" and r.poor_fit:
                        cell.append(" ⚠ poor", style="yellow")
                    cells.append(cell)
                t.add_row(label, *cells)
        else:
            for head in ("ŝ", "τ", "σ̂²", "Avew", "KS"):
                t.add_column(head, justify="right", no_wrap=True)
            for m in methods:
                r, (c, mk, label) = a.methods[m], style(m)
                ks = Text(fmt(r.ks, ".2f")).append("⚠" if r.poor_fit else "", style="yellow")
                t.add_row(Text(f"{mk} {label}", style=c), fmt(r.rank, "d"), fmt(r.threshold, ".3g"),
                          fmt(r.sigma2, ".2g"), fmt(r.avew, ".3f"), ks)
        notes = [Text(f"{style(m).label}: n/a — {a.methods[m].reason}", style="dim") for m in methods
                 if not a.methods[m].ok]
        empirical = [style(m).label for m in methods if a.methods[m].cosines == "empirical"]
        if empirical:
            notes.append(Text(f"Avew from empirical cosines (D-transform): {', '.join(empirical)}", style="dim"))
        if a.equalised:
            notes.append(Text(f"equalised: numbers are W̃'s; W's own KS {fmt(a.ks_raw, '.3f')}", style="dim"))
        if a.noise is not None:
            notes.append(noise_line(a.noise))
        return [t, *notes]

    @staticmethod
    def _compare_part(c: Compared, no_color: bool) -> list[RenderableType]:
        """One row per checkpoint: s_max, s₁/s₊ and ŝ per method; then σ̂², τ, Avew, KS per method."""
        names = []
        for i, label in enumerate(c.short):
            colour, marker = series_style(i, not no_color)
            names.append(shown(label if colour else f"{marker} {label}", colour or ""))
        methods = [m for m in METHODS if any(a is not None and m in a.methods for a in c.analyses)]
        top = Table(box=None, pad_edge=False, header_style="bold", title=Text("checkpoints", style="bold"),
                    title_justify="left")
        for head in ("", "s_max", "s₁/s₊", *(f"ŝ {style(m).label}" for m in methods)):
            top.add_column(head, justify="left" if not head else "right", max_width=10 if not head else None,
                           no_wrap=True, overflow="ellipsis")
        for name, a in zip(names, c.analyses):
            if a is None:
                top.add_row(name, Text("–", style="dim"))
                continue
            top.add_row(name, fmt(a.sv_max, ".3g"), fmt(a.edge_ratio(), ".3g"),
                        *(fmt(a.methods[m].rank, "d") + ("⚠" if a.methods[m].poor_fit else "") for m in methods))
        parts: list[RenderableType] = [Text(""), top]
        for m in methods:
            colour, marker, label = style(m)
            t = Table(box=None, pad_edge=False, header_style="bold", title=Text(f"{marker} {label}", style=colour),
                      title_justify="left")
            for head in ("", "σ̂²", "τ", "Avew", "KS"):
                t.add_column(head, justify="left" if not head else "right", max_width=10 if not head else None,
                             no_wrap=True, overflow="ellipsis")
            for name, a in zip(names, c.analyses):
                r = a.methods.get(m) if a is not None else None
                if r is None:
                    continue
                t.add_row(name, fmt(r.sigma2, ".3g"), fmt(r.threshold, ".3g"), fmt(r.avew, ".2f"), fmt(r.ks, ".2f"))
            parts += [Text(""), t]
        if c.missing:
            parts.append(Text(f"{c.missing} checkpoint(s) without this layer (–)", style="dim"))
        return parts

    @staticmethod
    def _delta_part(d: DeltaResult | None) -> list[RenderableType]:
        if d is None:
            return [Text("ΔW = tuned − base: computing…", style="dim")]
        head = shown(f"ΔW = tuned − base ({d.base.name if d.base else '–'})")
        if d.status != "ok":
            head.append("\n").append_text(shown(f"{d.status}: {d.reason}" if d.reason else d.status,
                                                 "green" if d.status == "unchanged" else "yellow"))
            return [head, *(shown(w, "yellow") for w in d.warnings)]
        a = d.analysis
        head.append(f"\nmatrix {a.shape.m}×{a.shape.n}  ‖ΔW‖/‖W‖={fmt(d.rel_fro, '.3g')}"
                    f"\nr90={fmt(d.energy_rank_90, 'd')}  r99={fmt(d.energy_rank_99, 'd')}  "
                    f"stable rank={fmt(d.stable_rank, '.3g')}")
        why = Text("energy ranks count the noise floor's energy; ŝ counts only values above the MP edge",
                   style="dim")
        return [head, *ResultsPanel._methods_part(a), why, *(shown(w, "yellow") for w in d.warnings)]

    @staticmethod
    def _eval_part(title: str, rep: EvalReport, result: LayerResult | None) -> list[RenderableType]:
        spec = rep.primary
        t = Table(box=None, pad_edge=False, title=shown(f"evaluation: {title} ({rep.evaluator}, {rep.mode})"),
                  title_justify="left",
                  title_style="bold", header_style="bold")
        t.add_column("")
        t.add_column(spec.label, justify="right")
        t.add_column("ranks" if result is None else "ŝ", justify="right")
        t.add_column("params saved", justify="right")
        t.add_row("baseline", spec.show(rep.baseline[spec.key]), "", "")
        for m, o in rep.outcomes.items():
            t.add_row(style(m).label, metric_value(spec, o.metrics), ranks_summary(o.ranks, wide=False),
                      f"{o.params_saved:,}")
        return [Text(""), t, *extra_metrics(rep)]


def extra_metrics(rep: EvalReport) -> list[RenderableType]:
    """The label-free evaluators' other numbers, one line per method (top-1, PPL; NN, Spearman)."""
    lines = []
    for m, o in rep.outcomes.items():
        x = o.metrics
        if "top1" in x:
            lines.append(Text(f"{style(m).label}: top-1 {x['top1']:.1%} · KL p95 {x['kl_p95']:.3g} · PPL "
                              f"{x['ppl_original']:.4g} → {x['ppl']:.4g} ({x['dppl']:+.3g})", style="dim"))
        elif "nn_agreement" in x:
            lines.append(Text(f"{style(m).label}: chance {x['chance']:.3f} · worst 5 % {x['fidelity_p05']:.3f} · "
                              f"NN {x['nn_agreement']:.0%} · Spearman {x['spearman']:.3f}", style="dim"))
    return lines


def noise_line(n) -> Text:
    """'noise: correlated (KS 0.14 raw, 0.12 equalised; shuffle 1.03 × edge)'."""
    if n.model is None:
        return Text(f"noise: – ({n.reason})", style="dim")
    line = Text("noise: ").append_text(noise_cell(n.to_dict()))
    return line.append(f" ({n.model}: KS {fmt(n.ks_raw, '.2f')} raw, {fmt(n.ks_equalised, '.2f')} equalised; "
                       f"shuffle {fmt(n.shuffle_edge_ratio, '.2f')} × edge)", style="dim")
