"""Comparing checkpoints and fine-tune deltas: layer matching, ΔW analysis, LoRA / rank_pattern export."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from core.compare.delta import delta_checkpoints, delta_matrix, energy_rank, stable_rank
from core.compare.lora import lora_factors
from core.compare.matching import match_layers, normalise
from core.io.checkpoint import open_checkpoint
from core.paths import DEMO_DIR
from core.scan import AnalysisOptions
from core.truncation import truncate_matrix
from rmt_tui.cli import EXIT_EXISTS, EXIT_INPUT, EXIT_OK, EXIT_USAGE

OPTS = AnalysisOptions(use_cache=False)


def planted_finetune(seed=1, m=512, n=768, rank=8, scale=0.025):
    """Base W (N(0, 1/n)) and W + a rank-8 update whose singular values stand 5–10× above the
    bf16 rounding noise of the two stored copies."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32)
    u = np.linalg.qr(rng.standard_normal((m, rank)))[0]
    v = np.linalg.qr(rng.standard_normal((n, rank)))[0]
    d = ((u * np.linspace(2, 1, rank) * scale) @ v.T).astype(np.float32)
    return torch.from_numpy(w), torch.from_numpy(w + d)


# ------------------------------------------------------------------------------------ matching


@pytest.mark.parametrize("name, expected", [
    ("module.fc1.weight", "fc1.weight"), ("_orig_mod.module.fc1.weight", "fc1.weight"),
    ("base_model.model.model.layers.0.q_proj.base_layer.weight", "layers.0.q_proj.weight"),
    ("model.layers.0.mlp.weight", "layers.0.mlp.weight"), ("fc1.weight", "fc1.weight"), ("model.", "model."),
])
def test_wrapper_prefixes_are_stripped(name, expected):
    assert normalise(name) == expected


