"""The terminal app: layer tree, spectrum plot, results panel. Analysis, evaluation and sweeps run in
engine processes (``rmt_tui.engine``), waited on by thread workers that post messages. Every number
comes from ``core``; this module only wires it up."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Header, ProgressBar, Tree
from textual.worker import get_current_worker

from core.checkpoint import Layer
from core.errors import RmtError
from core.scan import AnalysisOptions, Cancelled, LayerResult
from core.text import printable

from .engine import InlineEngine, ProcessEngine
from .grid import GridScreen
from .messages import DeltaDone, EvalDone, JobEnded, JobProgress, LayerAnalysed, SensitivityDone, SweepDone
from .plots import COMPARE_VIEWS, VIEW_TITLES
from .screens import ConfirmQuit, FindScreen, HelpScreen, OpenScreen, SensitivityScreen
from .session import ALL_LAYERS, Job, LayerKey, Opened, Session
from .widgets import Compared, LayerTree, LeanFooter, ResultsPanel, SpectrumPlot

NARROW = 110  # below this many columns the results panel moves under the plot

# Keys handled by the tree itself, listed in the help screen beside the app's bindings.
NAVIGATION_HELP = [("j / k, ↓ / ↑", "move in the layer tree"), ("enter", "analyse the layer / expand a group"),
                   ("space", "expand or collapse a group"), ("ctrl+p", "command palette")]


class RmtApp(App):
    TITLE = "rmt-tui"
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
                 conv_view: str = "reshape", evaluator_spec: str | None = None,
                 engine: InlineEngine | ProcessEngine | None = None, executor: tuple = ("local",)):
        super().__init__()
        # Started here, before Textual replaces sys.stderr (spawning a process needs its real fd);
        # the child imports the numerics while the tree is being shown.
        # Analyses in one process, truncation/evaluation/sweeps (torch, the model, its data) in a
        # second one started on first use: selecting a layer never waits behind an evaluation.
        self.engine = engine or ProcessEngine()
        self.worker = engine or ProcessEngine(start=False)
        for e in {self.engine, self.worker}:
            if isinstance(e, ProcessEngine):
                e.on_warning = lambda note: self.call_from_thread(self._say, note, title="warning",
                                                                  severity="warning", timeout=10)
        self.paths = [Path(p) for p in paths]
        self.executor = tuple(executor)  # make_executor's arguments: where `a` runs (local, or a Ray cluster)
        self.options = options or AnalysisOptions()
        self.session = Session(conv_view, evaluator_spec)
        self.selected: LayerKey | None = None
        self.last_error: str | None = None
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

    def _analyse(self, o: Opened, layer: Layer, job: Job) -> LayerResult:
        return self.engine.analyse(o.path, self.session.conv_view, layer.name, self.options, job.token)

    def on_unmount(self) -> None:
        self.engine.close()
        self.worker.close()

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
        self.selected = key
        result = self.session.result(key)
        if result is None and self.session.layer(key).analysable:
            if changed or force:
                self._analyse_selected(key)
        elif result is None:  # no matrix view: the layer's reason is the whole story
            self.session.opened[key.ckpt].results[key.name] = LayerResult(self.session.layer(key), None)
        self._refresh_selection()
        self._refresh_footer()

    def _refresh_selection(self) -> None:
        key = self.selected
        plot = self.query_one(SpectrumPlot)
        if key is None:
            plot.show(None, None)
        else:
            o = self.session.opened[key.ckpt]
            result = o.results.get(key.name)
            plot.delta_note = self._delta_note(key)
            plot.show(result, o.sweeps.get(key.name), "" if result is not None else "analysing…",
                      compare=self._compared(key), delta=self._delta(key), delta_wanted=self._delta_wanted(key))
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

    # ------------------------------------------------------------------------------- jobs
    def _start(self, name: str, label: str, body: Callable[[Job], None], exclusive_group: str) -> Job:
        """Run ``body(job)`` in a thread worker; its progress and end come back as messages."""
        job = self.session.start_job(name, label, on_progress=lambda j: self.post_message(JobProgress(j)))
        if name != "layer":
            self._progress_job = job

        def run() -> None:
            error = None
            try:
                body(job)
            except Cancelled:
                pass
            except RmtError as exc:
                error = str(exc)
            except Exception as exc:  # a bug or an evaluator's failure must not kill the app
                error = f"{type(exc).__name__}: {exc}"
            self.post_message(JobEnded(job, error))

        self.run_worker(run, thread=True, group=exclusive_group, exclusive=True, name=name)
        self._refresh_panel()
        self._refresh_footer()
        return job

    def _live(self, job: Job) -> bool:
        """Still wanted: neither cancelled nor replaced, and the worker was not cancelled."""
        return self.session.is_current(job) and not get_current_worker().is_cancelled

    def _analyse_selected(self, key: LayerKey) -> None:
        o = self.session.opened[key.ckpt]
        layer = self.session.layer(key)

        def body(job: Job) -> None:
            r = self._analyse(o, layer, job)
            if self._live(job):
                self.post_message(LayerAnalysed(key, r))

        self._start("layer", f"analyse {layer.name}", body, "layer")

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
        todo = [k for k in self.session.matched(key) if k is not None and self.session.result(k) is None
                and self.session.layer(k).analysable]
        if not todo or "compare" in self.session.jobs:
            return

        def body(job: Job) -> None:
            for i, k in enumerate(todo):
                job.progress(i, len(todo), k.name)
                r = self._analyse(self.session.opened[k.ckpt], self.session.layer(k), job)
                if not self._live(job):
                    return
                self.post_message(LayerAnalysed(k, r))

        self._start("compare", f"compare {key.name}", body, "compare")

    def _delta_wanted(self, key: LayerKey) -> bool:
        return self.session.base is not None and key.ckpt != self.session.base

    def _base_key(self, key: LayerKey) -> LayerKey | None:
        return self.session.matched(key)[self.session.base] if self._delta_wanted(key) else None

    def _delta(self, key: LayerKey):
        return self.session.deltas.get((self.session.base, key)) if self._delta_wanted(key) else None

    def _delta_note(self, key: LayerKey) -> str:
        if self._delta_wanted(key) and self._base_key(key) is None:
            return f"no delta: {self.session.opened[self.session.base].path.name} (base) has no such layer"
        return ""

    def _compute_delta(self, key: LayerKey) -> None:
        base_key = self._base_key(key)
        if base_key is None or self._delta(key) is not None:
            return
        base = self.session.base
        b, t = self.session.opened[base], self.session.opened[key.ckpt]

        def body(job: Job) -> None:
            d = self.engine.delta(b.path, t.path, self.session.conv_view, base_key.name, key.name, self.options,
                                  job.token)
            if self._live(job):
                self.post_message(DeltaDone(base, key, d))

        self._start("delta", f"delta {key.name}", body, "delta")

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
        self.session.base = None if self.session.base == ckpt else ckpt
        self._refresh_titles()
        if self.session.base is None:
            self._say("no base: deltas are off")
        else:
            self._say(f"base: {self.session.opened[ckpt].path.name} — select the layer in another checkpoint and "
                      "press d for ΔW (one lineage only: independent runs have permuted units)")
        self._refresh_selection()
        self._refresh_footer()

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
        todo = [(o, l) for o in self.session.opened for l in o.ckpt.layers if l.name not in o.results]
        if not todo:
            self._say("every layer is analysed")
            return

        def body(job: Job) -> None:
            for i, (o, layer) in enumerate(todo):
                job.token.check()
                job.progress(i, len(todo), layer.name)
                r = self._analyse(o, layer, job)
                if not self._live(job):
                    return
                self.post_message(LayerAnalysed(LayerKey(o.index, layer.name), r))
            job.progress(len(todo), len(todo), "")

        def through_executor(job: Job) -> None:  # e.g. Ray: all submitted at once, results as they finish
            done = 0
            for o in self.session.opened:
                names = [layer.name for p, layer in todo if p is o]
                if not names:
                    continue

                def post(r, o=o):
                    if self._live(job):
                        self.post_message(LayerAnalysed(LayerKey(o.index, r.layer.name), r))

                self.engine.analyse_many(o.path, self.session.conv_view, names, self.options, self.executor, post,
                                         cancel=job.token, progress=job.stage(done, len(todo), o.path.name))
                done += len(names)
            job.progress(len(todo), len(todo), "")

        label = "analyse all" + (f" ({self.executor[0]})" if self.executor[0] != "local" else "")
        self._start("analyse-all", label, body if self.executor[0] == "local" else through_executor, "analyse-all")

    def _results_of(self, o: Opened, layers: list[Layer], job: Job, total: int) -> list[LayerResult]:
        """The layers' analyses, computing (and showing) those not known yet: the first stage of a
        job of ``total`` steps (evaluation, sensitivity)."""
        results = []
        for i, layer in enumerate(layers):
            job.progress(i, total, f"analyse {layer.name}")
            r = o.results.get(layer.name) or self._analyse(o, layer, job)
            results.append(r)
            if layer.name not in o.results and self._live(job):
                self.post_message(LayerAnalysed(LayerKey(o.index, layer.name), r))
        return results

    def action_evaluate(self, scope: str) -> None:
        key = self.selected
        if key is None:
            self._say("select a layer first", severity="warning")
            return
        o = self.session.opened[key.ckpt]
        if scope == "layer" and not self.session.layer(key).analysable:
            self._say(f"{key.name} has no matrix to truncate", severity="warning")
            return
        target = key.name if scope == "layer" else ALL_LAYERS
        layers = [self.session.layer(key)] if scope == "layer" else [l for l in o.ckpt.layers if l.analysable]

        def body(job: Job) -> None:
            total = len(layers) + 1 + len(self.options.methods)  # analyses, baseline, one per method
            results = self._results_of(o, layers, job, total)
            rep = self.worker.evaluate(o.path, self.session.conv_view, results, self.session.evaluator_spec,
                                       self.options.methods, cancel=job.token,
                                       progress=job.stage(len(layers), total, "evaluate"))
            if self._live(job):
                self.post_message(EvalDone(o.index, target, rep))

        self._start("evaluate", f"evaluate {'all layers' if scope == 'all' else key.name}", body, "evaluate")

    def action_sensitivity(self) -> None:
        key = self.selected
        if key is None:
            self._say("select a layer first", severity="warning")
            return
        o = self.session.opened[key.ckpt]
        layers = [l for l in o.ckpt.layers if l.analysable]

        def body(job: Job) -> None:
            total = 2 * len(layers) + 1  # analyses, then about one evaluation per layer and method
            results = self._results_of(o, layers, job, total)
            rep = self.worker.sensitivity(o.path, self.session.conv_view, results, self.session.evaluator_spec,
                                          self.options.methods, cancel=job.token,
                                          progress=job.stage(len(layers), total, "evaluate"))
            if self._live(job):
                self.post_message(SensitivityDone(o.index, rep))

        self._start("sensitivity", f"each layer of {o.path.name}", body, "sensitivity")

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
        o = self.session.opened[key.ckpt]
        layer = self.session.layer(key)

        def body(job: Job) -> None:
            r = o.results.get(layer.name) or self._analyse(o, layer, job)
            rep = self.worker.sweep(o.path, self.session.conv_view, r, self.session.evaluator_spec,
                                       cancel=job.token, progress=job.progress)
            if self._live(job):
                self.post_message(SweepDone(key, rep))

        self._start("sweep", f"sweep {key.name}", body, "sweep")

    def action_cancel(self) -> None:
        cancelled = self.session.cancel_all()
        for group in ("layer", "analyse-all", "evaluate", "sweep", "compare", "delta", "sensitivity"):
            self.workers.cancel_group(self, group)
        if cancelled:
            self._say("cancelled: " + ", ".join(cancelled))
        self._refresh_selection()
        self._refresh_footer()

    # ------------------------------------------------------------------------------- messages
    def on_layer_analysed(self, msg: LayerAnalysed) -> None:
        o = self.session.opened[msg.key.ckpt]
        o.results[msg.key.name] = msg.result
        self.query_one(LayerTree).update_leaf(msg.key, msg.result.layer, msg.result)
        if isinstance(self.screen, GridScreen):
            self.screen.refresh_key(msg.key)
        # A result for another layer updates the tree only, unless the compare views show it.
        if self.selected is not None and (msg.key == self.selected or msg.key in self.session.matched(self.selected)):
            self._refresh_selection()

    def on_delta_done(self, msg: DeltaDone) -> None:
        self.session.deltas[msg.base, msg.key] = msg.result
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
        self._refresh_footer()

    def on_eval_done(self, msg: EvalDone) -> None:
        self.session.opened[msg.ckpt].evals[msg.scope] = msg.report
        self._refresh_panel()

    def on_sweep_done(self, msg: SweepDone) -> None:
        self.session.opened[msg.key.ckpt].sweeps[msg.key.name] = msg.report
        if msg.key == self.selected:
            plot = self.query_one(SpectrumPlot)
            plot.view = "sweep"
            self._refresh_selection()

    def _say(self, message: str, **kw) -> None:
        """A toast. Messages may hold tensor names, so never markup and never raw control characters."""
        self.notify(printable(message), markup=False, **kw)

    def _error(self, message: str) -> None:
        self.last_error = message
        self._say(message, title="error", severity="error", timeout=10)
        self._refresh_panel()

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
        delta = self.selected is not None and self._delta_wanted(self.selected)
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
