"""What an evaluation and a sweep found: plain records, importable without torch (the app's UI
process receives them from the engine and must not pay for torch to unpickle them)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class MethodOutcome:
    method: str
    metrics: dict[str, float]  # after truncating every planned layer
    ranks: dict[str, int]  # layer → kept rank
    params_saved: int
    avew: dict[str, float | None]  # layer → Avew at the kept rank

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def mean_avew(self) -> float | None:
        vals = [v for v in self.avew.values() if v is not None]
        return float(np.mean(vals)) if vals else None


@dataclass(frozen=True)
class EvalReport:
    baseline: dict[str, float]
    outcomes: dict[str, MethodOutcome] = field(default_factory=dict)
    mode: str = "hard"
    evaluator: str = ""  # its name, where known


@dataclass(frozen=True)
class SweepPoint:
    rank: int
    metrics: dict[str, float]
    avew: dict[str, float | None]  # method → Avew(k) with that method's σ̂

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]


@dataclass(frozen=True)
class SweepReport:
    layer: str
    p: int
    baseline: dict[str, float]
    points: list[SweepPoint]
    method_ranks: dict[str, int | None]  # each method's ŝ, marked on the plot
    evaluator: str = ""  # its name, where known
