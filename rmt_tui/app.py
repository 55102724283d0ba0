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
from textual.widgets import Footer, Header, ProgressBar, Tree
from textual.worker import get_current_worker

from core.checkpoint import Layer
from core.errors import RmtError
from core.scan import AnalysisOptions, Cancelled, LayerResult
from core.text import printable

from .engine import InlineEngine, ProcessEngine
from .messages import EvalDone, JobEnded, JobProgress, LayerAnalysed, SweepDone
from .plots import VIEW_TITLES
from .screens import ConfirmQuit, FindScreen, HelpScreen, OpenScreen
from .session import ALL_LAYERS, Job, LayerKey, Opened, Session
from .widgets import LayerTree, ResultsPanel, SpectrumPlot


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
                "and evaluate (accuracy, params saved)", id="evaluate_layer"),
        Binding("E", "evaluate('all')", "Eval all", id="evaluate_all",
                tooltip="truncate every layer to each method's ŝ and evaluate"),
        Binding("s", "sweep", "Sweep", id="sweep",
                tooltip="accuracy and Avew against the kept rank of the selected layer"),
        Binding("v", "cycle_view", "View", id="cycle_view",
                tooltip="cycle the plot: histogram + MP fits, sorted values, sweep"),
        Binding("slash", "find", "Find", tooltip="find a layer by name", id="find"),
        Binding("o", "open", "Open", show=False, tooltip="open another checkpoint", id="open"),
        Binding("escape", "cancel", "Cancel", tooltip="cancel running work", id="cancel"),
        Binding("question_mark", "help", "Help", tooltip="this help", id="help"),
        Binding("q", "quit", "Quit", tooltip="quit (asks first while work runs)", id="quit"),
    ]

    def __init__(self, paths: Iterable[str | Path], options: AnalysisOptions | None = None,
                 conv_view: str = "reshape", evaluator_spec: str | None = None,
                 engine: InlineEngine | ProcessEngine | None = None):
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
        self.options = options or AnalysisOptions()
        self.session = Session(conv_view, evaluator_spec)
        self.selected: LayerKey | None = None
        self.last_error: str | None = None
        self._progress_job: Job | None = None
        self._footer_shown: tuple | None = None

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
        names = [x.path.name for x in self.session.opened]
        self.sub_title = " · ".join(names)

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
            plot.show(result, o.sweeps.get(key.name), "" if result is not None else "analysing…")
        self._refresh_panel()

    def _refresh_panel(self) -> None:
        key = self.selected
        o = self.session.opened[key.ckpt] if key else None
        layer = self.session.layer(key) if key else None
        result = self.session.result(key) if key else None
        self.query_one(ResultsPanel).show(o, layer, result, list(self.session.jobs.values()), self.last_error)
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

        self._start("analyse-all", "analyse all", body, "analyse-all")

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
            results = []
            for i, layer in enumerate(layers):
                job.progress(i, total, f"analyse {layer.name}")
                r = o.results.get(layer.name) or self._analyse(o, layer, job)
                results.append(r)
                if layer.name not in o.results and self._live(job):
                    self.post_message(LayerAnalysed(LayerKey(o.index, layer.name), r))
            rep = self.worker.evaluate(o.path, self.session.conv_view, results, self.session.evaluator_spec,
                                       self.options.methods, cancel=job.token,
                                       progress=job.stage(len(layers), total, "evaluate"))
            if self._live(job):
                self.post_message(EvalDone(o.index, target, rep))

        self._start("evaluate", f"evaluate {'all layers' if scope == 'all' else key.name}", body, "evaluate")

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
        for group in ("layer", "analyse-all", "evaluate", "sweep"):
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
        if msg.key == self.selected:  # a result for another layer updates the tree only
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
        return bool(self.session.jobs), layer_actions

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
        running, layer_actions = self._footer_state()
        if action == "cancel":
            return running
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
