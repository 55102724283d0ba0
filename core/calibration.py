"""Calibration data for activation-aware (whitened) truncation, SPEC §13: each linear layer's input
Gram matrix G = Σ x xᵀ, collected once by forward hooks while an evaluator's model runs on data
kept apart from the data it scores, and the damped Cholesky factor L of G that whitens W.

An evaluator that can feed its model calibration data has a ``calibrate(state, count, source)``
method returning a ``Calibration``; the families in ``core.evaluate`` do (MNIST, causal LMs, GGUF
causal LMs, encoders). Layers the model does not run through a linear map (an embedding, a tied
output head, a convolution) get no Gram matrix, and truncation falls back to ``hard`` for them.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from core.errors import EvaluationError
from core.memory import human_bytes, require_memory

DAMPING_START = 1e-6  # × mean diag G: the first damping tried when G itself is not positive definite
DAMPING_TRIES = 12  # ×10 each: up to 1e5 × mean diag G, which always succeeds for a finite G
PIVOT_FLOOR = 1e-12  # a pivot² below this × mean diag G counts as a failed factorisation (G singular)


@dataclass(frozen=True)
class CalibrationChoice:
    """Which calibration data, as the user asked: ``source`` (a text file, or for MNIST an .npz of
    images; None: the evaluator's own held-out part) and ``count`` (tokens or samples; None: the
    evaluator's measured default)."""

    source: str | None = None
    count: int | None = None


@dataclass(frozen=True)
class Whitener:
    """L with L Lᵀ = G + λI (lower triangular, float64) and the damping λ that made it exist."""

    chol: np.ndarray
    damping: float  # absolute λ
    relative: float  # λ / mean diag G


def whitener(gram: np.ndarray) -> Whitener:
    """The Cholesky factor of G with the smallest damping that succeeds: λ = 0 first (then the
    dropped whitened singular values are exactly the output error), else 1e-6·mean diag G, ×10
    until it does (a rank-deficient G: fewer calibration inputs than the layer has)."""
    g = np.asarray(gram, dtype=np.float64)
    scale = float(np.mean(np.diag(g))) if g.size else 0.0
    if not np.isfinite(g).all():
        raise EvaluationError("the calibration Gram matrix holds non-finite values (the model's activations "
                              "overflowed on the calibration data)")
    if scale <= 0:
        scale = 1.0  # a layer whose inputs were all zero: any λ > 0 whitens it (to a multiple of I)
    eye = np.eye(len(g))
    for lam in [0.0] + [DAMPING_START * scale * 10.0 ** i for i in range(DAMPING_TRIES)]:
        try:
            chol = np.linalg.cholesky(g + lam * eye)
        except np.linalg.LinAlgError:
            continue
        if np.min(np.diag(chol)) ** 2 >= PIVOT_FLOOR * scale:
            return Whitener(chol, lam, lam / scale)
    raise EvaluationError("no damping makes the calibration Gram matrix positive definite")  # pragma: no cover


@dataclass
class Calibration:
    """The Gram matrices of one checkpoint's layers on one calibration set (checkpoint tensor name
    → n × n float64, n = the layer's input width; layers fed the same input share one matrix)."""

    source: str
    count: int
    unit: str  # "tokens" or "samples"
    disjoint: bool
    grams: dict[str, np.ndarray]
    transposed: frozenset[str] = frozenset()  # tensors stored (in, out), GPT-2's Conv1D
    seconds: float = 0.0
    _whiteners: dict[str, Whitener] = field(default_factory=dict, repr=False)

    def record(self) -> dict:
        """What the JSON says: ``{source, tokens | samples, disjoint}``."""
        return {"source": self.source, self.unit: self.count, "disjoint": self.disjoint}

    def describe(self) -> str:
        return (f"{self.count} {self.unit} of {self.source} ({'disjoint from' if self.disjoint else 'OVERLAPPING'} "
                f"the scored data; {len(self.grams)} layers, {human_bytes(self.nbytes)} of Gram matrices, "
                f"{self.seconds:.1f} s)")

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in {id(g): g for g in self.grams.values()}.values())

    def dampings(self) -> dict[str, float]:
        """The tensors whose Gram matrix needed damping → λ / mean diag G (factoring them all)."""
        out = {}
        for tensor in self.grams:
            if (w := self.whitener(tensor)).damping > 0:
                out[tensor] = w.relative
        return out

    def whitener(self, tensor: str) -> Whitener | None:
        """L for this tensor (computed once; shared-input layers share it), or None when the model
        never fed it."""
        g = self.grams.get(tensor)
        if g is None:
            return None
        key = str(id(g))
        if key not in self._whiteners:
            self._whiteners[key] = whitener(g)
        return self._whiteners[key]


class _Stop(Exception):
    """Raised by a hook on the output head: the calibration forward pass needs nothing after it."""


