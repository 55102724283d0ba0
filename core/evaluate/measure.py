"""What an evaluation measures: a model's primary metric before and after truncation, rank sweeps,
per-layer sensitivity and a truncation plan within a budget. Each takes an evaluator (see
``core.evaluate.base``) whose reference is already set."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from core.errors import EvaluationError, UsageError
from core.evaluate.base import Evaluator, primary_of, run_evaluator, say_how_long
from core.evaluate.outcomes import (
    EvalReport,
    LayerSensitivity,
    MethodOutcome,
    MetricSpec,
    PlanStep,
    SensitivityReport,
    SweepPoint,
    SweepReport,
)
from core.io.checkpoint import Checkpoint
from core.io.layers import matrix_view
from core.progress import CancelToken, Progress, check, no_progress, tracked
from core.rmt.methods import DEFAULT_METHODS
from core.rmt.spectrum import MatrixShape
from core.scan import LayerResult
from core.truncation import (
    Fed,
    full_factors,
    low_rank,
    params_saved,
    resolve_ranks,
    truncate_checkpoint,
    truncate_matrix,
    whitened_factors,
    write_back,
)


def evaluate_truncations(ckpt: Checkpoint, results: Sequence[LayerResult], evaluator: Evaluator,
                         methods: Sequence[str] = DEFAULT_METHODS, mode: str = "hard",
                         progress: Progress | None = None, cancel: CancelToken | None = None,
                         fed: Mapping[str, Fed] | None = None) -> EvalReport:
    """Baseline, then for each method: truncate all ``results``' layers to its ŝ and evaluate
    (whitened: the layers in ``fed`` through W·L, the others hard)."""
    analysed = [r for r in results if r.analysis is not None and r.layer.matrix is not None]
    (progress or no_progress)(0, 1 + len(methods), "baseline")
    baseline = run_evaluator(evaluator, ckpt.state_dict())
    say_how_long(evaluator, len(methods), "this evaluation")
    by_name = {r.layer.name: r for r in analysed}
    outcomes = {}
    for method in tracked(methods, progress, cancel, offset=1):
        plan = resolve_ranks(method, analysed)
        sigma2 = {n: by_name[n].analysis.methods[method].sigma2 for n in plan}
        state = truncate_checkpoint(ckpt, plan, mode, sigma2, cancel, fed)
        check(cancel)
        saved = sum(params_saved(by_name[n].analysis.shape, k) for n, k in plan.items())
        avew = {n: by_name[n].analysis.methods[method].avew for n in plan}
        outcomes[method] = MethodOutcome(method, run_evaluator(evaluator, state), dict(plan), saved, avew)
    return EvalReport(baseline, outcomes, mode, primary=primary_of(evaluator))


def default_ranks(p: int, marks: Sequence[int] = (), points: int = 16) -> list[int]:
    grid = {int(round(v)) for v in np.linspace(0, p, points)}
    return sorted(grid | {k for k in marks if 0 <= k <= p})


def parse_ranks(text: str, p: int) -> list[int]:
    """'START:STOP:STEP' (STOP inclusive, clipped to p) or a comma list."""
    try:
        if ":" in text:
            parts = [int(v) if v else None for v in text.split(":")]
            start, stop, step = (parts + [None, None, None])[:3]
            start, stop, step = start or 0, p if stop is None else min(stop, p), step or max(1, p // 16)
            if step <= 0:
                raise ValueError
            ranks = sorted(set(range(start, stop + 1, step)) | ({stop} if stop >= start else set()))
        else:
            ranks = sorted({min(int(v), p) for v in text.split(",") if v.strip()})
        if not ranks or ranks[0] < 0:
            raise ValueError
        return ranks
    except ValueError:
        raise EvaluationError(f"bad rank list {text!r}: use START:STOP:STEP or k1,k2,… with 0 ≤ k ≤ p = {p}") from None


def sweep_layer(ckpt: Checkpoint, result: LayerResult, evaluator: Evaluator, ranks: Sequence[int] | None = None,
                progress: Progress | None = None, cancel: CancelToken | None = None,
                fed: Fed | None = None) -> SweepReport:
    """Accuracy and Avew against the kept rank k of one layer (all other layers untouched).
    One full SVD with vectors (of W·L when ``fed``), then each W_k is a partial sum."""
    layer, a = result.layer, result.analysis
    if a is None or layer.matrix is None or a.sv.size == 0:
        raise EvaluationError(f"{layer.name} has no spectrum to sweep: {result.reason}")
    shape: MatrixShape = a.shape
    marks = {m: (r.rank if r.ok else None) for m, r in a.methods.items()}
    ranks = list(ranks) if ranks is not None else default_ranks(shape.p, [k for k in marks.values() if k is not None])
    curves = {m: a.avew_curve(m) for m in a.methods}
    (progress or no_progress)(0, len(ranks) + 1, "baseline")
    state = ckpt.state_dict()
    baseline = run_evaluator(evaluator, state)
    say_how_long(evaluator, sum(k < shape.p for k in ranks), "this sweep")
    original = state[layer.tensor]
    view = matrix_view(original, layer)  # the tensor just read, not a second read
    f = full_factors(view) if fed is None else whitened_factors(view, fed)
    points = []
    for k in tracked(ranks, progress, cancel, label=lambda k: f"k = {k}", offset=1):
        if k >= shape.p:
            metrics = dict(baseline)  # W_p is W itself
        else:
            w = low_rank(f, k) if k > 0 else np.zeros(shape.m * shape.n)
            state[layer.tensor] = write_back(original, layer, np.asarray(w).reshape(layer.matrix))
            metrics = run_evaluator(evaluator, state)
        avew = {m: (float(c[k - 1]) if c is not None and k > 0 else None) for m, c in curves.items()}
        points.append(SweepPoint(k, metrics, avew))
    return SweepReport(layer.name, shape.p, baseline, points, marks, primary=primary_of(evaluator),
                       mode="whitened" if fed is not None else "hard")


# ------------------------------------------------------------------ per-layer sensitivity and a plan


def layer_sensitivity(ckpt: Checkpoint, results: Sequence[LayerResult], evaluator: Evaluator,
                      methods: Sequence[str] = DEFAULT_METHODS, mode: str = "hard",
                      progress: Progress | None = None, cancel: CancelToken | None = None,
                      fed: Mapping[str, Fed] | None = None) -> SensitivityReport:
    """Each analysed layer truncated alone to each method's ŝ (everything else original) and
    evaluated; rows sorted by the damage to the primary metric, least first. Layers a method
    keeps whole (ŝ = p) or cannot judge are left out: truncating them changes nothing."""
    primary = primary_of(evaluator)
    jobs = [(r, m, r.analysis.methods[m]) for r in results if r.analysis is not None and r.layer.matrix is not None
            for m in methods if m in r.analysis.methods and r.analysis.methods[m].ok
            and r.analysis.methods[m].rank < r.analysis.shape.p]
    (progress or no_progress)(0, len(jobs) + 1, "baseline")
    state = ckpt.state_dict()
    baseline = run_evaluator(evaluator, state)
    say_how_long(evaluator, len(jobs), "the sensitivity job")
    rows = []
    for r, m, res in tracked(jobs, progress, cancel, label=lambda job: f"{job[0].layer.name} {job[1]}", offset=1):
        metrics = score_alone(evaluator, state, r.layer, res.rank, mode, res.sigma2, (fed or {}).get(r.layer.name))
        rows.append(LayerSensitivity(r.layer.name, m, res.rank, r.analysis.shape.p, metrics,
                                     primary.damage(baseline[primary.key], metrics[primary.key]),
                                     params_saved(r.analysis.shape, res.rank)))
    rows.sort(key=lambda x: (x.damage, -x.params_saved))
    return SensitivityReport(baseline, rows, primary, getattr(evaluator, "name", ""),
                             getattr(evaluator, "last_seconds", None))


def score_alone(evaluator: Evaluator, state: dict, layer, k: int, mode: str = "hard", sigma2: float | None = None,
                fed: Fed | None = None) -> dict[str, float]:
    """The metrics with ``layer`` alone truncated to rank ``k`` in ``state`` (restored after)."""
    original = state[layer.tensor]
    state[layer.tensor] = write_back(original, layer, truncate_matrix(matrix_view(original, layer), k, mode, sigma2,
                                                                      fed))
    try:
        return run_evaluator(evaluator, state)
    finally:
        state[layer.tensor] = original


def parse_budget(text: str, primary: MetricSpec) -> tuple[str, float, bool]:
    """``metric=VALUE`` (an absolute bound: at most VALUE when lower is better, at least VALUE
    when higher is) or ``metric=±Xpt`` (X percentage points from the baseline, for fractions
    such as accuracy). Returns (metric, value, relative)."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    try:
        if not sep or not key:
            raise ValueError
        relative = value.endswith("pt")
        number = float(value.removesuffix("pt")) / (100 if relative else 1)
    except ValueError:
        raise UsageError(f"bad budget {text!r}: use e.g. kl=0.05, fidelity=0.99 or accuracy=-0.5pt") from None
    if key != primary.key:
        raise UsageError(f"budget on {key!r}, but this evaluator's primary metric is {primary.key!r}")
    return key, number, relative


