"""What the app has open and what it knows: checkpoints, their layer results, evaluations and sweeps.
Plain Python (no Textual), so the app's state is easy to test and to reason about."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.calibration import CalibrationChoice
from core.compare.matching import TIED, MatchRow, MatchTable, labels_for, match_layers
from core.evaluate.outcomes import MODES, EvaluatorChoice
from core.io.checkpoint import Checkpoint, open_checkpoint
from core.io.layers import Layer
from core.progress import CancelToken
from core.scan import LayerResult

if TYPE_CHECKING:  # evaluation (torch) runs in the engine's worker process, never in the UI
    from core.compare.delta import DeltaResult
    from core.evaluate.outcomes import EvalReport, SweepReport

ALL_LAYERS = "*"  # the key of an evaluation over every analysed layer


@dataclass(frozen=True)
class LayerKey:
    ckpt: int  # index of the checkpoint in the session
    name: str  # layer name


@dataclass
class Opened:
    index: int
    path: Path
    ckpt: Checkpoint
    results: dict[str, LayerResult] = field(default_factory=dict)
    evals: dict[str, EvalReport] = field(default_factory=dict)  # layer name or ALL_LAYERS → report
    sweeps: dict[str, SweepReport] = field(default_factory=dict)
    whitened: dict[str, LayerResult] = field(default_factory=dict)  # W·L's analysis (the whitened view)


PROGRESS_INTERVAL = 0.1  # seconds between progress reports: light on a slow link


@dataclass
class Job:
    """A background job: its cancel token, its progress, and who to tell (throttled) when it moves."""

    name: str
    label: str
    token: CancelToken = field(default_factory=CancelToken)
    done: int = 0
    total: int = 0
    what: str = ""
    on_progress: Callable[[Job], None] | None = None
    _last_report: float = 0.0

    def progress(self, done: int, total: int, what: str = "") -> None:
        """Callable from the worker thread; matches core's Progress signature."""
        self.done, self.total, self.what = done, total, what
        now = time.monotonic()
        if self.on_progress and (now - self._last_report >= PROGRESS_INTERVAL or done == total):
            self._last_report = now
            self.on_progress(self)

    def stage(self, offset: int, total: int, prefix: str) -> Callable[[int, int, str], None]:
        """A Progress callback for one stage of a multi-stage job: (i, n) maps to (offset + i, total)."""
        return lambda i, n, what: self.progress(offset + i, total, f"{prefix} {what}".strip())


