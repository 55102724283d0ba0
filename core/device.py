"""Where singular values are computed: 'cpu', 'cuda' (torch, float32) or 'auto'."""
from __future__ import annotations

from .errors import UsageError


def resolve_device(name: str = "auto") -> str:
    if name == "cpu":
        return "cpu"
    if name != "auto" and not name.startswith("cuda"):
        raise UsageError(f"unknown device {name!r}: use auto, cpu or cuda")
    import torch  # only to ask whether a GPU is there

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    return name
