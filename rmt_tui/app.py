"""The terminal app: layer tree, spectrum plot, results panel. Analysis, evaluation and sweeps run in
engine processes (``rmt_tui.engine``), waited on by thread workers that post messages. Every number
comes from ``core``; this module only wires it up."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Header, ProgressBar, Tree

from core.calibration import CalibrationChoice
from core.errors import RmtError
from core.evaluate.outcomes import EvaluatorChoice
from core.scan import AnalysisOptions
from core.text import printable

from .engine import InlineEngine, ProcessEngine
from .grid import GridScreen
from .keys import APP_BINDINGS, KeyBindings
from .messages import (
    DeltaDone,
    EvalDone,
    JobEnded,
    JobProgress,
    LayerAnalysed,
    SensitivityDone,
    SweepDone,
)
from .panel import ResultsPanel
from .plots import COMPARE_VIEWS, VIEW_TITLES
from .screens import ConfirmQuit, FindScreen, OpenScreen, SensitivityScreen
from .session import ALL_LAYERS, Job, LayerKey, Opened, Session
from .several import SeveralCheckpoints
from .widgets import Compared, LayerTree, LeanFooter, SpectrumPlot
from .workers import JOB_GROUPS, JobWorkers

NARROW = 110  # below this many columns the results panel moves under the plot


class RmtApp(JobWorkers, KeyBindings, SeveralCheckpoints, App):
    TITLE = "rmt-tui"
    # What is on screen follows these: setting one redraws what depends on it.
    selected: reactive[LayerKey | None] = reactive(None, init=False)
    last_error: reactive[str | None] = reactive(None, init=False)

    CSS = """
    #main { layout: grid; grid-size: 3 1; grid-columns: 30 1fr 44; height: 1fr; }
    #main.narrow { grid-size: 2 2; grid-columns: 30 1fr; grid-rows: 1fr 10; }
    #main.narrow LayerTree { row-span: 2; }
    LayerTree { border-right: solid $primary-background; }
    #side { padding: 0 1; border-left: solid $primary-background; overflow-y: auto; }
    #main.narrow #side { border-left: none; border-top: solid $primary-background; }
    ResultsPanel { height: auto; }
    ProgressBar { height: 1; }
    ProgressBar.idle { display: none; }
    """
    BINDINGS = APP_BINDINGS

    def __init__(self, paths: Iterable[str | Path], options: AnalysisOptions | None = None,
                 conv_view: str = "reshape", evaluator: EvaluatorChoice | None = None,
                 engine: InlineEngine | ProcessEngine | None = None, executor: tuple = ("local",),
                 keymap: dict[str, str] | None = None, theme: str | None = None, theme_file: Path | None = None,
                 braille: bool = False, mode: str = "hard", calibration: CalibrationChoice | None = None):
        super().__init__()
        self.user_keymap = dict(keymap or {})  # binding id → keys, from the config files
        self._start_theme, self.theme_file, self._braille = theme, theme_file, braille
        # Started here, before Textual replaces sys.stderr (spawning a process needs its real fd);
        # the child imports the numerics while the tree is being shown.
        # Analyses in one process, truncation/evaluation/sweeps (torch, the model, its data) in a
        # second one started on first use: selecting a layer never waits behind an evaluation.
        self.analysis_process = engine or ProcessEngine()
        self.evaluation_process = engine or ProcessEngine(start=False)
        for e in {self.analysis_process, self.evaluation_process}:
            if isinstance(e, ProcessEngine):
                e.on_warning = lambda note: self.call_from_thread(self._say, note, title="warning",
                                                                  severity="warning", timeout=10)
        self.paths = [Path(p) for p in paths]
        self.executor = tuple(executor)  # make_executor's arguments: where `a` runs (local, or a Ray cluster)
        self.options = options or AnalysisOptions()
        self.session = Session(conv_view, evaluator or EvaluatorChoice(), mode, calibration or CalibrationChoice())
        self._progress_job: Job | None = None
        self._footer_shown: tuple | None = None
        self._last_compared: Compared | None = None

    # ------------------------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≋")
        with Vertical(id="main"):
            yield LayerTree(id="tree")
            yield SpectrumPlot(id="plot")
            with Vertical(id="side"):
                yield ResultsPanel(id="panel")
                yield ProgressBar(total=1, show_eta=False, id="progress", classes="idle")
        yield LeanFooter(compact=True)

    def on_unmount(self) -> None:
        self.analysis_process.close()
        self.evaluation_process.close()

    def on_mount(self) -> None:
        if self.user_keymap:
            self.set_keymap(self.user_keymap)
        if self._start_theme:
            self.theme = self._start_theme
        self._theme_saved = self.theme  # from now on a change is the user's: written back
        errors = []
        for p in self.paths:
            try:
                self._add_checkpoint(self.session.open(p))
            except RmtError as exc:
                errors.append(str(exc))
        self._apply_width(self.size.width)
        self._say_match()
        # Checkpoints of one study differ in scale (weight norms grow with training, and with batch
        # size): with three or more, overlays start in units of each one's own fitted edge.
        self.query_one(SpectrumPlot).normalise = len(self.session.opened) >= 3
        self.query_one(SpectrumPlot).braille = self._braille
        if errors:
            self.last_error = errors[-1]
            for e in errors:
                self._say(e, title="cannot open", severity="error", timeout=10)
        if not self.session.opened:
            self.push_screen(OpenScreen(errors[-1] if errors else None, str(self.paths[0]) if self.paths else ""))
        else:
            self._reveal_first(0)
        self._refresh_panel()

    def _reveal_first(self, ckpt: int) -> None:
        """Put the cursor on the checkpoint's first analysable layer (or its first layer)."""
        tree = self.query_one(LayerTree)
        keys = [k for k in tree.leaves if k.ckpt == ckpt]
        first = next((k for k in keys if self.session.layer(k).analysable), keys[0] if keys else None)
        if first is not None:
            tree.reveal(first)
        tree.focus()

    def _add_checkpoint(self, o: Opened) -> None:
        self.query_one(LayerTree).add_checkpoint(o)
        self._refresh_titles()

    def _say_match(self) -> None:
        """How the layers were paired, before anything is compared (names only: nothing read)."""
        if self.session.match is not None:
            self._say("\n".join(self.session.match.summary_lines()[:5]), title="layers matched", timeout=6)

    def _refresh_titles(self) -> None:
        base = self.session.base
        self.sub_title = " · ".join(x.path.name + (" (base)" if x.index == base else "") for x in self.session.opened)
        self.query_one(LayerTree).mark_base(base)

    def on_resize(self, event) -> None:
        self._apply_width(event.size.width)

    def _apply_width(self, width: int) -> None:
        self.query_one("#main").set_class(width < NARROW, "narrow")

    # ------------------------------------------------------------------------------- selection
    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        key = event.node.data
        if isinstance(key, LayerKey):
            self.select(key)

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        key = event.node.data
        if isinstance(key, LayerKey):
            self.select(key, force=True)

    def select(self, key: LayerKey, force: bool = False) -> None:
        changed = key != self.selected
        if self.session.result(key) is None:
            if not self.session.layer(key).analysable:
                self.session.record_no_matrix(key)
            elif changed or force:
                self._analyse_layer(self._begin("layer", f"analyse {key.name}"), key)
        self.selected = key  # watch_selected redraws

    def watch_theme(self, theme: str) -> None:
        """A theme chosen in the app (the palette's "Change theme") is remembered in the config file."""
        if getattr(self, "_theme_saved", theme) == theme or self.theme_file is None:
            return
        from .config import write_theme

        try:
            write_theme(self.theme_file, theme)
        except OSError as exc:
            self._say(f"theme not saved: {self.theme_file}: {exc.strerror or exc}", severity="warning")
            return
        self._theme_saved = theme
        self._say(f"theme {theme} saved in {self.theme_file}", timeout=4)

    def watch_selected(self) -> None:
        self._refresh_selection()

    def watch_last_error(self) -> None:
        self._refresh_panel()

    def _refresh_selection(self) -> None:
        key = self.selected
        plot = self.query_one(SpectrumPlot)
        if key is None:
            plot.show(None, None)
        else:
            o = self.session.opened[key.ckpt]
            result = o.results.get(key.name)
            plot.delta_note = self.session.delta_note(key)
            plot.show(result, o.sweeps.get(key.name), "" if result is not None else "analysing…",
                      compare=self._compared(key), delta=self.session.delta(key),
                      delta_wanted=self.session.delta_wanted(key), whitened=o.whitened.get(key.name))
            if plot.view in COMPARE_VIEWS:
                self._analyse_matched(key)
            elif plot.view == "delta":
                self._compute_delta(key)
        self._refresh_panel()

    def _refresh_panel(self) -> None:
        key = self.selected
        o = self.session.opened[key.ckpt] if key else None
        layer = self.session.layer(key) if key else None
        result = self.session.result(key) if key else None
        plot = self.query_one(SpectrumPlot)
        self.query_one(ResultsPanel).show(o, layer, result, list(self.session.jobs.values()), self.last_error,
                                          view=plot.view, compare=plot.compare, delta=plot.delta,
                                          no_color=self.no_color, mode=self.session.mode,
                                          whitened=plot.whitened)
        bar = self.query_one(ProgressBar)
        job = self._progress_job if self._progress_job in self.session.jobs.values() else None
        bar.set_class(job is None, "idle")
        if job is not None:
            bar.update(total=max(job.total, 1), progress=job.done)
        self._refresh_footer()

    # ------------------------------------------------------------------------------- jobs
    # (the worker methods are in workers.py; the several-checkpoint actions in several.py)
    def action_analyse_all(self) -> None:
        todo = self.session.unanalysed()
        if not todo:
            self._say("every layer is analysed")
            return
        local = self.executor[0] == "local"
        job = self._begin("analyse-all", "analyse all" + ("" if local else f" ({self.executor[0]})"))
        (self._analyse_all if local else self._analyse_all_through_executor)(job, todo)

    def action_evaluate(self, scope: str) -> None:
        key = self.selected
        if key is None:
            self._say("select a layer first", severity="warning")
            return
        o = self.session.opened[key.ckpt]
        if scope == "layer" and not self.session.layer(key).analysable:
            self._say(f"{key.name} has no matrix to truncate", severity="warning")
            return
        layers = [self.session.layer(key)] if scope == "layer" else [l for l in o.ckpt.layers if l.analysable]
        job = self._begin("evaluate", f"evaluate {'all layers' if scope == 'all' else key.name}")
        self._evaluate(job, o, layers, key.name if scope == "layer" else ALL_LAYERS)

    def action_sensitivity(self) -> None:
        key = self.selected
        if key is None:
            self._say("select a layer first", severity="warning")
            return
        o = self.session.opened[key.ckpt]
        self._sensitivity(self._begin("sensitivity", f"each layer of {o.path.name}"), o)

    def on_sensitivity_done(self, msg: SensitivityDone) -> None:
        from core.report import sensitivity_document

        from .tables import sensitivity_table

        o = self.session.opened[msg.ckpt]
        doc = sensitivity_document(str(o.path), msg.report)
        self.push_screen(SensitivityScreen(f"{o.path.name}: each layer alone at ŝ ({msg.report.evaluator})",
                                           sensitivity_table(doc)))

    def action_sweep(self) -> None:
        key = self.selected
        if key is None or not self.session.layer(key).analysable:
            self._say("select an analysable layer first", severity="warning")
            return
        self._sweep(self._begin("sweep", f"sweep {key.name}"), key)

    def action_cancel(self) -> None:
        cancelled = self.session.cancel_all()
        for group in JOB_GROUPS:
            self.workers.cancel_group(self, group)
        if cancelled:
            self._say("cancelled: " + ", ".join(cancelled))
        self._refresh_selection()

    # ------------------------------------------------------------------------------- messages
    def on_layer_analysed(self, msg: LayerAnalysed) -> None:
        self.session.record_result(msg.key, msg.result)
        self.query_one(LayerTree).update_leaf(msg.key, msg.result.layer, msg.result)
        if isinstance(self.screen, GridScreen):
            self.screen.refresh_key(msg.key)
        # A result for another layer updates the tree only, unless the compare views show it.
        if self.selected is not None and (msg.key == self.selected or msg.key in self.session.matched(self.selected)):
            self._refresh_selection()

    def on_delta_done(self, msg: DeltaDone) -> None:
        self.session.record_delta(msg.base, msg.key, msg.result)
        if msg.key == self.selected:
            self._refresh_selection()

    def on_job_progress(self, msg: JobProgress) -> None:
        if self.session.is_current(msg.job):
            self._refresh_panel()

    def on_job_ended(self, msg: JobEnded) -> None:
        current = self.session.is_current(msg.job)
        self.session.finish_job(msg.job)
        if msg.error and current:
            self._error(msg.error)
        elif current and msg.job.name != "layer":
            self._say(f"done: {msg.job.label}")
        self._refresh_panel()

    def on_eval_done(self, msg: EvalDone) -> None:
        self.session.record_eval(msg.ckpt, msg.scope, msg.report)
        self._refresh_panel()

    def on_sweep_done(self, msg: SweepDone) -> None:
        self.session.record_sweep(msg.key, msg.report)
        if msg.key == self.selected:
            plot = self.query_one(SpectrumPlot)
            plot.view = "sweep"
            self._refresh_selection()

    def _say(self, message: str, **kw) -> None:
        """A toast. Messages may hold tensor names, so never markup and never raw control characters."""
        self.notify(printable(message), markup=False, **kw)

    def _error(self, message: str) -> None:
        self._say(message, title="error", severity="error", timeout=10)
        self.last_error = message  # watch_last_error redraws the panel

    # ------------------------------------------------------------------------------- other actions
    def action_cycle_view(self) -> None:
        view = self.query_one(SpectrumPlot).cycle()
        self._say(f"view: {VIEW_TITLES[view]}", timeout=2)
        self._refresh_selection()

    def action_find(self) -> None:
        names = [k for k in self.query_one(LayerTree).leaves]
        labels = {(f"{self.session.opened[k.ckpt].path.name}: {k.name}" if len(self.session.opened) > 1 else k.name): k
                  for k in names}

        def done(choice: str | None) -> None:
            if choice:
                self.query_one(LayerTree).reveal(labels[choice])

        self.push_screen(FindScreen(list(labels)), done)

    def action_open(self) -> None:
        self.push_screen(OpenScreen())

    def open_from_screen(self, screen: OpenScreen, path: str) -> None:
        before = len(self.session.opened)
        try:
            o = self.session.open(path)
        except RmtError as exc:
            screen.show_error(str(exc))
            return
        if len(self.session.opened) > before:
            self._add_checkpoint(o)
            self._say_match()
            self._refresh_footer()
        screen.dismiss(path)
        self._reveal_first(o.index)

    async def action_quit(self) -> None:
        running = [j.label for j in self.session.jobs.values()]
        if not running:
            self.exit()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.action_cancel()
                self.exit()

        self.push_screen(ConfirmQuit(running), answer)
