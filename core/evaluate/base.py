"""The evaluator contract: what every evaluator family implements, and how one is run.

An evaluator scores a state dict (name → tensor) and returns its metrics (name → float). It
declares its primary metric (a MetricSpec) and has an explicit reference step: ``set_reference``
is called once with the original weights before anything is scored, so an evaluator that
compares a truncated model with the original's own outputs (the Hugging Face families) never
has to guess which call was the original.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from core.errors import EvaluationError, RmtWarning
from core.evaluate.outcomes import ACCURACY, MetricSpec

if TYPE_CHECKING:
    import torch

State = Mapping[str, "torch.Tensor"]
SLOW_EVALUATION = 1.0  # seconds: above this, a job of many evaluations says how long it will take


@runtime_checkable
class Evaluator(Protocol):
    name: str
    primary: MetricSpec

    def set_reference(self, state: State) -> None:
        """Remember what the original weights ``state`` give (called once, before any scoring)."""
        ...

    def __call__(self, state: State) -> Mapping[str, float]:
        """The metrics of ``state``; the primary metric's key among them."""
        ...


class SelfContained:
    """For evaluators whose score needs no reference (labels are the reference): nothing to keep."""

    def set_reference(self, state: State) -> None:
        pass


def primary_of(evaluator) -> MetricSpec:
    spec = getattr(evaluator, "primary", None)
    return spec if isinstance(spec, MetricSpec) else ACCURACY


def _guarded(evaluator, what: str, call):
    """Run ``call()`` so that the evaluator cannot end the process or write into the command's
    stdout: an EvaluationError passes, ``sys.exit`` and anything else it raises become one, and
    what it prints goes to stderr (stdout carries the command's document only)."""
    import contextlib
    import sys

    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            out = call()
    except EvaluationError:
        raise
    except SystemExit as exc:
        raise EvaluationError(f"the evaluator called sys.exit({exc.code!r}){what}: an evaluator must return its "
                              "metrics, not end the process") from None
    except Exception as exc:
        raise EvaluationError(f"the evaluator failed{what}: {type(exc).__name__}: {exc}") from None
    try:
        evaluator.last_seconds = time.perf_counter() - t0
    except AttributeError:  # a callable that takes no attributes
        pass
    return out


def set_reference(evaluator, state: State) -> None:
    """The explicit reference step, with the same error handling as a scoring call."""
    _guarded(evaluator, " on the original weights", lambda: evaluator.set_reference(state))


def run_evaluator(evaluator, state: State) -> dict[str, float]:
    key = primary_of(evaluator).key
    out = _guarded(evaluator, "", lambda: evaluator(state))
    if not isinstance(out, Mapping) or key not in out:
        raise EvaluationError(f"the evaluator must return a dict with its primary metric {key!r}, got {out!r:.80}")
    metrics = {}
    for k, v in out.items():
        try:
            number = float(v)
        except (TypeError, ValueError):
            number = None
        if isinstance(v, (str, bytes)) or number is None or not math.isfinite(number):
            raise EvaluationError(f"the evaluator's metric {k!r} is {v!r:.60}: every metric must be a finite number")
        metrics[str(k)] = number
    return metrics


def say_how_long(evaluator, remaining: int, what: str) -> None:
    """On a slow model, how long one evaluation took and what the job ahead will take."""
    s = getattr(evaluator, "last_seconds", None)
    if s is not None and s > SLOW_EVALUATION and remaining > 0:
        warnings.warn(RmtWarning(f"one evaluation took {s:.1f} s: {what} runs {remaining} more "
                                 f"(about {remaining * s:.0f} s)"), stacklevel=2)
