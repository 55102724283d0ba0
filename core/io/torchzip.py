"""PyTorch's zip checkpoints read without torch: the pickle is run by Python's own (C) unpickler
with a short allow-list of callables that only record what each tensor is (storage, offset, shape,
stride), and tensors are read from the archive one at a time into numpy.

Why: ``torch.load(weights_only=True)`` runs its restricted unpickler in Python, which for a file
of 100,000 small tensors took 8 s before a single value was read, and importing torch costs ~2 s
and ~200 MB. Anything this reader does not know — another global, a legacy (non-zip) file, a
big-endian archive, a sparse or quantised tensor — raises ``NotPlain`` and the caller falls back
to ``torch.load(weights_only=True)``, whose refusals and messages stay the security boundary. No
callable outside the allow-list below is ever looked up, let alone run.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from core.io.dtypes import STORAGE_DTYPES, raw_dtype


class NotPlain(Exception):
    """This file needs torch's own loader."""


class StorageRef(NamedTuple):  # NamedTuples: a file may hold 100,000 tensors, each built once
    key: str
    dtype: str
    numel: int


class TensorRef(NamedTuple):
    """Where one tensor's values are: a storage, an element offset, a shape and strides, and the
    span of elements from the first it touches to one past the last (0 when empty)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    span: int

    @property
    def dtype(self) -> str:
        return self.storage.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@lru_cache(maxsize=4096)
def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous tensor of this shape."""
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= max(n, 1)
    return tuple(reversed(out))


