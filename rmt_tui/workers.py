"""The app's background jobs: one named worker method per job, each in its own exclusive group (a
new job replaces the running one of its kind), each a thin wait on an engine process for a
``core.jobs`` request, posting messages back; the UI thread's handlers own the state. The actions
whose work is one of these jobs and little else live here too: the figure export, the truncation
mode (m) and the whitened view (w)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from textual import work
from textual.worker import get_current_worker

from core.errors import RmtError
from core.io.layers import Layer
from core.jobs import (
    AnalyseManyRequest,
    AnalyseRequest,
    DeltaRequest,
    EvaluateRequest,
    SensitivityRequest,
    SweepRequest,
    WhitenedRequest,
)
from core.progress import Cancelled, tracked
from core.scan import LayerResult

from .messages import (
    DeltaDone,
    EvalDone,
    JobEnded,
    JobProgress,
    LayerAnalysed,
    SensitivityDone,
    SweepDone,
    WhitenedDone,
)
from .session import Job, LayerKey, Opened
from .widgets import SpectrumPlot

# Each background job is a named worker method in its own exclusive group (a new job replaces the
# running one of its kind); esc cancels them all.
JOB_GROUPS = ("layer", "compare", "delta", "analyse-all", "evaluate", "sensitivity", "sweep", "whitened")


class JobWorkers:
    """Mixed into RmtApp (which provides session, options, executor and the two engine processes)."""

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

    def _analyse(self, o: Opened, name: str, job: Job) -> LayerResult:
        """One layer's analysis, from the analysis process (blocks this worker thread only)."""
        return self.analysis_process.call(AnalyseRequest(str(o.path), name, self.options, self.session.conv_view),
                                          job.token)

    @work(thread=True, exclusive=True, group="layer", exit_on_error=False)
    def _analyse_layer(self, job: Job, key: LayerKey) -> None:
        with self._reporting(job):
            self._post_result(job, key, self._analyse(self.session.opened[key.ckpt], key.name, job))

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _analyse_keys(self, job: Job, keys: list[LayerKey]) -> None:
        with self._reporting(job):
            for k in tracked(keys, job.progress, job.token, label=lambda k: k.name, finish=False):
                self._post_result(job, k, self._analyse(self.session.opened[k.ckpt], k.name, job))

    @work(thread=True, exclusive=True, group="delta", exit_on_error=False)
    def _delta_of(self, job: Job, base: int, base_key: LayerKey, key: LayerKey) -> None:
        with self._reporting(job):
            b, t = self.session.opened[base], self.session.opened[key.ckpt]
            req = DeltaRequest(str(b.path), str(t.path), self.options, ((base_key.name, key.name),),
                               self.session.conv_view)
            d = self.analysis_process.call(req, job.token)[0]
            if self._live(job):
                self.post_message(DeltaDone(base, key, d))

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

    @work(thread=True, exclusive=True, group="evaluate", exit_on_error=False)
    def _evaluate(self, job: Job, o: Opened, layers: list[Layer], scope: str) -> None:
        with self._reporting(job):
            total = len(layers) + 1 + len(self.options.methods)  # analyses, baseline, one per method
            req = EvaluateRequest(str(o.path), self._results_of(o, layers, job, total), self.session.evaluator,
                                  self.options.methods, self.session.mode, self.session.conv_view,
                                  self.session.calibration)
            rep = self.evaluation_process.call(req, job.token, job.stage(len(layers), total, "evaluate"))
            if self._live(job):
                self.post_message(EvalDone(o.index, scope, rep))

    @work(thread=True, exclusive=True, group="sensitivity", exit_on_error=False)
    def _sensitivity(self, job: Job, o: Opened) -> None:
        with self._reporting(job):
            layers = [l for l in o.ckpt.layers if l.analysable]
            total = 2 * len(layers) + 1  # analyses, then about one evaluation per layer and method
            req = SensitivityRequest(str(o.path), self._results_of(o, layers, job, total), self.session.evaluator,
                                     self.options.methods, self.session.mode, self.session.conv_view,
                                     self.session.calibration)
            rep = self.evaluation_process.call(req, job.token, job.stage(len(layers), total, "evaluate"))
            if self._live(job):
                self.post_message(SensitivityDone(o.index, rep))

    @work(thread=True, exclusive=True, group="sweep", exit_on_error=False)
    def _sweep(self, job: Job, key: LayerKey) -> None:
        with self._reporting(job):
            o = self.session.opened[key.ckpt]
            r = o.results.get(key.name) or self._analyse(o, key.name, job)
            mode = "whitened" if self.session.mode == "whitened" else "hard"  # a sweep's ranks have no σ̂²
            req = SweepRequest(str(o.path), r, self.session.evaluator, conv_view=self.session.conv_view, mode=mode,
                               calibration=self.session.calibration)
            rep = self.evaluation_process.call(req, job.token, job.progress)
            if self._live(job):
                self.post_message(SweepDone(key, rep))

    @work(thread=True, exclusive=True, group="whitened", exit_on_error=False)
    def _whitened(self, job: Job, key: LayerKey) -> None:
        """W·L's analysis, in the evaluation process (which keeps the evaluator and the calibration
        data: the first layer collects them, the next ones reuse them)."""
        with self._reporting(job):
            o = self.session.opened[key.ckpt]
            req = WhitenedRequest(str(o.path), (key.name,), self.options, self.session.evaluator,
                                  self.session.calibration, self.session.conv_view)
            results, record = self.evaluation_process.call(req, job.token, job.progress)
            if self._live(job):
                self.post_message(WhitenedDone(key, results[0], record))

    # -- the truncation mode and the whitened view (m, w) ---------------------------------------
    def action_cycle_mode(self) -> None:
        mode = self.session.cycle_mode()
        what = {"hard": "keep W's top singular values", "shrink": "de-biased values (σ̂²)",
                "whitened": "W·L's top values mapped back; calibration data from the evaluator"}[mode]
        self._say(f"truncation mode: {mode} ({what}) for e, E, s and S", timeout=4)
        self._refresh_panel()

    def action_whitened(self) -> None:
        key = self.selected
        if key is None or not self.session.layer(key).analysable:
            self._say("select an analysable layer first", severity="warning")
            return
        if key.name in self.session.opened[key.ckpt].whitened:
            self.query_one(SpectrumPlot).set_view("whitened")
            self._refresh_selection()
            return
        self._whitened(self._begin("whitened", f"whitened spectrum of {key.name}"), key)

    def on_whitened_done(self, msg: WhitenedDone) -> None:
        self.session.record_whitened(msg.key, msg.result)
        cal = msg.calibration
        unit = "tokens" if "tokens" in cal else "samples"
        self._say(f"calibration: {cal[unit]} {unit} of {cal['source']}"
                  + ("" if cal["disjoint"] else " (overlaps the scored data)"), timeout=4)
        if msg.key == self.selected:
            self.query_one(SpectrumPlot).view = "whitened"
            self._refresh_selection()

    def action_export(self) -> None:
        """The plot on screen as a PNG figure in the current folder (a new file each time)."""
        key, plot = self.selected, self.query_one(SpectrumPlot)
        result = self.session.result(key) if key is not None else None
        if result is None or result.analysis is None or result.reason is not None:
            self._say("select an analysed layer first", severity="warning")
            return
        o = self.session.opened[key.ckpt]
        sweep, delta, white = o.sweeps.get(key.name), self.session.delta(key), o.whitened.get(key.name)
        if (plot.view == "sweep" and sweep is None) or (plot.view == "delta" and (delta is None or delta.analysis
                                                                                  is None)) or \
                (plot.view == "whitened" and (white is None or white.analysis is None)):
            self._say(f"nothing to export yet in the {plot.view} view", severity="warning")
            return
        analysis = white.analysis if plot.view == "whitened" else result.analysis
        self._export(plot.view, o.path.name, key.name, analysis, sweep, plot.compare, delta)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _export(self, view, ckpt_name, layer, analysis, sweep, compared, delta) -> None:
        """matplotlib loads on this thread, not the UI's (about a second the first time)."""
        from . import figures

        try:
            draw, caption = figures.figure_of_view(view, f"{ckpt_name}: {layer}", analysis, sweep, compared, delta)
            out = figures.free_name(Path.cwd(), f"rmt-tui-{Path(ckpt_name).stem}-{layer}-{view}")
            figures.save(draw, out, caption=caption)
        except RmtError as exc:
            self.call_from_thread(self._error, str(exc))
            return
        self.call_from_thread(self._say, f"figure: {out}", title="exported", timeout=8)
