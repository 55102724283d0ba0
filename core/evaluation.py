"""Evaluators and what they measure: a model's primary metric before and after truncation, rank
sweeps, per-layer sensitivity and a truncation plan within a budget.

An evaluator is a callable ``evaluate(state_dict) -> dict[str, float]`` that declares its primary
metric (``primary``: a MetricSpec — key, label, which way is better). Built-in ones: the MNIST
evaluator (accuracy; picked when a file's metadata says ``rmt_tui.evaluator = mnist-mlp``) and
the label-free Hugging Face evaluators (``core.hf``; picked when the checkpoint is an HF folder).
Metadata and folders only choose among built-in evaluators; they never name code to run. A
user's own evaluator (a Python file, or ``module:function``) runs their code, by their explicit
choice; a plain function reports ``accuracy`` unless it sets ``evaluate.primary = "metric"``
(and ``evaluate.higher_is_better = False`` where lower is better).
"""
from __future__ import annotations

import importlib
import importlib.util
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint, matrix_view
from .errors import EvaluationError, RmtWarning, UsageError
from .mlp import mlp_from_state_dict
from .mnist import load_test_split, pixels_to_float
from .outcomes import (
    ACCURACY,
    EvalReport,
    EvaluatorChoice,
    LayerSensitivity,
    MethodOutcome,
    MetricSpec,
    PlanStep,
    SensitivityReport,
    SweepPoint,
    SweepReport,
)
from .scan import CancelToken, LayerResult, Progress
from .spectrum import MatrixShape
from .truncation import (
    full_factors,
    low_rank,
    params_saved,
    resolve_ranks,
    truncate_checkpoint,
    truncate_matrix,
    write_back,
)

Evaluator = Callable[[Mapping[str, torch.Tensor]], Mapping[str, float]]


