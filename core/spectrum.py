"""Singular values of a weight matrix (values only) and the shape conventions of SPEC §1."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# scipy is imported inside the functions that decompose: the app's UI process lists layers and
# draws records without ever paying for it.


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


# Above these sizes the eigenvalues of the p × p Gram matrix, formed and solved in float64, are
# faster than gesdd (4096×4096: 5.6 s vs 7.7 s; 11008×4096: 8.3 s vs 11.1 s; 6144×1536: 0.6 s vs 1.2 s
# on 2 cores) and at least as accurate as a float32 SVD: forming WᵀW in float64 costs the values
# only ~1e-16·s₁²/s_i absolutely, far below float32's ~6e-8·s₁ (tests compare both paths).
GRAM_MIN_P = 2048
GRAM_MIN_P_TALL = 1024
GRAM_MIN_ASPECT = 3


def uses_gram(shape: MatrixShape) -> bool:
    return shape.p >= GRAM_MIN_P or (shape.p >= GRAM_MIN_P_TALL and shape.N >= GRAM_MIN_ASPECT * shape.p)


def singular_values(w, device: str = "cpu") -> np.ndarray:
    """All p singular values, descending, as float64. Values only: no vectors are formed.

    ``device="cuda"`` runs torch.linalg.svdvals on the GPU in float32; ``"auto"`` picks it when a
    GPU is present.
    """
    if device == "auto":
        from .device import resolve_device

        device = resolve_device(device)
    if device != "cpu":
        return torch_singular_values(w, device)
    import scipy.linalg

    a = as_float_matrix(w)
    if uses_gram(MatrixShape(*a.shape)):
        return np.sqrt(np.maximum(gram_eigenvalues(a)[::-1], 0.0))
    # gesdd is fastest on the tall orientation; for a C-ordered wide matrix, a.T is tall and
    # already column-major, so LAPACK gets it without a copy.
    a = a.T if a.shape[0] < a.shape[1] else a
    s = scipy.linalg.svd(a, compute_uv=False, lapack_driver="gesdd", check_finite=False)
    return np.asarray(s, dtype=np.float64)


GRAM_CHUNK_ROWS = 2048  # float64 copies of this many rows at a time, not of the whole matrix


def gram_eigenvalues(a: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the p × p Gram matrix, accumulated in float64 over row blocks of
    the tall orientation (each block's BᵀB is a BLAS syrk)."""
    import scipy.linalg

    tall = a if a.shape[0] >= a.shape[1] else a.T
    p = tall.shape[1]
    gram = np.zeros((p, p))
    for i in range(0, tall.shape[0], GRAM_CHUNK_ROWS):
        block = tall[i:i + GRAM_CHUNK_ROWS].astype(np.float64)
        gram += block.T @ block
    return scipy.linalg.eigvalsh(gram, driver="evd", check_finite=False, overwrite_a=True)


def torch_singular_values(w, device: str) -> np.ndarray:
    """torch.linalg.svdvals in float32 on ``device`` (the GPU path). Agrees with the CPU path to
    float32 SVD accuracy, ~1e-5·s₁ (checked in the tests by running this same code on the CPU)."""
    import torch

    t = w if isinstance(w, torch.Tensor) else torch.from_numpy(as_float_matrix(w))
    t = t.detach().to(device=device, dtype=torch.float32)
    return torch.linalg.svdvals(t).double().cpu().numpy()


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
