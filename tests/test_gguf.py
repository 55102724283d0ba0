"""GGUF files written here with gguf.GGUFWriter: listing, dimension order, dequantised analysis,
compare/delta/truncate, and damaged or hostile files."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from helpers import planted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from core.errors import CheckpointError
from core.io import gguf as gguffile
from core.io.checkpoint import open_checkpoint
from core.rmt.analysis import analyse_matrix
from core.scan import AnalysisOptions, analyse_checkpoint
from rmt_tui.cli import EXIT_INPUT, EXIT_OK

OPTS = AnalysisOptions(use_cache=False)


def write_gguf(path: Path, tensors: dict, arch="llama", name="test model") -> Path:
    """tensors: name → (float32 array, GGML type); quantised with gguf's own quantisers."""
    return gguffile.write_gguf(path, tensors, arch, name, describe=lambda w: w.add_file_type(2))


# A planted rank-6 matrix (spikes well above the MP edge), 256 × 512, in float32 units of ~1/√N.
W, _, _ = planted(256, 512, [6, 5, 4, 3.5, 3, 2.5], sigma=0.02, seed=0)
W = W.astype(np.float32)


def test_listing_types_shapes_and_metadata(tmp_path):
    a = np.arange(96 * 64, dtype=np.float32).reshape(96, 64) / 1000
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.attn_q.weight": (a, Q.F32), "blk.0.ffn_up.weight": (W, Q.Q8_0),
                                            "blk.0.attn_norm.weight": (np.ones(64), Q.F32),
                                            "blk.0.ffn_down.weight": (W, Q.Q5_1)})
    ck = open_checkpoint(path)
    by = {l.name: l for l in ck.layers}
    # GGUF stores ne = (64, 96), innermost first; listed as (out, in) = (96, 64), as numpy and torch hold it.
    assert by["blk.0.attn_q.weight"].shape == (96, 64) and by["blk.0.attn_q.weight"].dtype == "float32"
    assert np.array_equal(ck.matrix("blk.0.attn_q.weight"), a)  # element (i, j) is row i, column j
    assert by["blk.0.ffn_up.weight"].dtype == "q8_0" and by["blk.0.ffn_up.weight"].matrix == (256, 512)
    assert by["blk.0.ffn_down.weight"].dtype == "q5_1" and by["blk.0.ffn_down.weight"].analysable
    assert "1-D" in by["blk.0.attn_norm.weight"].reason
    assert [l.name for l in ck.layers] == ["blk.0.attn_norm.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight",
                                           "blk.0.ffn_up.weight"]  # natural name order
    assert ck.metadata == {"general.architecture": "llama", "general.name": "test model",
                           "general.file_type": "q4_0", "general.quantization_version": "2"}
    assert ck.matrix("blk.0.ffn_up.weight").dtype == np.float32


@pytest.mark.parametrize("qtype, rel_error", [(Q.F16, 1e-3), (Q.Q8_0, 1e-2), (Q.Q4_0, 0.2)])
def test_planted_ranks_survive_quantisation(tmp_path, qtype, rel_error):
    """ŝ of the dequantised matrix equals the float32 one; the quantisation error stays within its size."""
    path = write_gguf(tmp_path / "m.gguf", {"w": (W, qtype)})
    ck = open_checkpoint(path)
    got = ck.matrix("w")
    err = np.linalg.norm(got - W) / np.linalg.norm(W)
    assert err < rel_error, err  # measured: F16 2e-4, Q8_0 5.3e-3, Q4_0 0.086
    want = {m: r.rank for m, r in analyse_matrix(W).methods.items()}
    [r] = list(analyse_checkpoint(ck, OPTS))
    assert {m: x.rank for m, x in r.analysis.methods.items()} == want == {"bema": 6, "broadening": 6}


