"""Open checkpoints safely and lazily: PyTorch pickles (weights only), safetensors, Hugging Face
folders (single or sharded) and .npz. Every tensor is listed; tensors are read one at a time.

Pickles are code, so they are only ever loaded with ``torch.load(weights_only=True)``; a file that
asks for anything else is refused with the global it wanted, before anything runs.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import pickletools
import re
import stat
import struct
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CheckpointError, UnsafeCheckpointError
from .memory import human_bytes, require_memory
from .text import first_line
from .torchfile import NotPlain, TensorRef, TorchZip, raw_dtype, widen

if TYPE_CHECKING:  # torch is imported where tensors are read: listing a checkpoint does not need it
    import torch

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz", ".gguf")
# Keys under which training checkpoints wrap the model's weights, in order of preference.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "network",
                "weights", "params", "ema")
# Top-level entries of a training checkpoint that are not model weights.
NON_MODEL_KEYS = re.compile(r"optim|scheduler|scaler|lr_|grad_scaler", re.I)
FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64"}
FLOAT8_DTYPES = {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit (the safetensors library refuses more)
MIN_SIDE = 2  # a matrix view with a side shorter than this has no spectrum to speak of

_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
                       "U16": "uint16", "U32": "uint32", "U64": "uint64"}


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


# --------------------------------------------------------------------------------------------
# Tensor sources: one per file format. Each lists (name, shape, dtype) without reading data and
# reads one tensor on demand.


class _Source:
    path: Path
    metadata: dict[str, str] = {}
    # Pickles keep insertion order and an index keeps its own; safetensors and .npz do not
    # record module order, so those are listed in natural name order instead.
    ordered = False

    def entries(self) -> list[tuple[str, tuple[int, ...], str]]:
        raise NotImplementedError

    def read(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def read_array(self, name: str):
        """The tensor for analysis: a numpy array where the format allows reading it without torch
        (safetensors, .npz), else the torch tensor itself."""
        return self.read(name)

    def read_arrays(self, names: list[str]) -> list:
        """``read_array`` of several tensors (a source may read them together)."""
        return [self.read_array(n) for n in names]

    def reasons(self) -> dict[str, str]:
        """Tensors the format lists but cannot be read, with why (an unknown GGUF type)."""
        return {}

    def dequantised(self) -> set[str]:
        """Quantised tensors that read as float32 (dequantised): analysed like float ones."""
        return set()

    def file_of(self, name: str) -> Path:
        """The file that holds tensor ``name``."""
        return self.path

    def tied(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass


def _require_regular(path: Path) -> None:
    """A FIFO, socket or device given as a checkpoint would block a read forever (or never end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(path, "no such file or folder", "check the path") from None
    except PermissionError:
        raise CheckpointError(path, "permission denied", "check the file's permissions or run as its owner") from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(path, "is a folder, not a file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        raise CheckpointError(path, f"is {kind}, not a checkpoint file", "give the path of a saved checkpoint file")


def _open_bytes(path: Path):
    _require_regular(path)
    try:
        return open(path, "rb")
    except PermissionError:
        raise CheckpointError(path, "permission denied", "check the file's permissions or run as its owner") from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot be read ({exc.strerror or exc})") from None


_ITEMSIZE = {"complex128": 16, "complex64": 8, "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
             "int64": 8, "int32": 4, "int16": 2,
             "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "uint16": 2, "uint32": 4,
             "uint64": 8}


def _torch_dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


class SafetensorsSource(_Source):
    def __init__(self, path: Path):
        self.path = path
        with _open_bytes(path) as f:
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
                dtype = _SAFETENSORS_DTYPES[d["dtype"]]
                if any(s < 0 for s in shape) or not 0 <= begin <= end:
                    raise ValueError(f"tensor {name!r} has an invalid shape or offsets")
                if end > data_len:
                    raise CheckpointError(path, f"truncated: tensor {name!r} ends at byte {end} of the data, "
                                          f"which has only {data_len}", "re-download or re-save the file")
                if end - begin != math.prod(shape) * _ITEMSIZE[dtype]:
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
        return read_region(self.path, self._offsets[name], math.prod(shape) * _ITEMSIZE[dtype], name)

    def read_array(self, name: str) -> np.ndarray:
        shape, dtype = self._info[name]
        return bytes_as_array(self._read_bytes(name), dtype, shape)

    def read(self, name: str) -> torch.Tensor:
        import torch

        shape, dtype = self._info[name]
        # safetensors is little-endian, as is every host torch supports
        return torch.from_numpy(self._read_bytes(name)).view(getattr(torch, dtype)).reshape(shape)


def read_region(path: Path, offset: int, nbytes: int, name: str) -> np.ndarray:
    """One tensor's bytes, read with a plain file read into fresh memory (not mmap: mapped pages
    would stay resident and a full analysis would end up holding the whole file)."""
    buf = np.empty(nbytes, dtype=np.uint8)
    try:
        with _open_bytes(path) as f:
            f.seek(offset)
            got = f.readinto(memoryview(buf))
    except OSError as exc:
        raise CheckpointError(path, f"cannot read tensor {name!r} ({exc})") from None
    if got != buf.size:
        raise CheckpointError(path, f"truncated: tensor {name!r} is cut short", "re-download the file")
    return buf


def bytes_as_array(raw: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Little-endian stored bytes as a numpy array to analyse, without torch (see ``widen``)."""
    return widen(raw.view(raw_dtype(dtype)).reshape(shape), dtype)


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


def _find_globals(path: Path) -> list[str]:
    """Names of the globals a pickle asks for, found by reading its opcodes (nothing is run)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next(n for n in z.namelist() if n.endswith("data.pkl"))
                data = z.read(member)
        else:
            data = path.read_bytes()
        found, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a broken pickle: report what was found so far
        pass
    safe = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.")
    return [g for g in dict.fromkeys(found) if not g.startswith(safe)]


def _flatten(obj: Any, prefix: str, out: dict, leaf: type) -> None:
    """Objects of type ``leaf`` (tensors) found under ``obj``, by dotted path. An explicit stack,
    not recursion: a pickle may legally nest thousands of levels deep."""
    if isinstance(obj, Mapping) and all(isinstance(v, leaf) for v in obj.values()):  # a flat state dict
        out.update((f"{prefix}.{k}" if prefix else str(k), v) for k, v in obj.items())
        return
    stack = [(prefix, obj)]
    while stack:
        prefix, obj = stack.pop()
        if isinstance(obj, leaf):
            out[prefix] = obj
            continue
        if isinstance(obj, Mapping):
            items = [(str(k), v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(obj)]
        else:
            continue
        stack.extend((f"{prefix}.{k}" if prefix else k, v) for k, v in reversed(items))


def extract_state_dict(obj: Any, leaf: type) -> dict:
    """The model's tensors (objects of type ``leaf``) from whatever was pickled: a state dict, or a
    training checkpoint that wraps one (beside optimizer state and counters), flattened to dotted
    names."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                found: dict = {}
                _flatten(inner, "", found, leaf)
                if found:
                    return found
        obj = {k: v for k, v in obj.items() if not NON_MODEL_KEYS.search(str(k))}
    out: dict = {}
    _flatten(obj, "", out, leaf)
    return out


class TorchZipSource(_Source):
    """A PyTorch zip checkpoint of plain tensors, read without torch (core.torchfile). Opening
    raises NotPlain for anything else, which then goes to TorchSource."""

    ordered = True

    def __init__(self, path: Path):
        self.path = path
        self._zip = TorchZip(path)
        self._refs: dict[str, TensorRef] = extract_state_dict(self._zip.obj, TensorRef)
        self._zip.obj = None  # only the tensor references are kept
        if not self._refs:
            self._zip.close()
            raise NotPlain("no tensors")  # TorchSource says so in its own words

    def entries(self):
        return [(k, r.shape, r.dtype) for k, r in self._refs.items()]

    def tied(self):
        return _tied({k: (r.storage.key, r.offset, r.shape, r.stride) for k, r in self._refs.items() if r.numel})

    def _raw(self, names: list[str]) -> tuple[list[TensorRef], list[np.ndarray]]:
        refs = [self._refs[n] for n in names]
        try:
            return refs, self._zip.read_many(refs)
        except OSError as exc:
            raise CheckpointError(self.path, f"cannot read {names[0] if len(names) == 1 else 'tensors'!r} ({exc})",
                                  "the file may be truncated or damaged; re-download or re-save it") from None

    def read_arrays(self, names):
        refs, raws = self._raw(names)
        return [widen(raw, ref.dtype) for raw, ref in zip(raws, refs)]

    def read_array(self, name):
        return self.read_arrays([name])[0]

    def read(self, name):
        import torch

        (ref,), (raw,) = self._raw([name])
        t = torch.from_numpy(raw)
        # numpy holds bfloat16 and float8 as unsigned integers of their width: reinterpret them
        return t.view(getattr(torch, ref.dtype)) if ref.dtype == "bfloat16" or ref.dtype in FLOAT8_DTYPES else t

    def close(self):
        self._zip.close()


def _tied(keys: dict[str, tuple]) -> dict[str, str]:
    """name → the first name with the same storage, offset, shape and strides."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, key in keys.items():
        if key in seen:
            out[name] = seen[key]
        else:
            seen[key] = name
    return out


class TorchSource(_Source):
    """Any other PyTorch pickle, through ``torch.load(weights_only=True)``."""

    ordered = True

    def __init__(self, path: Path):
        import torch

        self.path = path
        with _open_bytes(path) as f:
            if not f.read(1):
                raise CheckpointError(path, "empty file", "the download or copy may be incomplete")
        self._tensors = extract_state_dict(self._load(), torch.Tensor)
        if not self._tensors:
            raise CheckpointError(path, "contains no tensors: not a model checkpoint",
                                  "save the model with torch.save(model.state_dict(), path)")
        self.metadata = {}

    def _load(self):
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                try:
                    return torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as exc:
                    if "mmap can only be used" not in str(exc):
                        raise
                    # A legacy (non-zip) pickle is read whole into memory.
                    require_memory(self.path.stat().st_size, self.path, "this legacy (non-zip) PyTorch file")
                    return torch.load(self.path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                named = re.findall(r"GLOBAL ([\w.]+)", str(exc)) or _find_globals(self.path)
                if named:
                    raise UnsafeCheckpointError(
                        self.path, f"refused: the pickle asks to run code ({', '.join(named[:3])}); nothing was run",
                        "only weights are loaded from pickles; if you trust the file, re-save its "
                        "state_dict, or convert it to safetensors") from None
                raise CheckpointError(self.path, f"not a loadable weights-only PyTorch checkpoint ({first_line(exc)})",
                                      "re-save it with torch.save(model.state_dict(), path)") from None
            except CheckpointError:
                raise
            except RecursionError:
                raise CheckpointError(self.path, "nested too deeply to load", "re-save a flat state_dict") from None
            except MemoryError:
                raise CheckpointError(self.path, "asks for more memory than this machine has while loading — "
                                      "corrupt, or too big for this machine", "re-save or re-download it") from None
            except Exception as exc:  # whatever a damaged pickle makes torch raise, it is a damaged file
                raise CheckpointError(self.path, f"not a readable PyTorch checkpoint — truncated or corrupt? "
                                      f"({type(exc).__name__}: {first_line(exc)})",
                                      "re-download or re-save the file") from None

    def entries(self):
        return [(k, tuple(t.shape), _torch_dtype_name(t.dtype)) for k, t in self._tensors.items()]

    def tied(self):
        return _tied({k: (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
                      for k, t in self._tensors.items() if t.numel()})

    def read(self, name):
        return self._tensors[name]




class NpzSource(_Source):
    def __init__(self, path: Path):
        self.path = path
        with _open_bytes(path) as f:
            if not f.read(1):
                raise CheckpointError(path, "empty file", "the download or copy may be incomplete")
        try:
            self._z = np.load(path, allow_pickle=False)
            self._info = {}
            for name in self._z.files:
                # Read only each member's .npy header for its shape and dtype.
                info = self._z.zip.getinfo(name + ".npy")
                with self._z.zip.open(info) as member:
                    fmt = np.lib.format
                    read_header = fmt.read_array_header_1_0 if fmt.read_magic(member) == (1, 0) \
                        else fmt.read_array_header_2_0
                    shape, _, dtype = read_header(member)
                    header_len = member.tell()
                dtype = np.dtype(dtype)
                shape = tuple(int(d) for d in shape)
                declared = math.prod(shape) * dtype.itemsize
                # The archive's directory says how many bytes the member holds: a header that
                # declares more is corrupt (or a decompression bomb), whatever memory there is.
                if dtype.hasobject or declared != info.file_size - header_len:
                    raise ValueError(f"member {name!r}: its header declares {dtype} {list(shape)} "
                                     f"({human_bytes(declared)}) but it holds "
                                     f"{human_bytes(info.file_size - header_len)}")
                self._info[name] = (shape, dtype.name)
        except Exception as exc:  # numpy and zipfile raise many types on damaged archives
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(path, f"not a readable .npz archive — truncated or corrupt? ({first_line(exc)})",
                                  "re-save it with numpy.savez") from None
        if not self._info:
            raise CheckpointError(path, "contains no arrays")
        self.metadata = {}

    def entries(self):
        return [(k, *v) for k, v in self._info.items()]

    def read_array(self, name):
        try:
            return np.ascontiguousarray(self._z[name])
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError) as exc:
            raise CheckpointError(self.path, f"cannot read array {name!r} ({first_line(exc)})") from None

    def read(self, name):
        import torch

        return torch.from_numpy(self.read_array(name))

    def close(self):
        self._z.close()


class GgufSource(_Source):
    """llama.cpp's GGUF: every tensor listed with its GGUF type as its dtype (q4_k, q8_0, …, or
    float16 for plain types); quantised tensors are read and dequantised to float32 one at a time.
    Listed in natural name order (blk.2 before blk.10): converters write tensors sorted as text,
    which is not depth order."""

    def __init__(self, path: Path):
        from .gguffile import GgufIndex

        _require_regular(path)
        self.path = path
        self._index = GgufIndex(path)
        self.metadata = self._index.shown_metadata()

    def entries(self):
        return [(t.name, t.shape, t.dtype) for t in self._index.tensors.values()]

    def reasons(self) -> dict[str, str]:
        return {t.name: t.reason for t in self._index.tensors.values() if t.reason}

    def dequantised(self) -> set[str]:
        return {t.name for t in self._index.tensors.values() if t.dtype not in _ITEMSIZE and not t.reason}

    def read_array(self, name):
        t = self._index.tensors[name]
        if t.reason:
            raise CheckpointError(self.path, f"tensor {name!r}: {t.reason}")
        raw = read_region(self.path, t.offset, t.nbytes, name)
        return bytes_as_array(raw, t.dtype, t.shape) if t.dtype in _ITEMSIZE else self._index.dequantise(t, raw)

    def read(self, name):
        import torch

        t = self._index.tensors[name]
        if t.dtype == "bfloat16":  # exact, as stored; every other type is numpy-readable
            return torch.from_numpy(read_region(self.path, t.offset, t.nbytes, name)).view(torch.bfloat16).reshape(
                t.shape)
        return torch.from_numpy(np.ascontiguousarray(self.read_array(name)))


class ShardedSource(_Source):
    """Several files behind one index (Hugging Face ``*.index.json``), or one file in a folder."""

    def __init__(self, path: Path, files: list[Path], order: list[str] | None = None):
        self.path = path
        self._parts = [open_source(f) for f in files]
        self._owner: dict[str, _Source] = {}
        self._info: dict[str, tuple] = {}
        for part in self._parts:
            for name, shape, dtype in part.entries():
                self._owner[name] = part
                self._info[name] = (shape, dtype)
        if order:
            missing = [n for n in order if n not in self._info]
            if missing:
                raise CheckpointError(path, f"the index names {len(missing)} tensors that no shard holds "
                                      f"(first: {missing[0]!r})", "re-download the missing shards")
            listed = set(order)
            order = order + [n for n in self._info if n not in listed]
            self._info = {n: self._info[n] for n in order}
        self.metadata = dict(self._parts[0].metadata) if self._parts else {}
        self.ordered = bool(order) or all(p.ordered for p in self._parts)

    def entries(self):
        return [(k, *v) for k, v in self._info.items()]

    def read(self, name):
        return self._owner[name].read(name)

    def read_array(self, name):
        return self._owner[name].read_array(name)

    def file_of(self, name):
        return self._owner[name].file_of(name)

    def tied(self):
        out = {}
        for part in self._parts:
            out.update(part.tied())
        return out

    def close(self):
        for part in self._parts:
            part.close()


def _check_inside(folder: Path, index: Path, shard) -> None:
    """A shard named by an index must be a file of the model folder: not an absolute path, not
    ``../``, not a symlink that leads out. The one exception is the Hugging Face hub cache, whose
    snapshot folders hold symlinks into the same repository's ``blobs/``."""
    if not isinstance(shard, str) or not shard or "\x00" in shard:
        raise CheckpointError(index, f"the index names a shard that is not a file name ({shard!r})",
                              "re-download the model's index file")
    if os.path.isabs(shard) or ".." in Path(shard).parts:
        raise CheckpointError(index, f"refused: the index names a shard outside the model folder ({shard!r})",
                              "an index may only name files inside its own folder; fix or re-download it")
    root = folder.resolve()
    target = (folder / shard).resolve()
    allowed = [root]
    if root.parent.name == "snapshots":  # <repo>/snapshots/<revision>/ → <repo>/blobs/
        allowed.append(root.parent.parent / "blobs")
    if not any(target.is_relative_to(a) for a in allowed):
        raise CheckpointError(index, f"refused: shard {shard!r} is a link that leads outside the model folder "
                              f"(to {target})", "copy the shard into the folder, or open the file it points to "
                              "directly")


def _folder_source(path: Path) -> _Source:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError("weight_map is not an object")
                bad = next((k for k, v in weight_map.items() if not isinstance(v, str)), None)
                if bad is not None:
                    raise TypeError(f"weight_map[{bad!r}] is not a file name")
            except (ValueError, KeyError, TypeError, OSError) as exc:
                raise CheckpointError(index, f"unreadable index file ({first_line(exc)})") from None
            shards = list(dict.fromkeys(weight_map.values()))
            for shard in shards:
                _check_inside(path, index, shard)
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise CheckpointError(path, f"shard {missing[0]} named by {index_name} is missing",
                                      "download every shard listed in the index")
            return ShardedSource(path, [path / s for s in shards], list(weight_map))
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (path / single).is_file():
            return ShardedSource(path, [path / single])
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(candidates) == 1:
        return ShardedSource(path, candidates)
    if not candidates:
        raise CheckpointError(path, "no weights in this folder (looked for model.safetensors, "
                              "model-*.safetensors with an index, pytorch_model.bin, *.pt, *.pth, *.npz)",
                              "give the path of a checkpoint file or a model folder")
    raise CheckpointError(path, f"{len(candidates)} weight files and no index: which one? "
                          f"({', '.join(c.name for c in candidates[:4])})", "give the path of one file")


def open_source(path: Path) -> _Source:
    if path.is_dir():
        return _folder_source(path)
    if not path.exists():
        raise CheckpointError(path, "no such file or folder", "check the path")
    with _open_bytes(path) as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"):
        return SafetensorsSource(path)
    if path.suffix == ".npz":
        return NpzSource(path)
    if path.suffix == ".gguf" or head[:4] == b"GGUF":
        return GgufSource(path)
    if head[:1]:  # an empty file gets TorchSource's message
        try:
            return TorchZipSource(path)
        except NotPlain:
            pass
    return TorchSource(path)


class Checkpoint:
    """An opened checkpoint: its layer list (no tensor data read) and lazy access to tensors."""

    def __init__(self, path: str | Path, conv_view: str = "reshape"):
        if conv_view not in ("reshape", "positions"):
            raise ValueError(f"conv_view must be 'reshape' or 'positions', got {conv_view!r}")
        self.path = Path(path)
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
        return math.prod(shape) * _ITEMSIZE.get(dtype, 8)

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
