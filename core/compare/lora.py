r"""What a delta analysis found, as files other tools read: a LoRA adapter (a PEFT adapter folder, or
bare tensors) and PEFT's LoraConfig fields.

LoRA from a delta at rank k (SPEC §10): ΔW_k = U_k S_k V_kᵀ, B = U_k S_k^{1/2} (out × k),
A = S_k^{1/2} V_kᵀ (k × in), so W_base + B·A = W_base + ΔW_k.

Mixed ranks in one adapter that PEFT and llama.cpp both apply exactly: both scale a module's B·A by
lora_alpha / r_module (PEFT with ``rank_pattern``, llama.cpp's ``convert_lora_to_gguf.py`` from the
one global ``lora_alpha`` and each tensor's rank; neither needs ``alpha_pattern``, which llama.cpp
ignores). So the config carries one alpha (= r, the largest rank) and each module's B is stored
multiplied by r_module / lora_alpha: the scaled product is B·A. ``rank_pattern`` keys are the
modules' full names with regex metacharacters escaped, since PEFT matches each key as a regular
expression suffix (``(.*\.)?(key)$``): an escaped full name matches its module and no other.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

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


def rank_pattern_document(plan: Mapping[str, int], method: str = "") -> dict:
    """PEFT LoraConfig fields (as in adapter_config.json) with one rank per module, and nothing
    PEFT does not know (older versions' ``LoraConfig(**json)`` rejects unknown keys); modules at
    rank 0 showed nothing above the noise and are not targeted."""
    import re

    kept = {m: k for m, k in plan.items() if k > 0}
    r = max(kept.values(), default=0)
    return {"peft_type": "LORA", "r": r, "lora_alpha": r, "lora_dropout": 0.0, "bias": "none",
            "fan_in_fan_out": False, "target_modules": sorted(kept),
            "rank_pattern": {re.escape(m): k for m, k in sorted(kept.items())}}


def adapter_config(plan: Mapping[str, int], base_path: str, task_type: str | None) -> dict:
    """adapter_config.json of the extracted adapter (see the module docstring for the scaling)."""
    return {**rank_pattern_document(plan), "task_type": task_type, "base_model_name_or_path": base_path,
            "inference_mode": True}


def task_type_of(ckpt: Checkpoint) -> str | None:
    """PEFT's task type for the base model, where its folder says (CAUSAL_LM, FEATURE_EXTRACTION)."""
    from core.evaluate.hf import hf_kind

    if ckpt.path.suffix == ".gguf":
        return "CAUSAL_LM"
    return {"hf-causal-lm": "CAUSAL_LM", "hf-encoder": "FEATURE_EXTRACTION"}.get(hf_kind(ckpt.path) or "")


def lora_factors(delta: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with B @ A the rank-k truncation of ``delta``."""
    from core.truncation import top_factors

    f = top_factors(delta, k)
    root = np.sqrt(f.s[:k])
    return (root[:, None] * f.vt[:k]).astype(np.float32), (f.u[:, :k] * root).astype(np.float32)


def extract_lora(base: Checkpoint, tuned: Checkpoint, results: Sequence[DeltaResult], plan: Mapping[str, int],
                 cancel: CancelToken | None = None, lora_alpha: float | None = None) -> dict:
    """PEFT-named lora_A / lora_B tensors (float32) for every module planned at rank > 0. With
    ``lora_alpha`` (an adapter folder), each B is multiplied by its rank / lora_alpha, so that the
    consumers' scale lora_alpha / rank gives back exactly B·A."""
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
        if lora_alpha is not None:
            b = (b * np.float32(k / lora_alpha)).astype(np.float32)
        name = ADAPTER_PREFIX + module_name(r.base.tensor)
        out[f"{name}.lora_A.weight"] = torch.from_numpy(a)
        out[f"{name}.lora_B.weight"] = torch.from_numpy(b)
    return out


def write_adapter_folder(folder: Path, state: Mapping, config: dict, metadata: Mapping[str, str],
                         overwrite: bool = False) -> Path:
    """``folder``/adapter_config.json and adapter_model.safetensors, built in a temporary folder
    beside it and renamed into place (a reader never sees half an adapter); an existing folder is
    replaced only with ``overwrite``, and only after the new one is complete."""
    import json
    import os
    import shutil
    import tempfile

    from core.errors import OutputWriteError
    from core.paths import refuse_existing
    from core.truncation import export_safetensors

    folder = Path(folder)
    refuse_existing(folder, overwrite, folder=True)
    if folder.exists() and not folder.is_dir():
        raise OutputWriteError(f"{folder}: exists and is not a folder — nothing was written; choose another path")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as exc:
        raise OutputWriteError(f"{folder}: cannot be written ({exc.strerror or exc}) — nothing was written") from None
    try:
        export_safetensors(state, tmp / "adapter_model.safetensors", metadata)
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise OutputWriteError(f"{folder}: cannot be written ({exc.strerror or exc}) — nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
