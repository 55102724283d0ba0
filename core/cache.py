"""On-disk cache of spectra and analyses, keyed by the tensor's content.

An entry is the singular values (``<key>.f64``: raw little-endian float64, whose length the shape
checks) plus one JSON file per method configuration (``<key>-<config>.json``). Writes go to a
temporary file and are renamed into place, so a reader never sees half an entry; an entry that
fails to parse or check is recomputed, never trusted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np

from core.errors import RmtWarning
from core.paths import atomic_output, cache_dir, remove_stale_temps
from core.rmt.analysis import COSINES_USED, MatrixAnalysis, MethodResult
from core.rmt.noise import MODELS as NOISE_MODELS
from core.rmt.noise import NoiseDiagnosis
from core.rmt.spectrum import MatrixShape

FORMAT = 4  # 4: per-method cosines; equalised, ks_raw and noise per analysis


def content_key(t, extra: str = "") -> str:
    """SHA-256 (hardware-accelerated on most CPUs) of the matrix's bytes, dtype and shape, and
    the view via ``extra``. ``t`` is a numpy array or a torch tensor; the same values in the same
    dtype give the same key either way (so one cache serves .pt and safetensors alike)."""
    if hasattr(t, "detach"):  # torch
        import torch

        t = t.detach().cpu().contiguous()
        dtype, raw = str(t.dtype).removeprefix("torch."), t.view(torch.uint8).reshape(-1).numpy() if t.numel() else b""
    else:
        t = np.ascontiguousarray(t)
        dtype, raw = t.dtype.name, t.view(np.uint8).reshape(-1) if t.size else b""
    h = hashlib.sha256()
    h.update(f"{FORMAT}|torch.{dtype}|{tuple(t.shape)}|{extra}".encode())  # "torch." keeps older keys valid
    h.update(memoryview(raw))
    return h.hexdigest()


def config_key(methods, weighting: str, cosines: str = "mp", equalise: bool = False, noise: bool = False) -> str:
    text = "|".join(repr(m) for m in methods) + f"|{weighting}|{cosines}|eq={equalise}|noise={noise}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# Cache folders found unwritable in this process: writing is off for them, and the user was told
# once. Reading still works (a read-only cache is still a cache).
_UNWRITABLE: set[Path] = set()
_SWEPT: set[Path] = set()
_WARNED: set[Path] = set()  # cache folders whose invalid entries were reported (once each)


def _number(v, lo: float | None = None, hi: float | None = None, integer: bool = False) -> bool:
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        return False
    return math.isfinite(v) and (lo is None or v >= lo) and (hi is None or v <= hi)


def invalid_entry(doc: dict, shape: MatrixShape) -> str | None:
    """Why a stored analysis document is not one this version writes (types, shapes, ranges); None
    when it is. Checked on every load: a cache folder may be shared, copied or tampered with."""
    if doc.get("weighting") not in ("uniform", "sv"):
        return "weighting"
    if not (doc.get("reason") is None or isinstance(doc["reason"], str)) or not isinstance(doc.get("equalised"), bool):
        return "reason or equalised"
    if not (doc.get("ks_raw") is None or _number(doc["ks_raw"], 0, 1)):
        return "ks_raw"
    noise = doc.get("noise")
    if noise is not None:
        ev = noise.get("evidence") if isinstance(noise, dict) else None
        if not isinstance(ev, dict) or set(ev) != {"ks_raw", "ks_equalised", "shuffle_edge_ratio"} or \
                noise.get("model") not in (None, *NOISE_MODELS) or \
                not all(v is None or _number(v, 0) for v in ev.values()):
            return "noise"
    methods = doc.get("methods")
    if not isinstance(methods, dict) or not methods:
        return "methods"
    fields = {f.name for f in dataclasses.fields(MethodResult)} - {"method"}
    for name, r in methods.items():
        if not isinstance(r, dict) or set(r) != fields:
            return f"methods.{name}"
        checks = {"sigma2": _number(r["sigma2"], 0), "threshold": _number(r["threshold"], 0),
                  "rank": _number(r["rank"], 0, shape.p, integer=True), "avew": _number(r["avew"], 0, 1),
                  "avew_left": _number(r["avew_left"], 0, 1), "avew_right": _number(r["avew_right"], 0, 1),
                  "ks": _number(r["ks"], 0, 1)}
        bad = [f for f, ok in checks.items() if r[f] is not None and not ok]
        # An applicable method has its threshold and rank; one that is not (a reason) has no numbers.
        if (r["reason"] is None) != (r["rank"] is not None and r["threshold"] is not None) or (
                r["reason"] is not None and any(r[f] is not None for f in checks)):
            return f"methods.{name}: numbers and reason disagree"
        if bad or r["cosines"] not in (None, *COSINES_USED) or not isinstance(r["diagnostics"], dict) or \
                not (r["reason"] is None or isinstance(r["reason"], str)):
            return f"methods.{name}.{bad[0] if bad else 'cosines, diagnostics or reason'}"
    return None  # cache folders whose dead writers' temporary files this process removed


class SpectrumCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "spectra"
        self._tmp = self.root / "tmp"  # every writer's temporary files, so one listing finds a dead one's
        if self.root not in _SWEPT:
            _SWEPT.add(self.root)
            remove_stale_temps(self._tmp)

    def _write(self, path: Path, data: bytes) -> None:
        """Write one entry atomically; on the first failure turn writing off with one warning."""
        if self.root in _UNWRITABLE:
            return
        try:
            with atomic_output(path, tmp_dir=self._tmp) as tmp:
                tmp.write_bytes(data)
        except OSError as exc:
            why = exc.strerror or str(exc)
            _UNWRITABLE.add(self.root)
            warnings.warn(RmtWarning(f"the cache {self.root} cannot be written ({why}); continuing without "
                                     "saving results there (set RMT_TUI_CACHE_DIR to use another folder)"),
                          stacklevel=2)

    def _sv_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.f64"

    def _doc_path(self, key: str, cfg: str) -> Path:
        return self.root / key[:2] / f"{key}-{cfg}.json"

    def load(self, key: str, shape: MatrixShape, cfg: str) -> MatrixAnalysis | None:
        try:
            doc = json.loads(self._doc_path(key, cfg).read_bytes())
            # Raw values rather than .npy: a warm reopen loads one per layer, and parsing .npy
            # headers was a third of its time.
            sv = np.fromfile(self._sv_path(key), dtype="<f8")
            if sv.shape != (shape.p,) or not np.all(np.isfinite(sv)):
                return None
            if doc.get("format") != FORMAT or doc.get("shape") != [shape.m, shape.n]:
                return None
            if (why := invalid_entry(doc, shape)) is not None:
                self._warn_invalid(why)
                return None
            methods = {name: MethodResult(method=name, **fields) for name, fields in doc["methods"].items()}
            sv.setflags(write=False)
            noise = NoiseDiagnosis.from_dict(doc["noise"]) if doc.get("noise") is not None else None
            return MatrixAnalysis(shape, sv, methods, doc["weighting"], doc.get("reason"), bool(doc["equalised"]),
                                  doc["ks_raw"], noise)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # missing (the common miss) or corrupt: recompute

    def _warn_invalid(self, why: str) -> None:
        if self.root not in _WARNED:
            _WARNED.add(self.root)
            warnings.warn(RmtWarning(f"the cache {self.root} holds an entry that does not fit its format ({why}); "
                                     "such entries are recomputed, never trusted"), stacklevel=3)

    def _alias_path(self, fingerprint: str) -> Path:
        h = hashlib.sha256(fingerprint.encode("utf-8", "surrogateescape")).hexdigest()  # any file name
        return self.root / "by-file" / h[:2] / f"{h}.json"

    def content_key_for(self, fingerprint: str) -> str | None:
        """The content key last computed for this (unchanged) file and tensor, if any."""
        try:
            doc = json.loads(self._alias_path(fingerprint).read_text())
            return doc["key"] if doc.get("fingerprint") == fingerprint and isinstance(doc.get("key"), str) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def remember_key(self, fingerprint: str, key: str) -> None:
        self._write(self._alias_path(fingerprint), json.dumps({"fingerprint": fingerprint, "key": key}).encode())

    def store(self, key: str, cfg: str, a: MatrixAnalysis) -> None:
        # The values first: a document is only ever found beside the values it describes.
        svp = self._sv_path(key)
        if not svp.exists():
            self._write(svp, np.asarray(a.sv, dtype="<f8").tobytes())
        doc = {"format": FORMAT, "shape": [a.shape.m, a.shape.n], "weighting": a.weighting, "reason": a.reason,
               "methods": {name: _fields(r) for name, r in a.methods.items()}, "equalised": a.equalised,
               "ks_raw": a.ks_raw, "noise": a.noise.to_dict() if a.noise is not None else None}
        self._write(self._doc_path(key, cfg), json.dumps(doc).encode())


def _fields(r: MethodResult) -> dict:
    """Everything a MethodResult holds except its name (the document's key), to rebuild it as stored."""
    return {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "method"}
