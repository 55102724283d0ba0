"""The terminal app: layer tree, spectrum plot, results panel. Analysis, evaluation and sweeps run in
engine processes (``rmt_tui.engine``), waited on by thread workers that post messages. Every number
comes from ``core``; this module only wires it up."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Header, ProgressBar, Tree
from textual.worker import get_current_worker

from core.errors import RmtError
from core.evaluate.outcomes import EvaluatorChoice
from core.io.layers import Layer
from core.jobs import (
    AnalyseManyRequest,
    AnalyseRequest,
    DeltaRequest,
    EvaluateRequest,
    SensitivityRequest,
    SweepRequest,
)
from core.progress import Cancelled, tracked
from core.scan import AnalysisOptions, LayerResult
from core.text import printable

from .engine import InlineEngine, ProcessEngine
from .grid import GridScreen
from .messages import DeltaDone, EvalDone, JobEnded, JobProgress, LayerAnalysed, SensitivityDone, SweepDone
from .plots import COMPARE_VIEWS, VIEW_TITLES
from .screens import ConfirmQuit, FindScreen, HelpScreen, OpenScreen, SensitivityScreen
from .session import ALL_LAYERS, Job, LayerKey, Opened, Session
from .widgets import Compared, LayerTree, LeanFooter, ResultsPanel, SpectrumPlot

NARROW = 110  # below this many columns the results panel moves under the plot
# Each background job is a named worker method in its own exclusive group (a new job replaces the
# running one of its kind); esc cancels them all.
JOB_GROUPS = ("layer", "compare", "delta", "analyse-all", "evaluate", "sensitivity", "sweep")

# Keys handled by the tree itself, listed in the help screen beside the app's bindings.
NAVIGATION_HELP = [("j / k, ↓ / ↑", "move in the layer tree"), ("enter", "analyse the layer / expand a group"),
                   ("space", "expand or collapse a group"), ("ctrl+p", "command palette")]


class RmtApp(App):
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
    BINDINGS = [
        Binding("a", "analyse_all", "Analyse", tooltip="analyse every layer (values only, cached)", id="analyse_all"),
        Binding("e", "evaluate('layer')", "Eval", tooltip="truncate the selected layer to each method's ŝ "
                "and evaluate (the evaluator's metric, params saved)", id="evaluate_layer"),
        Binding("E", "evaluate('all')", "Eval all", id="evaluate_all",
                tooltip="truncate every layer to each method's ŝ and evaluate"),
        Binding("s", "sweep", "Sweep", id="sweep",
                tooltip="the evaluator's metric and Avew against the kept rank of the selected layer"),
        Binding("S", "sensitivity", "Each layer", show=False, id="sensitivity",
                tooltip="per-layer sensitivity: each layer alone truncated to each method's ŝ, sorted by damage"),
        Binding("v", "cycle_view", "View", id="cycle_view",
                tooltip="cycle the plot: histogram + MP fits, sorted values, sweep (and, with several "
                        "checkpoints, the compare views)"),
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

    def __init__(self, paths: Iterable[str | Path], options: AnalysisOptions | None = None,
                 conv_view: str = "reshape", evaluator: EvaluatorChoice | None = None,
                 engine: InlineEngine | ProcessEngine | None = None, executor: tuple = ("local",)):
        super().__init__()
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
        self.session = Session(conv_view, evaluator or EvaluatorChoice())
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

    def _analyse(self, o: Opened, name: str, job: Job) -> LayerResult:
        """One layer's analysis, from the analysis process (blocks this worker thread only)."""
        return self.analysis_process.call(AnalyseRequest(str(o.path), name, self.options, self.session.conv_view),
                                          job.token)

    def on_unmount(self) -> None:
        self.analysis_process.close()
        self.evaluation_process.close()

    def on_mount(self) -> None:
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
                      delta_wanted=self.session.delta_wanted(key))
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
                                          no_color=self.no_color)
        bar = self.query_one(ProgressBar)
        job = self._progress_job if self._progress_job in self.session.jobs.values() else None
        bar.set_class(job is None, "idle")
        if job is not None:
            bar.update(total=max(job.total, 1), progress=job.done)
        self._refresh_footer()

    # ------------------------------------------------------------------------------- jobs
    def _begin(self, name: str, label: str) -> Job:
        """A job in the session (replacing the running one of its name), shown in the panel;
        its worker reports progress through it."""
        job = self.session.start_job(name, label, on_progress=lambda j: self.post_message(JobProgress(j)))
        if name != "layer":
            self._progress_job = job
        self._refresh_panel()
        return job

    @contextmanager
    def _reporting(self, job: Job) -> Iterator[None]:
        """Around a worker's body: its end, and any error, come back as one JobEnded message."""
        error = None
        try:
            yield
        except Cancelled:
            pass
        except RmtError as exc:
            error = str(exc)
        except Exception as exc:  # a bug or an evaluator's failure must not kill the app
            error = f"{type(exc).__name__}: {exc}"
        self.post_message(JobEnded(job, error))

    def _live(self, job: Job) -> bool:
        """Still wanted: neither cancelled nor replaced, and the worker was not cancelled."""
        return self.session.is_current(job) and not get_current_worker().is_cancelled

    def _post_result(self, job: Job, key: LayerKey, result: LayerResult) -> None:
        if self._live(job):
            self.post_message(LayerAnalysed(key, result))

    @work(thread=True, exclusive=True, group="layer", exit_on_error=False)
    def _analyse_layer(self, job: Job, key: LayerKey) -> None:
        with self._reporting(job):
            self._post_result(job, key, self._analyse(self.session.opened[key.ckpt], key.name, job))

    # ------------------------------------------------------------------------------- several checkpoints
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

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _analyse_keys(self, job: Job, keys: list[LayerKey]) -> None:
        with self._reporting(job):
            for k in tracked(keys, job.progress, job.token, label=lambda k: k.name, finish=False):
                self._post_result(job, k, self._analyse(self.session.opened[k.ckpt], k.name, job))

    def _compute_delta(self, key: LayerKey) -> None:
        base_key = self.session.base_key(key)
        if base_key is not None and self.session.delta(key) is None:
            self._delta_of(self._begin("delta", f"delta {key.name}"), self.session.base, base_key, key)

    @work(thread=True, exclusive=True, group="delta", exit_on_error=False)
    def _delta_of(self, job: Job, base: int, base_key: LayerKey, key: LayerKey) -> None:
        with self._reporting(job):
            b, t = self.session.opened[base], self.session.opened[key.ckpt]
            req = DeltaRequest(str(b.path), str(t.path), self.options, ((base_key.name, key.name),),
                               self.session.conv_view)
            d = self.analysis_process.call(req, job.token)[0]
            if self._live(job):
                self.post_message(DeltaDone(base, key, d))

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

    def action_analyse_all(self) -> None:
        todo = self.session.unanalysed()
        if not todo:
            self._say("every layer is analysed")
            return
        local = self.executor[0] == "local"
        job = self._begin("analyse-all", "analyse all" + ("" if local else f" ({self.executor[0]})"))
        (self._analyse_all if local else self._analyse_all_through_executor)(job, todo)

    @work(thread=True, exclusive=True, group="analyse-all", exit_on_error=False)
    def _analyse_all(self, job: Job, todo: list[tuple[Opened, str]]) -> None:
        with self._reporting(job):
            for o, name in tracked(todo, job.progress, job.token, label=lambda item: item[1]):
                r = self._analyse(o, name, job)
                if not self._live(job):
                    return
                self.post_message(LayerAnalysed(LayerKey(o.index, name), r))

    @work(thread=True, exclusive=True, group="analyse-all", exit_on_error=False)
    def _analyse_all_through_executor(self, job: Job, todo: list[tuple[Opened, str]]) -> None:
        """E.g. Ray: every layer submitted at once, results shown as they finish."""
        with self._reporting(job):
            done = 0
            for o in self.session.opened:
                names = tuple(name for p, name in todo if p is o)
                if not names:
                    continue
                req = AnalyseManyRequest(str(o.path), names, self.options, self.executor, self.session.conv_view)
                self.analysis_process.call(req, job.token, job.stage(done, len(todo), o.path.name),
                                           lambda r, o=o: self._post_result(job, LayerKey(o.index, r.layer.name), r))
                done += len(names)
            job.progress(len(todo), len(todo), "")

    def _results_of(self, o: Opened, layers: list[Layer], job: Job, total: int) -> tuple[LayerResult, ...]:
        """The layers' analyses, computing (and showing) those not known yet: the first stage of a
        job of ``total`` steps (evaluation, sensitivity)."""
        results = []
        for i, layer in enumerate(layers):
            job.progress(i, total, f"analyse {layer.name}")
            known = o.results.get(layer.name)
            results.append(known or self._analyse(o, layer.name, job))
            if known is None:
                self._post_result(job, LayerKey(o.index, layer.name), results[-1])
        return tuple(results)

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

    @work(thread=True, exclusive=True, group="evaluate", exit_on_error=False)
    def _evaluate(self, job: Job, o: Opened, layers: list[Layer], scope: str) -> None:
        with self._reporting(job):
            total = len(layers) + 1 + len(self.options.methods)  # analyses, baseline, one per method
            req = EvaluateRequest(str(o.path), self._results_of(o, layers, job, total), self.session.evaluator,
                                  self.options.methods, conv_view=self.session.conv_view)
            rep = self.evaluation_process.call(req, job.token, job.stage(len(layers), total, "evaluate"))
            if self._live(job):
                self.post_message(EvalDone(o.index, scope, rep))

    def action_sensitivity(self) -> None:
        key = self.selected
        if key is None:
            self._say("select a layer first", severity="warning")
            return
        o = self.session.opened[key.ckpt]
        self._sensitivity(self._begin("sensitivity", f"each layer of {o.path.name}"), o)

    @work(thread=True, exclusive=True, group="sensitivity", exit_on_error=False)
    def _sensitivity(self, job: Job, o: Opened) -> None:
        with self._reporting(job):
            layers = [l for l in o.ckpt.layers if l.analysable]
            total = 2 * len(layers) + 1  # analyses, then about one evaluation per layer and method
            req = SensitivityRequest(str(o.path), self._results_of(o, layers, job, total), self.session.evaluator,
                                     self.options.methods, conv_view=self.session.conv_view)
            rep = self.evaluation_process.call(req, job.token, job.stage(len(layers), total, "evaluate"))
            if self._live(job):
                self.post_message(SensitivityDone(o.index, rep))

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

    @work(thread=True, exclusive=True, group="sweep", exit_on_error=False)
    def _sweep(self, job: Job, key: LayerKey) -> None:
        with self._reporting(job):
            o = self.session.opened[key.ckpt]
            r = o.results.get(key.name) or self._analyse(o, key.name, job)
            req = SweepRequest(str(o.path), r, self.session.evaluator, conv_view=self.session.conv_view)
            rep = self.evaluation_process.call(req, job.token, job.progress)
            if self._live(job):
                self.post_message(SweepDone(key, rep))

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

    def action_help(self) -> None:
        rows = [(self._key_label(b.key), b.tooltip or b.description) for b in self.BINDINGS]
        self.push_screen(HelpScreen(NAVIGATION_HELP + rows))

    @staticmethod
    def _key_label(key: str) -> str:
        return {"slash": "/", "question_mark": "?", "escape": "esc"}.get(key, key)

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
        if action == "sweep" or (action == "evaluate" and parameters == ("layer",)):
            return layer_actions
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for b in self.BINDINGS:
            if b.action not in ("quit", "help"):
                yield SystemCommand(b.tooltip.capitalize(), f"key {self._key_label(b.key)}",
                                    lambda a=b.action: self.run_action(a))
        for key in list(self.query_one(LayerTree).leaves)[:2000]:
            yield SystemCommand(f"Go to {printable(key.name)}", self.session.opened[key.ckpt].path.name,
                                lambda k=key: self.query_one(LayerTree).reveal(k))
