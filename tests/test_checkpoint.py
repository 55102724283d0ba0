"""core.io: every checkpoint format built in tmp_path, every bad input, and fuzzing."""
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from helpers import model_state, names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from core.errors import CheckpointError, UnsafeCheckpointError
from core.io.checkpoint import open_checkpoint
from core.scan import AnalysisOptions, analyse_checkpoint


def test_plain_state_dict_keeps_insertion_order(tmp_path):
    sd = model_state()
    torch.save(sd, tmp_path / "m.pt")
    ck = open_checkpoint(tmp_path / "m.pt")
    assert names(ck) == list(sd)
    by = {l.name: l for l in ck.layers}
    assert by["embed.weight"].kind == "embedding" and by["embed.weight"].matrix == (100, 48)
    assert by["conv.weight"].kind == "conv" and by["conv.weight"].matrix == (32, 27)
    assert by["layers.2.fc.bias"].reason.startswith("1-D")
    assert "int64" in by["steps"].reason
    assert by["head.weight"].kind == "linear"
    assert torch.equal(torch.as_tensor(ck.matrix("conv.weight")), sd["conv.weight"].reshape(32, 27))


def test_wrapped_gpu_style_training_checkpoint(tmp_path):
    sd = model_state()
    wrapped = {"epoch": 7, "global_step": 1234, "model_state": sd,
               "optimizer": {"state": {0: {"exp_avg": torch.zeros(64, 48)}}, "param_groups": [{"lr": 0.1}]},
               "scaler": {"scale": 65536.0}}
    torch.save(wrapped, tmp_path / "train.ckpt")
    assert names(open_checkpoint(tmp_path / "train.ckpt")) == list(sd)
    torch.save({"state_dict": sd, "optimizer_states": [{}]}, tmp_path / "lightning.pth")
    assert names(open_checkpoint(tmp_path / "lightning.pth")) == list(sd)


def test_nested_dict_is_flattened_and_optimizer_left_out(tmp_path):
    torch.save({"encoder": {"fc": {"weight": torch.randn(40, 30)}}, "optimizer": {"m": torch.zeros(40, 30)}},
               tmp_path / "n.pt")
    assert names(open_checkpoint(tmp_path / "n.pt")) == ["encoder.fc.weight"]


