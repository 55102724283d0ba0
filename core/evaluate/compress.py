"""A model compressed to a parameter budget in each truncation mode, and evaluated: the ranks from
``core.compress.allocate`` on each layer's spectrum (W's for hard, W·L's for whitened), every
layer truncated at once, the evaluator's metrics after (SPEC §13)."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.calibration import Calibration
from core.compress import DEFAULT_RULE, Allocation, budget_plan
from core.evaluate.base import Evaluator, primary_of, run_evaluator
from core.evaluate.outcomes import ACCURACY, MetricSpec
from core.io.checkpoint import Checkpoint
from core.progress import CancelToken, Progress, check, no_progress
from core.truncation import truncate_checkpoint, whitening


@dataclass(frozen=True)
class CompressOutcome:
    mode: str
    allocation: Allocation
    metrics: dict[str, float]
    fallback: dict[str, str] = field(default_factory=dict)  # whitened mode: layers truncated hard, and why
    seconds: float = 0.0  # spectra and truncation, not the evaluation


@dataclass(frozen=True)
class CompressReport:
    baseline: dict[str, float]
    target: float
    rule: str
    outcomes: dict[str, CompressOutcome]
    calibration: dict | None = None
    primary: MetricSpec = ACCURACY
    evaluator: str = ""


def compress_and_evaluate(ckpt: Checkpoint, names: Sequence[str], evaluator: Evaluator, target: float,
                          modes: Sequence[str], rule: str = DEFAULT_RULE, calibration: Calibration | None = None,
                          shat: Mapping[str, int] | None = None, progress: Progress | None = None,
                          cancel: CancelToken | None = None) -> CompressReport:
    progress = progress or no_progress
    progress(0, 1 + 2 * len(modes), "baseline")
    baseline = run_evaluator(evaluator, ckpt.state_dict())
    outcomes = {}
    for i, mode in enumerate(modes):
        t0 = time.perf_counter()
        fed, fallback = whitening(ckpt, names, calibration) if mode == "whitened" else ({}, {})
        progress(1 + 2 * i, 1 + 2 * len(modes), f"{mode}: spectra")
        alloc = budget_plan(ckpt, names, target, mode, rule, fed, shat, cancel)
        plan = {n: k for n, k in alloc.ranks.items() if k < min(ckpt.layer(n).matrix)}  # the rest stay dense
        progress(2 + 2 * i, 1 + 2 * len(modes), f"{mode}: truncating")
        state = truncate_checkpoint(ckpt, plan, mode, None, cancel, fed)
        seconds = time.perf_counter() - t0
        check(cancel)
        outcomes[mode] = CompressOutcome(mode, alloc, run_evaluator(evaluator, state), fallback, seconds)
    progress(1 + 2 * len(modes), 1 + 2 * len(modes), "")
    return CompressReport(baseline, target, rule, outcomes, calibration.record() if calibration else None,
                          primary_of(evaluator))
