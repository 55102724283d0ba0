"""The job layer: every long job the CLI and the app run, each one function of a typed request, a
progress callback and a cancel token, returning the record.

The CLI builds a request from its flags and calls the function; the app's engine processes receive
the same request dataclasses over a pipe and call the same function (``run``). A ``Workspace``
holds what is worth keeping between jobs — opened checkpoints, evaluators with their reference
outputs, layer pairings, started executors — so the app does not reload a model per job; the CLI
uses a fresh one.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import RmtError, UsageError
from core.evaluate.outcomes import EvalReport, EvaluatorChoice, SensitivityReport, SweepReport
from core.progress import CancelToken, Progress
from core.rmt.methods import DEFAULT_METHODS
from core.scan import AnalysisOptions, LayerResult

Emit = Callable[[Any], None]  # a job that streams results hands each one to this as it is ready


class Workspace:
    """What one front end keeps open between jobs."""

    def __init__(self):
        self.opened: dict[tuple[str, str], Any] = {}  # (path, conv view) → Checkpoint
        self.evaluators: dict[tuple[str, EvaluatorChoice], tuple[str, Any]] = {}  # → (name, evaluator)
        self.pairs: dict[tuple[str, str, str], Any] = {}  # (base, tuned, view) → MatchTable
        self.executors: dict[tuple, Any] = {}  # make_executor's arguments → a started executor

    def checkpoint(self, path: str | Path, conv_view: str = "reshape"):
        from core.io.checkpoint import open_checkpoint

        key = (str(path), conv_view)
        if key not in self.opened:
            self.opened[key] = open_checkpoint(path, conv_view)
        return self.opened[key]

    def evaluator(self, path: str | Path, conv_view: str, choice: EvaluatorChoice) -> tuple[str, Any]:
        """(name, evaluator) for this checkpoint, its reference outputs computed once."""
        from core.evaluate.registry import choose_evaluator

        key = (str(path), choice)
        if key not in self.evaluators:
            self.evaluators[key] = choose_evaluator(self.checkpoint(path, conv_view), choice)
        return self.evaluators[key]

    def pair(self, base: str | Path, tuned: str | Path, conv_view: str = "reshape"):
        from core.compare.matching import match_layers

        key = (str(base), str(tuned), conv_view)
        if key not in self.pairs:
            self.pairs[key] = match_layers([self.checkpoint(base, conv_view), self.checkpoint(tuned, conv_view)])
        return self.pairs[key]

    def executor(self, spec: tuple):
        from core.executors import make_executor

        if spec not in self.executors:
            self.executors[spec] = make_executor(*spec)
        return self.executors[spec]

    def close(self) -> None:
        for ckpt in self.opened.values():
            ckpt.close()
        self.opened.clear()
        self.evaluators.clear()
        self.pairs.clear()


# ------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class AnalyseRequest:
    """One layer's analysis (values only, through the cache)."""

    path: str
    layer: str
    options: AnalysisOptions = AnalysisOptions()
    conv_view: str = "reshape"


@dataclass(frozen=True)
class AnalyseManyRequest:
    """Layers through an executor (``executor``: make_executor's arguments); each result is
    emitted as it finishes, in any order."""

    path: str
    layers: tuple[str, ...]
    options: AnalysisOptions = AnalysisOptions()
    executor: tuple = ("local",)
    conv_view: str = "reshape"


@dataclass(frozen=True)
class _TruncationJob:
    """What every job that truncates analysed layers and evaluates them needs."""

    path: str
    results: tuple[LayerResult, ...]
    evaluator: EvaluatorChoice = EvaluatorChoice()
    methods: tuple[str, ...] = DEFAULT_METHODS
    mode: str = "hard"
    conv_view: str = "reshape"


@dataclass(frozen=True)
class EvaluateRequest(_TruncationJob):
    """Every given layer truncated at once to each method's ŝ, and evaluated."""


@dataclass(frozen=True)
class SweepRequest:
    """The evaluator's metric and Avew against the kept rank of one layer."""

    path: str
    result: LayerResult
    evaluator: EvaluatorChoice = EvaluatorChoice()
    ranks: tuple[int, ...] | None = None  # None: 16 points from 0 to p plus each method's ŝ
    conv_view: str = "reshape"


@dataclass(frozen=True)
class SensitivityRequest(_TruncationJob):
    """Each layer alone at each method's ŝ; with a ``budget``, then a plan within it."""

    plan_method: str = DEFAULT_METHODS[0]
    budget: str | None = None


