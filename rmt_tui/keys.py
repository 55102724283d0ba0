"""The app's keys: every binding with its id and help text (the help screen, the footer and the
command palette all read them), and which of them apply now."""
from __future__ import annotations

from collections.abc import Iterable

from textual.app import SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from core.scan import AnalysisOptions
from core.text import printable

from .grid import GridScreen
from .screens import HelpScreen
from .widgets import LayerTree, SpectrumPlot

APP_BINDINGS = [
    Binding("a", "analyse_all", "Analyse", tooltip="analyse every layer (values only, cached)", id="analyse_all"),
    Binding("e", "evaluate('layer')", "Eval", tooltip="truncate the selected layer to each method's ŝ "
            "and evaluate (the evaluator's metric, params saved)", id="evaluate_layer"),
    Binding("E", "evaluate('all')", "Eval all", id="evaluate_all",
            tooltip="truncate every layer to each method's ŝ and evaluate"),
    Binding("s", "sweep", "Sweep", id="sweep",
            tooltip="the evaluator's metric and Avew against the kept rank of the selected layer"),
    Binding("S", "sensitivity", "Each layer", show=False, id="sensitivity",
            tooltip="per-layer sensitivity: each layer alone truncated to each method's ŝ, sorted by damage"),
    Binding("m", "cycle_mode", "Mode", show=False, id="cycle_mode",
            tooltip="cycle the truncation mode of e, E, s and S: hard, shrink (de-biased values), whitened "
                    "(W·L's top values mapped back; calibration data from the evaluator, collected once)"),
    Binding("w", "whitened", "Whitened", show=False, id="whitened",
            tooltip="the spectrum of W·L (L: the Cholesky factor of the layer's calibration-input Gram matrix) "
                    "with each method's thresholds and MP fit"),
    Binding("v", "cycle_view", "View", id="cycle_view",
            tooltip="cycle the plot: histogram + MP fits, sorted values, sweep (and, with several "
                    "checkpoints, the compare views)"),
    Binding("x", "export", "Figure", id="export", show=False,
            tooltip="save the plot on screen as a publication figure (PNG in the current folder; needs [plots])"),
    Binding("c", "compare", "Compare", id="compare",
            tooltip="overlay this layer of every open checkpoint (again: sorted values instead of density)"),
    Binding("n", "normalise", "Normalise", show=False, id="normalise",
            tooltip="overlays in units of each checkpoint's own fitted MP edge s₊ (on / off)"),
    Binding("t", "trajectory", "Trajectory", show=False, id="trajectory",
            tooltip="ŝ and σ̂² of this layer against the checkpoints, in the order they were opened"),
    Binding("g", "grid", "Grid", id="grid", tooltip="layers × checkpoints grid of ŝ; enter opens a layer"),
    Binding("b", "mark_base", "Base", show=False, id="mark_base",
            tooltip="mark (or unmark) this layer's checkpoint as the base of deltas"),
    Binding("d", "delta", "Delta", id="delta",
            tooltip="ΔW = this layer − the base's: its spectrum, ŝ(ΔW), energy and stable ranks"),
    Binding("slash", "find", "Find", tooltip="find a layer by name", id="find"),
    Binding("o", "open", "Open", show=False, tooltip="open another checkpoint", id="open"),
    Binding("escape", "cancel", "Cancel", tooltip="cancel running work", id="cancel"),
    Binding("question_mark", "help", "Help", tooltip="this help", id="help"),
    Binding("q", "quit", "Quit", tooltip="quit (asks first while work runs)", id="quit"),
]

# Keys handled by the tree itself, listed in the help screen beside the app's bindings.
NAVIGATION_HELP = [("j / k, ↓ / ↑", "move in the layer tree"), ("enter", "analyse the layer / expand a group"),
                   ("space", "expand or collapse a group"), ("ctrl+p", "command palette")]


