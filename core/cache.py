"""On-disk cache of spectra and analyses, keyed by the tensor's content.

An entry is the singular values (``<key>.npy``) plus one JSON file per method configuration
(``<key>-<config>.json``). Writes go to a temporary file and are renamed into place, so a reader
never sees half an entry; an entry that fails to parse or check is recomputed, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .analysis import MatrixAnalysis, MethodResult
from .paths import cache_dir
from .spectrum import MatrixShape

if TYPE_CHECKING:
    import torch

FORMAT = 2


def content_key(t: torch.Tensor, extra: str = "") -> str:
    """SHA-256 (hardware-accelerated on most CPUs) of the matrix's bytes, dtype and shape, and
    the view via ``extra``."""
    import torch

    t = t.detach().cpu().contiguous()
    h = hashlib.sha256()
    h.update(f"{FORMAT}|{t.dtype}|{tuple(t.shape)}|{extra}".encode())
    if t.numel():
        h.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
    return h.hexdigest()


def config_key(methods, weighting: str) -> str:
    text = "|".join(repr(m) for m in methods) + f"|{weighting}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SpectrumCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "spectra"

    def _sv_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def _doc_path(self, key: str, cfg: str) -> Path:
        return self._sv_path(key).with_name(f"{key}-{cfg}.json")

    def has(self, key: str, cfg: str) -> bool:
        return self._doc_path(key, cfg).is_file() and self._sv_path(key).is_file()

    def load(self, key: str, shape: MatrixShape, cfg: str) -> MatrixAnalysis | None:
        if not self.has(key, cfg):  # the common miss, without an exception
            return None
        try:
            sv = np.load(self._sv_path(key), allow_pickle=False)
            doc = json.loads(self._doc_path(key, cfg).read_text())
            if sv.shape != (shape.p,) or sv.dtype != np.float64 or not np.all(np.isfinite(sv)):
                return None
            if doc.get("format") != FORMAT or doc.get("shape") != [shape.m, shape.n]:
                return None
            methods = {name: MethodResult(method=name, **fields) for name, fields in doc["methods"].items()}
            sv.setflags(write=False)
            return MatrixAnalysis(shape, sv, methods, doc["weighting"], doc.get("reason"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # missing or corrupt: recompute

    def _alias_path(self, fingerprint: str) -> Path:
        h = hashlib.sha256(fingerprint.encode()).hexdigest()
        return self.root / "by-file" / h[:2] / f"{h}.json"

    def content_key_for(self, fingerprint: str) -> str | None:
        """The content key last computed for this (unchanged) file and tensor, if any."""
        try:
            doc = json.loads(self._alias_path(fingerprint).read_text())
            return doc["key"] if doc.get("fingerprint") == fingerprint and isinstance(doc.get("key"), str) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def remember_key(self, fingerprint: str, key: str) -> None:
        try:
            _atomic_write(self._alias_path(fingerprint),
                          lambda f: f.write(json.dumps({"fingerprint": fingerprint, "key": key}).encode()))
        except OSError:
            pass

    def store(self, key: str, cfg: str, a: MatrixAnalysis) -> None:
        try:
            svp = self._sv_path(key)
            if not svp.exists():
                _atomic_write(svp, lambda f: np.save(f, np.asarray(a.sv, dtype=np.float64), allow_pickle=False))
            doc = {"format": FORMAT, "shape": [a.shape.m, a.shape.n], "weighting": a.weighting, "reason": a.reason,
                   "methods": {name: _fields(r) for name, r in a.methods.items()}}
            _atomic_write(self._doc_path(key, cfg), lambda f: f.write(json.dumps(doc).encode()))
        except OSError:
            pass  # a cache that cannot be written only costs time


def _fields(r: MethodResult) -> dict:
    return {"sigma2": r.sigma2, "threshold": r.threshold, "rank": r.rank, "avew": r.avew,
            "avew_left": r.avew_left, "avew_right": r.avew_right, "ks": r.ks, "reason": r.reason,
            "diagnostics": r.diagnostics}
