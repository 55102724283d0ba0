"""An opened checkpoint: its layers (no tensor read) and lazy, memory-guarded tensor access."""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from core.io.detect import open_source
from core.io.dtypes import ITEMSIZE
from core.io.hub import locate
from core.io.layers import Layer, describe, matrix_view, natural_key
from core.memory import require_memory

if TYPE_CHECKING:  # torch is imported where tensors are read: listing a checkpoint does not need it
    import torch

class Checkpoint:
    """An opened checkpoint: its layer list (no tensor data read) and lazy access to tensors."""

    def __init__(self, path: str | Path, conv_view: str = "reshape"):
        if conv_view not in ("reshape", "positions"):
            raise ValueError(f"conv_view must be 'reshape' or 'positions', got {conv_view!r}")
        self.path = locate(path)  # a path, or org/name[@revision] in the local Hugging Face cache
        self.conv_view = conv_view
        self._source = open_source(self.path)
        self.metadata = self._source.metadata
        tied = self._source.tied()
        unreadable, dequantised = self._source.reasons(), self._source.dequantised()
        entries = self._source.entries()
        if not self._source.ordered:
            entries = sorted(entries, key=lambda e: natural_key(e[0]))
        self.tensors = {name: (shape, dtype) for name, shape, dtype in entries}
        self.layers: list[Layer] = [l for name, shape, dtype in entries
                                    for l in describe(name, shape, dtype, conv_view, tied.get(name),
                                                      unreadable.get(name), name in dequantised)]
        self._by_name = {l.name: l for l in self.layers}

    @property
    def name(self) -> str:
        return self.path.name

    def layer(self, name: str) -> Layer:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no layer named {name!r} in {self.path}") from None

    def nbytes(self, name: str) -> int:
        """Bytes of tensor ``name`` as stored."""
        shape, dtype = self.tensors[name]
        return math.prod(shape) * ITEMSIZE.get(dtype, 8)

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as torch stores it (exact dtype): for truncation, evaluation, export."""
        require_memory(self.nbytes(name), self._source.file_of(name), f"tensor {name!r}")
        return self._source.read(name)

    def array(self, name: str):
        """Tensor ``name`` for analysis: numpy (bfloat16 widened to float32) for formats that need
        no torch to read, the torch tensor for pickles."""
        require_memory(self.nbytes(name), self._source.file_of(name), f"tensor {name!r}")
        return self._source.read_array(name)

    def matrices(self, layers: list[Layer]) -> list:
        """``matrix`` of several (small) layers, read together where the format allows."""
        names = [l.tensor for l in layers]
        require_memory(sum(self.nbytes(n) for n in set(names)), self.path, f"{len(layers)} tensors")
        return [matrix_view(a, l) for a, l in zip(self._source.read_arrays(names), layers)]

    def matrix(self, layer: Layer | str):
        """The analysed matrix of ``layer`` (numpy or torch, as ``array``)."""
        layer = self.layer(layer) if isinstance(layer, str) else layer
        if layer.matrix is None:
            raise ValueError(f"{layer.name} is not analysed: {layer.reason}")
        return matrix_view(self.array(layer.tensor), layer)

    def file_of(self, name: str) -> Path:
        """The file that holds tensor ``name`` (a shard of a sharded folder)."""
        return self._source.file_of(name)

    def fingerprint(self, layer: Layer) -> str:
        """Identifies the layer's bytes without reading them: the holding file's identity and
        modification time, the tensor and the view. Used only to find a cached content key."""
        f = self._source.file_of(layer.tensor)
        st = f.stat()
        return f"{f.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{layer.name}|{layer.position}"

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.iter_tensors())

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.tensors:
            yield name, self.tensor(name)

    def close(self) -> None:
        self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_checkpoint(path: str | Path, conv_view: str = "reshape") -> Checkpoint:
    return Checkpoint(path, conv_view)
