"""The app's three panes: the layer tree, the spectrum plot and the results panel."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from core.checkpoint import Layer
from core.scan import LayerResult

from .plots import VIEWS, draw_histogram, draw_sweep, draw_values, style
from .session import ALL_LAYERS, LayerKey, Opened
from .tables import fmt, shown

if TYPE_CHECKING:
    from core.evaluation import EvalReport, SweepReport

METHOD_ORDER = ("bema", "broadening")


def rank_marks(result: LayerResult | None) -> Text:
    """'B97 G185' (with ⚠ on a poor MP fit), '·' when not analysed, the reason's gist when skipped."""
    t = Text()
    if result is None:
        return t
    if result.reason is not None:
        return Text(" –", style="dim")
    for m, r in result.analysis.methods.items():
        label = style(m)[2][0]
        t.append(f" {label}{fmt(r.rank, 'd') if r.ok else '–'}", style="bold" if r.ok else "dim")
        if r.poor_fit:
            t.append("⚠", style="yellow")
    return t


class LayerTree(Tree[LayerKey | None]):
    """Checkpoints → dotted-name groups → layers, in model order. Leaves carry a LayerKey."""

    BINDINGS = [Binding("j", "cursor_down", "Down", show=False), Binding("k", "cursor_up", "Up", show=False)]

    def __init__(self, **kw):
        super().__init__("checkpoints", **kw)
        self.show_root = False
        self.guide_depth = 2
        self.leaves: dict[LayerKey, TreeNode] = {}

    def add_checkpoint(self, o: Opened) -> TreeNode:
        top = self.root.add(shown(o.path.name, "bold"), data=None, expand=True)
        groups: dict[tuple[str, ...], TreeNode] = {(): top}
        for layer in o.ckpt.layers:
            parts = layer.name.split(".")
            parent = top
            for i in range(1, len(parts)):
                prefix = tuple(parts[:i])
                if prefix not in groups:
                    groups[prefix] = parent.add(shown(parts[i - 1]), data=None, expand=len(o.ckpt.layers) <= 64)
                parent = groups[prefix]
            key = LayerKey(o.index, layer.name)
            self.leaves[key] = parent.add_leaf(self.leaf_label(layer, None), data=key)
        return top

    @staticmethod
    def leaf_label(layer: Layer, result: LayerResult | None) -> Text:
        t = shown(layer.name.rsplit(".", 1)[-1])
        shape = "×".join(map(str, layer.matrix or layer.shape))
        t.append(f" {shape}", style="dim" if layer.matrix is None else "")
        t.append_text(rank_marks(result) if layer.matrix is not None else Text(" –", style="dim"))
        return t

    def update_leaf(self, key: LayerKey, layer: Layer, result: LayerResult | None) -> None:
        node = self.leaves.get(key)
        if node is not None:
            node.set_label(self.leaf_label(layer, result))

    def reveal(self, key: LayerKey) -> None:
        node = self.leaves.get(key)
        if node is None:
            return
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        self.call_after_refresh(self.move_cursor, node)


