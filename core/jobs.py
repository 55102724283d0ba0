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

from core.calibration import CalibrationChoice
from core.errors import EvaluationError, RmtError, UsageError
from core.evaluate.outcomes import EvalReport, EvaluatorChoice, SensitivityReport, SweepReport
from core.progress import CancelToken, Progress
from core.rmt.methods import DEFAULT_METHODS
from core.scan import AnalysisOptions, LayerResult
from core.workspace import Workspace

Emit = Callable[[Any], None]  # a job that streams results hands each one to this as it is ready


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
    calibration: CalibrationChoice = CalibrationChoice()  # for mode "whitened"

    def fed(self, ws: Workspace, names) -> tuple[dict, dict, dict | None]:
        """The whitening of ``names`` in whitened mode; nothing otherwise."""
        if self.mode != "whitened":
            return {}, {}, None
        return ws.whitening(self.path, self.conv_view, self.evaluator, self.calibration, names)


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
    mode: str = "hard"  # or "whitened": W_k from W·L's partial sums
    calibration: CalibrationChoice = CalibrationChoice()


@dataclass(frozen=True)
class SensitivityRequest(_TruncationJob):
    """Each layer alone at each method's ŝ; with a ``budget``, then a plan within it."""

    plan_method: str = DEFAULT_METHODS[0]
    budget: str | None = None


@dataclass(frozen=True)
class CompressRequest(_TruncationJob):
    """The ``results``' layers compressed together by ``target`` (a fraction of their parameters)
    in each of ``modes``, ranks allocated by ``rule``, and evaluated."""

    target: float = 0.2
    modes: tuple[str, ...] = ("hard", "whitened")
    rule: str = "auto"  # core.compress.RULES
    plan_method: str = DEFAULT_METHODS[0]  # whose ŝ the ``shat`` rule follows


@dataclass(frozen=True)
class WhitenedRequest:
    """The spectra of W·L (SPEC §13) of ``layers``, analysed as W's are; layers the model does not
    feed come back with the reason."""

    path: str
    layers: tuple[str, ...]
    options: AnalysisOptions = AnalysisOptions()
    evaluator: EvaluatorChoice = EvaluatorChoice()
    calibration: CalibrationChoice = CalibrationChoice()
    conv_view: str = "reshape"


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
    evaluator: EvaluatorChoice = EvaluatorChoice()  # whitened: whose model feeds the calibration data
    calibration: CalibrationChoice = CalibrationChoice()
    factors: Path | None = None  # also write each layer's two factors here


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
    fed, fallback, record = req.fed(ws, [r.layer.name for r in req.results if r.layer.analysable])
    rep = evaluate_truncations(ws.checkpoint(req.path, req.conv_view), req.results, evaluator, req.methods,
                               req.mode, progress, cancel, fed)
    return replace(rep, evaluator=name, calibration=record, fallback=fallback)


def sweep(req: SweepRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
          ws: Workspace | None = None) -> SweepReport:
    from core.evaluate.measure import sweep_layer

    ws = ws or Workspace()
    name, evaluator = ws.evaluator(req.path, req.conv_view, req.evaluator)
    fed = None
    if req.mode == "whitened":
        fed_map, fallback, _ = ws.whitening(req.path, req.conv_view, req.evaluator, req.calibration,
                                            [req.result.layer.name])
        if fallback:
            name = req.result.layer.name
            raise EvaluationError(f"{name}: cannot sweep it whitened: {fallback[name]}")
        fed = fed_map[req.result.layer.name]
    rep = sweep_layer(ws.checkpoint(req.path, req.conv_view), req.result, evaluator, req.ranks, progress, cancel, fed)
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
    fed, _, _ = req.fed(ws, [r.layer.name for r in req.results if r.layer.analysable])
    rep = layer_sensitivity(ckpt, req.results, evaluator, req.methods, req.mode, progress, cancel, fed)
    if req.budget:
        rep = plan_within_budget(ckpt, req.results, evaluator, rep, req.plan_method, req.budget, req.mode,
                                 progress, cancel, fed)
    return replace(rep, evaluator=name)


def compress(req: CompressRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
             ws: Workspace | None = None):
    """A CompressReport: the baseline, then each mode at the same parameter budget."""
    from core.evaluate.compress import compress_and_evaluate

    ws = ws or Workspace()
    name, evaluator = ws.evaluator(req.path, req.conv_view, req.evaluator)
    names = [r.layer.name for r in req.results if r.layer.analysable]
    calibration = (ws.calibration(req.path, req.conv_view, req.evaluator, req.calibration)
                   if "whitened" in req.modes else None)
    rep = compress_and_evaluate(ws.checkpoint(req.path, req.conv_view), names, evaluator, req.target, req.modes,
                                req.rule, calibration, shat_of(req.results, req.plan_method) if req.rule == "shat"
                                else None, progress, cancel)
    return replace(rep, evaluator=name)