def within_budget(primary: MetricSpec, baseline: float, value: float, bound: float, relative: bool) -> bool:
    limit = baseline + bound if relative else bound
    return value >= limit if primary.higher_is_better else value <= limit


def plan_within_budget(ckpt: Checkpoint, results: Sequence[LayerResult], evaluator: Evaluator,
                       report: SensitivityReport, method: str, budget: str, mode: str = "hard",
                       progress: Progress | None = None, cancel: CancelToken | None = None,
                       fed: Mapping[str, Fed] | None = None) -> SensitivityReport:
    """Add layers, least damaging first (by ``report``, for ``method``), truncated together, while
    the model stays within ``budget``; every step is evaluated jointly. Stops at the first layer
    that would break the budget (the ones after it did more damage alone)."""
    primary = report.primary
    key, bound, relative = parse_budget(budget, primary)
    order = [row for row in report.rows if row.method == method]
    by_name = {r.layer.name: r for r in results if r.analysis is not None}
    base = report.baseline[key]
    plan: dict[str, int] = {}
    steps = []
    for row in tracked(order, progress, cancel, label=lambda row: row.layer, finish=False):
        trial = {**plan, row.layer: row.rank}
        sigma2 = {n: by_name[n].analysis.methods[method].sigma2 for n in trial}
        metrics = run_evaluator(evaluator, truncate_checkpoint(ckpt, trial, mode, sigma2, cancel, fed))
        ok = within_budget(primary, base, metrics[key], bound, relative)
        steps.append(PlanStep(row.layer, row.rank, metrics, ok))
        if not ok:
            break
        plan = trial
    (progress or no_progress)(len(order), len(order), "")
    return SensitivityReport(report.baseline, report.rows, primary, report.evaluator, report.seconds_per_eval,
                             steps, method, budget)
