"""The analysis of one matrix: a plain frozen record that the app, the CLI and JSON all render."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from core.rmt.cosines import Cosines, avew_at, avew_curve, empirical_cosines, estimated_cosines
from core.rmt.fit_quality import KS_LIMIT, ks_distance
from core.rmt.methods import DEFAULT_METHODS, NotApplicable, Threshold, ThresholdMethod, make_methods
from core.rmt.methods.base import MIN_P
from core.rmt.noise import NoiseDiagnosis
from core.rmt.spectrum import MatrixShape, as_float_matrix, mp_edge, numerical_rank, numerical_ranks, singular_values

# What a report shows of each method, in this order (JSON keys, CSV columns).
METHOD_FIELDS = ("sigma2", "threshold", "rank", "avew", "avew_left", "avew_right", "ks", "poor_fit", "cosines",
                 "reason")
# Where Avew's cosines come from: the MP formula with the method's σ̂² (SPEC §5), the empirical
# D-transform of the bulk below the method's cut (SPEC §12), or empirical where the MP fit is poor.
COSINES = ("mp", "empirical", "auto")
COSINES_USED = ("mp", "empirical")  # what a method's record says it used (auto resolves to one)


@dataclass(frozen=True)
class MethodResult:
    """One threshold method on one matrix. Numbers are None when the method is not applicable."""

    method: str
    sigma2: float | None = None
    threshold: float | None = None
    rank: int | None = None
    avew: float | None = None
    avew_left: float | None = None
    avew_right: float | None = None
    ks: float | None = None
    cosines: str | None = None  # "mp" or "empirical": where Avew's cosines came from
    reason: str | None = None  # why the method is not applicable
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def poor_fit(self) -> bool:
        return self.ks is not None and self.ks > KS_LIMIT

    @cached_property
    def _report_fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in METHOD_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The fields reports carry (METHOD_FIELDS). Built once per record: a checkpoint of many
        small matrices shares one not-applicable record among all of them."""
        return dict(self._report_fields)


@dataclass(frozen=True)
class MatrixAnalysis:
    shape: MatrixShape
    sv: np.ndarray  # descending, float64, read-only; empty when the matrix could not be analysed
    methods: dict[str, MethodResult]
    weighting: str = "uniform"
    reason: str | None = None  # why the matrix as a whole was not analysed
    equalised: bool = False  # sv (and every method's numbers) are those of W̃, the equalised matrix
    ks_raw: float | None = None  # when equalised: BEMA's KS on W's own spectrum, for comparison
    noise: NoiseDiagnosis | None = None  # when asked for (--noise)

    @property
    def sv_max(self) -> float | None:
        return float(self.sv[0]) if self.sv.size else None

    def edge(self, method: str | None = None) -> float | None:
        """The fitted MP bulk edge s₊ = σ̂(√N + √p) of ``method`` (default: the first that
        applies, BEMA by default) — the unit in which spectra of different scales line up at 1."""
        for name, r in self.methods.items():
            if (method is None or name == method) and r.ok and r.sigma2:
                return mp_edge(r.sigma2, self.shape)
        return None

    def edge_ratio(self, method: str | None = None) -> float | None:
        """s₁ / s₊: the top value in units of the fitted edge."""
        edge = self.edge(method)
        return self.sv_max / edge if edge and self.sv_max else None

    def cosines(self, method: str) -> Cosines | None:
        r = self.methods.get(method)
        if r is None or not r.ok:
            return None
        return method_cosines(r.cosines, self.sv, r.sigma2, r.rank, self.shape)

    def avew_curve(self, method: str) -> np.ndarray | None:
        """Avew as a function of the kept rank k = 1 … p, with this method's σ̂²."""
        cos = self.cosines(method)
        return None if cos is None else avew_curve(cos.product, self.sv, self.weighting)


