"""Which evaluator a checkpoint gets: the built-in families, each in its own module, chosen from
the checkpoint's metadata or folder — never from code in the checkpoint — or the user's own.

A family is a name, a test on the checkpoint (``detects``: does it call for this family when the
user names none?) and a factory. A new family is one module plus one entry in ``FAMILIES``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.errors import EvaluationError
from core.evaluate.base import Evaluator, SelfContained, set_reference
from core.evaluate.outcomes import EvaluatorChoice
from core.io.checkpoint import Checkpoint


@dataclass(frozen=True)
class Family:
    name: str
    detects: Callable[[Checkpoint], bool]
    build: Callable[[Checkpoint, EvaluatorChoice], Evaluator]  # imports its module (torch, transformers) lazily


def _mnist(ckpt: Checkpoint, choice: EvaluatorChoice) -> Evaluator:
    from core.evaluate.mnist import MnistEvaluator

    return MnistEvaluator()


def _is_gguf(ckpt: Checkpoint) -> bool:
    return ckpt.path.suffix == ".gguf"


def _hf_kind(ckpt: Checkpoint) -> str | None:
    """The HF family a folder's config.json calls for — after checking that config (a lying one is
    an error naming the key, not a silent "no evaluator")."""
    from core.evaluate.hf import check_config, config_of, hf_kind

    cfg = config_of(ckpt.path) if ckpt.path.is_dir() else None
    if cfg is not None:
        check_config(ckpt.path, cfg)
    return hf_kind(ckpt.path)


def _causal_lm(ckpt: Checkpoint, choice: EvaluatorChoice) -> Evaluator:
    from core.evaluate.hf_causal_lm import GgufCausalLM, HFCausalLM

    return (GgufCausalLM if _is_gguf(ckpt) else HFCausalLM)(ckpt.path, text=choice.text, device=choice.device)


def _encoder(ckpt: Checkpoint, choice: EvaluatorChoice) -> Evaluator:
    from core.evaluate.hf_encoder import HFEncoder

    return HFEncoder(ckpt.path, text=choice.text, device=choice.device)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("mnist-mlp", lambda ckpt: ckpt.metadata.get("rmt_tui.evaluator") == "mnist-mlp", _mnist),
    Family("hf-causal-lm", lambda ckpt: _is_gguf(ckpt) or _hf_kind(ckpt) == "hf-causal-lm", _causal_lm),
    Family("hf-encoder", lambda ckpt: _hf_kind(ckpt) == "hf-encoder", _encoder),
)}


def choose_evaluator(ckpt: Checkpoint, choice: EvaluatorChoice | str | None = None) -> tuple[str, Evaluator]:
    """(name, evaluator), its reference already set from the checkpoint's own weights: the user's
    ``spec`` when given (a family's name, FILE.py or module:function); else the family the
    checkpoint's metadata names; else the first family that detects the checkpoint."""
    choice = choice if isinstance(choice, EvaluatorChoice) else EvaluatorChoice(choice)
    spec = choice.spec
    if spec and spec not in FAMILIES:
        from core.evaluate.user import load_evaluator

        return spec, load_evaluator(spec)
    name = spec or ckpt.metadata.get("rmt_tui.evaluator")
    family = FAMILIES.get(name) if name else next((f for f in FAMILIES.values() if f.detects(ckpt)), None)
    if family is None:
        raise EvaluationError(f"{ckpt.path}: no evaluator — neither its metadata nor a Hugging Face config.json "
                              "names a built-in one; pass --evaluator FILE.py or module:function (your "
                              "evaluate(state_dict) -> {'accuracy': …})")
    ev = family.build(ckpt, choice)
    if not isinstance(ev, SelfContained):
        set_reference(ev, ckpt.state_dict())
    return family.name, ev
