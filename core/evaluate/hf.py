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
from collections.abc import Mapping
from pathlib import Path

import torch

from core.errors import EvaluationError
from core.evaluate.outcomes import MetricSpec
from core.memory import human_bytes, require_memory
from core.text import first_line

INSTALL = "pip install 'rmt-tui[hf]'"
TEXT_OFFSET = 0.8  # windows and sentences start this far into the default text (the tiny demo LM
#                    was trained on the text before it, so its evaluation text is held out)


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
        return "hf-causal-lm"
    if (folder / "1_Pooling").is_dir() or any(a.endswith(("Model", "ForMaskedLM")) for a in archs):
        return "hf-encoder"
    return None


def default_text() -> tuple[str, str]:
    """(text, where it is from): CPython's own reference-manual prose, present in every install."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n".join(topics[k] for k in sorted(topics)), "pydoc_data.topics (CPython's reference manual)"


MAX_TEXT_BYTES = 64 << 20  # an evaluation text beyond this is a mistake (a model file, /dev/zero), not prose


def read_text(path: Path, what: str = "evaluation text", flag: str = "--text") -> str:
    """An evaluation text: a regular file (a FIFO or a device would block or never end), at most
    MAX_TEXT_BYTES, decoded as UTF-8 with undecodable bytes replaced (U+FFFD) — the stated policy;
    a text with NUL bytes is binary, not prose."""
    import stat

    try:
        st = path.stat()
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or \
            stat.S_ISBLK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise EvaluationError(f"{path}: the {what} is {kind}; give a text file ({flag})")
    if st.st_size > MAX_TEXT_BYTES:
        raise EvaluationError(f"{path}: the {what} is {human_bytes(st.st_size)}, more than the "
                              f"{human_bytes(MAX_TEXT_BYTES)} an evaluation reads; give a shorter text")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if b"\x00" in raw:
        raise EvaluationError(f"{path}: the {what} holds NUL bytes — a binary file, not text")
    return raw.decode("utf-8", errors="replace")


# config.json sizes that must be positive integers where present (the ones a model is built from).
SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
         "intermediate_size", "max_position_embeddings", "head_dim", "n_embd", "n_layer", "n_head", "n_positions")
STRINGS = ("model_type", "hidden_act", "torch_dtype", "dtype")


def check_config(folder: Path, cfg: dict) -> None:
    """What config.json says, checked before transformers builds anything from it: types, positive
    sizes, a head count that divides the width, and the memory the sizes imply against what is
    available (a config claiming a million layers is refused with both numbers, not allocated)."""
    where = folder / "config.json"

    def bad(key, what):
        return EvaluationError(f"{where}: {key} = {cfg[key]!r:.60}: {what} — fix config.json or re-download the model")

    archs = cfg.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        raise bad("architectures", "must be a list of class names")
    for key in SIZES:
        v = cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise bad(key, "must be a positive integer")
    for key in STRINGS:
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise bad(key, "must be a string")
    width, heads = cfg.get("hidden_size") or cfg.get("n_embd"), cfg.get("num_attention_heads") or cfg.get("n_head")
    if width and heads and width % heads and not cfg.get("head_dim"):
        raise bad("num_attention_heads", f"must divide hidden_size = {width}")
    layers, vocab = cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0, cfg.get("vocab_size") or 0
    inter = cfg.get("intermediate_size") or 4 * (width or 0)
    params = (width or 0) * (2 * vocab + layers * (4 * (width or 0) + 3 * inter))
    require_memory(2 * 4 * params, where, f"the model config.json describes (~{params:,} parameters)")
    tok = folder / "tokenizer.json"
    if tok.is_file():
        try:
            doc = json.loads(tok.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise EvaluationError(f"{tok}: not readable JSON ({first_line(exc)}) — re-download the tokenizer") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict) or not isinstance(
                doc["model"].get("vocab", {}), (dict, list)):
            raise EvaluationError(f"{tok}: not a tokenizer (no \"model\" object with a vocabulary) — re-download "
                                  "the tokenizer")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise EvaluationError(f"evaluating a Hugging Face model needs the transformers package: {INSTALL}") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


class HFEvaluator:
    """What both evaluators share: refusing what would run code, loading weights through the
    library, the memory check, and the reference outputs computed once."""

    name = ""
    primary: MetricSpec

    def __init__(self, folder: str | Path, text: str | Path | None = None, device: str = "cpu"):
        self.folder = Path(folder)
        self._open(_transformers())
        self.device = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.text, self.text_source = default_text() if text is None else (read_text(Path(text)), str(text))
        self._ref = None  # the original's outputs (set_reference)

    def _open(self, tf) -> None:
        """The model class, config and tokenizer, from the folder's own files."""
        cfg = config_of(self.folder)
        if cfg is None:
            raise EvaluationError(f"{self.folder}: no readable config.json — not a Hugging Face model folder")
        check_config(self.folder, cfg)
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
        except Exception as exc:  # transformers validates configs strictly and raises many types
            raise EvaluationError(f"{self.folder}: cannot load its config or tokenizer ({first_line(exc)}) — "
                                  "fix or re-download config.json and the tokenizer files; a folder without a "
                                  "working tokenizer cannot be evaluated") from None

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

    def set_reference(self, state: Mapping[str, torch.Tensor]) -> None:
        """Score the original weights once and keep their outputs: every later call is judged
        against them."""
        self._check_fits(state, self.working_bytes())
        with torch.no_grad():
            self._ref = self._reference(self._load(state))

    def calibrate(self, state: Mapping[str, torch.Tensor], count: int | None = None, source=None):
        """Each linear layer's input Gram matrix on calibration data disjoint from the scored data
        (``core.calibration``), under the checkpoint's own tensor names."""
        from core.calibration import collect, module_names

        self._check_fits(state, 0)
        model = self._load(state)
        plan = self._calibration(count, None if source is None else Path(source))
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        names = module_names(model, state, self._rename())
        return collect(model, names, plan.pop("batches"), plan.pop("forward")(model), stop_at=head,
                       where=str(self.folder), **plan)

    def _rename(self) -> dict[str, str] | None:
        """Checkpoint tensor name → the model's parameter name, where they differ (a GGUF)."""
        return None

    def _calibration(self, count: int | None, source: Path | None) -> dict:
        raise EvaluationError(f"{self.name} has no calibration data")  # pragma: no cover - each family has

    def __call__(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        if getattr(self, "_ref", None) is None:
            raise EvaluationError(f"{self.folder}: no reference outputs yet — call set_reference(original state) "
                                  "before scoring")
        self._check_fits(state, self.working_bytes())
        with torch.no_grad():
            return self._score(self._load(state))