def _three_formats(tmp_path: Path):
    """The same weights as a plain safetensors file, a DDP .pt with lm_head tied to the embedding,
    and a sharded HF folder (model. prefix) that does not store the tied lm_head."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(50, 16, generator=g)
    layers = {f"layers.{i}.proj.weight": torch.randn(24, 16, generator=g) for i in range(3)}
    plain = {"embed_tokens.weight": emb, **layers, "lm_head.weight": emb.clone(), "norm.weight": torch.ones(16)}
    save_file(plain, str(tmp_path / "plain.safetensors"))
    ddp = {f"module.{k}": v for k, v in plain.items()}
    ddp["module.lm_head.weight"] = ddp["module.embed_tokens.weight"]  # one storage: tied
    torch.save(ddp, tmp_path / "ddp.pt")
    hf = tmp_path / "hf"
    hf.mkdir()
    names = [k for k in plain if k != "lm_head.weight"]
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    for shard, keys in shards.items():
        save_file({f"model.{k}": plain[k].clone() for k in keys}, str(hf / shard))
    (hf / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {f"model.{k}": shard for shard, keys in shards.items() for k in keys}}))
    return tmp_path / "plain.safetensors", tmp_path / "ddp.pt", hf


def test_same_weights_in_three_formats_match_and_are_unchanged(tmp_path):
    paths = _three_formats(tmp_path)
    ckpts = [open_checkpoint(p) for p in paths]
    table = match_layers(ckpts)
    by_key = {r.key: r for r in table.rows}
    assert set(by_key) == {"embed_tokens.weight", "layers.0.proj.weight", "layers.1.proj.weight",
                           "layers.2.proj.weight", "lm_head.weight", "norm.weight"}
    for key in ("embed_tokens.weight", "layers.1.proj.weight", "norm.weight"):
        assert by_key[key].status == "matched" and by_key[key].rule == "name"
    head = by_key["lm_head.weight"]
    assert head.status == "tied" and [e.state for e in head.entries] == ["same", "tied", "tied"]
    assert head.entries[2].name == "model.embed_tokens.weight" and head.rule == "tied-alias"
    assert "tied to model.embed_tokens.weight" in head.entries[2].note
    for a, b in ((0, 1), (0, 2), (1, 2)):
        pair = match_layers([ckpts[a], ckpts[b]])
        for d in delta_checkpoints(ckpts[a], ckpts[b], pair.rows, OPTS):
            if d.key == "norm.weight":
                assert d.status == "skipped" and "1-D" in d.reason
            elif d.key == "lm_head.weight" and a == 1:
                assert d.status == "tied"  # tied on both sides: it is the embedding row again
            else:
                assert d.status == "unchanged" and d.rel_fro == 0.0, (a, b, d.key, d.status, d.reason)


def test_renamed_missing_transposed_and_reshaped_tensors_get_their_statuses(tmp_path):
    g = torch.Generator().manual_seed(1)
    a = {"bert.encoder.layer.0.attn.weight": torch.randn(32, 32, generator=g),
         "bert.encoder.layer.0.out.weight": torch.randn(48, 32, generator=g),
         "bert.embeddings.word_embeddings.weight": torch.randn(100, 32, generator=g),
         "bert.pooler.weight": torch.randn(32, 32, generator=g),
         "classifier.weight": torch.randn(2, 32, generator=g)}
    b = {"encoder.layer.0.attn.weight": a["bert.encoder.layer.0.attn.weight"] + 0.01,
         "encoder.layer.0.out.weight": a["bert.encoder.layer.0.out.weight"].T.contiguous(),
         "embeddings.word_embeddings.weight": torch.randn(101, 32, generator=g),
         "new_head.weight": torch.randn(3, 32, generator=g)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    ca, cb = open_checkpoint(tmp_path / "a.safetensors"), open_checkpoint(tmp_path / "b.safetensors")
    table = match_layers([ca, cb])
    rows = {r.key: r for r in table.rows}
    attn = rows["bert.encoder.layer.0.attn.weight"]
    assert attn.rule == "suffix" and attn.entries[1].name == "encoder.layer.0.attn.weight"
    out = rows["bert.encoder.layer.0.out.weight"]
    assert out.status == "transposed" and "compared as Wᵀ" in out.entries[1].note
    emb = rows["bert.embeddings.word_embeddings.weight"]
    assert emb.status == "shape_mismatch" and "(rows +1)" in emb.entries[1].note
    s = table.summary()
    assert s["missing_from"] == {"b.safetensors": ["bert.pooler.weight", "classifier.weight"],
                                 "a.safetensors": ["new_head.weight"]}
    deltas = {d.key: d for d in delta_checkpoints(ca, cb, table.rows, OPTS)}
    assert deltas["bert.encoder.layer.0.out.weight"].status == "unchanged"  # Wᵀ stored, compared as W
    assert deltas["bert.encoder.layer.0.attn.weight"].status == "ok"
    assert deltas["bert.embeddings.word_embeddings.weight"].status == "shape_mismatch"
    assert deltas["bert.embeddings.word_embeddings.weight"].analysis is None  # never a stand-in
    assert deltas["classifier.weight"].status == "only_in" and deltas["classifier.weight"].analysis is None


def test_energy_and_stable_rank():
    sv = np.array([3.0, 2.0, 1.0, 0.0])
    assert energy_rank(sv, 0.9) == 2 and energy_rank(sv, 0.99) == 3 and energy_rank(np.zeros(3), 0.9) == 0
    assert stable_rank(sv) == pytest.approx(14 / 9)


# ------------------------------------------------------------------------------------ delta


def test_planted_rank8_finetune_in_bf16(tmp_path, cli):
    """ŝ(ΔW) = 8 by both methods while the 90 %-energy rank counts the bf16 rounding noise."""
    w, t = planted_finetune()
    save_file({"model.q_proj.weight": w.to(torch.bfloat16)}, str(tmp_path / "base.safetensors"))
    torch.save({"q_proj.weight": t.to(torch.bfloat16)}, tmp_path / "tuned.pt")
    code, out, err = cli("delta", tmp_path / "base.safetensors", tmp_path / "tuned.pt", "--format", "json",
                         "--no-cache", "--rank-pattern", tmp_path / "rp.json", "--extract-lora",
                         tmp_path / "lora.safetensors")
    assert code == EXIT_OK, err
    assert "match: 1 layers: 1 matched in all 2 checkpoints" in err
    doc = json.loads(out)
    assert doc["schema"] == "rmt-tui/delta/1"
    [rec] = doc["layers"]
    assert rec["status"] == "ok" and rec["dtypes"] == ["bfloat16", "bfloat16"]
    assert rec["methods"]["bema"]["rank"] == 8 and rec["methods"]["broadening"]["rank"] == 8
    assert rec["energy_rank"]["90"] > 80, rec["energy_rank"]  # measured 104 (seed 1)
    assert 4 < rec["stable_rank"] < 8
    assert 3e-3 < rec["rel_fro"] < 2e-2

    rp = json.loads((tmp_path / "rp.json").read_text())
    assert rp["rank_pattern"] == {r"model\.q_proj": 8} and "alpha_pattern" not in rp and "rmt_tui" not in rp
    assert rp["peft_type"] == "LORA" and rp["target_modules"] == ["model.q_proj"] and rp["lora_alpha"] == 8

    # Round trip: W_base + B·A is the base plus the rank-8 truncation of ΔW.
    lora = load_file(str(tmp_path / "lora.safetensors"))
    a, b = lora["base_model.model.model.q_proj.lora_A.weight"], lora["base_model.model.model.q_proj.lora_B.weight"]
    assert a.shape == (8, 768) and b.shape == (512, 8) and a.dtype == torch.float32
    base, tuned = open_checkpoint(tmp_path / "base.safetensors"), open_checkpoint(tmp_path / "tuned.pt")
    d, _ = delta_matrix(base, tuned, match_layers([base, tuned]).rows[0])
    want = truncate_matrix(d, 8)
    err_rel = np.linalg.norm((b @ a).numpy() - want) / np.linalg.norm(want)
    assert err_rel < 1e-5
    # The adapter recovers the planted update (the rest of ΔW is rounding noise).
    planted = t - w
    assert torch.linalg.norm(b @ a - planted) < 0.15 * torch.linalg.norm(planted)

    # Outputs are never replaced without --force, and nothing else is touched.
    before = (tmp_path / "rp.json").read_bytes()
    code, _, err = cli("delta", tmp_path / "base.safetensors", tmp_path / "tuned.pt", "--rank-pattern",
                       tmp_path / "rp.json", "--lora-rank", "rank:2")
    assert code == EXIT_EXISTS and "--force" in err and (tmp_path / "rp.json").read_bytes() == before
    code, _, _ = cli("delta", tmp_path / "base.safetensors", tmp_path / "tuned.pt", "--rank-pattern",
                     tmp_path / "rp.json", "--lora-rank", "rank:2", "--force")
    assert code == EXIT_OK and json.loads((tmp_path / "rp.json").read_text())["rank_pattern"] == {r"model\.q_proj": 2}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_lora_factors_reproduce_the_truncation():
    rng = np.random.default_rng(3)
    d = rng.standard_normal((40, 60)).astype(np.float32)
    a, b = lora_factors(d, 5)
    assert np.allclose(b @ a, truncate_matrix(d, 5), atol=1e-5)


def test_rounding_level_delta_is_flagged(tmp_path):
    """fp32 weights against their own bf16 copy: the delta is rounding, and is said to be."""
    w, _ = planted_finetune(seed=0)
    save_file({"w": w}, str(tmp_path / "a.safetensors"))
    save_file({"w": w.to(torch.bfloat16)}, str(tmp_path / "b.safetensors"))
    a, b = open_checkpoint(tmp_path / "a.safetensors"), open_checkpoint(tmp_path / "b.safetensors")
    [d] = delta_checkpoints(a, b, match_layers([a, b]).rows, OPTS)
    assert d.status == "ok" and d.rel_fro < 4e-3
    assert any("dtype differs (bfloat16 vs float32)" in w for w in d.warnings)
    assert any("rounding level of bfloat16" in w for w in d.warnings)
    for m in ("bema", "broadening"):  # MP-shaped, nothing above the noise (BEMA's β allows one
        r = d.analysis.methods[m]  # false alarm in ten pure-noise matrices)
        assert r.rank <= 1 and r.ks < 0.05, (m, r.rank, r.ks)


def test_non_finite_and_bad_inputs_are_statuses_or_clear_errors(tmp_path, cli):
    w = torch.randn(40, 30)
    bad = w.clone()
    bad[3, 4] = float("nan")
    save_file({"w": w}, str(tmp_path / "a.safetensors"))
    save_file({"w": bad}, str(tmp_path / "b.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    code, out, err = cli("delta", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--format", "json")
    assert code == EXIT_OK
    [rec] = json.loads(out)["layers"]
    assert rec["status"] == "skipped" and "non-finite" in rec["reason"]
    code, out, err = cli("delta", tmp_path / "a.safetensors", tmp_path / "junk.safetensors")
    assert code == EXIT_INPUT and "junk.safetensors" in err and "Traceback" not in err and out == ""
    code, _, err = cli("compare", tmp_path / "a.safetensors")
    assert code == EXIT_USAGE and "two or more" in err
    code, _, err = cli("delta", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--rank-pattern",
                       tmp_path / "a.safetensors", "--force")
    assert code == EXIT_USAGE and "source checkpoint" in err


# ------------------------------------------------------------------------------------ compare


def test_compare_reproduces_the_batch_size_study(cli):
    """The paper's Fig. 3 setting on the shipped demo models: ŝ of fc1 falls with batch size."""
    paths = [DEMO_DIR / f"mlp_bs{bs}.safetensors" for bs in (16, 64, 128, 256, 1024)]
    code, out, err = cli("compare", *paths, "--format", "json", "--layers", "fc1.weight")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["schema"] == "rmt-tui/compare/1" and doc["match"]["matched"] == 6
    [fc1] = doc["layers"]
    labels = [c["label"] for c in doc["checkpoints"]]
    for m in ("bema", "broadening"):
        ranks = [fc1["per_checkpoint"][label]["methods"][m]["rank"] for label in labels]
        assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1] + 30, (m, ranks)
    sigma2 = [fc1["per_checkpoint"][label]["methods"]["bema"]["sigma2"] for label in labels]
    assert sigma2 == sorted(sigma2, reverse=True)
    assert all(fc1["per_checkpoint"][label]["sv_max_over_edge"]["bema"] > 1 for label in labels)

    code, out, _ = cli("compare", *paths[:2], "--format", "csv", "--layers", "fc*.weight")
    lines = out.strip().splitlines()
    assert lines[0].startswith("key,checkpoint,state,name,") and len(lines) == 1 + 3 * 2
    code, out, _ = cli("compare", *paths)
    assert code == EXIT_OK and "mlp_bs*.safetensors" in out and "97/185" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_compare_mixed_formats_with_a_missing_layer(tmp_path, cli):
    plain, ddp, hf = _three_formats(tmp_path)
    code, out, err = cli("compare", plain, ddp, hf, "--format", "json", "--no-cache")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    head = next(l for l in doc["layers"] if l["key"] == "lm_head.weight")
    assert head["status"] == "tied" and head["per_checkpoint"]["hf"]["state"] == "tied"
    layer = next(l for l in doc["layers"] if l["key"] == "layers.0.proj.weight")
    recs = list(layer["per_checkpoint"].values())
    assert [r["name"] for r in recs] == ["layers.0.proj.weight", "module.layers.0.proj.weight",
                                         "model.layers.0.proj.weight"]
    assert len({json.dumps(r["methods"], sort_keys=True) for r in recs}) == 1  # the same numbers


