"""Low-rank truncation of layers to a method's ŝ (or any k), and atomic safetensors export: SPEC §9
(hard and shrink, on W) and §13 (whitened, on W·L, with L from the layer's calibration inputs)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.calibration import Calibration, Whitener
from core.compress import stored
from core.errors import UsageError
from core.evaluate.outcomes import MODES
from core.io.checkpoint import Checkpoint
from core.io.layers import Layer, matrix_view
from core.paths import atomic_output, output_errors, refuse_existing, remove_stale_temps
from core.progress import check
from core.rmt.cosines import theta_hat
from core.rmt.spectrum import MatrixShape, as_float_matrix
from core.scan import LayerResult

# Below this p, or above this fraction of p, a full gesdd with vectors is as fast as any shortcut.
PARTIAL_MIN_P = 1024
PARTIAL_MAX_FRACTION = 0.25


@dataclass(frozen=True)
class Factors:
    """Top-k singular triplets: w ≈ u @ diag(s) @ vt."""

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray


def full_factors(w) -> Factors:
    """Thin SVD with vectors. torch (gesdd underneath) rather than scipy, because torch releases
    the GIL during LAPACK calls, so truncation in a worker thread never freezes the app."""
    u, s, vt = torch.linalg.svd(torch.from_numpy(np.ascontiguousarray(as_float_matrix(w))), full_matrices=False)
    return Factors(u.numpy(), s.numpy(), vt.numpy())


def top_factors(w, k: int) -> Factors:
    """The top k singular triplets. For k ≪ p on a large matrix: the top-k eigenpairs of the
    p × p Gram matrix in float64, then the other side's vectors as W v / s. Squaring costs digits
    only for values below ~1e-6 of s₁; the tests check the result against a full SVD (1e-8
    relative Frobenius error), at 3-4× less time."""
    a = as_float_matrix(w)
    p = min(a.shape)
    if p < PARTIAL_MIN_P or k > PARTIAL_MAX_FRACTION * p or k == 0:
        f = full_factors(a)
        return Factors(f.u[:, :k], f.s[:k], f.vt[:k])
    wide = a.shape[0] <= a.shape[1]
    a64 = np.asarray(a, dtype=np.float64)
    small = a64 if wide else a64.T  # p × N
    ev, vec = torch.linalg.eigh(torch.from_numpy(small @ small.T))  # ascending; torch releases the GIL
    ev, vec = np.maximum(ev.numpy()[::-1][:k], 0.0), np.ascontiguousarray(vec.numpy()[:, ::-1][:, :k])
    s = np.sqrt(ev)
    other = (small.T @ vec) / np.where(s > 0, s, 1.0)  # N × k
    return Factors(vec, s, other.T) if wide else Factors(other, s, vec.T)


def low_rank(f: Factors, k: int, values: np.ndarray | None = None) -> np.ndarray:
    s = f.s[:k] if values is None else np.asarray(values[:k])
    return (f.u[:, :k] * s) @ f.vt[:k]


def shrunk_values(sv: np.ndarray, sigma2: float, shape: MatrixShape, k: int) -> np.ndarray:
    """SPEC §9 shrinkage: s_i → σ̂ √N θ̂_i, the de-biased signal strength."""
    return math.sqrt(sigma2 * shape.N) * theta_hat(np.asarray(sv[:k]), sigma2, shape)


@dataclass(frozen=True)
class Fed:
    """How a layer is whitened: its inputs' Cholesky factor, and whether the matrix is stored
    (in, out) (GPT-2's Conv1D) so that its inputs index the rows."""

    whitener: Whitener
    transposed: bool = False


def whitened_matrix(w, fed: Fed) -> np.ndarray:
    """W·L (out × in, whatever W's stored orientation), in W's float dtype."""
    a = as_float_matrix(w)
    a = a.T if fed.transposed else a
    return a @ fed.whitener.chol.astype(a.dtype, copy=False)  # float32 for float32 W: half the time, ~1e-7


def whitened_factors(w, fed: Fed, k: int | None = None) -> Factors:
    """The top k (default: all) singular triplets of W·L, mapped back to W: W_k = u @ diag(s) @ vt
    in W's stored orientation, with V_kᵀ L⁻¹ by a triangular solve (never an inverse); s are W·L's
    singular values, whose squares past k are the output error on the calibration data."""
    from scipy.linalg import solve_triangular

    wl = whitened_matrix(w, fed)
    f = full_factors(wl) if k is None else top_factors(wl, k)
    chol = fed.whitener.chol.astype(wl.dtype, copy=False)
    right = solve_triangular(chol, f.vt.T, trans="T", lower=True, check_finite=False).T
    # (U S R)ᵀ = Rᵀ S Uᵀ: a matrix stored (in, out) gets its factors swapped and transposed.
    return Factors(right.T, f.s, f.u.T) if fed.transposed else Factors(f.u, f.s, right)


def truncated_factors(w, k: int, mode: str = "hard", sigma2: float | None = None,
                      fed: Fed | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(left m × k, right k × n) with W_k = left @ right in W's stored orientation, 0 < k < p:
    ``hard`` keeps W's top k values, ``shrink`` de-biases them (σ̂²), ``whitened`` keeps W·L's
    top k and maps back (``fed``; without one it is ``hard``)."""
    a = as_float_matrix(w)
    if mode not in MODES:
        raise ValueError(f"unknown truncation mode {mode!r}; use one of {', '.join(MODES)}")
    f = whitened_factors(a, fed, k) if mode == "whitened" and fed is not None else top_factors(a, k)
    if mode == "shrink":
        if sigma2 is None:
            raise UsageError("--mode shrink needs the method's noise variance σ̂²; use --mode hard")
        return f.u * shrunk_values(f.s, sigma2, MatrixShape(*a.shape), k), f.vt
    return f.u * f.s, f.vt


def truncate_matrix(w, k: int, mode: str = "hard", sigma2: float | None = None, fed: Fed | None = None) -> np.ndarray:
    """W truncated to rank k (see ``truncated_factors``); at k ≥ p exactly W (shrink still
    de-biases), at k = 0 zeros."""
    a = as_float_matrix(w)
    p = min(a.shape)
    if k >= p and mode != "shrink":
        return np.array(a, copy=True)  # nothing removed: exactly the original
    k = max(0, min(k, p))
    if k == 0:
        return np.zeros_like(a)
    left, right = truncated_factors(a, k, mode, sigma2, fed)
    return (left @ right).astype(a.dtype, copy=False)


def params_saved(shape: MatrixShape, k: int) -> int:
    """Parameters saved by storing the rank-k layer as two factors (m×k and k×n), when smaller."""
    return shape.m * shape.n - stored(shape.m, shape.n, k)


def whitening(ckpt: Checkpoint, names: Iterable[str],
              calibration: Calibration) -> tuple[dict[str, Fed], dict[str, str]]:
    """For each named layer, how it is whitened — or why it cannot be (then whitened truncation
    falls back to hard for it): (layer → Fed, layer → reason)."""
    fed, unfed = {}, {}
    for name in names:
        layer = ckpt.layer(name)
        g = calibration.grams.get(layer.tensor)
        if layer.position is not None or layer.matrix is None:
            unfed[name] = "a convolution kernel position, not a linear layer's matrix"
        elif g is None:
            unfed[name] = "the model does not feed it through a linear layer (an embedding or a tied head)"
        elif (layer.matrix[0] if layer.tensor in calibration.transposed else layer.matrix[1]) != len(g):
            unfed[name] = f"its input width differs from its calibration inputs' ({len(g)})"
        else:
            fed[name] = Fed(calibration.whitener(layer.tensor), layer.tensor in calibration.transposed)
    return fed, unfed


def write_back(original: torch.Tensor, layer: Layer, new: np.ndarray) -> torch.Tensor:
    out = original.detach().clone()
    t = torch.from_numpy(np.ascontiguousarray(new)).to(out.dtype)
    if layer.position is not None:
        i, j = layer.position
        out[:, :, i, j] = t
    else:
        out.copy_(t.reshape(out.shape))
    return out


def resolve_ranks(spec: str, results: Iterable[LayerResult]) -> dict[str, int]:
    """``spec`` is a method name (its ŝ per layer) or ``rank:K``. Layers where the method is not
    applicable are left out (and so stay untouched). Returns layer name → kept rank."""
    fixed = None
    if spec.startswith("rank:"):
        try:
            fixed = int(spec[5:])
        except ValueError:
            raise UsageError(f"bad rank in {spec!r}: expected rank:K with an integer K") from None
        if fixed < 0:
            raise UsageError(f"bad rank in {spec!r}: K must be ≥ 0")
    plan: dict[str, int] = {}
    for r in results:
        if r.analysis is None or r.layer.matrix is None:
            continue
        if fixed is not None:
            plan[r.layer.name] = fixed
            continue
        m = r.analysis.methods.get(spec)
        if m is None:
            raise UsageError(f"method {spec!r} was not analysed; choose from {', '.join(r.analysis.methods)} "
                             "or rank:K")
        if m.ok:
            plan[r.layer.name] = m.rank
    return plan


def truncate_checkpoint(ckpt: Checkpoint, plan: Mapping[str, int], mode: str = "hard",
                        sigma2: Mapping[str, float] | None = None, cancel=None,
                        fed: Mapping[str, Fed] | None = None) -> dict[str, torch.Tensor]:
    """A new state dict with each planned layer truncated; the checkpoint itself is not touched.
    In whitened mode, the layers ``fed`` lacks are truncated hard."""
    out: dict[str, torch.Tensor] = {}
    by_tensor: dict[str, list[Layer]] = {}
    for name in plan:
        layer = ckpt.layer(name)
        by_tensor.setdefault(layer.tensor, []).append(layer)
    for name, t in ckpt.iter_tensors():
        for layer in by_tensor.get(name, []):
            check(cancel)
            new = truncate_matrix(matrix_view(t, layer), plan[layer.name], mode, (sigma2 or {}).get(layer.name),
                                  (fed or {}).get(layer.name))
            t = write_back(t, layer, new)
        out[name] = t
    return out


def factor_names(layer: str) -> tuple[str, str]:
    """The documented names of a layer's two factors in a ``--factors`` file: W_k = left @ right,
    left m × k, right k × n, in the layer's stored orientation."""
    return f"{layer}.left", f"{layer}.right"


def checkpoint_factors(ckpt: Checkpoint, plan: Mapping[str, int], mode: str = "hard",
                       sigma2: Mapping[str, float] | None = None, cancel=None,
                       fed: Mapping[str, Fed] | None = None) -> dict[str, torch.Tensor]:
    """Each planned layer's two factors (layers kept whole, k ≥ p, have none: they stay dense)."""
    out = {}
    for name, k in plan.items():
        check(cancel)
        layer = ckpt.layer(name)
        w = ckpt.matrix(layer)
        if not 0 < k < min(w.shape):
            continue
        left, right = truncated_factors(w, k, mode, (sigma2 or {}).get(name), (fed or {}).get(name))
        for key, v in zip(factor_names(name), (left, right)):
            out[key] = torch.from_numpy(np.ascontiguousarray(v))
    return out


def export_safetensors(state: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str],
                       overwrite: bool = False) -> Path:
    """Write atomically (temp file + rename); refuse to replace an existing file unless asked.
    Disk full, a read-only file system or a folder without write permission end in
    OutputWriteError with nothing left behind (the temporary file is removed)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    refuse_existing(path, overwrite)
    tensors, seen = {}, set()
    for k, v in state.items():  # safetensors refuses shared storage: give tied tensors their own copy
        v = v.detach().contiguous()
        ptr = v.untyped_storage().data_ptr()
        tensors[k] = v.clone() if ptr in seen and v.numel() else v
        seen.add(ptr)
    remove_stale_temps(path.parent, path.name)  # what an earlier, killed export left behind
    with output_errors(path, (SafetensorError,)), atomic_output(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={str(k): str(v) for k, v in metadata.items()})
    return path