class KeyBindings:
    """Mixed into RmtApp: help, footer and palette from BINDINGS."""

    def action_help(self) -> None:
        # With each binding's id: what [keymap] in the config file remaps.
        rows = [(self._key_label(self.user_keymap.get(b.id, b.key)), f"{b.tooltip or b.description}  [{b.id}]")
                for b in self.BINDINGS]
        self.push_screen(HelpScreen(NAVIGATION_HELP + rows))

    @staticmethod
    def _key_label(key: str) -> str:
        return {"slash": "/", "question_mark": "?", "escape": "esc"}.get(key, key)

    def _footer_state(self) -> tuple:
        layer_actions = self.selected is not None and self.session.layer(self.selected).analysable
        several = len(self.session.opened) >= 2
        delta = self.selected is not None and self.session.delta_wanted(self.selected)
        return bool(self.session.jobs), layer_actions, several, delta

    def _refresh_footer(self) -> None:
        """Refresh the footer's keys only when what ``check_action`` answers has changed: each
        refresh rebuilds the footer's widgets, which is wasted work while moving in the tree."""
        state = self._footer_state()
        if state != self._footer_shown:
            self._footer_shown = state
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Footer shows the keys that matter now: cancel only while work runs; layer actions only
        on an analysable layer."""
        running, layer_actions, several, delta = self._footer_state()
        if isinstance(self.screen, GridScreen):  # the grid has its own keys; the app's act on the tree
            return action in ("quit", "help", "cancel") and (action != "cancel" or running)
        if action == "cancel":
            return running
        if action in ("compare", "grid", "trajectory", "mark_base"):
            return several
        if action == "delta":
            return delta
        if action in ("sweep", "whitened") or (action == "evaluate" and parameters == ("layer",)):
            return layer_actions
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for b in self.BINDINGS:
            if b.action not in ("quit", "help"):
                yield SystemCommand(b.tooltip.capitalize(), f"key {self._key_label(b.key)}",
                                    lambda a=b.action: self.run_action(a))
        yield from self._analysis_commands()
        for key in list(self.query_one(LayerTree).leaves)[:2000]:
            yield SystemCommand(f"Go to {printable(key.name)}", self.session.opened[key.ckpt].path.name,
                                lambda k=key: self.query_one(LayerTree).reveal(k))

    def toggle_braille(self) -> None:
        plot = self.query_one(SpectrumPlot)
        plot.braille = not plot.braille
        plot.refresh()

    def _analysis_commands(self) -> Iterable[SystemCommand]:
        """Choose what the analysis computes: each registered method on or off, the noise
        diagnosis, equalisation and the cosines behind Avew (every layer is analysed again)."""
        from dataclasses import replace

        from core.rmt.methods import METHODS

        o = self.options
        for name, cls in METHODS.items():
            on = name in o.methods
            if on and len(o.methods) == 1:
                continue  # the last method stays
            methods = tuple(m for m in o.methods if m != name) if on else (*o.methods, name)
            yield SystemCommand(f"Methods: {'remove' if on else 'add'} {cls.label}", f"now: {', '.join(o.methods)}",
                                lambda m=methods: self.set_options(replace(self.options, methods=m)))
        yield SystemCommand(f"Noise diagnosis: {'off' if o.noise else 'on'}", "mp / heteroscedastic / correlated / "
                            "heavy-tailed per layer (a second spectrum and a shuffle each)",
                            lambda: self.set_options(replace(self.options, noise=not self.options.noise)))
        yield SystemCommand(f"Equalise rows and columns: {'off' if o.equalise else 'on'}",
                            "every method analyses W̃; W's own KS is kept beside",
                            lambda: self.set_options(replace(self.options, equalise=not self.options.equalise)))
        plot = self.query_one(SpectrumPlot)
        yield SystemCommand(f"Plot curves: {'markers' if plot.braille else 'braille (finer)'}",
                            "the MP fits drawn in braille dots, 2 × 4 per cell (with colour)", self.toggle_braille)
        from core.rmt.analysis import COSINES

        for kind in COSINES:
            if kind != o.cosines:
                yield SystemCommand(f"Avew cosines: {kind}", f"now: {o.cosines}",
                                    lambda k=kind: self.set_options(replace(self.options, cosines=k)))

    def set_options(self, options: AnalysisOptions) -> None:
        """New analysis options (from the palette): what was computed with the old ones is
        forgotten, the tree's marks cleared, and the selected layer analysed again."""
        self.action_cancel()
        self.options = options
        self.session.forget_results()
        tree = self.query_one(LayerTree)
        for key in tree.leaves:
            tree.update_leaf(key, self.session.layer(key), None)
        flags = [f for f, on in (("noise", options.noise), ("equalised", options.equalise)) if on]
        self._say(f"methods: {', '.join(options.methods)}; cosines {options.cosines}"
                  + (f"; {', '.join(flags)}" if flags else ""), timeout=4)
        if self.selected is not None:
            self.select(self.selected, force=True)
