"""Activation-aware (whitened) truncation, calibration data and the parameter budget (SPEC §13)."""
import hashlib
import json

import numpy as np
import pytest
import torch

from core.calibration import Calibration, GramCollector, whitener
from core.compress import RULES, Spectrum, allocate, parse_target, stored
from core.errors import UsageError
from core.paths import DEFAULT_DEMO_MODEL, DEMO_DIR
from core.truncation import Fed, low_rank, truncate_matrix, whitened_factors
from rmt_tui.cli import EXIT_EVAL, EXIT_OK, EXIT_USAGE

TINY = DEMO_DIR / "tiny-llama"


def _layer(m=40, n=30, t=400, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((m, n))
    x = rng.standard_normal((n, t)) * rng.uniform(0.05, 4.0, (n, 1))  # unequal input scales
    return w, x


# ------------------------------------------------------------------------------------ SPEC §13 math


def test_the_output_error_on_the_calibration_inputs_is_the_dropped_whitened_values():
    w, x = _layer()
    fed = Fed(whitener(x @ x.T))
    assert fed.whitener.damping == 0.0  # full-rank G: no damping, so the identity is exact
    s = whitened_factors(w, fed).s
    for k in (1, 5, 12, 29):
        err = np.linalg.norm((w - truncate_matrix(w, k, "whitened", fed=fed)) @ x) ** 2
        assert err == pytest.approx(float(np.sum(s[k:] ** 2)), rel=1e-6)


def test_whitened_beats_plain_on_the_calibration_inputs_at_every_rank():
    w, x = _layer(seed=1)
    fed = Fed(whitener(x @ x.T))
    for k in (2, 8, 20):
        plain = np.linalg.norm((w - truncate_matrix(w, k, "hard")) @ x)
        white = np.linalg.norm((w - truncate_matrix(w, k, "whitened", fed=fed)) @ x)
        assert white < plain


def test_at_full_rank_the_whitened_truncation_is_the_identity():
    w, x = _layer()
    fed = Fed(whitener(x @ x.T))
    assert np.array_equal(truncate_matrix(w, 30, "whitened", fed=fed), w)  # nothing removed: W itself
    f = whitened_factors(w, fed)  # and the arithmetic path agrees: (W L) L⁻¹ = W
    assert np.abs(low_rank(f, 30) - w).max() < 1e-10 * np.abs(w).max()


def test_a_rank_deficient_gram_matrix_is_damped_and_the_damping_stated():
    w, x = _layer(t=12)  # 12 calibration inputs for a layer 30 wide
    wh = whitener(x @ x.T)
    assert wh.damping > 0 and wh.relative == pytest.approx(1e-6)
    assert np.allclose(wh.chol @ wh.chol.T, x @ x.T + wh.damping * np.eye(30))
    out = truncate_matrix(w, 5, "whitened", fed=Fed(wh))
    assert np.isfinite(out).all() and np.linalg.matrix_rank(out) == 5


def test_a_transposed_layer_is_whitened_on_its_rows():
    """GPT-2's Conv1D stores W as (in, out): its inputs index the rows."""
    w, x = _layer()
    fed = Fed(whitener(x @ x.T), transposed=True)
    stored_w = w.T  # (in, out)
    out = truncate_matrix(stored_w, 7, "whitened", fed=fed)
    s = whitened_factors(stored_w, fed).s
    assert out.shape == stored_w.shape
    assert np.linalg.norm((w - out.T) @ x) ** 2 == pytest.approx(float(np.sum(s[7:] ** 2)), rel=1e-6)


def test_the_collector_sums_each_layers_inputs_and_shares_a_common_input():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.o = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4), torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.o(self.q(x) * self.k(x))

    torch.manual_seed(0)
    model = Block().double()
    names = {"q.weight": "q.weight", "k.weight": "k.weight", "o.weight": "o.weight"}
    c = GramCollector(model, names)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])  # padding left out
    c.mask = mask
    c.run([x], model)
    grams = c.close()
    rows = x[mask]
    assert np.allclose(grams["q.weight"], (rows.T @ rows).numpy(), atol=1e-12)
    assert grams["q.weight"] is grams["k.weight"]  # one matrix for the shared input, computed once
    with torch.no_grad():
        h = (model.q(rows) * model.k(rows))
    assert np.allclose(grams["o.weight"], (h.T @ h).numpy(), atol=1e-12)


# ------------------------------------------------------------------------------------ budget


