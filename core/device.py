"""Where singular values are computed: 'cpu', 'cuda' (torch, float32) or 'auto'."""
from __future__ import annotations

import glob
import sys

from core.errors import UsageError


def _no_gpu_here() -> bool:
    """True when this machine shows no GPU device at all (NVIDIA or ROCm). Then ``auto`` means the
    CPU without importing torch, which costs ~2 s and ~200 MB just to ask."""
    return "torch" not in sys.modules and not glob.glob("/dev/nvidia[0-9]*") and not glob.glob("/dev/kfd")


def resolve_device(name: str = "auto") -> str:
    if name == "cpu":
        return "cpu"
    if name != "auto" and not name.startswith("cuda"):
        raise UsageError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name == "auto" and _no_gpu_here():
        return "cpu"
    import torch  # only to ask whether a GPU is there

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    return name
