"""numpy ``.npz`` archives: member headers checked against the archive directory; no pickles."""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from core.errors import CheckpointError
from core.io.sources import Source, open_bytes
from core.memory import human_bytes
from core.text import first_line


class NpzSource(Source):
    def __init__(self, path: Path):
        self.path = path
        with open_bytes(path) as f:
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