def test_storage_counts_two_factors_only_below_the_dense_size():
    assert stored(100, 50, 10) == 1500
    assert stored(100, 50, 33) == 4950 and stored(100, 50, 34) == 5000  # 34·150 ≥ 5000: dense
    assert Spectrum("a", 100, 50, np.ones(50)).break_even == 33


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("target", [0.1, 0.2, 0.4, 0.75])
def test_the_budget_is_met_within_one_point(rule, target):
    rng = np.random.default_rng(3)
    shapes = [(64, 64), (256, 64), (64, 256), (576, 192), (30, 500), (2048, 64)]
    spectra = [Spectrum(f"l{i}", m, n, np.sort(rng.gamma(2.0, size=min(m, n)))[::-1], shat=int(rng.integers(1, 20)))
               for i, (m, n) in enumerate(shapes)]
    alloc = allocate(spectra, target, rule)
    total = sum(m * n for m, n in shapes)
    kept = sum(stored(sp.m, sp.n, alloc.ranks[sp.name]) for sp in spectra)
    assert alloc.achieved == pytest.approx(1 - kept / total)
    assert abs(alloc.achieved - target) <= 0.01 and not alloc.off_target
    assert alloc.params_saved == total - kept


def test_loss_allocation_keeps_the_values_that_carry_energy():
    flat = Spectrum("flat", 100, 100, np.ones(100))
    steep = Spectrum("steep", 100, 100, np.r_[np.full(5, 100.0), np.full(95, 0.01)])
    ranks = allocate([flat, steep], 0.5, "loss").ranks
    assert ranks["steep"] < ranks["flat"] and ranks["steep"] >= 5


@pytest.mark.parametrize("text", ["0", "100%", "-5%", "abc", "150"])
def test_a_target_outside_the_open_interval_is_a_usage_error(text):
    with pytest.raises(UsageError):
        parse_target(text)
    assert parse_target("20%") == pytest.approx(0.2)


# ------------------------------------------------------------------------------------ calibration data


def test_mnist_calibration_images_are_never_scored(tmp_path):
    from core.evaluate.mnist import MnistEvaluator, load_test_split
    from core.io.checkpoint import open_checkpoint

    ev = MnistEvaluator()
    state = open_checkpoint(DEFAULT_DEMO_MODEL).state_dict()
    cal = ev.calibrate(state)
    assert cal.record() == {"source": "MNIST training images (mnist_calibration.npz)", "samples": 1000,
                            "disjoint": True}
    assert set(cal.grams) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    images, _ = load_test_split()
    np.savez(tmp_path / "cal.npz", images=images[:300])  # scored images given as calibration: said so
    cal = ev.calibrate(state, source=tmp_path / "cal.npz")
    assert not cal.disjoint and cal.count == 300


def test_causal_lm_calibration_windows_come_before_the_scored_ones(tmp_path):
    from core.evaluate.hf_causal_lm import HFCausalLM
    from core.io.checkpoint import open_checkpoint

    ev = HFCausalLM(TINY)
    state = open_checkpoint(TINY).state_dict()
    cal = ev.calibrate(state, count=1024)
    assert cal.record()["tokens"] == 1024 and cal.disjoint
    assert "model.embed_tokens.weight" not in cal.grams and "lm_head.weight" in cal.grams
    plan = ev._calibration(1024, None)
    first_scored = ev._start
    cal_ids = torch.cat(list(plan["batches"])).reshape(-1).tolist()
    assert cal_ids == ev._text_ids[first_scored - 1024:first_scored]  # ends where the scored windows start
    # A calibration file holding the scored text is not disjoint, and says so.
    scored_text = ev.tokenizer.decode(ev.ids.reshape(-1).tolist())
    (tmp_path / "cal.txt").write_text(scored_text)
    assert not ev.calibrate(state, source=tmp_path / "cal.txt").disjoint


def test_whitened_layers_are_matched_to_the_checkpoint_names():
    from core.io.checkpoint import open_checkpoint
    from core.truncation import whitening

    ckpt = open_checkpoint(TINY)
    cal = Calibration("x", 1, "tokens", True, {"model.layers.0.mlp.down_proj.weight": np.eye(256)})
    fed, unfed = whitening(ckpt, ["model.layers.0.mlp.down_proj.weight", "model.embed_tokens.weight"], cal)
    assert set(fed) == {"model.layers.0.mlp.down_proj.weight"}
    assert "embedding" in unfed["model.embed_tokens.weight"]


# ------------------------------------------------------------------------------------ through the CLI


def _sha(path):
    h = hashlib.sha256()
    for f in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        h.update(f.read_bytes())
    return h.hexdigest()