def budget_allocation(ws: Workspace, path: str, conv_view: str, results, target: float, mode: str, rule: str,
                      choice: EvaluatorChoice, calibration: CalibrationChoice, plan_method: str = DEFAULT_METHODS[0],
                      progress: Progress | None = None):
    """The ranks that remove ``target`` of the ``results``' layers' parameters in ``mode`` (what
    ``truncate --compress`` writes): an Allocation. ``auto`` runs the sensitivity rule's
    evaluations where the checkpoint has an evaluator, else it is ``loss``."""
    from core.compress import budget_plan
    from core.evaluate.compress import weigher

    ckpt = ws.checkpoint(path, conv_view)
    names = [r.layer.name for r in results if r.layer.analysable]
    fed = ws.whitening(path, conv_view, choice, calibration, names)[0] if mode == "whitened" else {}
    weigh = None
    if rule in ("auto", "sensitivity"):
        try:
            evaluator = ws.evaluator(path, conv_view, choice)[1]
        except EvaluationError as exc:
            if rule == "sensitivity":
                raise EvaluationError(f"--allocation sensitivity evaluates each layer: {exc}") from None
        else:
            weigh = weigher(ckpt, evaluator, target, mode, fed, progress=progress)
    shat = shat_of(results, plan_method) if rule == "shat" else None
    return budget_plan(ckpt, names, target, mode, rule, fed, shat, weigh=weigh)


def shat_of(results, method: str) -> dict[str, int]:
    """Each layer's ŝ by ``method`` (the ``shat`` allocation's weights)."""
    out = {}
    for r in results:
        m = r.analysis.methods.get(method) if r.analysis is not None else None
        if m is None:
            raise UsageError(f"--allocation shat follows {method}'s ŝ, which was not analysed for {r.layer.name}")
        out[r.layer.name] = m.rank if m.ok else 0
    return out


def whitened(req: WhitenedRequest, progress: Progress | None = None, cancel: CancelToken | None = None,
             ws: Workspace | None = None) -> tuple[list[LayerResult], dict]:
    """(one LayerResult per layer, of W·L; the calibration's record)."""
    from core.progress import tracked
    from core.truncation import whitened_matrix

    ws = ws or Workspace()
    ckpt = ws.checkpoint(req.path, req.conv_view)
    fed, fallback, record = ws.whitening(req.path, req.conv_view, req.evaluator, req.calibration, req.layers)
    out = []
    for name in tracked(req.layers, progress, cancel):
        layer = ckpt.layer(name)
        if name in fed:
            out.append(LayerResult(layer, req.options.analyse(whitened_matrix(ckpt.matrix(layer), fed[name]))))
        else:
            out.append(LayerResult(replace(layer, reason=fallback[name]), None))
    return out, record


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
    source, method, mode and ranks (and for whitened, the calibration and the layers truncated
    hard), and keeps the source's own (its evaluator, above all). A ``.gguf`` output of a GGUF
    source is a GGUF with every key, name and order of the source. With ``factors``, each
    layer's two factors go to a second file (``core.truncation.factor_names``)."""
    import json

    from core.truncation import export_safetensors, truncate_checkpoint

    ws = ws or Workspace()
    ckpt = ws.checkpoint(req.path, req.conv_view)
    fed, fallback, record = {}, {}, None
    if req.mode == "whitened":
        fed, fallback, record = ws.whitening(req.path, req.conv_view, req.evaluator, req.calibration, list(req.plan))
    meta = {"rmt_tui.source": str(ckpt.path), "rmt_tui.method": req.method, "rmt_tui.mode": req.mode,
            "rmt_tui.ranks": json.dumps(dict(req.plan))}
    if record is not None:
        meta.update({"rmt_tui.calibration": json.dumps(record), "rmt_tui.fallback": json.dumps(fallback)})
    if Path(req.output).suffix == ".gguf":
        out = _truncate_to_gguf(ckpt, req, meta, cancel, fed)
    else:
        state = truncate_checkpoint(ckpt, req.plan, req.mode, req.sigma2, cancel, fed)
        meta.update({k: v for k, v in ckpt.metadata.items()
                     if not k.startswith("rmt_tui.") or k == "rmt_tui.evaluator"})
        out = export_safetensors(state, req.output, meta, overwrite=req.overwrite)
    if req.factors is not None:
        from core.truncation import checkpoint_factors

        export_safetensors(checkpoint_factors(ckpt, req.plan, req.mode, req.sigma2, cancel, fed), req.factors,
                           {**meta, "rmt_tui.factors_of": str(out)}, overwrite=req.overwrite)
    return out


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


def _truncate_to_gguf(ckpt, req: TruncateRequest, meta: dict, cancel: CancelToken | None, fed: Mapping) -> Path:
    from core.io.gguf import export_gguf
    from core.progress import check
    from core.truncation import truncate_matrix

    check_gguf_output(ckpt.path, req.output)
    replaced = {}
    for name, k in req.plan.items():
        check(cancel)
        layer = ckpt.layer(name)
        replaced[layer.tensor] = truncate_matrix(ckpt.matrix(layer), k, req.mode, req.sigma2.get(name),
                                                 fed.get(name)).reshape(layer.shape)
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
                              SweepRequest: sweep, SensitivityRequest: sensitivity, CompressRequest: compress,
                              WhitenedRequest: whitened, DeltaRequest: delta, TruncateRequest: truncate}


def run(req, progress: Progress | None = None, cancel: CancelToken | None = None, ws: Workspace | None = None,
        emit: Emit | None = None):
    """The job for this request's type (what the app's engine serves)."""
    job = JOBS.get(type(req))
    if job is None:
        raise RmtError(f"unknown job request {type(req).__name__}")
    if job is analyse_many:
        return job(req, progress, cancel, ws, emit)
    return job(req, progress, cancel, ws)