class SpectrumPlot(Widget):
    """Draws the current view of the selected layer with plotext; each view is re-drawn only when
    the size or the data changes."""

    DEFAULT_CSS = "SpectrumPlot { height: 1fr; }"

    # Drawing a view costs 7–55 ms (plotext, most of it the histogram's bars). Each view's drawing
    # is kept, and shortly after a layer is shown the other views are drawn while the user reads,
    # so that cycling views with v answers at once.
    PREDRAW_DELAY = 0.1

    def __init__(self, **kw):
        super().__init__(**kw)
        self.view = VIEWS[0]
        self.result: LayerResult | None = None
        self.sweep: SweepReport | None = None
        self.message = "select a layer"
        self._drawn: dict[str, tuple[tuple, Text]] = {}  # view → ((data, w, h, no_color), drawing)
        self._predraw = None

    def show(self, result: LayerResult | None, sweep: SweepReport | None, message: str = "") -> None:
        self.result, self.sweep, self.message = result, sweep, message
        self.refresh()
        self._schedule_predraw(self.PREDRAW_DELAY)

    def on_resize(self) -> None:
        self._schedule_predraw(self.PREDRAW_DELAY)

    def _schedule_predraw(self, delay: float) -> None:
        if self._predraw is not None:
            self._predraw.stop()
        self._predraw = self.set_timer(delay, self._predraw_one)

    def _predraw_one(self) -> None:
        """Draw one view that is not on screen (one per timer tick, so a key pressed meanwhile
        waits for at most one drawing), then schedule the next."""
        if any(self._draw(view) for view in VIEWS if view != self.view):
            self._schedule_predraw(0.05)

    def cycle(self) -> str:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        self.refresh()
        return self.view

    def _data(self, view: str):
        if view == "sweep":
            return self.sweep
        a = self.result.analysis if self.result is not None else None
        return a if a is not None and a.sv.size else None

    def _draw(self, view: str) -> bool:
        """Draw the view at the current size unless its drawing is kept; True if it drew now."""
        data, w, h = self._data(view), self.size.width, self.size.height
        if data is None or w < 20 or h < 6:
            return False
        key = (w, h, self.app.no_color)
        kept = self._drawn.get(view)
        if kept is not None and kept[0][0] is data and kept[0][1:] == key:
            return False
        draw = {"histogram": draw_histogram, "values": draw_values, "sweep": draw_sweep}[view]
        self._drawn[view] = ((data, *key), Text.from_ansi(draw(data, w, h, color=not self.app.no_color)))
        return True

    def render(self) -> RenderableType:
        w, h = self.size.width, self.size.height
        if w < 20 or h < 6:
            return Text("(too small to plot)", style="dim")
        if self._data(self.view) is None:
            if self.view == "sweep":
                return Text("sweep view: no sweep for this layer yet — press s to run one", style="dim")
            reason = self.result.reason if self.result is not None else None
            return shown(self.message or (f"not analysed: {reason}" if reason else "select a layer"), "dim")
        self._draw(self.view)
        return self._drawn[self.view][1]


class ResultsPanel(Static):
    """Shape, per-method numbers and fit quality, evaluation outcomes, and running jobs."""

    def show(self, o: Opened | None, layer: Layer | None, result: LayerResult | None, jobs: list,
             error: str | None = None) -> None:
        parts: list[RenderableType] = []
        if layer is not None:
            parts += self._layer_part(layer, result)
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
            return [head, shown("\nanalysing…" if layer.matrix else f"\n{layer.reason}", "dim")]
        a = result.analysis
        if result.reason is not None:
            head.append_text(shown(f"\nnot analysed: {result.reason}", "yellow"))
            return [head]
        sh = a.shape
        view = f"matrix {sh.m}×{sh.n}" + (" (conv reshaped: out × in·kh·kw)" if layer.kind == "conv"
                                            and layer.position is None else "")
        head.append(f"\n{view}\np={sh.p}  N={sh.N}  c={sh.c:.3g}  s_max={fmt(a.sv_max, '.4g')}")
        t = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        t.add_column("")
        methods = [m for m in METHOD_ORDER if m in a.methods] + [m for m in a.methods if m not in METHOD_ORDER]
        for m in methods:
            c, mk, label = style(m)
            t.add_column(Text(f"{mk} {label}", style=c), justify="right")
        rows = [("σ̂²", "sigma2", ".4g"), ("τ", "threshold", ".4g"), ("ŝ", "rank", "d"), ("Avew", "avew", ".3f"),
                ("  left", "avew_left", ".3f"), ("  right", "avew_right", ".3f"), ("KS fit", "ks", ".3f")]
        for label, field, spec in rows:
            cells = []
            for m in methods:
                r = a.methods[m]
                cell = Text(fmt(getattr(r, field), spec))
                if field == "ks" and r.poor_fit:
                    cell.append(" ⚠ poor", style="yellow")
                cells.append(cell)
            t.add_row(label, *cells)
        notes = [Text(f"{style(m)[2]}: n/a — {a.methods[m].reason}", style="dim") for m in methods
                 if not a.methods[m].ok]
        return [head, t, *notes]

    @staticmethod
    def _eval_part(title: str, rep: EvalReport, result: LayerResult | None) -> list[RenderableType]:
        t = Table(box=None, pad_edge=False, title=shown(f"evaluation: {title} ({rep.evaluator})"), title_justify="left",
                  title_style="bold", header_style="bold")
        t.add_column("")
        t.add_column("accuracy", justify="right")
        t.add_column("ranks" if result is None else "ŝ", justify="right")
        t.add_column("params saved", justify="right")
        t.add_row("baseline", f"{rep.baseline['accuracy']:.4f}", "", "")
        for m, o in rep.outcomes.items():
            ranks = ",".join(str(k) for k in o.ranks.values()) or "–"
            t.add_row(style(m)[2], f"{o.accuracy:.4f}", ranks, f"{o.params_saved:,}")
        return [Text(""), t]


