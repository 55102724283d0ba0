"""The one dtype vocabulary: every format's dtype codes mapped to the names numpy and torch use
(float32, bfloat16, …), their sizes, how their bytes are held in numpy, and their rounding."""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64"}
FLOAT8_DTYPES = {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}

# safetensors' dtype codes → the names used everywhere else
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                      "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                      "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
                      "U16": "uint16", "U32": "uint32", "U64": "uint64"}

ITEMSIZE = {"complex128": 16, "complex64": 8, "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
            "int64": 8, "int32": 4, "int16": 2,
            "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "uint16": 2, "uint32": 4,
            "uint64": 8}

# torch's typed-storage class names (as pickled: GLOBAL 'torch FloatStorage') → dtype name.
STORAGE_DTYPES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
                  "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                  "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
                  "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
                  "Float8_e4m3fnStorage": "float8_e4m3fn", "Float8_e5m2Storage": "float8_e5m2"}
# How each dtype's bytes are held in numpy before widening (numpy has no bfloat16 or float8).
RAW = {"bfloat16": np.dtype("<u2"), "float8_e4m3fn": np.dtype("u1"), "float8_e5m2": np.dtype("u1"),
        "bool": np.dtype("?")}
RAW.update({d: np.dtype(d).newbyteorder("<") for d in ("float32", "float64", "float16", "int64", "int32", "int16",
                                                        "int8", "uint8", "complex64", "complex128")})


def raw_dtype(dtype: str) -> np.dtype:
    """The numpy dtype that holds ``dtype``'s stored bytes (little-endian)."""
    return RAW[dtype] if dtype in RAW else np.dtype(dtype).newbyteorder("<")


# GGUF's plain (not block-quantised) types and the dtype names used everywhere else in the project.
GGUF_PLAIN = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I8": "int8",
              "I16": "int16", "I32": "int32", "I64": "int64"}
# Unit roundoff u of each float storage type (what rounding to it changes, relative).
UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11, "float32": 2.0 ** -24, "float64": 2.0 ** -53}