def _read_only(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@lru_cache(maxsize=1024)
def _not_applicable(method: str, reason: str) -> MethodResult:
    """Shared (the record is frozen): checkpoints with thousands of small matrices repeat these."""
    return MethodResult(method, reason=reason)


EMPTY = "empty matrix"
NON_FINITE = "non-finite values (NaN or Inf)"


def _degenerate(sv: np.ndarray, rank: int) -> str | None:
    """Why a spectrum has nothing to separate (all zero, or rank < 2); None when it has."""
    if sv.size and sv[0] == 0.0:
        return "all-zero matrix"
    return f"numerical rank {rank} < 2: nothing to separate" if rank < 2 else None


def _all_not_applicable(shape, methods, reason, sv=np.empty(0)) -> MatrixAnalysis:
    return MatrixAnalysis(shape, _read_only(sv), {m.name: _not_applicable(m.name, reason) for m in methods},
                          reason=reason if sv.size == 0 else None)


def method_cosines(kind: str, sv: np.ndarray, sigma2: float | None, rank: int, shape: MatrixShape) -> Cosines:
    return estimated_cosines(sv, sigma2, shape) if kind == "mp" else empirical_cosines(sv, rank, shape)


def bulk_ks(sv: np.ndarray, t: Threshold, shape: MatrixShape) -> float | None:
    """KS of the method's bulk (the values ≤ τ) against MP: at the method's σ̂², or — for a method
    that implies none — at the bulk's own mean eigenvalue (the mean of an MP law's λ is σ²)."""
    if t.sigma2 is not None:
        return ks_distance(sv, t.sigma2, t.threshold, shape)
    bulk = sv[sv <= t.threshold]
    s2 = float(np.mean(bulk * bulk)) / shape.N if bulk.size else 0.0
    return ks_distance(sv, s2, t.threshold, shape) if s2 > 0 else None


def _cosines_kind(cosines: str, t: Threshold, ks: float | None) -> str:
    if t.sigma2 is None or cosines == "empirical":
        return "empirical"
    return "empirical" if cosines == "auto" and ks is not None and ks > KS_LIMIT else "mp"


def analyse_spectrum(sv: np.ndarray, shape: MatrixShape, methods: Sequence[ThresholdMethod] | None = None,
                     weighting: str = "uniform", matrix: np.ndarray | None = None,
                     cosines: str = "mp") -> MatrixAnalysis:
    """Every method's threshold, Avew and fit quality, from the singular values (and, for a method
    that uses them, the entries ``matrix``)."""
    methods = make_methods() if methods is None else methods
    if cosines not in COSINES:
        raise ValueError(f"cosines must be one of {', '.join(COSINES)}, got {cosines!r}")
    sv = np.sort(np.asarray(sv, dtype=np.float64))[::-1]
    if (why := _degenerate(sv, numerical_rank(sv, shape))) is not None:
        return _all_not_applicable(shape, methods, why, sv)
    results = {}
    for m in methods:
        try:
            t = m.fit(sv, shape, matrix)
        except NotApplicable as exc:
            results[m.name] = _not_applicable(m.name, str(exc))
            continue
        ks = bulk_ks(sv, t, shape)
        kind = _cosines_kind(cosines, t, ks)
        av = avew_at(method_cosines(kind, sv, t.sigma2, t.rank, shape), sv, t.rank, weighting)
        results[m.name] = MethodResult(m.name, t.sigma2, t.threshold, t.rank, av.product, av.left, av.right, ks,
                                       kind, diagnostics=dict(t.diagnostics))
    return MatrixAnalysis(shape, _read_only(sv), results, weighting)


def analyse_small(mats: np.ndarray, methods: Sequence[ThresholdMethod], weighting: str = "uniform"
                  ) -> list[MatrixAnalysis]:
    """``analyse_matrix`` of a stack of same-shape matrices (B × m × n) on which no method can run
    (every ``too_small`` answers): one batched Gram product and eigensolve for all of them, and
    the methods' shared not-applicable records. The same numbers as one matrix at a time, for a
    fraction of the per-call cost (checkpoints can hold tens of thousands of such matrices)."""
    shape = MatrixShape(*mats.shape[1:])
    too_small = {m.name: _not_applicable(m.name, m.too_small(shape)) for m in methods}
    assert all(r.reason for r in too_small.values()), "analyse_small is only for shapes no method fits"
    a = np.asarray(mats, dtype=np.float64)
    tall = a if shape.m >= shape.n else a.transpose(0, 2, 1)
    finite = np.isfinite(a).all(axis=(1, 2))
    tall = np.where(finite[:, None, None], tall, 0.0)
    eig = np.linalg.eigvalsh(tall.transpose(0, 2, 1) @ tall)
    svs = np.ascontiguousarray(np.sqrt(np.maximum(eig[:, ::-1], 0.0)))
    svs.setflags(write=False)  # each row below is a read-only view of this
    out = []
    for sv, ok, r in zip(svs, finite, numerical_ranks(svs, shape).tolist()):
        if shape.p == 0 or not ok:
            out.append(_all_not_applicable(shape, methods, EMPTY if shape.p == 0 else NON_FINITE))
        elif (why := _degenerate(sv, r)) is not None:
            out.append(_all_not_applicable(shape, methods, why, sv))
        else:
            out.append(MatrixAnalysis(shape, sv, too_small, weighting))
    return out


def analyse_matrix(w, methods: Sequence[ThresholdMethod] | None = None, weighting: str = "uniform",
                   device: str = "cpu", cosines: str = "mp", equalise: bool = False,
                   noise: bool = False) -> MatrixAnalysis:
    """Singular values (values only) of ``w``, then ``analyse_spectrum``. ``equalise``: every method
    analyses W̃ (rows and columns equalised), with W's own KS kept beside; ``noise``: add the
    noise diagnosis (both need a second spectrum, W̃'s; the diagnosis also one shuffle)."""
    from dataclasses import replace

    methods = make_methods(DEFAULT_METHODS) if methods is None else methods
    a = as_float_matrix(w)
    shape = MatrixShape(*a.shape)
    if shape.p == 0:
        return _all_not_applicable(shape, methods, EMPTY)
    if not np.isfinite(a).all():
        return _all_not_applicable(shape, methods, NON_FINITE)
    sv = singular_values(a, device)
    eq = eq_sv = None
    equalise, noise = (equalise, noise) if shape.p >= MIN_P else (False, False)  # no bulk to judge
    if equalise or noise:
        from core.rmt.equalise import EqualiseError
        from core.rmt.equalise import equalise as equalised

        try:
            eq = equalised(a)
            eq_sv = singular_values(eq.matrix, device)
        except EqualiseError:
            pass  # an all-zero row or column: analysed as it is, and "equalised" says false
    if equalise and eq is not None:
        from core.rmt.noise import bema_ks

        out = replace(analyse_spectrum(eq_sv, shape, methods, weighting, eq.matrix, cosines), equalised=True,
                      ks_raw=bema_ks(np.sort(sv)[::-1], shape))
    else:
        out = analyse_spectrum(sv, shape, methods, weighting, a, cosines)
    if noise:
        from core.rmt.noise import diagnose

        out = replace(out, noise=diagnose(a, np.sort(sv)[::-1], shape, eq_sv))
    return out
