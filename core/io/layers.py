"""What counts as a layer: one stored tensor (or one conv position), its matrix view, or why it has none."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from core.io.dtypes import FLOAT8_DTYPES, FLOAT_DTYPES

MIN_SIDE = 2  # a matrix view with a side shorter than this has no spectrum to speak of


@dataclass(frozen=True)
class Layer:
    """One stored tensor, or one per-position slice of a conv kernel (``position`` set)."""

    name: str  # the tensor's name in the checkpoint, plus "[i,j]" for a conv position slice
    tensor: str  # the stored tensor's name
    shape: tuple[int, ...]  # as stored
    dtype: str
    kind: str  # linear | conv | embedding | other
    matrix: tuple[int, int] | None  # the analysed view's shape; None when not analysed
    reason: str | None = None  # why it is not analysed
    position: tuple[int, int] | None = None  # (i, j) for a per-position conv slice

    @property
    def analysable(self) -> bool:
        return self.reason is None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def natural_key(name: str):
    """'layers.10' sorts after 'layers.2'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


_EMBEDDING = re.compile(r"embed|wte|wpe|tok_emb|lookup", re.I)


def _kind(name: str, shape: tuple[int, ...]) -> str:
    if len(shape) in (3, 4, 5):
        return "conv"
    if len(shape) == 2:
        return "embedding" if _EMBEDDING.search(name) else "linear"
    return "other"


def describe(name: str, shape: tuple[int, ...], dtype: str, conv_view: str = "reshape",
             tied_to: str | None = None, unreadable: str | None = None, dequantised: bool = False) -> list[Layer]:
    """The layer entries of one stored tensor, each with its matrix view or the reason it has none."""
    kind = _kind(name, shape)

    def entry(matrix, reason=None, label=name, position=None):
        if reason is None and matrix is not None and min(matrix) < MIN_SIDE:
            reason, matrix = f"too small: matrix view {matrix[0]}×{matrix[1]} has a side < {MIN_SIDE}", None
        return Layer(label, name, shape, dtype, kind, matrix if reason is None else None, reason, position)

    if tied_to is not None:
        return [entry(None, f"tied: the same tensor as {tied_to}")]
    if unreadable is not None:
        return [entry(None, unreadable)]
    if dtype in FLOAT8_DTYPES:
        return [entry(None, f"{dtype}: a quantised weight, meaningful only with its scales, which are "
                            "not applied here; analyse the higher-precision original")]
    if dtype not in FLOAT_DTYPES and not dequantised:
        return [entry(None, f"{dtype} tensor: not a floating-point weight")]
    if len(shape) < 2:
        return [entry(None, "1-D (bias, norm or scale): no spectrum" if shape else "scalar")]
    if len(shape) > 2 and conv_view == "positions" and len(shape) == 4:
        out, inp, kh, kw = shape
        return [entry((out, inp), label=f"{name}[{i},{j}]", position=(i, j)) for i in range(kh) for j in range(kw)]
    return [entry((shape[0], math.prod(shape[1:])))]


def matrix_view(t, layer: Layer):
    """The analysed matrix of ``layer`` from its stored tensor, numpy or torch (conv: reshape or
    position slice)."""
    if layer.position is not None:
        i, j = layer.position
        return t[:, :, i, j]
    return t.reshape(t.shape[0], -1)
