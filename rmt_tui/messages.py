"""Messages that worker threads post to the app. Workers never touch widgets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from core.scan import LayerResult

from .session import Job, LayerKey

if TYPE_CHECKING:
    from core.compare.delta import DeltaResult
    from core.evaluate.outcomes import EvalReport, SensitivityReport, SweepReport


@dataclass
class LayerAnalysed(Message):
    key: LayerKey
    result: LayerResult


@dataclass
class JobProgress(Message):
    job: Job


@dataclass
class JobEnded(Message):
    job: Job
    error: str | None = None  # None: finished or cancelled (job.token says which)


@dataclass
class EvalDone(Message):
    ckpt: int
    scope: str  # a layer name or session.ALL_LAYERS
    report: EvalReport


@dataclass
class SweepDone(Message):
    key: LayerKey
    report: SweepReport


@dataclass
class WhitenedDone(Message):
    key: LayerKey
    result: LayerResult
    calibration: dict  # the calibration's record: {source, tokens | samples, disjoint}


@dataclass
class DeltaDone(Message):
    base: int
    key: LayerKey  # the tuned checkpoint's layer
    result: DeltaResult


@dataclass
class SensitivityDone(Message):
    ckpt: int
    report: SensitivityReport