def test_report_delta_and_truncate_on_gguf(tmp_path, cli):
    f16 = write_gguf(tmp_path / "model-f16.gguf", {"blk.0.w.weight": (W, Q.F16), "norm.weight": (np.ones(512), Q.F32)})
    q4 = write_gguf(tmp_path / "model-q4_0.gguf", {"blk.0.w.weight": (W, Q.Q4_0), "norm.weight": (np.ones(512), Q.F32)})
    code, out, _ = cli("report", q4, "--format", "json", "--no-cache")
    assert code == EXIT_OK
    layer = json.loads(out)["layers"][0]
    assert layer["dtype"] == "q4_0" and layer["methods"]["bema"]["rank"] == 6

    # The quantisation error itself: ΔW = Q4_0 − F16, analysed as a weight matrix.
    code, out, err = cli("delta", f16, q4, "--format", "json", "--no-cache")
    assert code == EXIT_OK, err
    d = json.loads(out)["layers"][0]
    assert d["status"] == "ok" and d["dtypes"] == ["float16", "q4_0"]
    assert any("dtype differs (float16 vs q4_0)" in w for w in d["warnings"])
    assert 0.05 < d["rel_fro"] < 0.2

    out_path = tmp_path / "t.safetensors"
    code, _, err = cli("truncate", q4, "--method", "rank:3", "-o", out_path, "--no-cache")
    assert code == EXIT_OK, err
    state = load_file(str(out_path))
    assert set(state) == {"blk.0.w.weight", "norm.weight"} and state["blk.0.w.weight"].shape == (256, 512)
    assert np.linalg.matrix_rank(state["blk.0.w.weight"].astype(np.float64), tol=1e-3) == 3


def test_without_the_gguf_package_the_message_says_how_to_install(tmp_path, monkeypatch, cli):
    path = write_gguf(tmp_path / "m.gguf", {"w": (W, Q.F16)})
    monkeypatch.setattr("core.io.gguf.gguf_module", lambda: None)
    code, out, err = cli("report", path)
    assert code == EXIT_INPUT and "pip install 'rmt-tui[gguf]'" in err and out == ""


# ------------------------------------------------------------------------------------ damaged files


def _one_tensor(tmp_path) -> tuple[bytes, int]:
    """A valid file's bytes and the position of its tensor's name in the index."""
    path = write_gguf(tmp_path / "ok.gguf", {"blk.0.w.weight": (W[:64, :64], Q.Q8_0)})
    data = path.read_bytes()
    return data, data.index(b"blk.0.w.weight")


def _refused(tmp_path, data: bytes, *words):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(path)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert "bad.gguf" in str(e.value)


def test_truncated_files(tmp_path):
    data, name_at = _one_tensor(tmp_path)
    _refused(tmp_path, data[:-100], "blk.0.w.weight", "past the end of the file", "truncated")
    _refused(tmp_path, data[:name_at + 5], "corrupt GGUF header", "runs past the end")
    _refused(tmp_path, data[:10], "corrupt GGUF header")
    _refused(tmp_path, b"", "empty file")


def test_corrupt_and_absurd_headers(tmp_path):
    data, at = _one_tensor(tmp_path)
    after_name = at + len("blk.0.w.weight")

    def patched(pos, fmt, value):
        return data[:pos] + struct.pack(fmt, value) + data[pos + struct.calcsize(fmt):]

    _refused(tmp_path, b"GGUX" + data[4:], "not a GGUF file")
    _refused(tmp_path, patched(4, "<I", 1), "version 1")
    _refused(tmp_path, patched(4, ">I", 3), "big-endian")
    _refused(tmp_path, patched(8, "<Q", 1 << 40), "cannot fit")  # tensor count
    _refused(tmp_path, patched(after_name, "<I", 9), "9 dimensions")
    _refused(tmp_path, patched(after_name + 4, "<Q", 1 << 50), "elements")  # one absurd dimension
    _refused(tmp_path, patched(after_name + 4, "<Q", 1 << 40), "past the end of the file")
    _refused(tmp_path, patched(after_name + 4, "<Q", 50), "not a whole number of Q8_0 blocks")
    _refused(tmp_path, patched(at - 8, "<Q", 1 << 40), "claims")  # the name's length


def test_unknown_type_is_listed_with_its_reason(tmp_path):
    data, at = _one_tensor(tmp_path)
    type_at = at + len("blk.0.w.weight") + 4 + 2 * 8
    path = tmp_path / "future.gguf"
    path.write_bytes(data[:type_at] + struct.pack("<I", 4000) + data[type_at + 4:])
    ck = open_checkpoint(path)
    [layer] = ck.layers
    assert layer.dtype == "type4000" and not layer.analysable and "GGML type 4000, unknown" in layer.reason


FUZZ = settings(max_examples=60, deadline=10_000,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_fuzz_mutated_headers(tmp_path, data):
    """Any byte of the header and index changed, inserted or deleted: a typed error, or a file
    whose every tensor reads (or is listed with why not) — never another exception or a hang."""
    template, at = _one_tensor(tmp_path)
    raw = bytearray(template)
    end = at + len("blk.0.w.weight") + 4 + 16 + 4 + 8
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, end))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[i]
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(raw))
    try:
        ck = open_checkpoint(path)
        list(analyse_checkpoint(ck, OPTS))
    except CheckpointError:
        pass


