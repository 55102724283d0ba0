"""What an evaluation and a sweep found: plain records, importable without torch (the app's UI
process receives them from the engine and must not pay for torch to unpickle them)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The truncation modes (core.truncation): keep W's top values, de-bias them, or keep W·L's top
# values (SPEC §13). Here, torch-free, because the CLI's parser and the app's UI process read it.
MODES = ("hard", "shrink", "whitened")


@dataclass(frozen=True)
class MetricSpec:
    """An evaluator's primary metric: the key in its results, how to label and format it, and
    which way is better. The panel, tables, JSON, sweeps and budgets all read it from here."""

    key: str = "accuracy"
    label: str = "accuracy"
    higher_is_better: bool = True
    fmt: str = ".4f"

    def damage(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` (negative: better)."""
        return baseline - value if self.higher_is_better else value - baseline

    def show(self, value: float | None) -> str:
        return "–" if value is None else format(value, self.fmt)


ACCURACY = MetricSpec()
KL = MetricSpec("kl", "KL nats/token", higher_is_better=False, fmt=".4g")  # hf-causal-lm
FIDELITY = MetricSpec("fidelity", "embedding fidelity", higher_is_better=True, fmt=".4f")  # hf-encoder
_BUILT_IN = {s.key: s for s in (ACCURACY, KL, FIDELITY)}


def metric_spec(record: dict) -> MetricSpec:
    """The MetricSpec of a document's ``primary`` record ({metric, label, higher_is_better}): the
    built-in evaluators' own, else a user metric shown with 4 significant digits."""
    known = _BUILT_IN.get(record["metric"])
    if known is not None and known.label == record["label"]:
        return known
    return MetricSpec(record["metric"], record["label"], bool(record["higher_is_better"]), ".4g")


@dataclass(frozen=True)
class EvaluatorChoice:
    """Which evaluator, as the user asked: ``spec`` (FILE.py, module:function or a built-in name;
    None: the one the checkpoint calls for), the label-free evaluators' text, and the device."""

    spec: str | None = None
    text: str | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class MethodOutcome:
    method: str
    metrics: dict[str, float]  # after truncating every planned layer
    ranks: dict[str, int]  # layer → kept rank
    params_saved: int
    avew: dict[str, float | None]  # layer → Avew at the kept rank

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
    primary: MetricSpec = ACCURACY
    calibration: dict | None = None  # whitened: {source, tokens | samples, disjoint}
    fallback: dict[str, str] = field(default_factory=dict)  # whitened: layers truncated hard, and why


@dataclass(frozen=True)
class SweepPoint:
    rank: int
    metrics: dict[str, float]
    avew: dict[str, float | None]  # method → Avew(k) with that method's σ̂


@dataclass(frozen=True)
class SweepReport:
    layer: str
    p: int
    baseline: dict[str, float]
    points: list[SweepPoint]
    method_ranks: dict[str, int | None]  # each method's ŝ, marked on the plot
    evaluator: str = ""  # its name, where known
    primary: MetricSpec = ACCURACY
    mode: str = "hard"  # or "whitened": W_k = (W·L)_k L⁻¹


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer truncated alone to one method's ŝ, everything else original."""

    layer: str
    method: str
    rank: int
    p: int
    metrics: dict[str, float]
    damage: float  # of the primary metric against the baseline (MetricSpec.damage)
    params_saved: int


@dataclass(frozen=True)
class PlanStep:
    layer: str
    rank: int
    metrics: dict[str, float]  # every layer so far truncated together
    within: bool  # still within the budget


@dataclass(frozen=True)
class SensitivityReport:
    baseline: dict[str, float]
    rows: list[LayerSensitivity]  # sorted by damage, least first
    primary: MetricSpec = ACCURACY
    evaluator: str = ""
    seconds_per_eval: float | None = None
    plan: list[PlanStep] = field(default_factory=list)  # when a budget was given
    plan_method: str | None = None
    budget: str | None = None

    @property
    def planned(self) -> dict[str, int]:
        """The layers the plan keeps truncated (those added while within the budget) → rank."""
        return {s.layer: s.rank for s in self.plan if s.within}