def _finetuned_tiny_lm(tmp_path):
    """The tiny demo LM and a copy with planted updates of ranks 2, 4 and 6 in three modules."""
    import shutil

    from core.paths import DEMO_DIR

    base, tuned = tmp_path / "base", tmp_path / "tuned"
    shutil.copytree(DEMO_DIR / "tiny-llama", base)
    shutil.copytree(DEMO_DIR / "tiny-llama", tuned)
    state = load_file(str(tuned / "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    planted = {"model.layers.0.self_attn.q_proj": 2, "model.layers.1.mlp.up_proj": 4,
               "model.layers.0.mlp.down_proj": 6}
    for module, r in planted.items():
        w = state[f"{module}.weight"]
        u = torch.linalg.qr(torch.randn(w.shape[0], r, generator=g))[0]
        v = torch.linalg.qr(torch.randn(w.shape[1], r, generator=g))[0]
        state[f"{module}.weight"] = w + 0.5 * w.norm() / r ** 0.5 * (u * torch.linspace(1, 0.5, r)) @ v.T
    save_file(state, str(tuned / "model.safetensors"), metadata={"format": "pt"})
    return base, tuned, planted


def test_the_adapter_folder_loads_in_peft_and_merges_to_the_truncated_delta(tmp_path, cli):
    """The real peft package loads the folder into the tiny LM; merged, every adapted weight is
    W_base + ΔW_k (ΔW_k the rank-k truncation, k = ŝ(ΔW) per module, mixed), and llama.cpp's rule
    (scale = lora_alpha / the module's rank) on the same files gives the same weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, tuned, planted = _finetuned_tiny_lm(tmp_path)
    out = tmp_path / "adapter"
    code, _, err = cli("delta", base, tuned, "--extract-lora", out, "--no-cache")
    assert code == EXIT_OK, err
    config = json.loads((out / "adapter_config.json").read_text())
    from peft import LoraConfig

    LoraConfig(**config)  # every key is one PEFT knows
    assert config["task_type"] == "CAUSAL_LM" and config["peft_type"] == "LORA" and "alpha_pattern" not in config
    tensors = load_file(str(out / "adapter_model.safetensors"))
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "np") as f:
        meta = f.metadata()
    ranks = json.loads(meta["rmt_tui.ranks"])  # ŝ(ΔW) by BEMA: the planted rank, plus float32 rounding's own
    assert meta["rmt_tui.method"] == "bema" and set(ranks) == set(planted) and len(set(ranks.values())) == 3
    assert all(planted[m] <= k for m, k in ranks.items())
    assert config["r"] == config["lora_alpha"] == max(ranks.values())
    assert sorted(config["target_modules"]) == sorted(planted)
    assert config["rank_pattern"] == {m.replace(".", "\\."): k for m, k in ranks.items()}

    base_ck, tuned_ck = open_checkpoint(base), open_checkpoint(tuned)
    rows = {r.entries[0].name: r for r in match_layers([base_ck, tuned_ck]).rows}
    expected = {}
    for module, k in ranks.items():
        d, _ = delta_matrix(base_ck, tuned_ck, rows[f"{module}.weight"])
        expected[module] = base_ck.tensor(f"{module}.weight").numpy() + truncate_matrix(d, k)
        # llama.cpp: each module's B·A scaled by lora_alpha / its rank (the rank from lora_A's shape)
        a = tensors[f"base_model.model.{module}.lora_A.weight"]
        b = tensors[f"base_model.model.{module}.lora_B.weight"]
        assert a.shape[0] == k
        llama_cpp = base_ck.tensor(f"{module}.weight").numpy() + (config["lora_alpha"] / a.shape[0]) * (b @ a).numpy()
        assert np.linalg.norm(llama_cpp - expected[module]) <= 1e-5 * np.linalg.norm(expected[module])

    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, out).merge_and_unload().state_dict()
    untouched = open_checkpoint(base).state_dict()
    for name, w in merged.items():
        module = name.removesuffix(".weight")
        want = expected.get(module, untouched.get(name))
        if want is None:
            continue
        want = torch.as_tensor(want)
        assert torch.linalg.norm(w - want) <= 1e-5 * torch.linalg.norm(want), name


def test_an_adapter_folder_is_never_replaced_without_force(tmp_path, cli):
    base, tuned, _ = _finetuned_tiny_lm(tmp_path)
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli("delta", base, tuned, "--extract-lora", out, "--no-cache")
    assert code == EXIT_EXISTS and (out / "keep.txt").read_text() == "mine"
    code, _, err = cli("delta", base, tuned, "--extract-lora", out, "--no-cache", "--force")
    assert code == EXIT_OK and sorted(p.name for p in out.iterdir()) == ["adapter_config.json",
                                                                         "adapter_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".adapter")]
