"""Built-in, label-free evaluators for Hugging Face folders (SPEC §11): a truncated model is judged
against the original model's own outputs on the same inputs, so no labels and no task are needed.

* ``hf-causal-lm`` (GPT-2, Llama-style, … ``*ForCausalLM`` / ``*LMHeadModel``): KL(original ‖
  truncated) in nats/token (mean and p95), top-1 agreement, perplexity before and after.
* ``hf-encoder`` (BERT-like; sentence-transformers folders use their ``1_Pooling`` config): cosine
  fidelity of pooled embeddings with its chance level, the worst 5 %, nearest-neighbour agreement
  and the Spearman correlation of pairwise similarities.

The folder chooses the evaluator; nothing in it is ever run as code: ``local_files_only`` always,
``trust_remote_code`` never. Weights go through the library's own loading path
(``from_pretrained(None, config=…, state_dict=…)``), and every tensor of the state dict must be
consumed — a state dict whose names the model does not know would otherwise load nothing and
score a perfect identity. ``transformers`` is the optional extra ``rmt-tui[hf]``.
"""
from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .errors import EvaluationError
from .memory import human_bytes, require_memory
from .outcomes import MetricSpec
from .text import first_line

INSTALL = "pip install 'rmt-tui[hf]'"
WINDOWS, WINDOW_TOKENS = 4, 256  # SPEC §11: ≥ 4 × 256 scored tokens
SENTENCES = 64
TEXT_OFFSET = 0.8  # windows and sentences start this far into the default text (the tiny demo LM
#                    was trained on the text before it, so its evaluation text is held out)
REFERENCE_FULL_BYTES = 256 << 20  # keep full fp16 log-probs up to this size, else top-k + tail
TOP_K = 256
COLLAPSE_TOP1, COLLAPSE_PPL = 0.05, 100.0


def config_of(folder: Path) -> dict | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def hf_kind(folder: Path) -> str | None:
    """'hf-causal-lm', 'hf-encoder', or None (not an HF model folder, or an unknown head)."""
    folder = Path(folder)
    if not folder.is_dir() or (cfg := config_of(folder)) is None:
        return None
    archs = [a for a in cfg.get("architectures") or [] if isinstance(a, str)]
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return HFCausalLM.name
    if (folder / "1_Pooling").is_dir() or any(a.endswith(("Model", "ForMaskedLM")) for a in archs):
        return HFEncoder.name
    return None