# ------------------------------------------------------------------------------------ evaluation


def llama_folder_to_gguf(folder: Path, out: Path, qtype=Q.F32) -> Path:
    """What llama.cpp's converter does for a Llama folder, in small: metadata, the byte-level BPE
    tokenizer, tensor names, q/k rows permuted the llama.cpp way, matrices quantised to ``qtype``."""
    from gguf import MODEL_ARCH, get_tensor_name_map
    from safetensors.numpy import load_file as load_np

    cfg = json.loads((folder / "config.json").read_text())
    tok = json.loads((folder / "tokenizer.json").read_text())
    def describe(w):
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(cfg["num_attention_heads"])
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
        w.add_vocab_size(cfg["vocab_size"])
        w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
        tokens = [t for t, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
        special = {a["content"] for a in tok.get("added_tokens", [])}
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types([3 if t in special else 1 for t in tokens])
        w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
        w.add_bos_token_id(cfg["bos_token_id"])
        w.add_eos_token_id(cfg["eos_token_id"])

    names = get_tensor_name_map(MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])

    def permute(x, heads):
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    tensors = {}
    for key, a in load_np(str(folder / "model.safetensors")).items():
        base, suffix = key.rsplit(".", 1)
        if key.endswith("q_proj.weight"):
            a = permute(a, cfg["num_attention_heads"])
        elif key.endswith("k_proj.weight"):
            a = permute(a, cfg["num_key_value_heads"])
        tensors[f"{names.get_name(base)}.{suffix}"] = (a, qtype if a.ndim == 2 else Q.F32)
    return gguffile.write_gguf(out, tensors, "llama", "tiny-llama", describe)


def test_a_gguf_llm_is_evaluated_like_its_hf_folder(tmp_path, cli):
    """The tiny demo LM as GGUF (llama.cpp's names and q/k row order): transformers' own tensor map
    and processors put every (truncated) tensor back, so the numbers are the HF folder's."""
    from core.paths import DEMO_DIR

    folder = DEMO_DIR / "tiny-llama"
    f32 = llama_folder_to_gguf(folder, tmp_path / "tiny-f32.gguf")
    q8 = llama_folder_to_gguf(folder, tmp_path / "tiny-q8_0.gguf", Q.Q8_0)
    docs = {}
    for path in (folder, f32, q8):
        code, out, err = cli("eval", path, "--format", "json", "--no-cache")
        assert code == EXIT_OK, err
        docs[path] = json.loads(out)
    hf, g32, g8 = docs[folder], docs[f32], docs[q8]
    assert g32["evaluator"] == "hf-causal-lm" and g32["baseline"]["kl"] == 0.0 and g32["baseline"]["top1"] == 1.0
    assert g32["baseline"]["ppl"] == pytest.approx(hf["baseline"]["ppl"], rel=1e-5)
    for m in ("bema", "broadening"):
        assert sorted(g32["methods"][m]["ranks"].values()) == sorted(hf["methods"][m]["ranks"].values())
        assert g32["methods"][m]["value"] == pytest.approx(hf["methods"][m]["value"], rel=1e-3)
    # Q8_0: its own dequantised weights are the reference; truncation damage stays graded.
    assert g8["baseline"]["kl"] == 0.0 and g8["baseline"]["ppl"] == pytest.approx(hf["baseline"]["ppl"], rel=0.05)
    assert 0.05 < g8["methods"]["bema"]["value"] < 5


@pytest.mark.parametrize("qtype, out_type, written", [(Q.Q8_0, "auto", "q8_0"), (Q.F32, "auto", "float32"),
                                                      (Q.Q8_0, "f16", "float16")])