@dataclass(frozen=True)
class DeltaRequest:
    """ΔW = W_tuned − W_base of matched layer pairs: ``pairs`` (base name, tuned name), or every
    matched row when None."""

    base: str
    tuned: str
    options: AnalysisOptions = AnalysisOptions()
    pairs: tuple[tuple[str, str], ...] | None = None
    conv_view: str = "reshape"


@dataclass(frozen=True)
class TruncateRequest:
    """Truncate the planned layers (layer → rank) and write a safetensors file."""

    path: str
    plan: Mapping[str, int]
    output: Path
    method: str  # what chose the ranks: a method's name, rank:K or a plan
    mode: str = "hard"
    sigma2: Mapping[str, float] = field(default_factory=dict)  # per layer, for shrink
    overwrite: bool = False
    conv_view: str = "reshape"
    gguf_type: str = "auto"  # for a .gguf output: the truncated tensors' type (core.io.gguf.GGUF_OUT_TYPES)


# ------------------------------------------------------------------------------------------ jobs


def analyse(req: AnalyseRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
            ws: Workspace | None = None) -> LayerResult:
    from core.scan import analyse_layer

    ckpt = (ws or Workspace()).checkpoint(req.path, req.conv_view)
    return analyse_layer(ckpt, ckpt.layer(req.layer), req.options)


def analyse_many(req: AnalyseManyRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
                 ws: Workspace | None = None, emit: Emit | None = None) -> None:
    ws = ws or Workspace()
    ckpt = ws.checkpoint(req.path, req.conv_view)
    for r in ws.executor(req.executor).run(ckpt, [ckpt.layer(n) for n in req.layers], req.options, progress,
                                           cancel, ordered=False):
        if emit is not None:
            emit(r)


def evaluate(req: EvaluateRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
             ws: Workspace | None = None) -> EvalReport:
    from core.evaluate.measure import evaluate_truncations

    ws = ws or Workspace()
    name, evaluator = ws.evaluator(req.path, req.conv_view, req.evaluator)
    rep = evaluate_truncations(ws.checkpoint(req.path, req.conv_view), req.results, evaluator, req.methods,
                               req.mode, progress, cancel)
    return replace(rep, evaluator=name)


def sweep(req: SweepRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
          ws: Workspace | None = None) -> SweepReport:
    from core.evaluate.measure import sweep_layer

    ws = ws or Workspace()
    name, evaluator = ws.evaluator(req.path, req.conv_view, req.evaluator)
    rep = sweep_layer(ws.checkpoint(req.path, req.conv_view), req.result, evaluator, req.ranks, progress, cancel)
    return replace(rep, evaluator=name)


def sensitivity(req: SensitivityRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
                ws: Workspace | None = None) -> SensitivityReport:
    """The per-layer table, then (given a budget) the plan; progress runs over both stages."""
    from core.evaluate.base import primary_of
    from core.evaluate.measure import layer_sensitivity, parse_budget, plan_within_budget

    ws = ws or Workspace()
    name, evaluator = ws.evaluator(req.path, req.conv_view, req.evaluator)
    if req.budget:
        parse_budget(req.budget, primary_of(evaluator))  # a typo fails now, not after the job
    ckpt = ws.checkpoint(req.path, req.conv_view)
    rep = layer_sensitivity(ckpt, req.results, evaluator, req.methods, req.mode, progress, cancel)
    if req.budget:
        rep = plan_within_budget(ckpt, req.results, evaluator, rep, req.plan_method, req.budget, req.mode,
                                 progress, cancel)
    return replace(rep, evaluator=name)


def delta(req: DeltaRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
          ws: Workspace | None = None) -> list:
    """The DeltaResults of the requested pairs, in the match table's order."""
    from core.compare.delta import delta_checkpoints

    ws = ws or Workspace()
    base, tuned = ws.checkpoint(req.base, req.conv_view), ws.checkpoint(req.tuned, req.conv_view)
    table = ws.pair(req.base, req.tuned, req.conv_view)
    rows = list(table.rows)
    if req.pairs is not None:
        wanted = set(req.pairs)
        rows = [r for r in rows if tuple(e.name for e in r.entries) in wanted]
        if len(rows) < len(wanted):
            got = {tuple(e.name for e in r.entries) for r in rows}
            b, t = next(p for p in req.pairs if p not in got)
            raise RmtError(f"{t!r} of {req.tuned} is not paired with {b!r} of {req.base}")
    return list(delta_checkpoints(base, tuned, rows, req.options, progress, cancel))


