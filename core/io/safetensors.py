"""safetensors files: the header parsed with every offset checked; tensors read one region at a time."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import CheckpointError
from core.io.dtypes import ITEMSIZE, SAFETENSORS_DTYPES
from core.io.sources import Source, bytes_as_array, open_bytes, read_region
from core.memory import human_bytes

if TYPE_CHECKING:  # torch is imported where tensors are read: listing a checkpoint does not need it
    import torch

SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit (the safetensors library refuses more)


class SafetensorsSource(Source):
    def __init__(self, path: Path):
        self.path = path
        with open_bytes(path) as f:
            size = path.stat().st_size
            head = f.read(8)
            if len(head) < 8:
                problem = "empty file" if size == 0 else "truncated: shorter than a safetensors header"
                raise CheckpointError(path, problem,
                                      "the download or copy may be incomplete")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(path, f"truncated or corrupt safetensors header: it claims {n} bytes, "
                                      f"the file has {size - 8} after the length", "re-download or re-save the file")
            if n > SAFETENSORS_MAX_HEADER:
                raise CheckpointError(path, f"corrupt safetensors header: it claims {human_bytes(n)}, more than the "
                                      f"format's {human_bytes(SAFETENSORS_MAX_HEADER)} limit",
                                      "re-download or re-save the file")
            raw = f.read(n)
        try:
            header = json.loads(raw)
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
            self.metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
            self._info: dict[str, tuple[tuple[int, ...], str]] = {}
            self._offsets: dict[str, int] = {}
            data_len = size - 8 - n
            regions: list[tuple[int, int, str]] = []
            for name, d in header.items():
                shape = tuple(int(s) for s in d["shape"])
                begin, end = (int(o) for o in d["data_offsets"])
                dtype = SAFETENSORS_DTYPES[d["dtype"]]
                if any(s < 0 for s in shape) or not 0 <= begin <= end:
                    raise ValueError(f"tensor {name!r} has an invalid shape or offsets")
                if end > data_len:
                    raise CheckpointError(path, f"truncated: tensor {name!r} ends at byte {end} of the data, "
                                          f"which has only {data_len}", "re-download or re-save the file")
                if end - begin != math.prod(shape) * ITEMSIZE[dtype]:
                    raise ValueError(f"tensor {name!r}: {end - begin} bytes do not hold {dtype} {list(shape)}")
                self._info[name] = (shape, dtype)
                self._offsets[name] = 8 + n + begin
                regions.append((begin, end, name))
            _check_regions(regions, data_len)
        except CheckpointError:
            raise
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CheckpointError(path, f"corrupt safetensors header ({type(exc).__name__}: {exc})",
                                  "re-download or re-save the file") from None

    def entries(self):
        return [(k, *v) for k, v in self._info.items()]

    def _read_bytes(self, name: str) -> np.ndarray:
        shape, dtype = self._info[name]
        return read_region(self.path, self._offsets[name], math.prod(shape) * ITEMSIZE[dtype], name)

    def read_array(self, name: str) -> np.ndarray:
        shape, dtype = self._info[name]
        return bytes_as_array(self._read_bytes(name), dtype, shape)

    def read(self, name: str) -> torch.Tensor:
        import torch

        shape, dtype = self._info[name]
        # safetensors is little-endian, as is every host torch supports
        return torch.from_numpy(self._read_bytes(name)).view(getattr(torch, dtype)).reshape(shape)


def _check_regions(regions: list[tuple[int, int, str]], data_len: int) -> None:
    """As the safetensors library requires: the tensors' byte regions, in offset order, tile the
    data exactly — no overlap (two tensors sharing bytes), no gap, nothing after the last."""
    end = 0
    for begin, stop, name in sorted(regions):
        if begin != end:
            what = "overlaps the one before it" if begin < end else f"leaves a gap of {begin - end} bytes before it"
            raise ValueError(f"tensor {name!r} (bytes {begin}–{stop}) {what}")
        end = stop
    if end != data_len:
        raise ValueError(f"the tensors cover {end} bytes of data but the file holds {data_len}")
