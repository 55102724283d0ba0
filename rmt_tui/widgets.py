"""The app's layer tree and spectrum plot (the results panel is ``panel``), and its footer."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Footer, Tree
from textual.widgets.tree import TreeNode

from core.io.layers import Layer
from core.plotdata import overlay_density, overlay_values
from core.rmt.analysis import MatrixAnalysis
from core.scan import LayerResult

from .plots import (
    COMPARE_VIEWS,
    VIEWS,
    draw_histogram,
    draw_overlay_density,
    draw_overlay_values,
    draw_sweep,
    draw_trajectory,
    draw_values,
)
from .render import noise_cell, rank_cell, shown
from .session import LayerKey, Opened
from .tables import short_labels

if TYPE_CHECKING:
    from core.compare.delta import DeltaResult
    from core.evaluate.outcomes import SweepReport

class LeanFooter(Footer):
    """Textual's Footer (8.2.8) rebuilds its keys whenever the bindings change, and each new key
    watches the footer's ``compact``; Textual drops a closed key's watcher only when ``compact``
    changes, so a long session kept every key it ever showed (the soak: +190 MB in ten minutes).
    Flipping ``compact`` after each rebuild lets Textual drop them."""

    async def recompose(self) -> None:
        await super().recompose()
        compact = self.compact
        self.compact = not compact
        self.compact = compact


TREE_METHODS = 2  # the tree carries the first two selected methods' ŝ (the panel lists every method)


def rank_marks(result: LayerResult | None) -> Text:
    """'B97 G185' (⚠ on a poor MP fit), after the noise model's letter when diagnosed (m, h, c, t);
    nothing when not analysed yet, '–' when skipped."""
    if result is None:
        return Text()
    if result.reason is not None:
        return Text(" –", style="dim")
    a = result.analysis
    t = noise_cell(a.noise.to_dict(), letter=True) if a.noise is not None else Text()  # first: never cut off
    return t.append_text(rank_cell({m: r.to_dict() for m, r in list(a.methods.items())[:TREE_METHODS]},
                                   labelled=True))


class LayerTree(Tree[LayerKey | None]):
    """Checkpoints → dotted-name groups → layers, in model order. Leaves carry a LayerKey."""

    BINDINGS = [Binding("j", "cursor_down", "Down", show=False), Binding("k", "cursor_up", "Up", show=False)]

    def __init__(self, **kw):
        super().__init__("checkpoints", **kw)
        self.show_root = False
        self.guide_depth = 2
        self.leaves: dict[LayerKey, TreeNode] = {}
        self.tops: list[tuple[str, TreeNode]] = []  # each checkpoint's name and node

    def add_checkpoint(self, o: Opened) -> TreeNode:
        top = self.root.add(shown(o.path.name, "bold"), data=None, expand=True)
        self.tops.append((o.path.name, top))
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

    def mark_base(self, base: int | None) -> None:
        for i, (name, node) in enumerate(self.tops):
            label = shown(name, "bold")
            if i == base:
                label.append(" (base)", style="bold yellow")
            node.set_label(label)

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


class Compared:
    """One layer across the open checkpoints: labels and analyses (None: not analysed yet, or
    no such layer). Built by the app only when something changed, so plots keep their drawings."""

    def __init__(self, labels: tuple[str, ...], analyses: tuple[MatrixAnalysis | None, ...], missing: int):
        self.labels, self.analyses, self.missing = labels, analyses, missing
        self.short = tuple(short_labels(list(labels))[0])

    def items(self) -> list[tuple[str, MatrixAnalysis]]:
        return [(label, a) for label, a in zip(self.short, self.analyses) if a is not None and a.sv.size]

    def __eq__(self, other) -> bool:
        return isinstance(other, Compared) and (self.labels, self.missing) == (other.labels, other.missing) and \
            all(a is b for a, b in zip(self.analyses, other.analyses))

    __hash__ = None


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
        self.compare: Compared | None = None  # the layer in every open checkpoint (two or more open)
        self.delta: DeltaResult | None = None
        self.whitened: LayerResult | None = None  # W·L's analysis, once computed (w)
        self.delta_wanted = False  # a base is marked and this layer is in another checkpoint
        self.normalise = False  # overlays in units of each checkpoint's own fitted edge s₊
        self.delta_note = ""  # why there is no delta to wait for (the base has no such layer)
        self.braille = False  # MP curves in braille dots (the palette's "Plot curves"; [app] braille)
        self.message = "select a layer"
        self._drawn: dict[str, tuple[tuple, Text]] = {}  # view → ((data, w, h, no_color, normalise), drawing)
        self._predraw = None

    def show(self, result: LayerResult | None, sweep: SweepReport | None, message: str = "",
             compare: Compared | None = None, delta: DeltaResult | None = None, delta_wanted: bool = False,
             whitened: LayerResult | None = None) -> None:
        self.result, self.sweep, self.message, self.whitened = result, sweep, message, whitened
        self.compare, self.delta, self.delta_wanted = compare, delta, delta_wanted
        if self.view not in self.views():
            self.view = VIEWS[0]
        self.refresh()
        self._schedule_predraw(self.PREDRAW_DELAY)

    def views(self) -> tuple[str, ...]:
        """The views that apply now: compare views with two or more checkpoints open, the delta
        view when a base is marked and the layer is in another checkpoint."""
        return VIEWS + (COMPARE_VIEWS if self.compare is not None else ()) + (("delta",) if self.delta_wanted else ())

    def on_resize(self) -> None:
        self._schedule_predraw(self.PREDRAW_DELAY)

    def _schedule_predraw(self, delay: float) -> None:
        if self._predraw is not None:
            self._predraw.stop()
        self._predraw = self.set_timer(delay, self._predraw_one)

    def _predraw_one(self) -> None:
        """Draw one view that is not on screen (one per timer tick, so a key pressed meanwhile
        waits for at most one drawing), then schedule the next."""
        if any(self._draw(view) for view in self.views() if view != self.view):
            self._schedule_predraw(0.05)

    def cycle(self) -> str:
        views = self.views()
        self.view = views[(views.index(self.view) + 1) % len(views)] if self.view in views else views[0]
        self.refresh()
        return self.view

    def set_view(self, view: str) -> None:
        self.view = view
        self.refresh()

    def _data(self, view: str):
        if view == "sweep":
            return self.sweep
        if view in COMPARE_VIEWS:
            c = self.compare
            return c if c is not None and sum(a is not None for a in c.analyses) >= (1 if view == "trajectory" else 2) \
                else None
        if view == "delta":
            a = self.delta.analysis if self.delta is not None else None
        elif view == "whitened":
            a = self.whitened.analysis if self.whitened is not None else None
        else:
            a = self.result.analysis if self.result is not None else None
        return a if a is not None and a.sv.size else None

    def _draw(self, view: str) -> bool:
        """Draw the view at the current size unless its drawing is kept; True if it drew now."""
        data, w, h = self._data(view), self.size.width, self.size.height
        if data is None or w < 20 or h < 6:
            return False
        color = not self.app.no_color
        key = (w, h, self.app.no_color, self.normalise, self.braille)
        kept = self._drawn.get(view)
        if kept is not None and kept[0][0] is data and kept[0][1:] == key:
            return False
        if view == "compare-density":
            text = draw_overlay_density(overlay_density(data.items(), self.normalise, bins=max(10, min(60, w // 2))),
                                        w, h, color)
        elif view == "compare-values":
            text = draw_overlay_values(overlay_values(data.items(), self.normalise, columns=w), w, h, color)
        elif view == "trajectory":
            text = draw_trajectory(list(data.short), list(data.analyses), w, h, color)
        elif view in ("delta", "whitened"):
            text = draw_histogram(data, w, h, color, title=view, braille=self.braille)
        elif view == "histogram":
            text = draw_histogram(data, w, h, color, braille=self.braille)
        else:
            text = {"values": draw_values, "sweep": draw_sweep}[view](data, w, h, color)
        self._drawn[view] = ((data, *key), Text.from_ansi(text))
        return True

    def render(self) -> RenderableType:
        w, h = self.size.width, self.size.height
        if w < 20 or h < 6:
            return Text("(too small to plot)", style="dim")
        if self._data(self.view) is None:
            if self.view == "sweep":
                return Text("sweep view: no sweep for this layer yet — press s to run one", style="dim")
            if self.view == "whitened":
                w = self.whitened
                if w is not None and w.reason:
                    return Text(f"whitened view: {w.reason}", style="dim")
                return Text("whitened view: press w to compute W·L's spectrum (the calibration data are collected "
                            "once, from the evaluator)", style="dim")
            if self.view in COMPARE_VIEWS:
                c = self.compare
                if c is not None and c.missing == len(c.analyses) - 1:
                    return Text("no other open checkpoint has this layer", style="dim")
                return Text("analysing the layer in every checkpoint…", style="dim")
            if self.view == "delta":
                d = self.delta
                why = (f"no delta: {d.reason}" if d.reason else f"no delta: {d.status}") if d is not None else \
                    self.delta_note or "computing ΔW = tuned − base…"
                return shown(why, "dim")
            reason = self.result.reason if self.result is not None else None
            return shown(self.message or (f"not analysed: {reason}" if reason else "select a layer"), "dim")
        self._draw(self.view)
        return self._drawn[self.view][1]
