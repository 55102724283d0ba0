"""Where the app's heavy work runs: analyses, and truncation + evaluation + sweeps.

scipy's LAPACK wrappers hold the GIL for a whole SVD (seconds on a big layer), and evaluation needs
torch, the model and its data (hundreds of MB); so by default both run in child processes
(``python -m rmt_tui.engine FD``) and the app's worker threads only wait on a pipe, forwarding
progress and cancellation. The UI process never imports torch. The numbers are the same ``core``
functions the CLI calls (``analyse_layer``, ``evaluate_truncations``, ``sweep_layer``).
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import RmtError, RmtWarning
from core.scan import AnalysisOptions, Cancelled, CancelToken, LayerResult, Progress, analyse_layer

POLL_SECONDS = 0.05


class _Work:
    """What one engine keeps between requests: open checkpoints and loaded evaluators."""

    def __init__(self):
        self.opened: dict[tuple[str, str], Any] = {}
        self.evaluators: dict[tuple[str, Any], tuple[str, Any]] = {}  # (path, EvaluatorChoice) → (name, evaluator)
        self.pairs: dict[tuple[str, str, str], Any] = {}  # (base, tuned, view) → their MatchTable
        self.executors: dict[tuple, Any] = {}  # (name, gpus, cpus, retries) → a started executor (Ray: seconds)

    def checkpoint(self, path: str, conv_view: str):
        from core.checkpoint import open_checkpoint

        key = (path, conv_view)
        if key not in self.opened:
            self.opened[key] = open_checkpoint(path, conv_view)
        return self.opened[key]

    def evaluator(self, path: str, conv_view: str, spec: str | None) -> tuple[str, Any]:
        from core.evaluation import choose_evaluator

        if (path, spec) not in self.evaluators:
            self.evaluators[path, spec] = choose_evaluator(self.checkpoint(path, conv_view), spec)
        return self.evaluators[path, spec]

    def run(self, kind: str, args: tuple, cancel: CancelToken, progress: Progress,
            emit: Callable[[Any], None] = lambda item: None) -> Any:
        if kind == "analyse_many":  # through an executor (Ray): each result sent back as it finishes
            from core.executors import make_executor

            path, conv_view, names, options, spec = args
            if spec not in self.executors:
                self.executors[spec] = make_executor(*spec)
            ckpt = self.checkpoint(path, conv_view)
            for r in self.executors[spec].run(ckpt, [ckpt.layer(n) for n in names], options, progress, cancel,
                                              ordered=False):
                emit(r)
            return None
        if kind == "analyse":
            path, conv_view, name, options = args
            ckpt = self.checkpoint(path, conv_view)
            return analyse_layer(ckpt, ckpt.layer(name), options)
        if kind == "delta":
            return self._delta(*args)
        if kind == "evaluate":
            from core.evaluation import evaluate_truncations

            path, conv_view, results, spec, methods, mode = args
            name, evaluator = self.evaluator(path, conv_view, spec)
            rep = evaluate_truncations(self.checkpoint(path, conv_view), results, evaluator, methods, mode,
                                       progress=progress, cancel=cancel)
            return replace(rep, evaluator=name)
        if kind == "sweep":
            from core.evaluation import sweep_layer

            path, conv_view, result, spec, ranks = args
            name, evaluator = self.evaluator(path, conv_view, spec)
            rep = sweep_layer(self.checkpoint(path, conv_view), result, evaluator, ranks, progress=progress,
                              cancel=cancel)
            return replace(rep, evaluator=name)
        if kind == "sensitivity":
            from core.evaluation import layer_sensitivity, plan_within_budget

            path, conv_view, results, spec, methods, mode, plan_method, budget = args
            name, evaluator = self.evaluator(path, conv_view, spec)
            ckpt = self.checkpoint(path, conv_view)
            rep = layer_sensitivity(ckpt, results, evaluator, methods, mode, progress=progress, cancel=cancel)
            if budget:
                rep = plan_within_budget(ckpt, results, evaluator, rep, plan_method, budget, mode, cancel=cancel)
            return replace(rep, evaluator=name)
        raise RmtError(f"unknown engine request {kind!r}")

    def _delta(self, base_path: str, tuned_path: str, conv_view: str, base_name: str, tuned_name: str,
               options: AnalysisOptions):
        from core.compare import analyse_delta
        from core.matching import match_layers

        base, tuned = self.checkpoint(base_path, conv_view), self.checkpoint(tuned_path, conv_view)
        key = (base_path, tuned_path, conv_view)
        if key not in self.pairs:
            self.pairs[key] = match_layers([base, tuned])
        row = next((r for r in self.pairs[key].rows
                    if [e.name for e in r.entries] == [base_name, tuned_name]), None)
        if row is None:
            raise RmtError(f"{tuned_name!r} of {tuned_path} is not paired with {base_name!r} of {base_path}")
        return analyse_delta(base, tuned, row, options)

    def close(self) -> None:
        for ckpt in self.opened.values():
            ckpt.close()
        self.opened.clear()
        self.evaluators.clear()
        self.pairs.clear()


class _Requests:
    """The kinds of request, over ``call``; both engines provide ``call``."""

    def call(self, kind: str, args: tuple, cancel: CancelToken | None = None,
             progress: Progress | None = None, on_item: Callable[[Any], None] | None = None) -> Any:
        raise NotImplementedError

    def analyse(self, path: Path, conv_view: str, name: str, options: AnalysisOptions,
                cancel: CancelToken | None = None) -> LayerResult:
        return self.call("analyse", (str(path), conv_view, name, options), cancel)

    def analyse_many(self, path: Path, conv_view: str, names: Sequence[str], options: AnalysisOptions,
                     executor: tuple, on_result: Callable[[LayerResult], None], cancel: CancelToken | None = None,
                     progress: Progress | None = None) -> None:
        """Layers through an executor (``executor``: make_executor's arguments); ``on_result`` gets
        each result as it finishes, in any order."""
        self.call("analyse_many", (str(path), conv_view, list(names), options, tuple(executor)), cancel, progress,
                  on_result)

    def delta(self, base: Path, tuned: Path, conv_view: str, base_name: str, tuned_name: str,
              options: AnalysisOptions, cancel: CancelToken | None = None):
        """The DeltaResult of one matched pair (the tuned layer minus the base layer)."""
        return self.call("delta", (str(base), str(tuned), conv_view, base_name, tuned_name, options), cancel)

    def evaluate(self, path: Path, conv_view: str, results: Sequence[LayerResult], spec: str | None,
                 methods: Sequence[str], mode: str = "hard", cancel: CancelToken | None = None,
                 progress: Progress | None = None):
        """The EvalReport: every given layer truncated to each method's ŝ."""
        return self.call("evaluate", (str(path), conv_view, list(results), spec, tuple(methods), mode), cancel,
                         progress)

    def sensitivity(self, path: Path, conv_view: str, results: Sequence[LayerResult], spec, methods: Sequence[str],
                    mode: str = "hard", plan_method: str | None = None, budget: str | None = None,
                    cancel: CancelToken | None = None, progress: Progress | None = None):
        """The SensitivityReport: each layer alone at each method's ŝ (and a plan, given a budget)."""
        return self.call("sensitivity", (str(path), conv_view, list(results), spec, tuple(methods), mode, plan_method,
                                         budget), cancel, progress)

    def sweep(self, path: Path, conv_view: str, result: LayerResult, spec: str | None,
              ranks: Sequence[int] | None = None, cancel: CancelToken | None = None,
              progress: Progress | None = None):
        """The SweepReport of one layer."""
        return self.call("sweep", (str(path), conv_view, result, spec, ranks), cancel, progress)


class InlineEngine(_Requests):
    """Runs requests in the calling thread (tests, and anywhere a child process is not wanted)."""

    def __init__(self):
        self._work = _Work()

    def call(self, kind, args, cancel=None, progress=None, on_item=None):
        return self._work.run(kind, args, cancel or CancelToken(), progress or (lambda *a: None),
                              on_item or (lambda item: None))

    def close(self) -> None:
        self._work.close()


def _serve(conn) -> None:  # the child process
    """Requests run one at a time on this thread; a reader thread takes cancellations meanwhile."""
    work, tokens, todo = _Work(), {}, queue.Queue()

    def read() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is None:
                todo.put(None)
                return
            if msg[0] == "cancel":
                if msg[1] in tokens:
                    tokens[msg[1]].cancel()
                continue
            tokens[msg[1]] = CancelToken()
            todo.put(msg)

    threading.Thread(target=read, daemon=True).start()
    while (msg := todo.get()) is not None:
        _, rid, kind, args = msg
        token = tokens[rid]

        def progress(done, total, what="", rid=rid):
            conn.send((rid, "progress", (done, total, what)))

        def emit(item, rid=rid):
            conn.send((rid, "item", item))

        with warnings.catch_warnings(record=True) as caught:  # e.g. "the cache cannot be written"
            warnings.simplefilter("always", RmtWarning)
            try:
                token.check()
                reply = ("ok", work.run(kind, args, token, progress, emit))
            except Cancelled:
                reply = ("cancelled", None)
            except RmtError as exc:
                reply = ("error", RmtError(str(exc)))
            except Exception as exc:  # a bug must come back as a message, not kill the server
                reply = ("error", RmtError(f"{type(exc).__name__}: {exc}"))
        tokens.pop(rid, None)
        notes = [str(w.message) for w in caught if issubclass(w.category, RmtWarning)]
        conn.send((rid, "done", (*reply, notes)))


class ProcessEngine(_Requests):
    """One long-lived child process serving requests in order over a socket pair, started on the
    first request. A plain subprocess, not multiprocessing's spawn: nothing of the parent's
    __main__ is re-run, and its output goes to /dev/null, never to the UI's terminal."""

    def __init__(self, on_warning: Callable[[str], None] | None = None, start: bool = True):
        self.on_warning = on_warning  # called (from the waiting thread) with each warning the child raised
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._lock = threading.Lock()
        self._ids = itertools.count()
        if start:
            self._start()

    def _start(self) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._proc = subprocess.Popen([sys.executable, "-m", "rmt_tui.engine", str(child.fileno())],
                                      pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        child.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def call(self, kind, args, cancel=None, progress=None, on_item=None):
        """Blocks the calling (worker) thread, not the UI. On cancel it tells the child and stops
        waiting at once; the child stops at its next check and its stale reply is dropped."""
        while not self._lock.acquire(timeout=POLL_SECONDS):  # another request is in the child
            if cancel is not None and cancel.cancelled:
                raise Cancelled()
        try:
            if self._proc is None:
                self._start()
            rid = next(self._ids)
            try:
                self._conn.send(("run", rid, kind, args))
                while True:
                    if cancel is not None and cancel.cancelled:
                        self._conn.send(("cancel", rid))
                        raise Cancelled()
                    if not self._conn.poll(POLL_SECONDS):
                        continue
                    got, what, value = self._conn.recv()
                    if got != rid:
                        continue  # a cancelled request's late progress or reply
                    if what == "progress":
                        if progress is not None:
                            progress(*value)
                        continue
                    if what == "item":
                        if on_item is not None:
                            on_item(value)
                        continue
                    status, value, notes = value
                    break
            except (EOFError, OSError, BrokenPipeError):
                raise RmtError("the analysis process stopped; restart rmt-tui") from None
        finally:
            self._lock.release()
        for note in notes:
            if self.on_warning is not None:
                self.on_warning(note)
        if status == "error":
            raise value
        if status == "cancelled":
            raise Cancelled()
        return value

    def close(self) -> None:
        """Stop at once: an SVD in progress is not waited for."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=5)
        self._conn.close()


ENGINE_NICENESS = 10  # background work: under contention the scheduler gives the UI the cores


if __name__ == "__main__":
    from multiprocessing.connection import Connection

    # BLAS keeps every core busy during an SVD; at normal priority the UI process then waited for a
    # time slice and keys took up to 150 ms during "analyse all" on 2 cores. Niceness costs the
    # analysis nothing when the UI is idle.
    try:
        os.nice(ENGINE_NICENESS)
    except OSError:
        pass
    _serve(Connection(int(sys.argv[1])))