def test_truncate_writes_a_gguf_that_keeps_every_key_name_and_order(tmp_path, cli, qtype, out_type, written):
    """A truncated GGUF is the source with some tensors replaced: the gguf package reads back every
    metadata key with its value, every tensor name in order and the untouched tensors byte for
    byte; the project's reader lists it; the replaced matrices are the rank-k truncations."""
    import gguf

    from core.paths import DEMO_DIR
    from core.truncation import truncate_matrix

    src = llama_folder_to_gguf(DEMO_DIR / "tiny-llama", tmp_path / "tiny.gguf", qtype)
    before = src.read_bytes()
    out = tmp_path / "out.gguf"
    code, _, err = cli("truncate", src, "--method", "rank:8", "--layers", "blk.0.*", "-o", out, "--gguf-type",
                       out_type, "--no-cache")
    assert code == EXIT_OK, err
    assert src.read_bytes() == before  # the source is never touched
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(out))
    ours = {k for k in b.fields if k.startswith("rmt_tui.")}
    assert ours == {"rmt_tui.source", "rmt_tui.method", "rmt_tui.mode", "rmt_tui.ranks"}
    assert [k for k in b.fields if k not in ours] == list(a.fields)
    for key, field in a.fields.items():
        if not key.startswith("GGUF."):
            assert b.fields[key].contents() == field.contents(), key
    assert [t.name for t in b.tensors] == [t.name for t in a.tensors]
    ranks = json.loads(b.fields["rmt_tui.ranks"].contents())
    assert ranks and all(name.startswith("blk.0.") for name in ranks)
    for ta, tb in zip(a.tensors, b.tensors):
        if ta.name not in ranks:
            assert tb.tensor_type == ta.tensor_type and np.array_equal(np.asarray(tb.data), np.asarray(ta.data))
    src_ck, out_ck = open_checkpoint(src), open_checkpoint(out)
    assert [l.name for l in out_ck.layers] == [l.name for l in src_ck.layers]
    for name in ranks:
        assert out_ck.layer(name).dtype == written
        want = truncate_matrix(src_ck.matrix(name), 8)
        got = out_ck.matrix(name)
        tol = 1e-6 if written == "float32" else 1e-2
        assert np.linalg.norm(got - want) <= tol * np.linalg.norm(want), name
        assert np.linalg.matrix_rank(got.astype(np.float64), tol=1e-3 * np.abs(got).max()) <= 8 or written != "float32"


def test_a_gguf_output_needs_a_gguf_source(tmp_path, cli):
    from core.paths import DEFAULT_DEMO_MODEL

    code, out, err = cli("truncate", DEFAULT_DEMO_MODEL, "--method", "bema", "-o", tmp_path / "x.gguf")
    assert code == 2 and "needs a GGUF source" in err and not (tmp_path / "x.gguf").exists()


def test_a_truncated_gguf_runs_as_a_model(tmp_path, cli):
    """What llama.cpp would run, run here: transformers builds the model from the written GGUF (its
    config and tokenizer from the kept metadata) and the label-free evaluator scores it."""
    from core.paths import DEMO_DIR

    src = llama_folder_to_gguf(DEMO_DIR / "tiny-llama", tmp_path / "tiny.gguf", Q.Q8_0)
    out = tmp_path / "out.gguf"
    assert cli("truncate", src, "--method", "rank:16", "-o", out, "--no-cache")[0] == EXIT_OK
    code, doc, err = cli("eval", out, "--layers", "blk.1.ffn_up.weight", "--format", "json", "--no-cache")
    assert code == EXIT_OK, err
    doc = json.loads(doc)
    assert doc["evaluator"] == "hf-causal-lm" and doc["baseline"]["ppl"] < 1000


def test_whitened_compression_of_a_gguf_llm_reports_its_own_tensor_names(tmp_path, cli):
    """The hooks sit on the model transformers builds; the ranks come back under the GGUF's names."""
    from core.paths import DEMO_DIR

    gguf = llama_folder_to_gguf(DEMO_DIR / "tiny-llama", tmp_path / "tiny.gguf")
    code, out, err = cli("eval", gguf, "--compress", "20%", "--mode", "hard,whitened", "--layers", "blk.*",
                         "--format", "json")
    assert code == EXIT_OK, err
    modes = json.loads(out)["compress"]["modes"]
    assert modes["whitened"]["fallback"] == {} and all(n.startswith("blk.") for n in modes["whitened"]["ranks"])
    assert modes["whitened"]["metrics"]["kl"] < modes["hard"]["metrics"]["kl"] / 5
    out_file = tmp_path / "small.gguf"
    code, _, err = cli("truncate", gguf, "--compress", "20%", "--mode", "whitened", "--layers", "blk.*", "-o", out_file)
    assert code == EXIT_OK, err
    code, out, err = cli("eval", out_file, "--methods", "bema", "--layers", "blk.0.ffn_up*", "--format", "json")
    assert code == EXIT_OK, err  # the written GGUF loads and runs as a model
