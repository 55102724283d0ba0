"""The app's actions on several open checkpoints: the compare overlays, the trajectory, the grid,
and deltas against a marked base (the numbers come from core; the rules about bases from Session)."""
from __future__ import annotations

from .grid import GridScreen
from .plots import VIEW_TITLES
from .session import LayerKey
from .widgets import Compared, LayerTree, SpectrumPlot


class SeveralCheckpoints:
    """Mixed into RmtApp."""

    def _compared(self, key: LayerKey) -> Compared | None:
        """The selected layer in every open checkpoint; the previous object when nothing changed
        (so the plot keeps its drawings)."""
        if len(self.session.opened) < 2:
            return None
        keys = self.session.matched(key)
        results = [self.session.result(k) if k is not None else None for k in keys]
        c = Compared(self.session.labels, tuple(r.analysis if r is not None and r.reason is None else None
                                                for r in results), sum(k is None for k in keys))
        if c != self._last_compared:
            self._last_compared = c
        return self._last_compared

    def _analyse_matched(self, key: LayerKey) -> None:
        """Analyse the selected layer's matches in the other checkpoints (those not analysed yet)."""
        todo = self.session.unanalysed_matches(key)
        if todo and "compare" not in self.session.jobs:
            self._analyse_keys(self._begin("compare", f"compare {key.name}"), todo)

    def _compute_delta(self, key: LayerKey) -> None:
        base_key = self.session.base_key(key)
        if base_key is not None and self.session.delta(key) is None:
            self._delta_of(self._begin("delta", f"delta {key.name}"), self.session.base, base_key, key)

    def _needs_checkpoints(self, n: int = 2) -> bool:
        if len(self.session.opened) >= n:
            return True
        self._say("open another checkpoint first (o, or give several paths)", severity="warning")
        return False

    def _set_view(self, view: str) -> None:
        self.query_one(SpectrumPlot).set_view(view)
        self._say(f"view: {VIEW_TITLES[view]}", timeout=2)
        self._refresh_selection()

    def action_compare(self) -> None:
        if self._needs_checkpoints():
            view = self.query_one(SpectrumPlot).view
            self._set_view("compare-values" if view == "compare-density" else "compare-density")

    def action_trajectory(self) -> None:
        if self._needs_checkpoints():
            self._set_view("trajectory")

    def action_normalise(self) -> None:
        plot = self.query_one(SpectrumPlot)
        plot.normalise = not plot.normalise
        plot.refresh()
        self._say("overlays: " + ("s / s₊ (each checkpoint's own fitted edge)" if plot.normalise else "raw s"),
                  timeout=2)

    def action_mark_base(self) -> None:
        if self.selected is None or not self._needs_checkpoints():
            return
        ckpt = self.selected.ckpt
        self.session.toggle_base(ckpt)
        self._refresh_titles()
        if self.session.base is None:
            self._say("no base: deltas are off")
        else:
            self._say(f"base: {self.session.opened[ckpt].path.name} — select the layer in another checkpoint and "
                      "press d for ΔW (one lineage only: independent runs have permuted units)")
        self._refresh_selection()

    def action_delta(self) -> None:
        key = self.selected
        if key is None:
            return
        if self.session.base is None:
            self._say("mark a base checkpoint first: select one of its layers and press b", severity="warning")
        elif key.ckpt == self.session.base:
            self._say("this is the base: select the layer in another checkpoint", severity="warning")
        else:
            self._set_view("delta")

    def action_grid(self) -> None:
        if not self._needs_checkpoints():
            return

        def done(key: LayerKey | None) -> None:
            if key is not None:
                self.query_one(LayerTree).reveal(key)

        self.push_screen(GridScreen(self.session, self.options.methods, self.action_analyse_all), done)
