"""Truncation, export and evaluation on real MNIST demo models and seeded matrices."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import planted
from safetensors.torch import load_file

from core.errors import EvaluationError, OutputExistsError, RmtError, UsageError
from core.evaluate.measure import evaluate_truncations, parse_ranks, sweep_layer
from core.evaluate.mnist import MnistEvaluator
from core.evaluate.registry import choose_evaluator
from core.evaluate.user import load_evaluator
from core.io.checkpoint import open_checkpoint
from core.paths import DEFAULT_DEMO_MODEL, DEMO_DIR
from core.progress import Cancelled, CancelToken
from core.scan import analyse_checkpoint
from core.truncation import (
    export_safetensors,
    full_factors,
    resolve_ranks,
    top_factors,
    truncate_checkpoint,
    truncate_matrix,
)


@pytest.fixture(scope="module")
def demo():
    return open_checkpoint(DEFAULT_DEMO_MODEL)


@pytest.fixture(scope="module")
def small_eval():
    return MnistEvaluator(limit=2000)


def test_demo_models_reach_97_percent_and_say_so():
    models = sorted(DEMO_DIR.glob("mlp_bs*.safetensors"))
    assert len(models) >= 3
    ev = MnistEvaluator()
    for path in models:
        ck = open_checkpoint(path)
        acc = ev(ck.state_dict())["accuracy"]
        assert acc >= 0.97, path
        assert float(ck.metadata["test_accuracy"]) == pytest.approx(acc, abs=1e-4)
        assert ck.layer("fc1.weight").matrix[0] >= 512


def test_evaluator_is_deterministic_and_chosen_by_metadata(demo, small_eval):
    a, b = small_eval(demo.state_dict()), small_eval(demo.state_dict())
    assert a == b and 0.9 < a["accuracy"] <= 1.0
    assert isinstance(choose_evaluator(demo, None)[1], MnistEvaluator)


@pytest.mark.parametrize("k", [0, 1, 7, 40])
def test_truncation_gives_exactly_rank_k(k):
    W, _, _ = planted(300, 200, [5, 3], seed=0)
    t = truncate_matrix(W.astype(np.float32), k)
    assert np.linalg.matrix_rank(t.astype(np.float64), tol=1e-3) == k
    s = np.linalg.svd(W, compute_uv=False)
    # Eckart–Young: the error is exactly the removed singular values.
    assert np.linalg.norm(W - t) == pytest.approx(np.sqrt(np.sum(s[k:] ** 2)), rel=1e-4)


def test_partial_top_factors_match_the_full_svd():
    W, _, _ = planted(1100, 1500, [8, 6, 4, 3, 2], seed=4)
    exact = full_factors(W)
    for w in (W, W.T):  # both orientations take the Gram path
        for k in (5, 20, 200):
            fast = top_factors(w, k)
            assert fast.s == pytest.approx(exact.s[:k], rel=1e-9)
            approx = (fast.u * fast.s) @ fast.vt
            ref = (exact.u[:, :k] * exact.s[:k]) @ exact.vt[:k]
            assert np.linalg.norm(approx - (ref if w is W else ref.T)) / np.linalg.norm(ref) < 1e-8


def test_shrink_mode_debiases_the_kept_values():
    W, _, _ = planted(800, 600, [5, 3], seed=1)
    hard = truncate_matrix(W, 2)
    shrunk = truncate_matrix(W, 2, "shrink", sigma2=1.0)
    s_h, s_s = np.linalg.svd(hard, compute_uv=False)[:2], np.linalg.svd(shrunk, compute_uv=False)[:2]
    assert np.all(s_s < s_h)  # observed values are pushed up by the noise; θ̂ undoes it
    assert s_s / np.sqrt(800) == pytest.approx([5, 3], rel=0.05)
    with pytest.raises(UsageError, match="needs the method's noise variance"):  # exit 2, not a traceback
        truncate_matrix(W, 2, "shrink")


def test_truncate_checkpoint_source_untouched_and_export_round_trips(tmp_path, demo):
    before = DEFAULT_DEMO_MODEL.read_bytes()
    results = list(analyse_checkpoint(demo))
    plan = resolve_ranks("bema", results)
    assert set(plan) == {"fc1.weight", "fc2.weight"}  # fc3 (p = 10) is not applicable to BEMA
    state = truncate_checkpoint(demo, plan)
    for name, k in plan.items():
        assert np.linalg.matrix_rank(state[name].double().numpy(), tol=1e-4) == k
    assert torch.equal(state["fc3.weight"], demo.tensor("fc3.weight"))
    out = export_safetensors(state, tmp_path / "t.safetensors", {"method": "bema"})
    back = load_file(str(out))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(OutputExistsError):
        export_safetensors(state, out, {})
    export_safetensors(state, out, {}, overwrite=True)
    assert not list(tmp_path.glob(".*.tmp"))
    assert DEFAULT_DEMO_MODEL.read_bytes() == before
    assert resolve_ranks("rank:3", results) == {"fc1.weight": 3, "fc2.weight": 3, "fc3.weight": 3}
    with pytest.raises(RmtError):
        resolve_ranks("rank:x", results)


def test_conv_truncation_reshapes_back(tmp_path):
    torch.save({"conv.weight": torch.randn(32, 8, 3, 3)}, tmp_path / "c.pt")
    for view, names in [("reshape", {"conv.weight": 4}), ("positions", {"conv.weight[0,1]": 2})]:
        ck = open_checkpoint(tmp_path / "c.pt", conv_view=view)
        out = truncate_checkpoint(ck, names)["conv.weight"]
        assert out.shape == (32, 8, 3, 3)
        if view == "reshape":
            assert np.linalg.matrix_rank(out.reshape(32, -1).numpy(), tol=1e-4) == 4
        else:
            assert np.linalg.matrix_rank(out[:, :, 0, 1].numpy(), tol=1e-4) == 2
            assert torch.equal(out[:, :, 1, 1], ck.tensor("conv.weight")[:, :, 1, 1])


def test_evaluate_truncations_reports_each_method(demo, small_eval):
    results = list(analyse_checkpoint(demo))
    ticks = []
    rep = evaluate_truncations(demo, results, small_eval, progress=lambda *a: ticks.append(a))
    assert rep.baseline == small_eval(demo.state_dict())
    for m in ("bema", "broadening"):
        o = rep.outcomes[m]
        assert 0.5 < o.metrics["accuracy"] <= 1.0
        fc1 = next(r for r in results if r.layer.name == "fc1.weight")
        assert o.ranks["fc1.weight"] == fc1.analysis.methods[m].rank
        assert o.params_saved > 0 and o.mean_avew is not None
    assert ticks[0][:2] == (0, 3) and ticks[-1][:2] == (3, 3)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate_truncations(demo, results, small_eval, cancel=token)


def test_sweep_end_points(demo, small_eval):
    r = next(x for x in analyse_checkpoint(demo) if x.layer.name == "fc2.weight")
    rep = sweep_layer(demo, r, small_eval, ranks=[0, 5, 256])
    by = {p.rank: p for p in rep.points}
    assert by[256].metrics == rep.baseline  # k = p: the layer itself
    assert by[0].metrics["accuracy"] < 0.3  # k = 0: the layer is gone, the net is near chance
    assert by[0].avew == {"bema": None, "broadening": None}
    assert by[5].avew["bema"] == pytest.approx(r.analysis.avew_curve("bema")[4])
    assert rep.method_ranks["bema"] == r.analysis.methods["bema"].rank
    default = sweep_layer(demo, r, small_eval)
    assert {rep.method_ranks["bema"], rep.method_ranks["broadening"], 0, 256} <= {p.rank for p in default.points}


def test_parse_ranks():
    assert parse_ranks("0:100:25", 80) == [0, 25, 50, 75, 80]
    assert parse_ranks("3,1,500", 64) == [1, 3, 64]
    for bad in ("a:b", "50:10", "-3,4", ""):
        with pytest.raises(EvaluationError):
            parse_ranks(bad, 10)


def test_user_evaluators(tmp_path, demo):
    f = tmp_path / "myeval.py"
    f.write_text("def evaluate(sd):\n    return {'accuracy': 0.5, 'n': len(sd)}\n"
                 "def broken(sd):\n    raise RuntimeError('boom')\n")
    assert load_evaluator(str(f))(demo.state_dict()) == {"accuracy": 0.5, "n": 6}
    ev = load_evaluator(f"{f}:broken")
    from core.evaluate.base import run_evaluator
    with pytest.raises(EvaluationError, match="boom"):
        run_evaluator(ev, demo.state_dict())
    with pytest.raises(EvaluationError, match="not found"):
        load_evaluator(str(tmp_path / "nope.py"))
    with pytest.raises(EvaluationError, match="no callable"):
        load_evaluator("json:nope")


def test_tiny_training_script_runs(tmp_path):
    pytest.importorskip("mnist")
    script = Path(__file__).resolve().parent.parent / "demo_models" / "train.py"
    r = subprocess.run([sys.executable, str(script), "--tiny", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ck = open_checkpoint(tmp_path / "mlp_bs16.safetensors")
    assert ck.metadata["rmt_tui.evaluator"] == "mnist-mlp"
    with np.load(tmp_path / "mnist_test.npz") as z:
        assert z["images"].shape == (10000, 784) and z["images"].dtype == np.uint8
    with np.load(tmp_path / "mnist_test.npz") as new, np.load(DEMO_DIR / "mnist_test.npz") as shipped:
        assert np.array_equal(new["labels"], shipped["labels"])
