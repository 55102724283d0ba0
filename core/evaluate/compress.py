"""A model compressed to a parameter budget in each truncation mode, and evaluated: the ranks from
``core.compress.allocate`` on each layer's spectrum (W's for hard, W·L's for whitened), every
layer truncated at once, the evaluator's metrics after (SPEC §13)."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

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


def sensitivity_weights(ckpt: Checkpoint, spectra, evaluator: Evaluator, target: float, mode: str,
                        fed, baseline: float, progress: Progress | None = None,
                        cancel: CancelToken | None = None) -> dict[str, float]:
    """Each layer's damage to the primary metric per unit of relative loss, measured by truncating
    it alone at the rank the uniform rule gives it (everything else original)."""
    from core.compress import allocate, shares
    from core.evaluate.measure import score_alone
    from core.progress import tracked

    primary = primary_of(evaluator)
    probe = allocate(spectra, target, "uniform").ranks
    state = ckpt.state_dict()
    weights = {}
    for sp in tracked(spectra, progress, cancel, label=lambda sp: f"sensitivity of {sp.name}", finish=False):
        k = probe[sp.name]
        lost = float(np.sum(shares(sp)[k:]))
        if k >= sp.p or lost <= 0:
            weights[sp.name] = 1.0
            continue
        value = score_alone(evaluator, state, ckpt.layer(sp.name), k, mode, None, (fed or {}).get(sp.name))[
            primary.key]
        weights[sp.name] = max(primary.damage(baseline, value), 0.0) / lost
    floor = max(min((w for w in weights.values() if w > 0), default=1.0) * 1e-3, 1e-12)
    return {n: max(w, floor) for n, w in weights.items()}  # a harmless layer still ranks its own values


def weigher(ckpt: Checkpoint, evaluator: Evaluator, target: float, mode: str, fed, baseline: float | None = None,
            progress: Progress | None = None, cancel: CancelToken | None = None):
    """The ``weigh`` callback of ``core.compress.budget_plan`` for the ``sensitivity`` rule."""
    def weigh(spectra):
        base = baseline if baseline is not None else run_evaluator(evaluator, ckpt.state_dict())[
            primary_of(evaluator).key]
        return sensitivity_weights(ckpt, spectra, evaluator, target, mode, fed, base, progress, cancel)
    return weigh


def compress_and_evaluate(ckpt: Checkpoint, names: Sequence[str], evaluator: Evaluator, target: float,
                          modes: Sequence[str], rule: str = DEFAULT_RULE, calibration: Calibration | None = None,
                          shat: Mapping[str, int] | None = None, progress: Progress | None = None,
                          cancel: CancelToken | None = None) -> CompressReport:
    progress = progress or no_progress
    primary = primary_of(evaluator)
    progress(0, 1 + 2 * len(modes), "baseline")
    baseline = run_evaluator(evaluator, ckpt.state_dict())
    outcomes = {}
    for i, mode in enumerate(modes):
        t0 = time.perf_counter()
        fed, fallback = whitening(ckpt, names, calibration) if mode == "whitened" else ({}, {})
        progress(1 + 2 * i, 1 + 2 * len(modes), f"{mode}: spectra")
        def stage(done, total, what, i=i, mode=mode):
            progress(1 + 2 * i, 1 + 2 * len(modes), f"{mode}: {what} ({done}/{total})")

        weigh = weigher(ckpt, evaluator, target, mode, fed, baseline[primary.key], stage, cancel)
        alloc = budget_plan(ckpt, names, target, mode, rule, fed, shat, cancel, weigh)
        progress(2 + 2 * i, 1 + 2 * len(modes), f"{mode}: truncating")
        state = truncate_checkpoint(ckpt, alloc.plan, mode, None, cancel, fed)
        seconds = time.perf_counter() - t0
        check(cancel)
        outcomes[mode] = CompressOutcome(mode, alloc, run_evaluator(evaluator, state), fallback, seconds)
    progress(1 + 2 * len(modes), 1 + 2 * len(modes), "")
    return CompressReport(baseline, target, rule, outcomes, calibration.record() if calibration else None,
                          primary)
