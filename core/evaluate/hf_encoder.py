"""``hf-encoder``: a truncated encoder judged by its pooled embeddings against the original's
(SPEC §11): cosine fidelity with its chance level, the worst 5 %, nearest-neighbour agreement and
the Spearman correlation of pairwise similarities."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from core.errors import EvaluationError
from core.evaluate.hf import TEXT_OFFSET, HFEvaluator, read_text
from core.evaluate.outcomes import FIDELITY

SENTENCES = 64
CALIBRATION_SENTENCES = 512
CALIBRATION_BATCH = 32


class HFEncoder(HFEvaluator):
    name = "hf-encoder"
    primary = FIDELITY

    def __init__(self, folder, text=None, device="cpu", sentences: int = SENTENCES):
        super().__init__(folder, text, device)
        found = _sentences(self.text)
        if len(found) < sentences:
            raise EvaluationError(f"{self.text_source}: {len(found)} usable sentences (6–45 words), fewer than "
                                  f"the {sentences} needed — give a longer --text")
        start = int(len(found) * TEXT_OFFSET) if len(found) * (1 - TEXT_OFFSET) >= sentences else 0
        pool = found[start:]
        picked = [pool[round(i * (len(pool) - 1) / (sentences - 1))] for i in range(sentences)]
        self.where = f"{sentences} sentences of {self.text_source}"
        self._found, self._picked = found, set(picked)  # calibration: the sentences before the scored pool first
        self.batch = self.tokenizer(picked, padding=True, truncation=True, max_length=128, return_tensors="pt")
        self.pooling = _pooling(self.folder)

    def _calibration(self, count, source) -> dict:
        """Sentences of the scored text before the scored part (or of ``source``), never one
        that is scored, in padded batches whose padding the Gram matrices leave out."""
        count = count or CALIBRATION_SENTENCES
        pool = self._found if source is None else _sentences(read_text(source, "calibration text", "--calibration"))
        where = self.text_source if source is None else str(source)
        chosen = [s for s in pool if s not in self._picked][:count]
        if len(chosen) < CALIBRATION_BATCH:
            raise EvaluationError(f"{where}: {len(chosen)} calibration sentences not among the scored ones, fewer "
                                  f"than {CALIBRATION_BATCH} — give a longer --calibration text")
        batches = [self.tokenizer(chosen[i:i + CALIBRATION_BATCH], padding=True, truncation=True, max_length=128,
                                  return_tensors="pt") for i in range(0, len(chosen), CALIBRATION_BATCH)]
        return {"batches": batches, "source": where, "count": len(chosen), "unit": "samples", "disjoint": True,
                "mask_of": lambda b: b["attention_mask"].bool(),
                "forward": lambda model: lambda b: model(**{k: v.to(self.device) for k, v in b.items()})}

    def _embed(self, model) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in self.batch.items()}
        h = model(**batch, output_hidden_states=True).hidden_states[-1].double()
        mask = batch["attention_mask"][..., None].double()
        if self.pooling == "cls":
            e = h[:, 0]
        elif self.pooling == "max":
            e = h.masked_fill(mask == 0, -1e9).max(1).values
        else:
            e = (h * mask).sum(1) / mask.sum(1).clamp_min(1)
        return torch.nn.functional.normalize(e, dim=1).cpu()

    def _reference(self, model) -> dict:
        e = self._embed(model)
        sims = e @ e.T
        n = len(e)
        return {"e": e, "sims": sims, "nn": _nearest(sims), "chance": float((sims.sum() - n) / (n * (n - 1)))}

    def _score(self, model) -> dict[str, float]:
        e = self._embed(model)
        ref = self._ref
        cos = torch.ones(len(e), dtype=e.dtype) if torch.equal(e, ref["e"]) else (e * ref["e"]).sum(1)
        sims = e @ e.T
        iu = np.triu_indices(len(e), 1)
        from scipy.stats import spearmanr

        a, b = ref["sims"].numpy()[iu], sims.numpy()[iu]
        rho = 1.0 if np.array_equal(a, b) else float(spearmanr(a, b).statistic)
        return {"fidelity": float(cos.mean()), "fidelity_p05": float(torch.quantile(cos, 0.05)),
                "chance": ref["chance"], "nn_agreement": float((_nearest(sims) == ref["nn"]).double().mean()),
                "spearman": rho}


def _sentences(text: str) -> list[str]:
    """Sentences of 6–45 words, not table rows, bullets or prompts."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)
            if 6 <= len(s.split()) <= 45 and not s.strip().startswith(("|", "*", ">>>"))]


def _nearest(sims: torch.Tensor) -> torch.Tensor:
    s = sims.clone()
    s.fill_diagonal_(-math.inf)
    return s.argmax(1)


def _pooling(folder: Path) -> str:
    """mean (the default), cls or max, from a sentence-transformers folder's 1_Pooling/config.json."""
    try:
        cfg = json.loads((folder / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"
