"""Several checkpoints side by side, and the spectrum of a fine-tune's delta (SPEC §10).

Compare analyses each matched layer of each checkpoint exactly as a single checkpoint is analysed
(same cache, same records). Delta reads one matched pair at a time, forms ΔW = W_tuned − W_base in
float32 (float64 when either side is float64) from the stored tensors, and analyses ΔW as a weight
matrix, beside the ranks people use today (energy and stable rank) and ‖ΔW‖/‖W‖.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np

from core.cache import SpectrumCache
from core.compare.matching import SAME, TIED, TRANSPOSED, MatchRow, MatchTable
from core.io.checkpoint import Checkpoint
from core.io.dtypes import UNIT_ROUNDOFF
from core.io.layers import Layer
from core.memory import require_memory
from core.progress import CancelToken, Progress, tracked
from core.rmt.analysis import MatrixAnalysis
from core.rmt.spectrum import MatrixShape, as_float_matrix, working_bytes
from core.scan import AnalysisOptions, LayerResult, analyse_layer

# Rounding a weight to a dtype with unit roundoff u changes it by ≈ 0.5·u·‖W‖ (measured: bf16 alone
# gives ‖ΔW‖/‖W‖ ≈ 2·10⁻³, SPEC §10), and two independently rounded copies by √2 times that. A delta
# within ROUNDING_MARGIN of that level may be storage noise and nothing else.
ROUNDING_PER_SIDE = 0.5
ROUNDING_MARGIN = 1.5


def rounding_level(dtypes: Sequence[str]) -> tuple[float, str]:
    """‖ΔW‖/‖W‖ that storage rounding alone gives for these two stored dtypes, and the coarser one."""
    coarse = max(dtypes, key=lambda d: UNIT_ROUNDOFF.get(d, 0.0))
    sides = sum(d == coarse for d in dtypes)
    return ROUNDING_PER_SIDE * UNIT_ROUNDOFF.get(coarse, 0.0) * np.sqrt(sides), coarse


def select_rows(table: MatchTable, patterns: Iterable[str] | None) -> list[MatchRow]:
    """Rows whose key or any checkpoint's name matches a glob; all when no pattern is given."""
    pats = [p for p in (patterns or []) if p]
    if not pats:
        return list(table.rows)
    return [r for r in table.rows
            if any(fnmatchcase(n, p) for p in pats for n in [r.key, *(e.name for e in r.entries if e.name)])]


# ------------------------------------------------------------------------------------------ compare


def compare_checkpoints(ckpts: Sequence[Checkpoint], rows: Sequence[MatchRow], options: AnalysisOptions,
                        progress: Progress | None = None, cancel: CancelToken | None = None
                        ) -> Iterator[tuple[MatchRow, list[LayerResult | None]]]:
    """Each row with each checkpoint's analysis of its layer (None where it has none). Spectra
    need no element-wise pairing, so a shape mismatch is analysed on each side and said so."""
    cache = SpectrumCache() if options.use_cache else None
    for row in tracked(rows, progress, cancel, label=lambda r: r.key):
        yield row, [analyse_layer(c, e.layer, options, cache) if e.layer is not None else None
                    for c, e in zip(ckpts, row.entries)]


# ------------------------------------------------------------------------------------------ delta


def energy_rank(sv: np.ndarray, fraction: float) -> int:
    """min k with Σ_{i≤k} s_i² ≥ fraction · Σ s_i² (0 for an all-zero spectrum)."""
    e = np.cumsum(np.asarray(sv, dtype=np.float64) ** 2)
    if not e.size or e[-1] == 0:
        return 0
    return int(np.searchsorted(e, fraction * e[-1] * (1 - 1e-12)) + 1)


def stable_rank(sv: np.ndarray) -> float | None:
    """‖ΔW‖²_F / s₁²."""
    sv = np.asarray(sv, dtype=np.float64)
    return float(np.sum(sv ** 2) / sv[0] ** 2) if sv.size and sv[0] > 0 else None