def truncate(req: TruncateRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
             ws: Workspace | None = None) -> Path:
    """Write the truncated checkpoint (the source is never touched); its metadata records the
    source, method, mode and ranks, and keeps the source's own (its evaluator, above all). A
    ``.gguf`` output of a GGUF source is a GGUF with every key, name and order of the source."""
    import json

    from core.truncation import export_safetensors, truncate_checkpoint

    ckpt = (ws or Workspace()).checkpoint(req.path, req.conv_view)
    meta = {"rmt_tui.source": str(ckpt.path), "rmt_tui.method": req.method, "rmt_tui.mode": req.mode,
            "rmt_tui.ranks": json.dumps(dict(req.plan))}
    if Path(req.output).suffix == ".gguf":
        return _truncate_to_gguf(ckpt, req, meta, cancel)
    state = truncate_checkpoint(ckpt, req.plan, req.mode, req.sigma2, cancel)
    meta.update({k: v for k, v in ckpt.metadata.items() if not k.startswith("rmt_tui.") or k == "rmt_tui.evaluator"})
    return export_safetensors(state, req.output, meta, overwrite=req.overwrite)


def check_mode(mode: str, options: AnalysisOptions, methods: tuple[str, ...] | None = None) -> None:
    """Shrinkage replaces each kept value by σ̂√N θ̂ (SPEC §9): it needs methods that estimate σ̂²,
    in W's own units (not W̃'s). A usage error, before any work, says which condition fails."""
    if mode != "shrink":
        return
    from core.rmt.methods import METHODS

    if options.equalise:
        raise UsageError("--mode shrink with --equalise: σ̂² refers to the equalised W̃, not W; use --mode hard")
    lacking = [m for m in (methods or options.methods) if m in METHODS and not METHODS[m].implies_sigma2]
    if lacking:
        with_sigma = [m for m, c in METHODS.items() if c.implies_sigma2]
        raise UsageError(f"--mode shrink needs σ̂², which {', '.join(lacking)} does not estimate; use --mode hard, "
                         f"or methods among {', '.join(with_sigma)}")


def _truncate_to_gguf(ckpt, req: TruncateRequest, meta: dict, cancel: CancelToken | None) -> Path:
    from core.io.gguf import export_gguf
    from core.progress import check
    from core.truncation import truncate_matrix

    check_gguf_output(ckpt.path, req.output)
    replaced = {}
    for name, k in req.plan.items():
        check(cancel)
        layer = ckpt.layer(name)
        replaced[layer.tensor] = truncate_matrix(ckpt.matrix(layer), k, req.mode, req.sigma2.get(name)).reshape(
            layer.shape)
    return export_gguf(ckpt.path, replaced, Path(req.output), meta, req.gguf_type, req.overwrite)


def check_gguf_output(source: Path | str, output: Path | str) -> None:
    """A GGUF output is the source GGUF with tensors replaced: it needs a GGUF source (its metadata
    and tokenizer are what llama.cpp runs)."""
    if Path(output).suffix == ".gguf" and Path(source).suffix != ".gguf":
        raise UsageError(f"{output}: a .gguf output needs a GGUF source (its metadata and tokenizer); "
                         f"{source} is not one — write .safetensors instead")


def shrink_variances(method: str, results: list[LayerResult], plan: Mapping[str, int],
                     options: AnalysisOptions) -> dict[str, float]:
    """σ̂² per planned layer for ``--mode shrink`` (which needs a method's noise level, not rank:K)."""
    if method not in options.methods:
        raise UsageError(f"--mode shrink needs a method ({' or '.join(options.methods)}), not a fixed rank")
    check_mode("shrink", options, (method,))
    return {r.layer.name: r.analysis.methods[method].sigma2 for r in results if r.layer.name in plan}


JOBS: dict[type, Callable] = {AnalyseRequest: analyse, AnalyseManyRequest: analyse_many, EvaluateRequest: evaluate,
                              SweepRequest: sweep, SensitivityRequest: sensitivity, DeltaRequest: delta,
                              TruncateRequest: truncate}


def run(req, progress: Progress | None = None, cancel: CancelToken | None = None, ws: Workspace | None = None,
        emit: Emit | None = None):
    """The job for this request's type (what the app's engine serves)."""
    job = JOBS.get(type(req))
    if job is None:
        raise RmtError(f"unknown job request {type(req).__name__}")
    if job is analyse_many:
        return job(req, progress, cancel, ws, emit)
    return job(req, progress, cancel, ws)

