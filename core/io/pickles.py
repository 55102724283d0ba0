"""PyTorch pickles: the security boundary. Only weights are ever loaded (``weights_only=True``);
a file that asks for anything else is refused with the global it wanted, before anything runs."""
from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CheckpointError, UnsafeCheckpointError
from core.io.dtypes import FLOAT8_DTYPES
from core.io.sources import Source, open_bytes, torch_dtype_name
from core.io.torchzip import NotPlain, TensorRef, TorchZip, widen
from core.memory import require_memory
from core.text import first_line

# Keys under which training checkpoints wrap the model's weights, in order of preference.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "network",
                "weights", "params", "ema")
# Top-level entries of a training checkpoint that are not model weights.
NON_MODEL_KEYS = re.compile(r"optim|scheduler|scaler|lr_|grad_scaler", re.I)


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


class TorchZipSource(Source):
    """A PyTorch zip checkpoint of plain tensors, read without torch (core.io.torchzip). Opening
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


def _stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


class TorchSource(Source):
    """Any other PyTorch pickle, through ``torch.load(weights_only=True)``."""

    ordered = True

    def __init__(self, path: Path):
        import torch

        self.path = path
        with open_bytes(path) as f:
            if not f.read(1):
                raise CheckpointError(path, "empty file", "the download or copy may be incomplete")
        self._stamp = _stamp(path)
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
        return [(k, tuple(t.shape), torch_dtype_name(t.dtype)) for k, t in self._tensors.items()]

    def tied(self):
        return _tied({k: (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
                      for k, t in self._tensors.items() if t.numel()})

    def read(self, name):
        # The tensors are memory-mapped: had the file been cut short since it was opened, touching
        # their pages would kill the process with SIGBUS. A file that changed is refused instead.
        if _stamp(self.path) != self._stamp:
            raise CheckpointError(self.path, "changed on disk while it was open (size or modification time "
                                  "differ): reading it now could crash the process",
                                  "open it again once whatever writes it has finished")
        return self._tensors[name]
