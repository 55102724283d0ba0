"""Singular values of a weight matrix (values only) and the shape conventions of SPEC §1."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg


@dataclass(frozen=True)
class MatrixShape:
    """W is m × n as stored; p = min, N = max, c = p/N. Left vectors live in R^m."""

    m: int
    n: int

    @property
    def p(self) -> int:
        return min(self.m, self.n)

    @property
    def N(self) -> int:
        return max(self.m, self.n)

    @property
    def c(self) -> float:
        return self.p / self.N

    @property
    def left_is_small(self) -> bool:
        """True when the left singular vectors live on the smaller side (m ≤ n)."""
        return self.m <= self.n


def as_float_matrix(w) -> np.ndarray:
    """A 2-D float32/float64 numpy view of ``w`` (numpy array or torch tensor; bf16/fp16 upcast)."""
    if hasattr(w, "detach"):  # torch tensor: numpy has no bfloat16
        import torch

        t = w.detach().cpu()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        w = t.numpy()
    a = np.asarray(w)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {a.shape}")
    return a


def singular_values(w, device: str = "cpu") -> np.ndarray:
    """All p singular values, descending, as float64. Values only: no vectors are formed.

    ``device="cuda"`` runs torch.linalg.svdvals on the GPU in float32.
    """
    if device != "cpu":
        import torch

        t = torch.as_tensor(as_float_matrix(w)).to(device=device, dtype=torch.float32)
        return torch.linalg.svdvals(t).double().cpu().numpy()
    a = as_float_matrix(w)
    # gesdd is fastest on the tall orientation; for a C-ordered wide matrix, a.T is tall and
    # already column-major, so LAPACK gets it without a copy.
    a = a.T if a.shape[0] < a.shape[1] else a
    s = scipy.linalg.svd(a, compute_uv=False, lapack_driver="gesdd", check_finite=False)
    return np.asarray(s, dtype=np.float64)


def numerical_rank(sv: np.ndarray, shape: MatrixShape) -> int:
    if sv.size == 0 or sv[0] == 0:
        return 0
    return int(np.sum(sv > sv[0] * shape.N * np.finfo(np.float32).eps))


def eigenvalues(sv: np.ndarray, shape: MatrixShape) -> np.ndarray:
    """λ_i = s_i² / N, ascending."""
    return np.sort(np.asarray(sv, dtype=np.float64) ** 2 / shape.N)


def mp_edge(sigma2: float, shape: MatrixShape) -> float:
    """Upper MP edge of the singular values, σ (√N + √p)."""
    return math.sqrt(sigma2) * (math.sqrt(shape.N) + math.sqrt(shape.p))