def default_text() -> tuple[str, str]:
    """(text, where it is from): CPython's own reference-manual prose, present in every install."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n".join(topics[k] for k in sorted(topics)), "pydoc_data.topics (CPython's reference manual)"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise EvaluationError(f"evaluating a Hugging Face model needs the transformers package: {INSTALL}") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


class _HFEvaluator:
    """What both evaluators share: refusing what would run code, loading weights through the
    library, the memory check, and the reference outputs computed once."""

    name = ""
    primary: MetricSpec

    def __init__(self, folder: str | Path, text: str | Path | None = None, device: str = "cpu"):
        self.folder = Path(folder)
        self._open(_transformers())
        self.device = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        if text is None:
            self.text, self.text_source = default_text()
        else:
            try:
                self.text, self.text_source = Path(text).read_text(errors="replace"), str(text)
            except OSError as exc:
                raise EvaluationError(f"{text}: cannot read the evaluation text ({exc.strerror or exc})") from None
        self.seconds = None  # how long one evaluation took (the last one)

    def _open(self, tf) -> None:
        """The model class, config and tokenizer, from the folder's own files."""
        cfg = config_of(self.folder)
        if cfg is None:
            raise EvaluationError(f"{self.folder}: no readable config.json — not a Hugging Face model folder")
        if cfg.get("auto_map"):
            raise EvaluationError(f"{self.folder}: this model needs code from its own folder (auto_map in "
                                  "config.json); rmt-tui never runs a model's code — use your own --evaluator")
        arch = next((a for a in cfg.get("architectures") or [] if isinstance(a, str)), None)
        self.cls = getattr(tf, arch, None) if arch else None
        if self.cls is None:
            raise EvaluationError(f"{self.folder}: architecture {arch!r} is not one transformers "
                                  f"{tf.__version__} knows; pass your own --evaluator")
        try:
            self.config = tf.AutoConfig.from_pretrained(self.folder, local_files_only=True, trust_remote_code=False)
            self.tokenizer = tf.AutoTokenizer.from_pretrained(self.folder, local_files_only=True,
                                                              trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise EvaluationError(f"{self.folder}: cannot load its config or tokenizer ({first_line(exc)}) — a "
                                  "folder without a tokenizer cannot be evaluated") from None

    def _hf_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The state dict under the names the library loads (a GGUF's are translated)."""
        return dict(state)
    # -- loading --------------------------------------------------------------------------------
    def _check_fits(self, state: Mapping[str, torch.Tensor], extra: int) -> None:
        """Refuse a model that will not fit, with both numbers, before loading it (the original's
        outputs are kept, and one model is loaded at a time)."""
        need = 2 * sum(t.numel() for t in state.values()) * 4 + extra  # the state dict and the model
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if need > free:
                raise EvaluationError(f"{self.folder}: the model needs about {human_bytes(need)} on "
                                      f"{self.device} and only {human_bytes(free)} is free")
        else:
            require_memory(need, self.folder, "evaluating the model")

    def _load(self, state: Mapping[str, torch.Tensor]):
        # On a GPU in the checkpoint's own dtype; on the CPU in float32 (bf16/fp16 matmuls there are
        # slow, and the reference and every truncation go through the same path either way).
        sd = {k: v.to(torch.float32) if v.is_floating_point() and self.device.type == "cpu" else v
              for k, v in self._hf_state(state).items()}
        model, info = self.cls.from_pretrained(None, config=self.config, state_dict=sd, output_loading_info=True)
        unused = sorted(set(info.get("unexpected_keys") or ()) & set(sd))
        missing = sorted(set(info.get("missing_keys") or ()) - self._tied_keys(model))
        if unused or missing:
            raise EvaluationError(
                f"{self.folder}: the weights do not fit {self.cls.__name__} — "
                + (f"{len(unused)} tensors not consumed ({', '.join(unused[:3])}…)" if unused else "")
                + ("; " if unused and missing else "")
                + (f"{len(missing)} parameters missing ({', '.join(missing[:3])}…)" if missing else "")
                + "; nothing is scored with a model that is not the checkpoint")
        return model.to(self.device).eval()

    @staticmethod
    def _tied_keys(model) -> set[str]:
        tied = getattr(model, "_tied_weights_keys", None) or ()
        names = set(tied if not isinstance(tied, dict) else tied.keys())
        return {n for n in names if isinstance(n, str)}

    def working_bytes(self) -> int:
        """Memory of one forward pass beyond the weights (the logits or hidden states it keeps)."""
        return 0

    def __call__(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        self._check_fits(state, self.working_bytes())
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self._score(self._load(state))
        self.seconds = time.perf_counter() - t0
        return out




class HFCausalLM(_HFEvaluator):
    name = "hf-causal-lm"
    primary = MetricSpec("kl", "KL nats/token", higher_is_better=False, fmt=".4g")

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
        self._ref = None

    def working_bytes(self) -> int:
        vocab = int(getattr(self.config, "vocab_size", 0) or 0)
        return 3 * 4 * self.ids.numel() * vocab  # logits, log-probs and the reference's copy

    def _logprobs(self, model) -> torch.Tensor:
        logits = model(input_ids=self.ids.to(self.device)).logits[:, :-1].float()
        return torch.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1]).cpu()

    def _score(self, model) -> dict[str, float]:
        logq = self._logprobs(model)
        target = self.ids[:, 1:].reshape(-1)
        nll = -logq.gather(1, target[:, None]).squeeze(1)
        if self._ref is None:  # the first call is the original model: its outputs become the reference
            self._check_reference(logq)
            ppl = float(torch.exp(nll.mean()))
            self._ref_ppl = ppl
            return {"kl": 0.0, "kl_p95": 0.0, "top1": 1.0, "ppl": ppl, "ppl_original": ppl, "dppl": 0.0,
                    "collapsed": 0.0}
        kl = self._kl(logq)
        top1 = float((logq.argmax(1) == self._ref["top1"]).double().mean())
        ppl = float(torch.exp(nll.mean()))
        collapsed = top1 < COLLAPSE_TOP1 or ppl > COLLAPSE_PPL * self._ref_ppl
        return {"kl": float(kl.mean()), "kl_p95": float(torch.quantile(kl, 0.95)), "top1": top1, "ppl": ppl,
                "ppl_original": self._ref_ppl, "dppl": ppl - self._ref_ppl, "collapsed": float(collapsed),
                "kl_lower_bound": float(self.kl_is_bound)}  # 1: the reference was kept as top-k + tail

    def _check_reference(self, logp: torch.Tensor) -> None:
        """Keep the original's distribution: full log-probs in fp16 when small enough (KL exact to
        ~0.2 %), else its top-k plus a tail bucket (KL is then a lower bound, and labelled so)."""
        top1 = logp.argmax(1)
        if logp.numel() * 2 <= REFERENCE_FULL_BYTES:
            self._ref = {"full": logp.half(), "top1": top1}
            self.kl_is_bound = False
        else:
            vals, idx = logp.topk(TOP_K, dim=1)
            self._ref = {"topv": vals, "topi": idx, "top1": top1}
            self.kl_is_bound = True

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


class HFEncoder(_HFEvaluator):
    name = "hf-encoder"
    primary = MetricSpec("fidelity", "embedding fidelity", higher_is_better=True, fmt=".4f")

    def __init__(self, folder, text=None, device="cpu", sentences: int = SENTENCES):
        super().__init__(folder, text, device)
        found = [s.strip() for s in re.split(r"(?<=[.!?])\s+", self.text)
                 if 6 <= len(s.split()) <= 45 and not s.strip().startswith(("|", "*", ">>>"))]
        if len(found) < sentences:
            raise EvaluationError(f"{self.text_source}: {len(found)} usable sentences (6–45 words), fewer than "
                                  f"the {sentences} needed — give a longer --text")
        start = int(len(found) * TEXT_OFFSET) if len(found) * (1 - TEXT_OFFSET) >= sentences else 0
        pool = found[start:]
        picked = [pool[round(i * (len(pool) - 1) / (sentences - 1))] for i in range(sentences)]
        self.where = f"{sentences} sentences of {self.text_source}"
        self.batch = self.tokenizer(picked, padding=True, truncation=True, max_length=128, return_tensors="pt")
        self.pooling = _pooling(self.folder)
        self._ref = None

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

    def _score(self, model) -> dict[str, float]:
        e = self._embed(model)
        if self._ref is None:
            sims = e @ e.T
            n = len(e)
            self._ref = {"e": e, "sims": sims, "nn": _nearest(sims),
                         "chance": float((sims.sum() - n) / (n * (n - 1)))}
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

        from .gguffile import GgufIndex

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
        t0 = time.perf_counter()
        parsed = gg.load_gguf_checkpoint(str(self.gguf), return_tensors=False)
        self._gguf_config = parsed.get("config", {})
        self._processor = gg.TENSOR_PROCESSORS.get(arch, gg.TensorProcessor)(config=self._gguf_config)
        with torch.device("meta"):  # the names only: no memory for weights
            skeleton = self.cls(self.config)
        self._names = gg.get_gguf_hf_weights_map(skeleton, self._processor)
        self.convert_seconds = time.perf_counter() - t0

    def _hf_state(self, state):
        import numpy as np

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


HF_EVALUATORS = {HFCausalLM.name: HFCausalLM, HFEncoder.name: HFEncoder}
