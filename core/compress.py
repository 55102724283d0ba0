"""A parameter budget (SPEC §13): remove P % of the selected layers' stored parameters, counting
storage honestly — a rank-k layer is two factors, k(m + n) parameters, only when that is below
mn; otherwise it stays dense — with the ranks allocated across layers by a rule.

Every rule is a score on each (layer, i-th singular value), decreasing in i within a layer; the
budget is filled greedily, best score first: a layer's values are kept in order, and a layer
whose kept count would pass the break-even rank (k(m + n) ≥ mn) becomes dense at once, when
the budget allows. Rules:

* ``auto`` (default): ``sensitivity`` where an evaluator can score the model, else ``loss``.
* ``loss``: the value's share of its layer's energy per stored parameter,
  s_i² / Σ s² / (m + n) — in whitened mode s are W·L's values, so s_i² is the output error on
  the calibration data that dropping it costs (SPEC §13), relative to the layer's own.
* ``uniform``: every layer keeps the same fraction of its break-even rank (SVD-LLM's rule).
* ``shat``: ranks in proportion to each layer's RMT signal rank ŝ (the analysed method's).
* ``sensitivity``: ``loss`` with each layer's share weighted by its measured damage per unit of
  relative loss — each layer truncated alone at the uniform rule's rank and evaluated (one
  evaluation per layer: ``core.evaluate.compress.sensitivity_weights``).
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.errors import UsageError
from core.progress import CancelToken, check

if TYPE_CHECKING:  # torch, through truncation: not for a command that only parses --allocation
    from core.io.checkpoint import Checkpoint
    from core.truncation import Fed

RULES = ("auto", "sensitivity", "loss", "uniform", "shat")
DEFAULT_RULE = "auto"  # sensitivity measured best (demo_models/EXPERIMENTS.md, "Compression under a parameter budget")


@dataclass(frozen=True)
class Spectrum:
    """One layer as the budget sees it: shape and singular values (descending)."""

    name: str
    m: int
    n: int
    values: np.ndarray
    shat: int | None = None  # the RMT rank, for the ``shat`` rule
    weight: float = 1.0  # the ``sensitivity`` rule's damage per unit of relative loss

    @property
    def p(self) -> int:
        return min(self.m, self.n)

    @property
    def break_even(self) -> int:
        """The largest rank stored smaller as two factors than dense."""
        return (self.m * self.n - 1) // (self.m + self.n)


def stored(m: int, n: int, k: int) -> int:
    """Parameters a rank-k m × n layer takes: two factors when smaller, else dense."""
    return k * (m + n) if k * (m + n) < m * n else m * n


def parse_target(text: str) -> float:
    """'20%' or '20' → 0.20; outside (0, 100) is a usage error."""
    raw = str(text).strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"bad --compress {text!r}: give the percentage of parameters to remove, e.g. 20%") from None
    if not 0 < value < 100:
        raise UsageError(f"--compress {text!r} is outside (0, 100): give the percentage of the selected layers' "
                         "parameters to remove, e.g. 20%")
    return value / 100


def _scores(sp: Spectrum, rule: str) -> np.ndarray:
    i = np.arange(sp.p, dtype=np.float64)
    if rule == "uniform":
        return -(i + 1) / max(sp.break_even, 1)
    if rule == "shat":
        return -(i + 1) / max(sp.shat or 0, 1)
    return sp.weight * np.minimum.accumulate(shares(sp)) / (sp.m + sp.n)  # round-off never reorders a layer


def shares(sp: Spectrum) -> np.ndarray:
    """Each singular value's share of the layer's energy, s_i² / Σ s²."""
    energy = float(np.sum(np.asarray(sp.values, dtype=np.float64) ** 2)) or 1.0
    return np.asarray(sp.values[:sp.p], dtype=np.float64) ** 2 / energy


@dataclass(frozen=True)
class Allocation:
    ranks: dict[str, int]  # layer → kept rank (p: left dense, untouched)
    target: float
    achieved: float  # the fraction of the layers' parameters removed
    params_saved: int
    rule: str
    dense: frozenset[str] = frozenset()  # the layers left whole

    @property
    def plan(self) -> dict[str, int]:
        """The layers to truncate, layer → k (the dense ones left out: truncating them is a no-op)."""
        return {n: k for n, k in self.ranks.items() if n not in self.dense}

    @property
    def off_target(self) -> bool:
        return abs(self.achieved - self.target) > 0.01


def allocate(spectra: Sequence[Spectrum], target: float, rule: str = DEFAULT_RULE) -> Allocation:
    """Ranks that remove ``target`` of the layers' stored parameters (as close as the layers'
    granularity allows, never more than one layer's step past it)."""
    if rule not in RULES:
        raise UsageError(f"unknown allocation {rule!r}; choose from {', '.join(RULES)}")
    rule = "loss" if rule == "auto" else rule  # without measured weights
    if rule == "shat" and any(sp.shat is None for sp in spectra):
        raise UsageError("--allocation shat needs each layer's ŝ: analyse with a method that gives one")
    total = sum(sp.m * sp.n for sp in spectra)
    budget = (1 - target) * total
    ranks = {sp.name: 0 for sp in spectra}
    used = 0
    by_name = {sp.name: sp for sp in spectra}
    scores = {sp.name: _scores(sp, rule) for sp in spectra}
    heap = [(-scores[sp.name][0], sp.name) for sp in spectra if sp.p > 0]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        sp, k = by_name[name], ranks[name]
        if k + 1 > sp.break_even:  # the next value makes the layer dense: all of it or nothing
            cost = sp.m * sp.n - stored(sp.m, sp.n, k)
            if used + cost <= budget:
                ranks[name], used = sp.p, used + cost
            continue
        if used + sp.m + sp.n > budget:
            continue  # this layer's next value does not fit; a smaller layer's may
        ranks[name], used = k + 1, used + sp.m + sp.n
        if k + 1 < sp.p:
            heapq.heappush(heap, (-scores[name][k + 1], name))
    achieved = 1 - used / total if total else 0.0
    dense = frozenset(sp.name for sp in spectra if ranks[sp.name] >= sp.p)
    return Allocation(ranks, target, achieved, total - used, rule, dense)