def _is_conv1d(module) -> bool:
    """GPT-2's Conv1D (transformers.pytorch_utils): a linear map whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _is_linear(module) -> bool:
    from torch import nn

    return isinstance(module, nn.Linear) or _is_conv1d(module)


class GramCollector:
    """Forward pre-hooks on the linear layers whose weights are checkpoint tensors, adding each
    input batch's xᵀx (float64) to that layer's Gram matrix. Layers fed the very same input tensor
    (q, k, v; gate and up) share one matrix: it is computed once per pass, not three times."""

    def __init__(self, model, names: Mapping[str, str], stop_at=None):
        """``names``: the model's parameter name → the checkpoint tensor name, for the layers to hook."""
        self.grams: dict = {}  # group → Gram (a float64 torch tensor on the model's device)
        self.group: dict[str, str] = {}  # checkpoint tensor → group
        self.transposed: set[str] = set()
        self.mask = None  # bool (batch, seq): the real tokens of a padded batch
        self._seen: dict[int, tuple[str, object]] = {}  # id(input) → (group, the input, kept alive)
        self._handles = []
        self.widths: list[int] = []  # each hooked layer's input width (for the memory bound)
        for mod_name, mod in model.named_modules():
            tensor = names.get(f"{mod_name}.weight" if mod_name else "weight")
            if tensor is None or not _is_linear(mod):
                continue
            conv1d = _is_conv1d(mod)
            if conv1d:
                self.transposed.add(tensor)
            self.widths.append(int(mod.weight.shape[0] if conv1d else mod.weight.shape[1]))
            self._handles.append(mod.register_forward_pre_hook(self._hook(tensor)))
        if stop_at is not None:
            self._handles.append(stop_at.register_forward_pre_hook(self._stop))

    def _hook(self, tensor: str):
        def hook(module, args):
            x = args[0] if args else None
            if x is None or not hasattr(x, "shape"):
                return
            seen = self._seen.get(id(x))
            if seen is not None and seen[1] is x:
                self.group.setdefault(tensor, seen[0])
                return
            group = self.group.setdefault(tensor, tensor)
            rows = x[self.mask] if self.mask is not None and tuple(x.shape[:-1]) == tuple(self.mask.shape) else x
            self._accumulate(group, rows.detach().reshape(-1, x.shape[-1]))
            self._seen[id(x)] = (group, x)
        return hook

    def _accumulate(self, group: str, rows) -> None:
        """G += rowsᵀ rows, in float64, by torch on the rows' device. (scipy's syrk computes half
        the product, but its BLAS threads spin between calls and slowed torch's forward pass:
        measured 1.55× slower in all on SmolLM2.)"""
        r = rows.double()
        g = self.grams.get(group)
        if g is None:
            self.grams[group] = r.T @ r
        else:
            g.addmm_(r.T, r)

    @staticmethod
    def _stop(module, args):
        raise _Stop

    def run(self, batches: Iterable, forward: Callable, mask_of: Callable | None = None) -> None:
        """``forward(batch)`` for each batch (a head hook may cut it short); ``mask_of(batch)``: its
        real tokens, where a batch is padded (else ``mask`` as set stays)."""
        import torch

        with torch.no_grad():
            for batch in batches:
                self._seen.clear()
                if mask_of is not None:
                    self.mask = mask_of(batch)
                try:
                    forward(batch)
                except _Stop:
                    pass
        self._seen.clear()

    def close(self) -> dict[str, np.ndarray]:
        for h in self._handles:
            h.remove()
        by_group = {k: g.cpu().numpy() for k, g in self.grams.items()}
        return {t: by_group[g] for t, g in self.group.items() if g in by_group}


def collect(model, names: Mapping[str, str], batches: Iterable, forward: Callable, *, stop_at=None,
            where: str = "", mask_of: Callable | None = None, **record) -> Calibration:
    """Run ``batches`` through ``model`` with the hooks on and return the Calibration. The memory
    the Gram matrices take (8n² bytes per hooked layer of input width n; less where layers share
    an input) is checked against what is available first."""
    t0 = time.perf_counter()
    collector = GramCollector(model, names, stop_at)
    try:
        if not collector.widths:
            raise EvaluationError(f"{where}: the model runs none of the checkpoint's matrices through a linear "
                                  "layer, so there is nothing to calibrate")
        require_memory(sum(8 * n * n for n in collector.widths), where, "the calibration Gram matrices")
        collector.run(batches, forward, mask_of)
    finally:
        grams = collector.close()
    return Calibration(grams=grams, transposed=frozenset(collector.transposed & set(grams)),
                       seconds=time.perf_counter() - t0, **record)


def module_names(model, checkpoint_names: Iterable[str], rename: Mapping[str, str] | None = None) -> dict[str, str]:
    """The model's parameter name → the checkpoint's tensor name, for the linear weights the
    checkpoint holds: through ``rename`` (a GGUF's map), else the same name, else with or without
    the model's base prefix (a ``bert.``-prefixed checkpoint in a BertModel)."""
    have = set(checkpoint_names)
    back = {v: k for k, v in (rename or {}).items()}
    prefix = getattr(model, "base_model_prefix", "") or ""
    out = {}
    for mod_name, mod in model.named_modules():
        if not _is_linear(mod):
            continue
        p = f"{mod_name}.weight"
        for cand in ((back.get(p),) if rename else (p, f"{prefix}.{p}", p.removeprefix(f"{prefix}."))):
            if cand in have:
                out[p] = cand
                break
    return out
