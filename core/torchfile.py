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

import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

# torch's typed-storage class names (as pickled: GLOBAL 'torch FloatStorage') → dtype name.
STORAGE_DTYPES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
                  "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                  "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
                  "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
                  "Float8_e4m3fnStorage": "float8_e4m3fn", "Float8_e5m2Storage": "float8_e5m2"}
# How each dtype's bytes are held in numpy before widening (numpy has no bfloat16 or float8).
_RAW = {"bfloat16": np.dtype("<u2"), "float8_e4m3fn": np.dtype("u1"), "float8_e5m2": np.dtype("u1"),
        "bool": np.dtype("?")}
_RAW.update({d: np.dtype(d).newbyteorder("<") for d in ("float32", "float64", "float16", "int64", "int32", "int16",
                                                         "int8", "uint8", "complex64", "complex128")})


def raw_dtype(dtype: str) -> np.dtype:
    """The numpy dtype that holds ``dtype``'s stored bytes (little-endian)."""
    return _RAW[dtype] if dtype in _RAW else np.dtype(dtype).newbyteorder("<")


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
    last = 0
    for n, s in zip(shape, stride):
        if n == 0:
            return 0
        last += (n - 1) * s
    return last + 1


@dataclass(frozen=True)
class _StorageType:
    dtype: str


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, StorageRef):
        raise NotPlain("tensor without a storage")
    shape, stride = tuple(size), tuple(stride)
    dims = shape + stride
    if not (type(offset) is int and offset >= 0 and len(shape) == len(stride)
            and set(map(type, dims)) <= {int} and min(dims, default=0) >= 0):
        raise NotPlain("malformed tensor")
    ref = TensorRef(storage, offset, shape, stride, _span(shape, stride))
    if offset + ref.span > storage.numel:
        raise NotPlain("a tensor reaches past its storage")
    return ref


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


class TorchZip:
    """An open zip checkpoint: what was pickled (tensors as TensorRef) and their values on demand."""

    def __init__(self, path: Path):
        self.path = path
        try:
            if not zipfile.is_zipfile(path):
                raise NotPlain("not a zip archive (a legacy torch file)")
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
                if pkl is None:
                    raise NotPlain("no data.pkl")
                self._prefix = pkl[: -len("data.pkl")]
                order = self._prefix + "byteorder"
                if order in names and z.read(order).strip() != b"little":
                    raise NotPlain("big-endian archive")
                self.obj = _Unpickler(z.open(pkl)).load()
                self._members = {n: z.getinfo(n) for n in names if n.startswith(self._prefix + "data/")}
            self._offsets: dict[str, int] = {}
            self._fd = os.open(path, os.O_RDONLY)
        except NotPlain:
            raise
        except Exception as exc:  # damaged: torch.load will say how (and is the one that refuses)
            raise NotPlain(f"{type(exc).__name__}") from None

    def _data_offset(self, key: str, info: zipfile.ZipInfo) -> int:
        """Where storage ``key``'s bytes start in the file (after its local zip header)."""
        if key not in self._offsets:
            local = os.pread(self._fd, 30, info.header_offset)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise OSError("bad local file header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            self._offsets[key] = info.header_offset + 30 + name_len + extra_len
        return self._offsets[key]

    def read(self, ref: TensorRef) -> np.ndarray:
        """The tensor's values as a contiguous numpy array in its stored representation (bfloat16
        and float8 as their raw unsigned integers: see ``widen``). Positioned reads on one open
        descriptor: no seek state, so threads may read at once."""
        key = ref.storage.key
        info = self._members.get(self._prefix + "data/" + key)
        raw = raw_dtype(ref.dtype)
        if info is None or info.compress_type != zipfile.ZIP_STORED \
                or info.file_size < ref.storage.numel * raw.itemsize:
            raise OSError(f"storage {key} is missing, compressed or short")
        buf = np.empty(ref.span, dtype=raw)
        if buf.nbytes and os.preadv(self._fd, [buf], self._data_offset(key, info) + ref.offset * raw.itemsize) \
                != buf.nbytes:
            raise OSError("the file is cut short")
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
