"""GGUF files (llama.cpp): the header and tensor index, read with bounds checks, and one tensor
at a time dequantised to float32.

The index is parsed here rather than by ``gguf.GGUFReader`` so that a hostile or damaged file
ends in one CheckpointError naming what is wrong (the reader raises assorted exceptions, refuses
a whole file over one unknown type, and maps the file). The ``gguf`` package (the optional extra
``rmt-tui[gguf]``) supplies the type table and the dequantisers.

GGUF stores dimensions innermost first (ne₀ = a row's length); the shape listed here is reversed,
(…, ne₁, ne₀), which for a weight matrix is the (out, in) of SPEC §1, as PyTorch stores it.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import CheckpointError
from core.io.dtypes import GGUF_PLAIN, ITEMSIZE
from core.io.sources import Source, bytes_as_array, read_region, require_regular

MAGIC = b"GGUF"
MAX_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32
MAX_STRING = 1 << 24  # a key, a name or a metadata string longer than 16 MB is damage, not data
SHOWN_METADATA = ("general.architecture", "general.name", "general.file_type", "general.quantization_version",
                  "general.size_label", "general.alignment")
INSTALL = "pip install 'rmt-tui[gguf]'"

# Metadata value types: struct format of the fixed-size ones; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def gguf_module():
    """The ``gguf`` package, or None when it is not installed."""
    try:
        import gguf
        import gguf.quants  # noqa: F401  (the dequantisers, used as gguf.quants)
    except ImportError:
        return None
    return gguf


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]  # reversed GGUF dims: (out, in) for a weight
    type_id: int
    dtype: str  # float32, float16, bfloat16 … for plain types; the GGUF type in lower case (q4_k …)
    offset: int  # absolute, in the file
    nbytes: int  # 0 when the type is unknown (its size cannot be known)
    reason: str | None = None  # why it cannot be read (unknown type, no dequantiser)


class GgufIndex:
    """The parsed header: metadata (scalars and strings; arrays by length) and tensors."""

    def __init__(self, path: Path):
        self.path = path
        gguf = gguf_module()
        if gguf is None:
            raise CheckpointError(path, "is a GGUF file, and reading GGUF needs the gguf package", INSTALL)
        self._gguf = gguf
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                mv = memoryview(mm)
                try:
                    self._parse(mv)
                finally:
                    self._mv = None
                    mv.release()  # the map cannot close while a view of it is alive
        except CheckpointError:
            raise
        except (ValueError, OSError) as exc:  # mmap of an empty file, a read error
            problem = "empty file" if isinstance(exc, ValueError) and path.stat().st_size == 0 else \
                f"cannot be read as GGUF ({exc})"
            raise CheckpointError(path, problem, "the download or copy may be incomplete") from None

    # -- reading primitives: every read is bounds-checked against the file ---------------------
    def _bad(self, what: str) -> CheckpointError:
        return CheckpointError(self.path, f"corrupt GGUF header: {what}", "the file is damaged or truncated; "
                                                                          "download it again")

    def _take(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        if self._pos + size > len(self._mv):
            raise self._bad(f"{what} runs past the end of the file (at byte {self._pos})")
        value = struct.unpack_from(fmt, self._mv, self._pos)[0]
        self._pos += size
        return value

    def _string(self, what: str) -> str:
        n = self._take("<Q", what)
        if n > MAX_STRING:
            raise self._bad(f"{what} claims {n} bytes (at byte {self._pos - 8})")
        if self._pos + n > len(self._mv):
            raise self._bad(f"{what} ({n} bytes) runs past the end of the file (at byte {self._pos - 8})")
        raw = bytes(self._mv[self._pos:self._pos + n])
        self._pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._bad(f"{what} is not UTF-8") from None

    def _value(self, vtype: int, key: str):
        if vtype in _SCALARS:
            return self._take(_SCALARS[vtype], f"the value of {key!r}")
        if vtype == _STRING:
            return self._string(f"the value of {key!r}")
        if vtype == _ARRAY:
            etype = self._take("<I", f"the element type of {key!r}")
            count = self._take("<Q", f"the length of {key!r}")
            if etype in _SCALARS:  # skipped in one step, after checking it fits
                size = struct.calcsize(_SCALARS[etype]) * count
                if self._pos + size > len(self._mv):
                    raise self._bad(f"array {key!r} of {count} elements runs past the end of the file")
                self._pos += size
            elif etype == _STRING:
                if count > len(self._mv) // 8:
                    raise self._bad(f"array {key!r} claims {count} strings")
                for _ in range(count):
                    self._string(f"an element of {key!r}")
            else:
                raise self._bad(f"array {key!r} has element type {etype}")
            return f"[{count} values]"
        raise self._bad(f"metadata {key!r} has value type {vtype}")

    # -- the header -----------------------------------------------------------------------------
    def _parse(self, mv: memoryview) -> None:
        self._mv, self._pos = mv, 4
        if bytes(mv[:4]) != MAGIC:
            raise CheckpointError(self.path, "is not a GGUF file (no GGUF magic)")
        version = self._take("<I", "the version")
        if version not in (2, 3):
            swapped = struct.unpack("<I", struct.pack(">I", version))[0]
            why = ("a big-endian GGUF, which is not supported" if swapped in (2, 3) else
                   "GGUF version 1, a pre-release format" if version == 1 else f"GGUF version {version}, unknown")
            raise CheckpointError(self.path, f"is {why}", "convert it with a current llama.cpp")
        self.version = version
        n_tensors = self._take("<Q", "the tensor count")
        n_kv = self._take("<Q", "the metadata count")
        if n_tensors > len(mv) // 24 or n_kv > len(mv) // 12:  # each entry takes at least that many bytes
            raise self._bad(f"{n_tensors} tensors and {n_kv} metadata entries cannot fit in {len(mv)} bytes")
        self.metadata: dict[str, object] = {}
        for _ in range(n_kv):
            key = self._string("a metadata key")
            self.metadata[key] = self._value(self._take("<I", f"the type of {key!r}"), key)
        infos = []
        for i in range(n_tensors):
            name = self._string(f"the name of tensor {i}")
            n_dims = self._take("<I", f"the dimension count of {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise self._bad(f"tensor {name!r} has {n_dims} dimensions (GGUF allows 1 to {MAX_DIMS})")
            dims = [self._take("<Q", f"a dimension of {name!r}") for _ in range(n_dims)]
            type_id = self._take("<I", f"the type of {name!r}")
            infos.append((name, dims, type_id, self._take("<Q", f"the offset of {name!r}")))
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise self._bad(f"general.alignment is {alignment!r}, not a power of two")
        data_start = -(-self._pos // alignment) * alignment
        self.tensors: dict[str, GgufTensor] = {}
        for name, dims, type_id, rel in infos:
            if name in self.tensors:
                raise self._bad(f"tensor {name!r} is listed twice")
            self.tensors[name] = self._tensor(name, dims, type_id, data_start + rel)

    def _tensor(self, name: str, dims: list[int], type_id: int, offset: int) -> GgufTensor:
        types, sizes = self._gguf.GGMLQuantizationType, self._gguf.GGML_QUANT_SIZES
        shape = tuple(reversed(dims))
        n = 1
        for d in dims:
            n *= d
        if n >= 1 << 48:
            raise self._bad(f"tensor {name!r} claims {'×'.join(map(str, shape))} elements")
        try:
            qtype = types(type_id)
        except ValueError:
            return GgufTensor(name, shape, type_id, f"type{type_id}", offset, 0,
                              f"GGML type {type_id}, unknown to gguf {self._gguf_version()}: not read")
        dtype = GGUF_PLAIN.get(qtype.name, qtype.name.lower())
        block, size = sizes[qtype]
        if dims[0] % block:
            raise self._bad(f"tensor {name!r}: a row of {dims[0]} is not a whole number of {qtype.name} blocks "
                            f"of {block}")
        nbytes = n // block * size
        if offset + nbytes > len(self._mv):
            raise CheckpointError(self.path, f"tensor {name!r} ({qtype.name}, {'×'.join(map(str, shape))}) ends at "
                                             f"byte {offset + nbytes}, past the end of the file ({len(self._mv)} "
                                             "bytes)", "the file is truncated; download it again")
        reason = None
        if dtype not in GGUF_PLAIN.values() and qtype not in self._gguf.quants._type_traits:
            reason = f"{qtype.name}: gguf {self._gguf_version()} has no dequantiser for this type; not read"
        return GgufTensor(name, shape, type_id, dtype, offset, nbytes, reason)

    def _gguf_version(self) -> str:
        from importlib.metadata import version

        try:
            return version("gguf")
        except Exception:
            return "(unknown version)"

    def shown_metadata(self) -> dict[str, str]:
        """The few metadata entries worth showing (architecture, name, quantisation), as text."""
        out = {k: str(self.metadata[k]) for k in SHOWN_METADATA if k in self.metadata}
        ft = self.metadata.get("general.file_type")
        if isinstance(ft, int):
            try:
                out["general.file_type"] = self._gguf.LlamaFileType(ft).name.removeprefix("MOSTLY_").lower()
            except ValueError:
                pass
        return out

    def dequantise(self, t: GgufTensor, raw: np.ndarray) -> np.ndarray:
        """The tensor's stored bytes (uint8) as float32 of its listed shape."""
        qtype = self._gguf.GGMLQuantizationType(t.type_id)
        blocks = raw.reshape(self._gguf.quants.quant_shape_to_byte_shape(t.shape, qtype))
        return self._gguf.quants.dequantize(blocks, qtype).reshape(t.shape)