def test_eval_compress_runs_both_modes_at_the_same_budget(cli):
    before = _sha(TINY)
    code, out, err = cli("eval", TINY, "--compress", "20%", "--mode", "hard,whitened", "--layers", "model.layers.*",
                         "--format", "json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    c = doc["compress"]
    assert c["target"] == pytest.approx(0.2) and c["allocation"] == "auto"
    assert {o["allocation"] for o in c["modes"].values()} == {"sensitivity"}  # the evaluator scores each layer
    assert c["calibration"] == {"source": "pydoc_data.topics (CPython's reference manual)", "tokens": 8192,
                                "disjoint": True}
    hard, white = c["modes"]["hard"], c["modes"]["whitened"]
    for o in (hard, white):
        assert abs(o["achieved"] - 0.2) <= 0.01 and set(o["metrics"]) >= {"ppl", "kl", "top1", "collapsed"}
        assert all(name.startswith("model.layers.") for name in o["ranks"])
    assert white["metrics"]["kl"] < hard["metrics"]["kl"] / 5  # whitened is far better at the same budget
    assert white["fallback"] == {} and doc["baseline"]["kl"] == 0.0
    assert "calibration: 8192 tokens" in err
    assert _sha(TINY) == before


def test_eval_compress_on_the_mnist_demo(cli):
    code, out, err = cli("eval", DEFAULT_DEMO_MODEL, "--compress", "40", "--mode", "whitened", "--allocation",
                         "uniform")
    assert code == EXIT_OK, err
    assert "whitened" in out and "40.0%" in out and "accuracy" in out
    assert "1000 samples of MNIST training images" in out + err


def test_eval_whitened_falls_back_to_hard_for_the_embedding_and_says_so(cli):
    code, out, err = cli("eval", TINY, "--mode", "whitened", "--methods", "bema", "--format", "json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["mode"] == "whitened" and doc["calibration"]["disjoint"]
    assert "model.embed_tokens.weight" in doc["fallback"]
    assert "truncated hard instead" in err


def test_truncate_whitened_writes_dense_weights_and_their_factors(tmp_path, cli):
    from safetensors import safe_open

    out = tmp_path / "small.safetensors"
    before = _sha(TINY)
    code, _, err = cli("truncate", TINY, "--mode", "whitened", "--compress", "30%", "--allocation", "uniform",
                       "--layers", "model.layers.*", "--factors", "-o", out)
    assert code == EXIT_OK, err
    factors = tmp_path / "small.factors.safetensors"
    with safe_open(str(out), "pt") as dense, safe_open(str(factors), "pt") as fac:
        meta = dense.metadata()
        assert meta["rmt_tui.mode"] == "whitened" and json.loads(meta["rmt_tui.calibration"])["tokens"] == 8192
        ranks = json.loads(meta["rmt_tui.ranks"])
        assert ranks and all(0 < k for k in ranks.values())
        for name, k in ranks.items():
            left, right = fac.get_tensor(f"{name}.left"), fac.get_tensor(f"{name}.right")
            assert left.shape[1] == k == right.shape[0]
            assert torch.allclose(left @ right, dense.get_tensor(name), atol=1e-5)
    assert _sha(TINY) == before
    code, _, err = cli("truncate", TINY, "--mode", "whitened", "--compress", "30%", "--factors", "-o", out)
    assert code == 6 and "exists" in err  # neither output is silently replaced


def test_whitened_without_an_evaluator_names_what_is_missing(tmp_path, cli):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.randn(64, 48)}, str(plain))
    code, out, err = cli("truncate", plain, "--mode", "whitened", "--method", "rank:4",
                         "-o", tmp_path / "o.safetensors")
    assert code == EXIT_EVAL and out == ""
    assert "whitened truncation needs calibration data" in err and "--evaluator" in err
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("argv, words", [
    (["--compress", "0"], "outside (0, 100)"),
    (["--compress", "100%"], "outside (0, 100)"),
    (["--mode", "hard,whitened"], "several modes run only with eval --compress"),
    (["--compress", "20%", "--each"], "separate jobs"),
])
def test_bad_budget_requests_are_usage_errors(cli, argv, words):
    code, out, err = cli("eval", DEFAULT_DEMO_MODEL, *argv)
    assert code == EXIT_USAGE and out == "" and words in err


def test_report_whitened_analyses_w_times_l(cli):
    from core.evaluate.mnist import MnistEvaluator
    from core.io.checkpoint import open_checkpoint

    code, out, err = cli("report", DEFAULT_DEMO_MODEL, "--whitened", "--format", "json", "--no-cache")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["options"]["calibration"] == {"source": "MNIST training images (mnist_calibration.npz)",
                                             "samples": 1000, "disjoint": True, "whitened": True}
    state = open_checkpoint(DEFAULT_DEMO_MODEL).state_dict()
    cal = MnistEvaluator().calibrate(state)
    for layer in doc["layers"]:
        if layer["status"] == "ok":  # W·L's spectrum, not W's
            w = state[layer["name"]].double().numpy()
            wl = w @ cal.whitener(layer["name"]).chol
            assert layer["sv_max"] == pytest.approx(np.linalg.norm(wl, 2), rel=1e-4)
            assert layer["sv_max"] != pytest.approx(np.linalg.norm(w, 2), rel=0.1)