def test_legacy_non_zip_torch_file(tmp_path):
    torch.save(model_state(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert "conv.weight" in names(open_checkpoint(tmp_path / "old.pt"))


def test_tied_tensors_are_listed_with_reason(tmp_path):
    w = torch.randn(50, 20)
    torch.save({"wte.weight": w, "lm_head.weight": w}, tmp_path / "tied.pt")
    ck = open_checkpoint(tmp_path / "tied.pt")
    assert ck.layer("lm_head.weight").reason == "tied: the same tensor as wte.weight"
    assert ck.layer("wte.weight").analysable


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_safetensors_dtypes_and_metadata(tmp_path, dtype):
    sd = {k: v for k, v in model_state(dtype=dtype).items() if v.is_floating_point()}
    save_file(sd, str(tmp_path / "m.safetensors"), metadata={"note": "x"})
    ck = open_checkpoint(tmp_path / "m.safetensors")
    assert ck.metadata == {"note": "x"}
    # safetensors does not record module order: natural order, layers.2 before layers.10
    assert names(ck).index("layers.2.fc.weight") < names(ck).index("layers.10.fc.weight")
    r = {x.layer.name: x for x in analyse_checkpoint(ck)}
    assert r["head.weight"].analysis.sv.size == 10
    a = r["layers.2.fc.weight"].analysis
    ref = np.linalg.svd(sd["layers.2.fc.weight"].double().numpy(), compute_uv=False)
    assert a.sv == pytest.approx(ref, rel=1e-4 if dtype != torch.float64 else 1e-10)


def test_sharded_hf_folder_and_single_file_folders(tmp_path):
    sd = {k: v for k, v in model_state().items() if v.is_floating_point()}
    keys = list(sd)
    save_file({k: sd[k] for k in keys[:3]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in keys[3:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    wm = {k: f"model-0000{1 if i < 3 else 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (tmp_path / "config.json").write_text("{}")
    ck = open_checkpoint(tmp_path)
    assert names(ck) == keys  # index order
    assert torch.equal(ck.tensor("head.weight"), sd["head.weight"])

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save(sd, bin_dir / "pytorch_model.bin")
    assert names(open_checkpoint(bin_dir)) == keys


def test_missing_shard_is_named(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors"}}))
    with pytest.raises(CheckpointError, match="shard model-1.safetensors .* is missing"):
        open_checkpoint(tmp_path)


def test_npz(tmp_path):
    np.savez(tmp_path / "w.npz", b=np.ones((30, 40), np.float32), a=np.arange(5.0))
    ck = open_checkpoint(tmp_path / "w.npz")
    assert [(l.name, l.matrix) for l in ck.layers] == [("a", None), ("b", (30, 40))]
    assert ck.tensor("b").shape == (30, 40)


def test_conv_positions_view(tmp_path):
    torch.save({"conv.weight": torch.randn(32, 16, 3, 3)}, tmp_path / "c.pt")
    ck = open_checkpoint(tmp_path / "c.pt", conv_view="positions")
    assert len(ck.layers) == 9 and ck.layers[4].name == "conv.weight[1,1]"
    assert ck.layers[4].matrix == (32, 16)
    assert torch.equal(torch.as_tensor(ck.matrix(ck.layers[4])), ck.tensor("conv.weight")[:, :, 1, 1])


# ----------------------------------------------------------------------------- bad input


def test_missing_path():
    with pytest.raises(CheckpointError, match="no such file or folder"):
        open_checkpoint("/nonexistent/model.pt")


def test_folder_without_weights(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="no weights in this folder"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz", ".bin"])
def test_empty_file(tmp_path, suffix):
    (tmp_path / f"e{suffix}").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        open_checkpoint(tmp_path / f"e{suffix}")


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "npz"])
def test_truncated_file(tmp_path, fmt):
    p = tmp_path / f"t.{fmt}"
    if fmt == "pt":
        torch.save(model_state(), p)
    elif fmt == "safetensors":
        save_file({"w": torch.randn(64, 64)}, str(p))
    else:
        np.savez(p, w=np.ones((64, 64)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        open_checkpoint(p)


def test_corrupt_safetensors_header(tmp_path):
    p = tmp_path / "c.safetensors"
    header = b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]'  # missing brace
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        open_checkpoint(p)


def test_pickle_that_is_not_a_checkpoint(tmp_path):
    torch.save(["just", "strings", 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="contains no tensors"):
        open_checkpoint(tmp_path / "list.pt")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, zip_format):
    marker = str(tmp_path / "pwned")
    p = tmp_path / "evil.pt"
    if zip_format:
        torch.save({"w": torch.zeros(4, 4), "x": _Exploit(marker)}, p)
    else:
        p.write_bytes(pickle.dumps({"x": _Exploit(marker)}, protocol=4))
    before = p.read_bytes()
    with pytest.raises(UnsafeCheckpointError, match=r"asks to run code \(posix\.mkdir\)"):
        open_checkpoint(p)
    assert not os.path.exists(marker)
    assert p.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path):
    p = tmp_path / "locked.pt"
    torch.save(model_state(), p)
    p.chmod(0)
    with pytest.raises(CheckpointError, match="permission denied"):
        open_checkpoint(p)


def test_permission_denied_message(tmp_path, monkeypatch):
    """Runs as root too: the OS refusal is simulated at the open call."""
    p = tmp_path / "locked.safetensors"
    save_file({"w": torch.ones(3, 3)}, str(p))

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(CheckpointError, match="permission denied"):
        open_checkpoint(p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".pt", ".safetensors", ".npz", ".bin"]))
def test_random_bytes_only_raise_the_typed_error(tmp_path, data, suffix):
    p = tmp_path / f"fuzz{suffix}"
    p.write_bytes(data)
    try:
        open_checkpoint(p)
    except CheckpointError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_safetensors_headers_only_raise_the_typed_error(tmp_path, data):
    p = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(8, 8), "b": torch.randn(4)}, str(p))
    raw = bytearray(p.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, 8 + n - 1))
        raw[i] = data.draw(st.integers(0, 255))
    p.write_bytes(bytes(raw))
    try:
        ck = open_checkpoint(p)
        list(analyse_checkpoint(ck, AnalysisOptions(use_cache=False)))
    except CheckpointError:
        pass


_NAMES = st.lists(st.from_regex(r"[a-z]{1,5}(\.[0-9]{1,2})?\.(weight|bias)", fullmatch=True), min_size=1, max_size=5,
                  unique=True)
_SHAPES = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=_NAMES, shapes=st.lists(_SHAPES, min_size=5, max_size=5),
       fmt=st.sampled_from(["pt", "safetensors", "npz", "wrapped"]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]))
def test_property_every_format_lists_what_was_saved(tmp_path, names, shapes, fmt, dtype):
    g = torch.Generator().manual_seed(0)
    sd = {n: torch.randn(s, generator=g).to(dtype) for n, s in zip(names, shapes)}
    if fmt == "npz":
        sd = {k: v.float() for k, v in sd.items()}  # numpy has no bfloat16
    path = tmp_path / f"m.{'pt' if fmt == 'wrapped' else fmt}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    elif fmt == "npz":
        np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    else:
        torch.save({"model_state": sd, "optimizer": {"lr": 0.1}} if fmt == "wrapped" else sd, path)
    ck = open_checkpoint(path)
    assert sorted(ck.tensors) == sorted(sd)
    for name, t in sd.items():
        shape, dt = ck.tensors[name]
        assert shape == tuple(t.shape) and dt == str(t.dtype).removeprefix("torch.")
        assert torch.equal(ck.tensor(name), t)
    for layer in ck.layers:
        assert (layer.matrix is None) == (layer.reason is not None)
        if len(layer.shape) >= 2 and min(layer.shape[0], int(np.prod(layer.shape[1:]))) >= 2:
            assert layer.matrix == (layer.shape[0], int(np.prod(layer.shape[1:])))
    if fmt in ("pt", "wrapped"):
        assert list(ck.tensors) == list(sd)  # pickles keep the saved order
