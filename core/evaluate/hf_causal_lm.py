"""``hf-causal-lm``: a truncated causal LM judged against the original's next-token distribution
(SPEC §11): KL in nats/token (mean, p95), top-1 agreement, perplexity before and after; also for
GGUF files through transformers' GGUF loader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.errors import EvaluationError
from core.evaluate.hf import TEXT_OFFSET, HFEvaluator, read_text
from core.evaluate.outcomes import KL
from core.text import first_line

WINDOWS, WINDOW_TOKENS = 4, 256  # SPEC §11: ≥ 4 × 256 scored tokens
CALIBRATION_TOKENS = 32 * WINDOW_TOKENS  # measured on SmolLM2 (issue 22): 8×256 gave PPL ×3.45 at 20 %, 32×256 ×2.41
CALIBRATION_BATCH = 4  # windows per calibration forward pass
REFERENCE_FULL_BYTES = 256 << 20  # keep full fp16 log-probs up to this size, else top-k + tail
TOP_K = 256
COLLAPSE_TOP1, COLLAPSE_PPL = 0.05, 100.0


class HFCausalLM(HFEvaluator):
    name = "hf-causal-lm"
    primary = KL

    def __init__(self, folder, text=None, device="cpu", windows: int = WINDOWS, tokens: int = WINDOW_TOKENS):
        super().__init__(folder, text, device)
        ids = self.tokenizer(self.text, add_special_tokens=False)["input_ids"]
        need = windows * tokens
        start = min(int(len(ids) * TEXT_OFFSET), max(0, len(ids) - need))
        if len(ids) - start < need:
            raise EvaluationError(f"{self.text_source}: {len(ids)} tokens, fewer than the {windows}×{tokens} "
                                  "needed — give a longer --text")
        self.where = f"{windows}×{tokens} tokens of {self.text_source} from token {start}"
        self.ids = torch.tensor(ids[start:start + need]).reshape(windows, tokens)
        self._text_ids, self._start = ids, start

    def _calibration(self, count, source) -> dict:
        """Windows of an earlier part of the scored text (default: the CALIBRATION_TOKENS before
        the scored windows), or of ``source`` from its start."""
        count = count or CALIBRATION_TOKENS
        if source is None:
            ids, where = self._text_ids[max(0, self._start - count):self._start], self.text_source
        else:
            text = read_text(source, "calibration text", "--calibration")
            ids, where = self.tokenizer(text, add_special_tokens=False)["input_ids"][:count], str(source)
        n = len(ids) // WINDOW_TOKENS
        if n == 0:
            raise EvaluationError(f"{where}: {len(ids)} calibration tokens, fewer than one {WINDOW_TOKENS}-token "
                                  "window — give a longer --calibration text")
        cal = torch.tensor(ids[:n * WINDOW_TOKENS]).reshape(n, WINDOW_TOKENS)
        scored = np.asarray(self.ids, dtype=np.int64)
        disjoint = source is None or not _overlaps(np.asarray(cal, dtype=np.int64), scored)
        return {"batches": cal.split(CALIBRATION_BATCH), "source": where, "count": int(cal.numel()),
                "unit": "tokens", "disjoint": disjoint,
                "forward": lambda model: lambda ids: model(input_ids=ids.to(self.device))}

    def working_bytes(self) -> int:
        vocab = int(getattr(self.config, "vocab_size", 0) or 0)
        return 3 * 4 * self.ids.numel() * vocab  # logits, log-probs and the reference's copy

    def _logprobs(self, model) -> torch.Tensor:
        logits = model(input_ids=self.ids.to(self.device)).logits[:, :-1].float()
        return torch.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1]).cpu()

    def _nll(self, logq: torch.Tensor) -> torch.Tensor:
        return -logq.gather(1, self.ids[:, 1:].reshape(-1)[:, None]).squeeze(1)

    def _reference(self, model) -> dict:
        """Keep the original's distribution: full log-probs in fp16 when small enough (KL exact to
        ~0.2 %), else its top-k plus a tail bucket (KL is then a lower bound, and labelled so)."""
        logp = self._logprobs(model)
        self._ref_ppl = float(torch.exp(self._nll(logp).mean()))
        top1 = logp.argmax(1)
        self.kl_is_bound = logp.numel() * 2 > REFERENCE_FULL_BYTES
        if not self.kl_is_bound:
            return {"full": logp.half(), "top1": top1}
        vals, idx = logp.topk(TOP_K, dim=1)
        return {"topv": vals, "topi": idx, "top1": top1}

    def _score(self, model) -> dict[str, float]:
        logq = self._logprobs(model)
        kl = self._kl(logq)
        top1 = float((logq.argmax(1) == self._ref["top1"]).double().mean())
        ppl = float(torch.exp(self._nll(logq).mean()))
        collapsed = top1 < COLLAPSE_TOP1 or ppl > COLLAPSE_PPL * self._ref_ppl
        return {"kl": float(kl.mean()), "kl_p95": float(torch.quantile(kl, 0.95)), "top1": top1, "ppl": ppl,
                "ppl_original": self._ref_ppl, "dppl": ppl - self._ref_ppl, "collapsed": float(collapsed),
                "kl_lower_bound": float(self.kl_is_bound)}  # 1: the reference was kept as top-k + tail

    def _kl(self, logq: torch.Tensor) -> torch.Tensor:
        if "full" in self._ref:
            # Both sides rounded to fp16 alike, so the original against itself is exactly 0.
            logp = self._ref["full"].float()
            return (logp.exp() * (logp - logq.half().float())).sum(1).clamp_min(0.0)
        logp, idx = self._ref["topv"], self._ref["topi"]
        p = logp.exp()
        q_top = logq.gather(1, idx)
        tail_p = (1 - p.sum(1)).clamp_min(1e-12)
        tail_q = (1 - q_top.exp().sum(1)).clamp_min(1e-12)
        return ((p * (logp - q_top)).sum(1) + tail_p * (tail_p.log() - tail_q.log())).clamp_min(0.0)


def _overlaps(cal: np.ndarray, scored: np.ndarray, span: int = 32) -> bool:
    """Whether any ``span``-token run of the scored windows occurs in the calibration windows."""
    runs = {tuple(row[i:i + span]) for row in cal for i in range(len(row) - span + 1)}
    return any(tuple(row[i:i + span]) in runs for row in scored for i in range(0, len(row) - span + 1, span))


class GgufCausalLM(HFCausalLM):
    """A GGUF file (llama.cpp) evaluated as the causal LM transformers builds from it: config and
    tokenizer from the file's metadata, and each tensor — dequantised, or truncated — translated to
    the library's name and layout by transformers' own GGUF tensor map and processors (which undo
    llama.cpp's q/k row permutation, for instance). Needs the gguf package as well."""

    def __init__(self, path, text=None, device="cpu", **kw):
        self.gguf = Path(path)
        super().__init__(self.gguf.parent, text, device, **kw)

    def _open(self, tf) -> None:
        from transformers import modeling_gguf_pytorch_utils as gg

        from core.io.gguf import GgufIndex

        where = f"{self.gguf}"
        arch = str(GgufIndex(self.gguf).metadata.get("general.architecture", ""))
        try:
            self.config = tf.AutoConfig.from_pretrained(self.folder, gguf_file=self.gguf.name, local_files_only=True)
            self.tokenizer = tf.AutoTokenizer.from_pretrained(self.folder, gguf_file=self.gguf.name,
                                                              local_files_only=True)
            self.cls = tf.AutoModelForCausalLM._model_mapping[type(self.config)]
        except (OSError, ValueError, KeyError, NotImplementedError, ImportError) as exc:
            raise EvaluationError(f"{where}: transformers {tf.__version__} cannot build a model from this GGUF "
                                  f"(architecture {arch!r}: {first_line(exc)})") from None
        parsed = gg.load_gguf_checkpoint(str(self.gguf), return_tensors=False)
        self._gguf_config = parsed.get("config", {})
        self._processor = gg.TENSOR_PROCESSORS.get(arch, gg.TensorProcessor)(config=self._gguf_config)
        with torch.device("meta"):  # the names only: no memory for weights
            skeleton = self.cls(self.config)
        self._names = gg.get_gguf_hf_weights_map(skeleton, self._processor)

    def _rename(self) -> dict[str, str]:
        return self._names

    def _hf_state(self, state):

        parsed = {"config": self._gguf_config, "tensors": {}}
        out, unmapped = {}, []
        for name, t in state.items():
            result = self._processor.process(weights=t.float().numpy(), name=name, tensor_key_mapping=self._names,
                                             parsed_parameters=parsed)
            if result.name in self._names:
                out[self._names[result.name]] = torch.from_numpy(np.copy(result.weights))
            elif t.dim() >= 2 and result.name is not None:
                unmapped.append(name)
        out.update(parsed["tensors"])  # what a processor gathered itself (stacked experts)
        if unmapped:
            raise EvaluationError(f"{self.gguf}: transformers has no place for {len(unmapped)} matrices of this "
                                  f"GGUF ({', '.join(unmapped[:3])}…); nothing is scored with a model that is not "
                                  "the checkpoint")
        return out