class Session:
    def __init__(self, conv_view: str = "reshape", evaluator: EvaluatorChoice = EvaluatorChoice(),
                 mode: str = "hard", calibration: CalibrationChoice = CalibrationChoice()):
        self.conv_view = conv_view
        self.evaluator = evaluator  # which evaluator the user asked for (jobs resolve it per checkpoint)
        self.mode = mode  # the truncation mode of evaluations, sweeps and the sensitivity job (m cycles it)
        self.calibration = calibration  # whitened mode's data
        self.opened: list[Opened] = []
        self.jobs: dict[str, Job] = {}
        self.match: MatchTable | None = None  # the layers paired across checkpoints (two or more open)
        self._rows: dict[LayerKey, MatchRow] = {}
        self.base: int | None = None  # the checkpoint marked as base: deltas are taken against it
        self.deltas: dict[tuple[int, LayerKey], DeltaResult] = {}  # (base, tuned layer) → ΔW analysis

    def open(self, path: str | Path) -> Opened:
        """Open a checkpoint (raises the typed RmtError with a readable message)."""
        path = Path(path).expanduser()
        for o in self.opened:
            if o.path.resolve() == path.resolve():
                return o
        o = Opened(len(self.opened), path, open_checkpoint(path, self.conv_view))
        self.opened.append(o)
        self._rematch()
        return o

    # -- several checkpoints ------------------------------------------------------------------
    def _rematch(self) -> None:
        """Pair the layers of every open checkpoint (names only: nothing is read)."""
        if len(self.opened) < 2:
            return
        self.match = match_layers([o.ckpt for o in self.opened], labels_for([o.ckpt for o in self.opened]))
        self._rows = {}
        for tied in (False, True):  # a layer's own row before the rows where it stands in for a tied one
            for row in self.match.rows:
                for i, e in enumerate(row.entries):
                    if e.layer is not None and (e.state == TIED) == tied:
                        self._rows.setdefault(LayerKey(i, e.layer.name), row)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.match.labels if self.match is not None else tuple(o.path.name for o in self.opened)

    def row(self, key: LayerKey) -> MatchRow | None:
        return self._rows.get(key)

    def matched(self, key: LayerKey) -> list[LayerKey | None]:
        """The key of the same layer in each checkpoint (None where it has none)."""
        row = self.row(key)
        if row is None:
            return [key if i == key.ckpt else None for i in range(len(self.opened))]
        return [LayerKey(i, e.layer.name) if e.layer is not None else None for i, e in enumerate(row.entries)]

    def layer(self, key: LayerKey) -> Layer:
        return self.opened[key.ckpt].ckpt.layer(key.name)

    def result(self, key: LayerKey) -> LayerResult | None:
        return self.opened[key.ckpt].results.get(key.name)

    def unanalysed(self) -> list[tuple[Opened, str]]:
        """Every (checkpoint, layer name) with no result yet, in tree order."""
        return [(o, l.name) for o in self.opened for l in o.ckpt.layers if l.name not in o.results]

    def unanalysed_matches(self, key: LayerKey) -> list[LayerKey]:
        """The selected layer's matches (itself included) that have a matrix and no result yet."""
        return [k for k in self.matched(key) if k is not None and self.result(k) is None and self.layer(k).analysable]

    def forget_results(self) -> None:
        """Drop every analysis, evaluation, sweep and delta (the analysis options changed)."""
        for o in self.opened:
            o.results.clear()
            o.evals.clear()
            o.sweeps.clear()
            o.whitened.clear()
        self.deltas.clear()

    # -- what jobs found ----------------------------------------------------------------------
    def record_result(self, key: LayerKey, result: LayerResult) -> None:
        self.opened[key.ckpt].results[key.name] = result

    def record_no_matrix(self, key: LayerKey) -> None:
        """A layer with no matrix view: its reason is the whole story, and nothing is computed."""
        self.record_result(key, LayerResult(self.layer(key), None))

    def record_eval(self, ckpt: int, scope: str, report: EvalReport) -> None:
        """``scope``: a layer name, or ALL_LAYERS for an evaluation of every analysed layer."""
        self.opened[ckpt].evals[scope] = report

    def record_sweep(self, key: LayerKey, report: SweepReport) -> None:
        self.opened[key.ckpt].sweeps[key.name] = report

    def record_whitened(self, key: LayerKey, result: LayerResult) -> None:
        self.opened[key.ckpt].whitened[key.name] = result

    def cycle_mode(self) -> str:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        return self.mode

    def record_delta(self, base: int, key: LayerKey, result: DeltaResult) -> None:
        self.deltas[base, key] = result

    # -- the base and deltas ------------------------------------------------------------------
    def toggle_base(self, ckpt: int) -> int | None:
        """Mark ``ckpt`` as the base of deltas, or unmark it if it is; returns the base now."""
        self.base = None if self.base == ckpt else ckpt
        return self.base

    def delta_wanted(self, key: LayerKey) -> bool:
        """A base is marked and this layer is in another checkpoint."""
        return self.base is not None and key.ckpt != self.base

    def base_key(self, key: LayerKey) -> LayerKey | None:
        """The base's layer that ``key`` is a delta against (None: no delta, or no such layer)."""
        return self.matched(key)[self.base] if self.delta_wanted(key) else None

    def delta(self, key: LayerKey) -> DeltaResult | None:
        return self.deltas.get((self.base, key)) if self.delta_wanted(key) else None

    def delta_note(self, key: LayerKey) -> str:
        """Why there is no delta to show although one is wanted ("" when there is, or none is wanted)."""
        if self.delta_wanted(key) and self.base_key(key) is None:
            return f"no delta: {self.opened[self.base].path.name} (base) has no such layer"
        return ""

    # -- jobs ---------------------------------------------------------------------------------
    def start_job(self, name: str, label: str, on_progress: Callable[[Job], None] | None = None) -> Job:
        old = self.jobs.get(name)
        if old is not None:
            old.token.cancel()
        job = self.jobs[name] = Job(name, label, on_progress=on_progress)
        return job

    def finish_job(self, job: Job) -> None:
        if self.jobs.get(job.name) is job:
            del self.jobs[job.name]

    def is_current(self, job: Job) -> bool:
        return self.jobs.get(job.name) is job and not job.token.cancelled

    def cancel_all(self) -> list[str]:
        labels = [j.label for j in self.jobs.values()]
        for j in self.jobs.values():
            j.token.cancel()
        self.jobs.clear()
        return labels


