"""Which noise a matrix's bulk looks like (SPEC §12), with the evidence: the raw MP fit's KS
distance, the KS after row/column equalisation, and a shuffle null's top value against the MP edge
at the total entry variance. Decided in this order:

* ``heavy-tailed``: the shuffled s₁ is above HEAVY_RATIO × σ_T(√N + √p), σ_T² = ‖W‖²_F/(mn) —
  shuffling keeps the entries' distribution, and only heavy tails push its top value past the edge
  (measured on synthetic matrices: ≤ 1.00 for i.i.d., heteroscedastic and AR(1) noise, ≥ 1.43 for
  Student-t(3) entries);
* ``mp``: the raw fit is good (KS ≤ GOOD_KS);
* ``heteroscedastic``: the fit is good after equalisation;
* ``correlated``: neither (equalising row and column variances does not fix correlations).

The fits are BEMA's (whatever methods a report shows), so every layer is judged the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.rmt.fit_quality import ks_distance
from core.rmt.spectrum import MatrixShape

GOOD_KS = 0.05  # separated the synthetic classes cleanly (SPEC §12)
HEAVY_RATIO = 1.2  # between the classes' measured ≤ 1.00 and ≥ 1.43
MODELS = ("mp", "heteroscedastic", "correlated", "heavy-tailed")


@dataclass(frozen=True)
class NoiseDiagnosis:
    model: str | None  # one of MODELS; None when it could not be decided (then ``reason``)
    ks_raw: float | None = None
    ks_equalised: float | None = None
    shuffle_edge_ratio: float | None = None  # shuffled s₁ ÷ σ_T(√N + √p)
    reason: str | None = None

    def to_dict(self) -> dict:
        return {"model": self.model, "evidence": {"ks_raw": self.ks_raw, "ks_equalised": self.ks_equalised,
                                                  "shuffle_edge_ratio": self.shuffle_edge_ratio},
                "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict) -> NoiseDiagnosis:
        return cls(d["model"], **d["evidence"], reason=d.get("reason"))


def classify(ks_raw: float, ks_equalised: float | None, ratio: float) -> str:
    if ratio > HEAVY_RATIO:
        return "heavy-tailed"
    if ks_raw <= GOOD_KS:
        return "mp"
    if ks_equalised is not None and ks_equalised <= GOOD_KS:
        return "heteroscedastic"
    return "correlated"


def bema_ks(sv: np.ndarray, shape: MatrixShape) -> float | None:
    """KS of BEMA's MP fit to this spectrum (None where BEMA does not apply)."""
    from core.rmt.methods import Bema, NotApplicable

    try:
        t = Bema().fit(sv, shape)
    except NotApplicable:
        return None
    return ks_distance(sv, t.sigma2, t.threshold, shape)


def diagnose(w: np.ndarray, sv: np.ndarray, shape: MatrixShape, equalised_sv: np.ndarray | None,
             seed: int = 0) -> NoiseDiagnosis:
    """``w``: the matrix; ``sv``: its singular values (descending); ``equalised_sv``: those of its
    equalised form (None when it could not be equalised)."""
    from core.rmt.methods.shuffle import shuffled_tops

    ks_raw = bema_ks(sv, shape)
    if ks_raw is None:
        return NoiseDiagnosis(None, reason=f"p = {shape.p}: too few singular values to judge the bulk")
    ks_eq = bema_ks(equalised_sv, shape) if equalised_sv is not None else None
    sigma_t = math.sqrt(float(np.sum(np.square(sv))) / (shape.m * shape.n))
    ratio = shuffled_tops(np.asarray(w, dtype=np.float32), 1, seed)[0] / (sigma_t * (math.sqrt(shape.N) +
                                                                                     math.sqrt(shape.p)))
    return NoiseDiagnosis(classify(ks_raw, ks_eq, ratio), ks_raw, ks_eq, ratio)