def _span(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements from the first one a tensor touches to one past the last (0 when it is empty);
    -1 when the shape or strides are not non-negative integers of equal count."""
    if len(shape) != len(stride):
        return -1
    last, empty = 0, False
    for n, s in zip(shape, stride):
        if type(n) is not int or type(s) is not int or n < 0 or s < 0:
            return -1
        empty = empty or n == 0
        last += (n - 1) * s
    return 0 if empty else last + 1


@dataclass(frozen=True)
class _StorageType:
    dtype: str


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    shape, stride = tuple(size), tuple(stride)
    span = _span(shape, stride)
    if type(storage) is not StorageRef or type(offset) is not int or offset < 0 or span < 0:
        raise NotPlain("malformed tensor")
    if offset + span > storage.numel:
        raise NotPlain("a tensor reaches past its storage")
    return TensorRef(storage, offset, shape, stride, span)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_ALLOWED = {("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise NotPlain(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
            raise NotPlain("unknown persistent id")
        return StorageRef(pid[2], pid[1].dtype, pid[4])


def _central_directory(fd: int, size: int) -> dict[str, tuple[int, int, int, int]]:
    """name → (compression method, compressed size, size, local header offset) for every member,
    read straight from the zip's central directory (zip64 included). zipfile builds a ZipInfo
    object per member, which for 100,000 tensors took 0.5 s."""
    tail = os.pread(fd, min(size, 65536 + 22), max(0, size - 65536 - 22))
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        raise NotPlain("no end of central directory")
    count, cd_size, cd_offset = struct.unpack_from("<10xHLL", tail, i)
    if i >= 20 and tail[i - 20:i - 16] == b"PK\x06\x07":  # zip64: the real numbers are elsewhere
        (eocd64,) = struct.unpack_from("<8xQ", tail, i - 20)
        rec = os.pread(fd, 56, eocd64)
        if len(rec) != 56 or rec[:4] != b"PK\x06\x06":
            raise NotPlain("bad zip64 end record")
        count, cd_size, cd_offset = struct.unpack_from("<32xQQQ", rec)
    cd = os.pread(fd, cd_size, cd_offset)
    if len(cd) != cd_size:
        raise NotPlain("central directory cut short")
    out, pos = {}, 0
    for _ in range(count):
        if cd[pos:pos + 4] != b"PK\x01\x02":
            raise NotPlain("bad central directory")
        method, csize, usize, nlen, xlen, clen, hoff = struct.unpack_from("<10xH8xLLHHH8xL", cd, pos)
        name = cd[pos + 46:pos + 46 + nlen].decode("utf-8")
        if 0xFFFFFFFF in (csize, usize, hoff):  # zip64 extra field: the large ones, in this order
            extra, x = cd[pos + 46 + nlen:pos + 46 + nlen + xlen], 0
            while x + 4 <= len(extra):
                tag, length = struct.unpack_from("<HH", extra, x)
                if tag == 1:
                    vals, v = list(struct.unpack_from(f"<{length // 8}Q", extra, x + 4)), 0
                    if usize == 0xFFFFFFFF:
                        usize, v = vals[v], v + 1
                    if csize == 0xFFFFFFFF:
                        csize, v = vals[v], v + 1
                    if hoff == 0xFFFFFFFF:
                        hoff = vals[v]
                x += 4 + length
        out[name] = (method, csize, usize, hoff)
        pos += 46 + nlen + xlen + clen
    return out


class TorchZip:
    """An open zip checkpoint: what was pickled (tensors as TensorRef) and their values on demand."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = -1
        try:
            self._fd = os.open(path, os.O_RDONLY)
            with open(path, "rb") as f:
                if f.read(4) != b"PK\x03\x04":
                    raise NotPlain("not a zip archive (a legacy torch file)")
            self._members = _central_directory(self._fd, os.fstat(self._fd).st_size)
            pkl = next((n for n in self._members if n.endswith("/data.pkl") and n.count("/") == 1), None)
            if pkl is None:
                raise NotPlain("no data.pkl")
            self._prefix = pkl[: -len("data.pkl")]
            self._offsets: dict[str, int] = {}
            order = self._prefix + "byteorder"
            if order in self._members and self._member_bytes(order).strip() != b"little":
                raise NotPlain("big-endian archive")
            self.obj = _Unpickler(io.BytesIO(self._member_bytes(pkl))).load()
        except Exception as exc:  # damaged or unusual: torch.load will say how (and is the one that refuses)
            self.close()
            if isinstance(exc, NotPlain):
                raise
            raise NotPlain(f"{type(exc).__name__}") from None

    def _data_offset(self, name: str) -> int:
        """Where member ``name``'s bytes start (after its local header, whose name must match)."""
        if name not in self._offsets:
            hoff = self._members[name][3]
            local = os.pread(self._fd, 30 + len(name), hoff)
            if local[:4] != b"PK\x03\x04" or local[30:].decode("utf-8", "replace") != name:
                raise OSError(f"bad local header for {name}")
            name_len, extra_len = struct.unpack_from("<HH", local, 26)
            self._offsets[name] = hoff + 30 + name_len + extra_len
        return self._offsets[name]

    def _member_bytes(self, name: str) -> bytes:
        method, csize, usize, _ = self._members[name]
        raw = os.pread(self._fd, csize, self._data_offset(name))
        if method == zipfile.ZIP_DEFLATED:
            raw = zlib.decompressobj(-15).decompress(raw, usize)
        elif method != zipfile.ZIP_STORED:
            raise NotPlain("unsupported compression")
        if len(raw) != usize:
            raise NotPlain("member cut short")
        return raw

    def read_many(self, refs: list[TensorRef]) -> list[np.ndarray]:
        """The tensors' values as contiguous numpy arrays in their stored representation (bfloat16
        and float8 as raw unsigned integers: see ``widen``), with few system calls: the byte
        ranges, in file order, are read in chunks of up to 16 MB when they lie close together.
        Positioned reads on one descriptor: no seek state, so threads may read at once."""
        spans = []
        for k, ref in enumerate(refs):
            name = self._prefix + "data/" + ref.storage.key
            member = self._members.get(name)
            raw = raw_dtype(ref.dtype)
            if member is None or member[0] != zipfile.ZIP_STORED or member[2] < ref.storage.numel * raw.itemsize:
                raise OSError(f"storage {ref.storage.key} is missing, compressed or short")
            start = self._data_offset(name) + ref.offset * raw.itemsize
            spans.append((start, start + ref.span * raw.itemsize, k, raw))
        spans.sort()
        out: list[np.ndarray | None] = [None] * len(refs)
        i = 0
        while i < len(spans):
            j, lo, hi = i + 1, spans[i][0], spans[i][1]
            while j < len(spans) and spans[j][0] - hi <= 65536 and spans[j][1] - lo <= 16 << 20:
                hi = max(hi, spans[j][1])
                j += 1
            chunk = np.empty(hi - lo, dtype=np.uint8)
            if chunk.size and os.preadv(self._fd, [chunk], lo) != chunk.size:
                raise OSError("the file is cut short")
            for start, stop, k, raw in spans[i:j]:
                out[k] = self._shaped(chunk[start - lo:stop - lo].view(raw), refs[k], raw)
            i = j
        return out

    @staticmethod
    def _shaped(buf: np.ndarray, ref: TensorRef, raw: np.dtype) -> np.ndarray:
        """The tensor from the elements it spans (a view when it is contiguous, else a copy)."""
        if ref.span == ref.numel and ref.stride == _contiguous_strides(ref.shape):
            return buf.reshape(ref.shape)
        if not ref.numel:
            return np.empty(ref.shape, dtype=raw)
        strides = tuple(s * raw.itemsize for s in ref.stride)  # a view such as a transpose: copy it out
        return np.array(np.lib.stride_tricks.as_strided(buf, ref.shape, strides, writeable=False))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def widen(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values as a numpy array to analyse: a bfloat16 is the upper half of a float32, so it
    is widened exactly by a 16-bit shift; float8 stays raw (never analysed without its scales)."""
    if dtype == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw
