"""The contract every format reader implements, and the safe byte-level reads they share."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import CheckpointError
from core.io.dtypes import raw_dtype
from core.io.torchzip import widen

if TYPE_CHECKING:  # torch is imported where tensors are read: listing a checkpoint does not need it
    import torch

class Source:
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


def require_regular(path: Path) -> None:
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


def open_bytes(path: Path):
    require_regular(path)
    try:
        return open(path, "rb")
    except PermissionError:
        raise CheckpointError(path, "permission denied", "check the file's permissions or run as its owner") from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot be read ({exc.strerror or exc})") from None



def torch_dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")

def read_region(path: Path, offset: int, nbytes: int, name: str) -> np.ndarray:
    """One tensor's bytes, read with a plain file read into fresh memory (not mmap: mapped pages
    would stay resident and a full analysis would end up holding the whole file)."""
    buf = np.empty(nbytes, dtype=np.uint8)
    try:
        with open_bytes(path) as f:
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