class MnistEvaluator:
    """Test accuracy of an fc1, fc2, … ReLU MLP on the shipped MNIST test split (or its first ``limit``)."""

    name = "mnist-mlp"
    primary = ACCURACY

    def __init__(self, limit: int | None = None):
        images, labels = load_test_split()
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.x = torch.from_numpy(pixels_to_float(images))
        self.y = torch.from_numpy(labels)

    def __call__(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        model = mlp_from_state_dict(state)
        with torch.no_grad():
            pred = model(self.x).argmax(1)
        return {"accuracy": float((pred == self.y).double().mean())}


BUILTIN_EVALUATORS: dict[str, Callable[[], Evaluator]] = {MnistEvaluator.name: MnistEvaluator}
SLOW_EVALUATION = 1.0  # seconds: above this, a job of many evaluations says how long it will take


def primary_of(evaluator) -> MetricSpec:
    return getattr(evaluator, "primary", None) if isinstance(getattr(evaluator, "primary", None), MetricSpec) \
        else ACCURACY


class FunctionEvaluator:
    """A user's ``evaluate`` function, with the primary metric it declares (accuracy by default)."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name
        key = getattr(fn, "primary", "accuracy")
        if not isinstance(key, str):
            raise EvaluationError(f"{name}: evaluate.primary must be a metric name, got {key!r}")
        higher = bool(getattr(fn, "higher_is_better", True))
        self.primary = MetricSpec(key, str(getattr(fn, "primary_label", key)), higher, ".4g")

    def __call__(self, state):
        return self.fn(state)


def choose_evaluator(ckpt: Checkpoint, choice: EvaluatorChoice | str | None = None) -> tuple[str, Evaluator]:
    """(name, evaluator): the user's ``spec`` when given; else the built-in one the checkpoint's
    metadata names; else, for a Hugging Face folder, the label-free one its config calls for
    (its reference outputs computed here, once, from the checkpoint itself)."""
    choice = choice if isinstance(choice, EvaluatorChoice) else EvaluatorChoice(choice)
    spec = choice.spec
    if spec and spec not in BUILTIN_EVALUATORS and spec not in ("hf-causal-lm", "hf-encoder"):
        return spec, load_evaluator(spec)
    name = spec or ckpt.metadata.get("rmt_tui.evaluator")
    if name in BUILTIN_EVALUATORS:
        return name, BUILTIN_EVALUATORS[name]()
    from .hf import HF_EVALUATORS, GgufCausalLM, hf_kind

    gguf = ckpt.path.suffix == ".gguf" and name in (None, "hf-causal-lm")
    name = "hf-causal-lm" if gguf else name or hf_kind(ckpt.path)
    if name in HF_EVALUATORS:
        cls = GgufCausalLM if gguf else HF_EVALUATORS[name]
        ev = cls(ckpt.path, text=choice.text, device=choice.device)
        run_evaluator(ev, ckpt.state_dict())  # the original's outputs: the reference
        return name, ev
    raise EvaluationError(f"{ckpt.path}: no evaluator — neither its metadata nor a Hugging Face config.json names "
                          "a built-in one; pass --evaluator FILE.py or module:function (your "
                          "evaluate(state_dict) -> {'accuracy': …})")


def load_evaluator(spec: str) -> Evaluator:
    """``path/to/file.py`` (its ``evaluate``), ``path/to/file.py:func``, or ``package.module:func``.
    This imports and runs the user's code, which is why it is only ever done on their request."""
    if spec in BUILTIN_EVALUATORS:
        return BUILTIN_EVALUATORS[spec]()
    target, _, func = spec.partition(":") if not spec.endswith(".py") else (spec, "", "")
    func = func or "evaluate"
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise EvaluationError(f"{path}: evaluator file not found")
            mod_spec = importlib.util.spec_from_file_location(f"rmt_user_evaluator_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"{spec}: cannot load the evaluator ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise EvaluationError(f"{spec}: no callable {func!r} in {target}; define evaluate(state_dict) -> dict")
    return FunctionEvaluator(fn, spec)


def run_evaluator(evaluator: Evaluator, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
    key = primary_of(evaluator).key
    t0 = time.perf_counter()
    try:
        out = evaluator(state)
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"the evaluator failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(out, Mapping) or key not in out:
        raise EvaluationError(f"the evaluator must return a dict with its primary metric {key!r}, got {out!r:.80}")
    try:
        evaluator.last_seconds = time.perf_counter() - t0
    except AttributeError:  # a callable that takes no attributes
        pass
    return {str(k): float(v) for k, v in out.items()}


def _say_how_long(evaluator, remaining: int, what: str) -> None:
    """On a slow model, how long one evaluation took and what the job ahead will take."""
    s = getattr(evaluator, "last_seconds", None)
    if s is not None and s > SLOW_EVALUATION and remaining > 0:
        warnings.warn(RmtWarning(f"one evaluation took {s:.1f} s: {what} runs {remaining} more "
                                 f"(about {remaining * s:.0f} s)"), stacklevel=2)


def evaluate_truncations(ckpt: Checkpoint, results: Sequence[LayerResult], evaluator: Evaluator,
                         methods: Sequence[str] = ("bema", "broadening"), mode: str = "hard",
                         progress: Progress | None = None, cancel: CancelToken | None = None) -> EvalReport:
    """Baseline, then for each method: truncate all ``results``' layers to its ŝ and evaluate."""
    analysed = [r for r in results if r.analysis is not None and r.layer.matrix is not None]
    total = 1 + len(methods)
    tick = progress or (lambda *a: None)
    tick(0, total, "baseline")
    baseline = run_evaluator(evaluator, ckpt.state_dict())
    _say_how_long(evaluator, len(methods), "this evaluation")
    by_name = {r.layer.name: r for r in analysed}
    outcomes = {}
    for i, method in enumerate(methods, start=1):
        if cancel is not None:
            cancel.check()
        tick(i, total, method)
        plan = resolve_ranks(method, analysed)
        sigma2 = {n: by_name[n].analysis.methods[method].sigma2 for n in plan}
        state = truncate_checkpoint(ckpt, plan, mode, sigma2, cancel)
        if cancel is not None:
            cancel.check()
        saved = sum(params_saved(by_name[n].analysis.shape, k) for n, k in plan.items())
        avew = {n: by_name[n].analysis.methods[method].avew for n in plan}
        outcomes[method] = MethodOutcome(method, run_evaluator(evaluator, state), dict(plan), saved, avew)
    tick(total, total, "")
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
                progress: Progress | None = None, cancel: CancelToken | None = None) -> SweepReport:
    """Accuracy and Avew against the kept rank k of one layer (all other layers untouched).
    One full SVD with vectors, then each W_k is a partial sum."""
    layer, a = result.layer, result.analysis
    if a is None or layer.matrix is None or a.sv.size == 0:
        raise EvaluationError(f"{layer.name} has no spectrum to sweep: {result.reason}")
    shape: MatrixShape = a.shape
    marks = {m: (r.rank if r.ok else None) for m, r in a.methods.items()}
    ranks = list(ranks) if ranks is not None else default_ranks(shape.p, [k for k in marks.values() if k is not None])
    curves = {m: a.avew_curve(m) for m in a.methods}
    tick = progress or (lambda *x: None)
    tick(0, len(ranks) + 1, "baseline")
    state = ckpt.state_dict()
    baseline = run_evaluator(evaluator, state)
    _say_how_long(evaluator, sum(k < shape.p for k in ranks), "this sweep")
    original = state[layer.tensor]
    f = full_factors(matrix_view(original, layer))  # the tensor just read, not a second read
    points = []
    for i, k in enumerate(ranks, start=1):
        if cancel is not None:
            cancel.check()
        tick(i, len(ranks) + 1, f"k = {k}")
        if k >= shape.p:
            metrics = dict(baseline)  # W_p is W itself
        else:
            w = low_rank(f, k) if k > 0 else np.zeros(shape.m * shape.n)
            state[layer.tensor] = write_back(original, layer, np.asarray(w).reshape(layer.matrix))
            metrics = run_evaluator(evaluator, state)
        avew = {m: (float(c[k - 1]) if c is not None and k > 0 else None) for m, c in curves.items()}
        points.append(SweepPoint(k, metrics, avew))
    tick(len(ranks) + 1, len(ranks) + 1, "")
    return SweepReport(layer.name, shape.p, baseline, points, marks, primary=primary_of(evaluator))


# ------------------------------------------------------------------ per-layer sensitivity and a plan


def layer_sensitivity(ckpt: Checkpoint, results: Sequence[LayerResult], evaluator: Evaluator,
                      methods: Sequence[str] = ("bema", "broadening"), mode: str = "hard",
                      progress: Progress | None = None, cancel: CancelToken | None = None) -> SensitivityReport:
    """Each analysed layer truncated alone to each method's ŝ (everything else original) and
    evaluated; rows sorted by the damage to the primary metric, least first. Layers a method
    keeps whole (ŝ = p) or cannot judge are left out: truncating them changes nothing."""
    primary = primary_of(evaluator)
    jobs = [(r, m, r.analysis.methods[m]) for r in results if r.analysis is not None and r.layer.matrix is not None
            for m in methods if m in r.analysis.methods and r.analysis.methods[m].ok
            and r.analysis.methods[m].rank < r.analysis.shape.p]
    tick = progress or (lambda *a: None)
    tick(0, len(jobs) + 1, "baseline")
    state = ckpt.state_dict()
    baseline = run_evaluator(evaluator, state)
    _say_how_long(evaluator, len(jobs), "the sensitivity job")
    rows = []
    for i, (r, m, res) in enumerate(jobs, start=1):
        if cancel is not None:
            cancel.check()
        tick(i, len(jobs) + 1, f"{r.layer.name} {m}")
        original = state[r.layer.tensor]
        new = truncate_matrix(matrix_view(original, r.layer), res.rank, mode, res.sigma2)
        state[r.layer.tensor] = write_back(original, r.layer, new)
        metrics = run_evaluator(evaluator, state)
        state[r.layer.tensor] = original
        rows.append(LayerSensitivity(r.layer.name, m, res.rank, r.analysis.shape.p, metrics,
                                     primary.damage(baseline[primary.key], metrics[primary.key]),
                                     params_saved(r.analysis.shape, res.rank)))
    tick(len(jobs) + 1, len(jobs) + 1, "")
    rows.sort(key=lambda x: (x.damage, -x.params_saved))
    return SensitivityReport(baseline, rows, primary, getattr(evaluator, "name", ""),
                             getattr(evaluator, "last_seconds", None))


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
                       progress: Progress | None = None, cancel: CancelToken | None = None) -> SensitivityReport:
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
    tick = progress or (lambda *a: None)
    for i, row in enumerate(order):
        if cancel is not None:
            cancel.check()
        tick(i, len(order), row.layer)
        trial = {**plan, row.layer: row.rank}
        sigma2 = {n: by_name[n].analysis.methods[method].sigma2 for n in trial}
        metrics = run_evaluator(evaluator, truncate_checkpoint(ckpt, trial, mode, sigma2, cancel))
        ok = within_budget(primary, base, metrics[key], bound, relative)
        steps.append(PlanStep(row.layer, row.rank, metrics, ok))
        if not ok:
            break
        plan = trial
    tick(len(order), len(order), "")
    return SensitivityReport(report.baseline, report.rows, primary, report.evaluator, report.seconds_per_eval,
                             steps, method, budget)