def write_gguf(path: str | Path, tensors: dict, arch: str = "llama", name: str = "", describe=None) -> Path:
    """Write ``tensors`` (name → (float array, GGML type)) as a GGUF file with the gguf package's
    writer and quantisers; ``describe(writer)`` may add metadata. rmt-tui never writes GGUF itself:
    this serves the tests and the experiment scripts (quantisation studies)."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    w = GGUFWriter(str(path), arch)
    if name:
        w.add_name(name)
    w.add_quantization_version(2)
    if describe is not None:
        describe(w)
    for key, (a, qtype) in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        if qtype == GGMLQuantizationType.F32:
            w.add_tensor(key, a)
        elif qtype == GGMLQuantizationType.F16:
            w.add_tensor(key, a.astype(np.float16))
        else:
            w.add_tensor(key, quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


class GgufSource(Source):
    """llama.cpp's GGUF: every tensor listed with its GGUF type as its dtype (q4_k, q8_0, …, or
    float16 for plain types); quantised tensors are read and dequantised to float32 one at a time.
    Listed in natural name order (blk.2 before blk.10): converters write tensors sorted as text,
    which is not depth order."""

    def __init__(self, path: Path):
        require_regular(path)
        self.path = path
        self._index = GgufIndex(path)
        self.metadata = self._index.shown_metadata()

    def entries(self):
        return [(t.name, t.shape, t.dtype) for t in self._index.tensors.values()]

    def reasons(self) -> dict[str, str]:
        return {t.name: t.reason for t in self._index.tensors.values() if t.reason}

    def dequantised(self) -> set[str]:
        return {t.name for t in self._index.tensors.values() if t.dtype not in ITEMSIZE and not t.reason}

    def read_array(self, name):
        t = self._index.tensors[name]
        if t.reason:
            raise CheckpointError(self.path, f"tensor {name!r}: {t.reason}")
        raw = read_region(self.path, t.offset, t.nbytes, name)
        return bytes_as_array(raw, t.dtype, t.shape) if t.dtype in ITEMSIZE else self._index.dequantise(t, raw)

    def read(self, name):
        import torch

        t = self._index.tensors[name]
        if t.dtype == "bfloat16":  # exact, as stored; every other type is numpy-readable
            return torch.from_numpy(read_region(self.path, t.offset, t.nbytes, name)).view(torch.bfloat16).reshape(
                t.shape)
        return torch.from_numpy(np.ascontiguousarray(self.read_array(name)))


# Types a truncated tensor can be written in: the plain ones, and Q8_0 (gguf's quantiser).
GGUF_OUT_TYPES = ("auto", "f32", "f16", "bf16", "q8_0")


def export_gguf(source: Path, replaced: dict[str, np.ndarray], out: Path, metadata: dict[str, str],
                out_type: str = "auto", overwrite: bool = False) -> Path:
    """Write a GGUF like ``source`` with the tensors in ``replaced`` (name → float32 array, (out, in)
    as listed here) put in: every metadata key of the source kept with its type, the tensors in
    the source's order under its names, the untouched ones byte for byte. A replaced tensor is
    written as its own type when plain (F32/F16/BF16) and as Q8_0 when quantised (``out_type``
    "auto"), or as ``out_type``. ``metadata`` adds string keys (provenance). Atomic, as every
    output: a temporary file renamed into place."""
    from core.errors import OutputWriteError
    from core.paths import atomic_output, output_errors, refuse_existing

    gg = gguf_module()
    if gg is None:
        raise OutputWriteError(f"{out}: writing GGUF needs the gguf package: {INSTALL}")
    from gguf.quants import quantize

    Q, V = gg.GGMLQuantizationType, gg.GGUFValueType
    chosen = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
    plain = (Q.F32, Q.F16, Q.BF16)
    out = Path(out)
    refuse_existing(out, overwrite)
    reader = gg.GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    with output_errors(out), atomic_output(out, overwrite=overwrite) as tmp:
        w = gg.GGUFWriter(str(tmp), arch)
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or name == "general.architecture":
                continue  # the writer's own header fields
            if name == "general.alignment":
                w.add_custom_alignment(int(field.contents()))
                continue
            sub = field.types[-1] if field.types[0] == V.ARRAY else None
            w.add_key_value(name, field.contents(), field.types[0], sub_type=sub)
        for key, value in metadata.items():
            w.add_key_value(key, str(value), V.STRING)
        for t in reader.tensors:
            if t.name not in replaced:
                w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
                continue
            qtype = chosen.get(out_type) or (t.tensor_type if t.tensor_type in plain else Q.Q8_0)
            a = np.ascontiguousarray(replaced[t.name], dtype=np.float32)
            if qtype == Q.F32:
                w.add_tensor(t.name, a)
            elif qtype == Q.F16:
                w.add_tensor(t.name, a.astype(np.float16))
            else:
                w.add_tensor(t.name, quantize(a, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out