@dataclass(frozen=True)
class DeltaResult:
    row: MatchRow
    status: str  # ok | unchanged | only_in | shape_mismatch | tied | skipped
    reason: str | None = None  # why it was not analysed
    analysis: MatrixAnalysis | None = None  # of ΔW
    rel_fro: float | None = None  # ‖ΔW‖_F / ‖W_base‖_F
    energy_rank_90: int | None = None
    energy_rank_99: int | None = None
    stable_rank: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.row.key

    @property
    def base(self) -> Layer | None:
        return self.row.entries[0].layer

    @property
    def tuned(self) -> Layer | None:
        return self.row.entries[1].layer


def _why_not(row: MatchRow) -> tuple[str, str] | None:
    """(status, reason) for a row that has no delta, None when it has one."""
    base, tuned = row.entries
    for e, label in ((base, "base"), (tuned, "tuned")):
        if e.layer is None:
            return "only_in", f"only in {'tuned' if label == 'base' else 'base'}"
    if tuned.state not in (SAME, TRANSPOSED, TIED):
        return tuned.state, tuned.note
    if not row.comparable:
        reasons = [e.layer.reason for e in row.entries if e.layer.reason]
        if all(e.state == TIED for e in row.entries):
            return TIED, "tied on both sides: the same tensor as another row"
        return "skipped", reasons[0] if reasons else "no matrix view"
    return None


def delta_matrix(base: Checkpoint, tuned: Checkpoint, row: MatchRow) -> tuple[np.ndarray, float]:
    """W_tuned − W_base in the base's orientation, in float32 (float64 if either is float64),
    never in the stored half precision, and ‖W_base‖_F. One pair in memory at a time."""
    b, t = row.entries
    shape = MatrixShape(*b.layer.matrix)
    need = base.nbytes(b.layer.tensor) + tuned.nbytes(t.layer.tensor) + working_bytes(shape)
    require_memory(need, tuned.path, f"the delta of {row.key!r}")
    wb = as_float_matrix(base.matrix(b.layer))
    wt = as_float_matrix(tuned.matrix(t.layer))
    if t.state == TRANSPOSED:
        wt = wt.T
    dtype = np.float64 if np.float64 in (wb.dtype, wt.dtype) else np.float32
    d = np.array(wt, dtype=dtype, copy=True, order="C")
    d -= wb.astype(dtype, copy=False)
    flat = np.ravel(wb)  # a view: no copy of the base beside the pair
    return d, float(np.sqrt(np.dot(flat, flat)))


def analyse_delta(base: Checkpoint, tuned: Checkpoint, row: MatchRow, options: AnalysisOptions) -> DeltaResult:
    if (why := _why_not(row)) is not None:
        return DeltaResult(row, *why)
    d, w_norm = delta_matrix(base, tuned, row)
    warnings = list(row.warnings)
    if not d.any():
        return DeltaResult(row, "unchanged", "identical values: ΔW = 0", rel_fro=0.0, warnings=tuple(warnings))
    if not np.isfinite(d).all():
        return DeltaResult(row, "skipped", "non-finite values (NaN or Inf) in one of the two tensors",
                           warnings=tuple(warnings))
    a = options.analyse(d)
    d_norm = float(np.sqrt(np.sum(a.sv ** 2)))
    rel = d_norm / w_norm if w_norm > 0 else None
    level, coarse = rounding_level([e.layer.dtype for e in row.entries])
    if rel is not None and rel <= ROUNDING_MARGIN * level:
        warnings.append(f"‖ΔW‖/‖W‖ = {rel:.2g} is at the rounding level of {coarse} storage ({level:.1g}): "
                        "what changed may be rounding alone")
    if rel is not None and rel > 1.0:
        warnings.append(f"‖ΔW‖/‖W‖ = {rel:.2g}: as large as the weights themselves — are these one lineage? "
                        "Independent runs permute hidden units, and their difference means nothing")
    return DeltaResult(row, "ok", None, a, rel, energy_rank(a.sv, 0.9), energy_rank(a.sv, 0.99),
                       stable_rank(a.sv), tuple(warnings))


def delta_checkpoints(base: Checkpoint, tuned: Checkpoint, rows: Sequence[MatchRow], options: AnalysisOptions,
                      progress: Progress | None = None, cancel: CancelToken | None = None
                      ) -> Iterator[DeltaResult]:
    for row in tracked(rows, progress, cancel, label=lambda r: r.key):
        yield analyse_delta(base, tuned, row, options)
