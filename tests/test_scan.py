"""core.scan and core.cache: the analysis stream (progress, cancel, order, small matrices in bulk)
and the on-disk cache (hits identical to a recomputation, corrupt entries recomputed, warm reopens)."""
import os

import numpy as np
import pytest
import torch
from helpers import model_state, names
from safetensors.torch import save_file

from core.cache import SpectrumCache
from core.io.checkpoint import open_checkpoint
from core.progress import Cancelled, CancelToken
from core.scan import AnalysisOptions, analyse_checkpoint, select_layers


def test_streaming_progress_cancel_and_source_untouched(tmp_path):
    p = tmp_path / "m.pt"
    torch.save(model_state(), p)
    before = (p.read_bytes(), p.stat().st_mtime_ns)
    ck = open_checkpoint(p)
    seen = []
    results = list(analyse_checkpoint(ck, progress=lambda i, n, name: seen.append((i, n, name))))
    assert [r.layer.name for r in results] == names(ck)
    assert seen[0] == (0, len(ck.layers), "embed.weight") and seen[-1] == (len(ck.layers), len(ck.layers), "")
    assert {r.status for r in results} == {"ok", "skipped"}
    token = CancelToken()
    gen = analyse_checkpoint(ck, cancel=token)
    next(gen)
    token.cancel()
    with pytest.raises(Cancelled):
        next(gen)
    assert (p.read_bytes(), p.stat().st_mtime_ns) == before


def test_select_layers_by_glob(tmp_path):
    torch.save(model_state(), tmp_path / "m.pt")
    ck = open_checkpoint(tmp_path / "m.pt")
    assert [l.name for l in select_layers(ck, ["layers.*.weight"])] == ["layers.2.fc.weight", "layers.10.fc.weight"]


def test_cache_hit_is_identical_and_corrupt_entry_is_recomputed(tmp_path):
    torch.save({"w": torch.randn(200, 120, generator=torch.Generator().manual_seed(1))}, tmp_path / "m.pt")
    ck = open_checkpoint(tmp_path / "m.pt")
    cold = list(analyse_checkpoint(ck))[0].analysis
    files = sorted((tmp_path / "cache").rglob("*.*"))
    assert {f.suffix for f in files} == {".f64", ".json"}
    warm = list(analyse_checkpoint(ck))[0].analysis
    assert np.array_equal(warm.sv, cold.sv) and warm.methods == cold.methods
    for f in files:
        f.write_bytes(b"garbage")
    again = list(analyse_checkpoint(ck))[0].analysis
    assert again.methods == cold.methods
    # Another method configuration is its own entry.
    other = list(analyse_checkpoint(ck, AnalysisOptions.make(params={"bema": {"beta": 0.01}})))[0].analysis
    assert other.methods["bema"].threshold > cold.methods["bema"].threshold


def test_cache_location_is_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv("RMT_TUI_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert SpectrumCache().root == tmp_path / "elsewhere" / "spectra"
    monkeypatch.delenv("RMT_TUI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert SpectrumCache().root == tmp_path / "xdg" / "rmt-tui" / "spectra"


def test_warm_cache_skips_reading_unchanged_files_and_notices_changes(tmp_path, monkeypatch):
    p = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(120, 90, generator=torch.Generator().manual_seed(2))}, str(p))
    cold = list(analyse_checkpoint(open_checkpoint(p)))[0].analysis
    ck = open_checkpoint(p)
    with monkeypatch.context() as m:  # not monkeypatch.undo(): that would also undo the test's cache folder
        m.setattr(ck, "matrix", lambda layer: (_ for _ in ()).throw(AssertionError("tensor was read")))
        warm = list(analyse_checkpoint(ck))[0].analysis
    assert warm.methods == cold.methods
    save_file({"w": 3 * torch.randn(120, 90, generator=torch.Generator().manual_seed(2))}, str(p))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    changed = list(analyse_checkpoint(open_checkpoint(p)))[0].analysis
    assert changed.sv == pytest.approx(3 * cold.sv, rel=1e-5)


def test_small_matrices_in_bulk_give_the_one_at_a_time_results(tmp_path):
    """Where no method can run (p < 30), analyse_checkpoint computes values for a run of layers
    with one batched eigensolve; every record must equal analyse_layer's, edge cases included."""
    from core.scan import analyse_layer

    g = torch.Generator().manual_seed(3)
    sd = {f"e.{i}.w": torch.randn(16, 8, generator=g) for i in range(40)}
    sd.update({"wide.w": torch.randn(6, 20, generator=g), "zero.w": torch.zeros(16, 8),
               "nan.w": torch.full((16, 8), float("nan")), "rank1.w": torch.ones(16, 8),
               "f64.w": torch.randn(16, 8, generator=g, dtype=torch.float64),
               "big.w": torch.randn(64, 40, generator=g),
               "bf16.w": torch.randn(12, 9, generator=g).to(torch.bfloat16),
               "after.w": torch.randn(16, 8, generator=g)})
    for fmt in ("pt", "safetensors"):
        path = tmp_path / f"m.{fmt}"
        torch.save(sd, path) if fmt == "pt" else save_file(sd, str(path))
        ck = open_checkpoint(path)
        opts = AnalysisOptions(use_cache=False)
        bulk = list(analyse_checkpoint(ck, opts))
        assert [r.layer.name for r in bulk] == [l.name for l in ck.layers]
        for r in bulk:
            one = analyse_layer(ck, r.layer, opts)
            assert r.reason == one.reason and r.analysis.methods == one.analysis.methods, r.layer.name
            scale = one.analysis.sv[:1].sum()
            np.testing.assert_allclose(r.analysis.sv, one.analysis.sv, rtol=1e-12, atol=1e-12 * scale)
        by = {r.layer.name: r for r in bulk}
        assert by["zero.w"].analysis.methods["bema"].reason == "all-zero matrix" and "non-finite" in by["nan.w"].reason
        assert "numerical rank 1" in by["rank1.w"].analysis.methods["bema"].reason
        assert by["big.w"].analysis.methods["bema"].ok and "p = 8 < 30" in by["e.0.w"].analysis.methods["bema"].reason
