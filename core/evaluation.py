"""Evaluators and what they measure: accuracy before and after truncation, and rank sweeps.

An evaluator is any callable ``evaluate(state_dict) -> dict[str, float]`` returning at least
``accuracy``. The built-in MNIST evaluator serves the demo models and is picked when a file's
metadata says ``rmt_tui.evaluator = mnist-mlp`` — metadata only chooses among built-in
evaluators, it never names code to run. A user's own evaluator (a Python file, or
``module:function``) runs their code, by their explicit choice on the command line.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint, matrix_view
from .errors import EvaluationError
from .mlp import mlp_from_state_dict
from .mnist import load_test_split, pixels_to_float
from .outcomes import EvalReport, MethodOutcome, SweepPoint, SweepReport
from .scan import CancelToken, LayerResult, Progress
from .spectrum import MatrixShape
from .truncation import full_factors, low_rank, params_saved, resolve_ranks, truncate_checkpoint, write_back

Evaluator = Callable[[Mapping[str, torch.Tensor]], Mapping[str, float]]


class MnistEvaluator:
    """Test accuracy of an fc1, fc2, … ReLU MLP on the shipped MNIST test split (or its first ``limit``)."""

    name = "mnist-mlp"

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


def builtin_evaluator_for(ckpt: Checkpoint) -> Evaluator | None:
    name = ckpt.metadata.get("rmt_tui.evaluator")
    factory = BUILTIN_EVALUATORS.get(name) if name else None
    return factory() if factory else None


def choose_evaluator(ckpt: Checkpoint, spec: str | None) -> tuple[str, Evaluator]:
    """(name, evaluator): the user's ``spec`` when given, else the built-in one the checkpoint's
    metadata names."""
    if spec:
        return spec, load_evaluator(spec)
    ev = builtin_evaluator_for(ckpt)
    if ev is None:
        raise EvaluationError(f"{ckpt.path}: no evaluator — this checkpoint's metadata names no built-in one; "
                              "pass --evaluator FILE.py or module:function (your evaluate(state_dict) -> "
                              "{'accuracy': …})")
    return ev.name, ev


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
    return fn


def run_evaluator(evaluator: Evaluator, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
    try:
        out = evaluator(state)
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"the evaluator failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(out, Mapping) or "accuracy" not in out:
        raise EvaluationError(f"the evaluator must return a dict with 'accuracy', got {out!r:.80}")
    return {str(k): float(v) for k, v in out.items()}


def evaluate_truncations(ckpt: Checkpoint, results: Sequence[LayerResult], evaluator: Evaluator,
                         methods: Sequence[str] = ("bema", "broadening"), mode: str = "hard",
                         progress: Progress | None = None, cancel: CancelToken | None = None) -> EvalReport:
    """Baseline, then for each method: truncate all ``results``' layers to its ŝ and evaluate."""
    analysed = [r for r in results if r.analysis is not None and r.layer.matrix is not None]
    total = 1 + len(methods)
    tick = progress or (lambda *a: None)
    tick(0, total, "baseline")
    baseline = run_evaluator(evaluator, ckpt.state_dict())
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
    return EvalReport(baseline, outcomes, mode)


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
    return SweepReport(layer.name, shape.p, baseline, points, marks)