def describe(alloc: Allocation) -> str:
    """The line a user reads when the target was missed: why, and what was achieved instead."""
    return (f"removed {alloc.achieved:.1%} of the parameters, not the {alloc.target:.0%} asked for: the layers' "
            "sizes do not allow a closer split")


def layer_spectra(ckpt: Checkpoint, names: Sequence[str], fed: Mapping[str, Fed], rule: str,
                  shat: Mapping[str, int] | None = None, cancel: CancelToken | None = None) -> list[Spectrum]:
    """Each layer's singular values as the allocation needs them: W·L's for a whitened layer,
    W's otherwise; none at all for the rules that only count parameters."""
    from core.rmt.spectrum import singular_values
    from core.truncation import whitened_matrix

    out = []
    for name in names:
        check(cancel)
        layer = ckpt.layer(name)
        m, n = layer.matrix
        if rule not in ("loss", "sensitivity"):
            values = None
        elif name in fed:
            values = singular_values(whitened_matrix(ckpt.matrix(layer), fed[name]))
        else:
            values = singular_values(ckpt.matrix(layer))
        out.append(Spectrum(name, m, n, np.zeros(min(m, n)) if values is None else values,
                            None if shat is None else shat.get(name)))
    return out


def budget_plan(ckpt: Checkpoint, names: Sequence[str], target: float, mode: str, rule: str = DEFAULT_RULE,
                fed: Mapping[str, Fed] | None = None, shat: Mapping[str, int] | None = None,
                cancel: CancelToken | None = None, weigh=None) -> Allocation:
    """The ranks that remove ``target`` of the named layers' parameters in ``mode`` (whitened:
    the layers in ``fed`` ranked by W·L's spectrum). ``weigh(spectra) → {layer: weight}`` gives
    the ``sensitivity`` rule its weights (it evaluates; see core.evaluate.compress)."""
    if rule == "auto":
        rule = "sensitivity" if weigh is not None else "loss"
    spectra = layer_spectra(ckpt, names, fed if mode == "whitened" else {}, rule, shat, cancel)
    if rule == "sensitivity":
        if weigh is None:
            raise UsageError("--allocation sensitivity evaluates each layer: it needs an evaluator")
        from dataclasses import replace

        weights = weigh(spectra)
        spectra = [replace(sp, weight=weights[sp.name]) for sp in spectra]
    return allocate(spectra, target, rule)
