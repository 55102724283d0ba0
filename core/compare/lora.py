"""What a delta analysis found, as files other tools read: a LoRA adapter and PEFT's rank_pattern.

LoRA from a delta at rank k (SPEC §10): ΔW_k = U_k S_k V_kᵀ, B = U_k S_k^{1/2} (out × k),
A = S_k^{1/2} V_kᵀ (k × in), so W_base + B·A = W_base + ΔW_k. Each module's lora_alpha equals its
rank, so PEFT's scale α/r is 1 and the adapter adds exactly B·A.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from core.compare.delta import DeltaResult, delta_matrix
from core.io.checkpoint import Checkpoint
from core.progress import CancelToken, check

ADAPTER_PREFIX = "base_model.model."  # PEFT's names: the wrapped model's own names under this


def module_name(tensor: str) -> str:
    return tensor.removesuffix(".weight")


def delta_ranks(results: Sequence[DeltaResult], spec: str) -> dict[str, int]:
    """Module (the base's tensor name without ``.weight``) → kept rank of ΔW, for every analysed
    2-D delta: ``spec`` is a method (its ŝ(ΔW); layers where it does not apply are left out) or
    ``rank:K``. Rank 0 (nothing above the noise) is kept in the plan: it says the layer needs no
    adapter."""
    from core.scan import LayerResult
    from core.truncation import resolve_ranks

    adaptable = [r for r in results
                 if r.status == "ok" and len(r.base.shape) == 2 and r.base.position is None]
    ranks = resolve_ranks(spec, [LayerResult(r.base, r.analysis) for r in adaptable])
    return {module_name(r.base.tensor): min(ranks[r.base.name], r.analysis.shape.p)
            for r in adaptable if r.base.name in ranks}


def rank_pattern_document(plan: Mapping[str, int], method: str) -> dict:
    """PEFT LoraConfig fields (as in adapter_config.json) with one rank per module."""
    kept = {m: k for m, k in plan.items() if k > 0}
    r = max(kept.values(), default=0)
    return {"peft_type": "LORA", "r": r, "lora_alpha": r, "target_modules": sorted(kept),
            "rank_pattern": kept, "alpha_pattern": kept,
            "rmt_tui": {"method": method, "ranks": dict(plan),
                        "note": "lora_alpha equals each module's rank, so each adapter adds B·A unscaled; "
                                "modules at rank 0 showed nothing above the noise and are not targeted"}}


def lora_factors(delta: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with B @ A the rank-k truncation of ``delta``."""
    from core.truncation import top_factors

    f = top_factors(delta, k)
    root = np.sqrt(f.s[:k])
    return (root[:, None] * f.vt[:k]).astype(np.float32), (f.u[:, :k] * root).astype(np.float32)


def extract_lora(base: Checkpoint, tuned: Checkpoint, results: Sequence[DeltaResult], plan: Mapping[str, int],
                 cancel: CancelToken | None = None) -> dict:
    """PEFT-named lora_A / lora_B tensors (float32) for every module planned at rank > 0."""
    import torch

    out = {}
    for r in results:
        if r.base is None:
            continue
        k = plan.get(module_name(r.base.tensor), 0)
        if k == 0:
            continue
        check(cancel)
        d, _ = delta_matrix(base, tuned, r.row)
        a, b = lora_factors(d, k)
        name = ADAPTER_PREFIX + module_name(r.base.tensor)
        out[f"{name}.lora_A.weight"] = torch.from_numpy(a)
        out[f"{name}.lora_B.weight"] = torch.from_numpy(b)
    return out