def test_sweep_whitened_ends_at_the_baseline(cli):
    code, out, err = cli("sweep", DEFAULT_DEMO_MODEL, "--layer", "fc2.weight", "--mode", "whitened", "--ranks",
                         "0:256:64", "--format", "json")
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["mode"] == "whitened"
    assert doc["points"][-1]["rank"] == 256 and doc["points"][-1]["value"] == doc["baseline"]["accuracy"]
    assert doc["points"][2]["value"] > 0.9  # half the rank, whitened: the MLP still works


# ------------------------------------------------------------------------------------ in the app


async def test_the_app_switches_mode_and_shows_the_whitened_spectrum():
    from helpers import panel_text, settle

    from rmt_tui.app import RmtApp
    from rmt_tui.widgets import SpectrumPlot

    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert "truncation mode: hard" in panel_text(app)
        await pilot.press("m", "m")  # hard → shrink → whitened
        assert app.session.mode == "whitened" and "truncation mode: whitened" in panel_text(app)
        await pilot.press("e")
        await settle(app, pilot)
        rep = app.session.opened[0].evals["fc1.weight"]
        assert rep.mode == "whitened" and rep.calibration["samples"] == 1000 and rep.calibration["disjoint"]
        assert "(mnist-mlp, whitened)" in " ".join(panel_text(app).split())
        plot = app.query_one(SpectrumPlot)
        await pilot.press("w")
        await settle(app, pilot)
        white = app.session.opened[0].whitened["fc1.weight"]
        assert plot.view == "whitened" and plot.whitened is white
        assert white.analysis.sv_max != pytest.approx(app.session.opened[0].results["fc1.weight"].analysis.sv_max,
                                                      rel=0.1)
        assert "numbers of W·L" in panel_text(app)
        await pilot.press("v")  # the cycle goes on from the whitened view
        assert plot.view != "whitened"


def test_sensitivity_allocation_weighs_layers_by_their_measured_damage(cli, tmp_path):
    from core.compress import budget_plan, layer_spectra
    from core.evaluate.compress import sensitivity_weights
    from core.evaluate.mnist import MnistEvaluator
    from core.io.checkpoint import open_checkpoint

    ckpt = open_checkpoint(DEFAULT_DEMO_MODEL)
    names = ["fc1.weight", "fc2.weight"]
    with pytest.raises(UsageError, match="needs an evaluator"):
        budget_plan(ckpt, names, 0.3, "hard", "sensitivity")
    ev = MnistEvaluator(limit=2000)
    base = ev(ckpt.state_dict())["accuracy"]
    weights = sensitivity_weights(ckpt, layer_spectra(ckpt, names, {}, "sensitivity"), ev, 0.6, "hard", {}, base)
    assert set(weights) == set(names) and all(w > 0 for w in weights.values())
    code, out, err = cli("eval", DEFAULT_DEMO_MODEL, "--compress", "30%", "--allocation", "sensitivity",
                         "--mode", "whitened", "--format", "json")
    assert code == EXIT_OK, err
    assert abs(json.loads(out)["compress"]["modes"]["whitened"]["achieved"] - 0.3) <= 0.01
    code, _, err = cli("truncate", DEFAULT_DEMO_MODEL, "--compress", "30%", "--allocation", "sensitivity",
                       "-o", tmp_path / "s.safetensors")
    assert code == EXIT_OK, err


def test_auto_allocation_is_loss_without_an_evaluator(tmp_path, cli):
    from safetensors import safe_open
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"a.weight": torch.randn(64, 48), "b.weight": torch.randn(80, 64)}, str(plain))
    code, _, err = cli("truncate", plain, "--compress", "25%", "-o", tmp_path / "o.safetensors")
    assert code == EXIT_OK, err
    assert "loss allocation (auto: no evaluator)" in err
    with safe_open(str(tmp_path / "o.safetensors"), "pt") as f:
        assert f.metadata()["rmt_tui.method"] == "compress:25%:loss"
    code, _, err = cli("truncate", plain, "--compress", "25%", "--allocation", "sensitivity", "-o",
                       tmp_path / "s.safetensors")
    assert code == EXIT_EVAL and "--allocation sensitivity evaluates each layer" in err
