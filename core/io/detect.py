"""Which reader a path needs: format sniffing, Hugging Face folders and indexes (with their
path checks), and sharded sources."""
from __future__ import annotations

import json
import os
from pathlib import Path

from core.errors import CheckpointError
from core.io.gguf import GgufSource
from core.io.npz import NpzSource
from core.io.pickles import TorchSource, TorchZipSource
from core.io.safetensors import SafetensorsSource
from core.io.sources import Source, open_bytes
from core.io.torchzip import NotPlain
from core.text import first_line

# The file suffixes of every format the readers take (a folder's weight files are found by these).
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz", ".gguf")


class ShardedSource(Source):
    """Several files behind one index (Hugging Face ``*.index.json``), or one file in a folder."""

    def __init__(self, path: Path, files: list[Path], order: list[str] | None = None):
        self.path = path
        self._parts = [open_source(f) for f in files]
        self._owner: dict[str, Source] = {}
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
    try:
        root = folder.resolve()
        target = (folder / shard).resolve()
    except (RuntimeError, OSError):  # a symlink loop (Python raises RuntimeError for one)
        raise CheckpointError(index, f"shard {shard!r} is a symbolic link that loops (it never reaches a file)",
                              "replace the link with the shard file, or re-download the model") from None
    allowed = [root]
    if root.parent.name == "snapshots":  # <repo>/snapshots/<revision>/ → <repo>/blobs/
        allowed.append(root.parent.parent / "blobs")
    if not any(target.is_relative_to(a) for a in allowed):
        raise CheckpointError(index, f"refused: shard {shard!r} is a link that leads outside the model folder "
                              f"(to {target})", "copy the shard into the folder, or open the file it points to "
                              "directly")


def _folder_source(path: Path) -> Source:
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


def open_source(path: Path) -> Source:
    if path.is_dir():
        return _folder_source(path)
    if not path.exists():
        if path.is_symlink():
            raise CheckpointError(path, "is a symbolic link that loops or leads nowhere",
                                  "point it at the checkpoint file, or give the file's own path")
        raise CheckpointError(path, "no such file or folder", "check the path")
    with open_bytes(path) as f:
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
