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


def singular_values(w, device: str = "cpu") -> np.ndarray:
    """All p singular values, descending, as float64. Values only: no vectors are formed.

    On the CPU they are the square roots of the eigenvalues of the p × p Gram matrix formed in
    float64 (``gram_eigenvalues``). ``device="cuda"`` runs torch.linalg.svdvals on the GPU in
    float32; ``"auto"`` picks it when a GPU is present.
    """
    if device == "auto":
        from core.device import resolve_device

        device = resolve_device(device)
    if device != "cpu":
        return torch_singular_values(w, device)
    a = as_float_matrix(w)
    # Squares of float32 data always fit in float64; float64 data beyond ~1e150 (or below ~1e-150)
    # would overflow (underflow) when squared, so it is rescaled first.
    scale = float(np.max(np.abs(a))) if a.dtype == np.float64 and a.size else 1.0
    scale = scale if scale > 1e150 or 0.0 < scale < 1e-150 else 1.0
    eig = gram_eigenvalues(a / scale if scale != 1.0 else a)
    return np.sqrt(np.maximum(eig[::-1], 0.0)) * scale


# Why the Gram matrix and not an SVD: a symmetric rank-k update (syrk, BLAS-3, both cores busy)
# plus a values-only symmetric eigensolver does about half the work of gesdd's bidiagonalisation,
# and was never slower on any shape measured on 2 cores (ms, float32 gesdd vs this):
#   256×128 1.5 vs 0.7; 784×512 25 vs 15; 768×768 48 vs 43; 3072×768 132 vs 57;
#   2048² 712 vs 542; 4096² 8300 vs 6060; 11008×4096 14600 vs 7900; below 100×100 equal.
# Accuracy: WᵀW is formed from float32 data in float64 (each product exact, sums to ~1e-16), so
# an eigenvalue λ = s² is off by about p·ε₆₄·s₁²; a value s is then off by at most √(p·ε₆₄)·s₁
# (≤ 1e-6·s₁ for p ≤ 4096, reached only by values near zero) and by ε₆₄·p·s₁²/s elsewhere —
# at least as accurate as a float32 SVD (tests compare both against a float64 SVD).
GRAM_BLOCK_BYTES = 4 << 20  # float64 copies of a few MB of rows at a time, not of the whole matrix
GRAM_MIN_ROWS = 512  # but never so few rows that syrk loses its BLAS-3 speed
SMALL_P = 64  # up to this p: numpy's Gram product and eigvalsh (~10 µs) instead of scipy's (~60 µs)


def working_bytes(shape: MatrixShape) -> int:
    """Memory the values-only analysis of a matrix needs beyond its stored tensor: a float32 copy,
    the p × p float64 Gram matrix and its eigensolver's workspace, and the float64 row blocks."""
    return 4 * shape.m * shape.n + 2 * 8 * shape.p ** 2 + 2 * GRAM_BLOCK_BYTES


def gram_block_rows(p: int) -> int:
    return max(GRAM_MIN_ROWS, GRAM_BLOCK_BYTES // (8 * p))


def gram_eigenvalues(a: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the p × p Gram matrix of ``a``'s tall orientation, accumulated in
    float64 over blocks of rows (each one BLAS syrk into the upper triangle)."""
    tall = a if a.shape[0] >= a.shape[1] else a.T
    if tall.shape[1] <= SMALL_P:  # scipy's wrappers cost more than the work itself here
        t64 = np.asarray(tall, dtype=np.float64)
        return np.linalg.eigvalsh(t64.T @ t64)
    import scipy.linalg
    from scipy.linalg.blas import dsyrk

    rows, gram = gram_block_rows(tall.shape[1]), None
    for i in range(0, tall.shape[0], rows):
        block = np.asarray(tall[i:i + rows], dtype=np.float64)
        # syrk wants column-major input; a row-major block is its transpose in column-major,
        # so pass that rather than copy again.
        b, trans = (block.T, 0) if block.flags.c_contiguous else (np.asfortranarray(block), 1)
        gram = dsyrk(1.0, b, trans=trans) if gram is None else \
            dsyrk(1.0, b, trans=trans, beta=1.0, c=gram, overwrite_c=True)
    return scipy.linalg.eigvalsh(gram, lower=False, driver="ev", check_finite=False, overwrite_a=True)


def torch_singular_values(w, device: str) -> np.ndarray:
    """torch.linalg.svdvals in float32 on ``device`` (the GPU path). Agrees with the CPU path to
    float32 SVD accuracy, ~1e-5·s₁ (checked in the tests by running this same code on the CPU)."""
    import torch

    t = w if isinstance(w, torch.Tensor) else torch.from_numpy(as_float_matrix(w))
    t = t.detach().to(device=device, dtype=torch.float32)
    return torch.linalg.svdvals(t).double().cpu().numpy()


def numerical_ranks(svs: np.ndarray, shape: MatrixShape) -> np.ndarray:
    """The numerical rank of each row of a stack of descending spectra: the values above
    s₁·N·ε₃₂ (0 for an all-zero row)."""
    return (svs > svs[:, :1] * shape.N * np.finfo(np.float32).eps).sum(axis=1)


def numerical_rank(sv: np.ndarray, shape: MatrixShape) -> int:
    return int(numerical_ranks(np.asarray(sv)[None, :], shape)[0]) if np.size(sv) else 0


def eigenvalues(sv: np.ndarray, shape: MatrixShape) -> np.ndarray:
    """λ_i = s_i² / N, ascending."""
    return np.sort(np.asarray(sv, dtype=np.float64) ** 2 / shape.N)


def mp_edge(sigma2: float, shape: MatrixShape) -> float:
    """Upper MP edge of the singular values, σ (√N + √p)."""
    return math.sqrt(sigma2) * (math.sqrt(shape.N) + math.sqrt(shape.p))
