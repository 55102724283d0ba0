"""SPEC §8 test vectors and seeded statistical checks of BEMA and broadening."""
import math

import numpy as np
import pytest
import torch
from helpers import planted
from hypothesis import given, settings
from hypothesis import strategies as st

from core.rmt.analysis import analyse_matrix, analyse_spectrum
from core.rmt.cosines import squared_cosines
from core.rmt.methods import Bema, Broadening, NotApplicable, make_methods
from core.rmt.mp import MarchenkoPastur
from core.rmt.spectrum import MatrixShape, singular_values

P, N = 784, 1024
SHAPE = MatrixShape(N, P)
SPIKES = np.array([4.355903, 5.957031, 10.850694, 17.813477, 26.796250])
THETAS = np.array([1.5, 2.0, 3.0, 4.0, 5.0])


def deterministic_sv(spikes=None):
    lam = MarchenkoPastur(P / N).ppf((np.arange(1, P + 1) - 0.5) / P)
    if spikes is not None:
        lam[-len(spikes):] = spikes
    return np.sort(np.sqrt(lam * N))[::-1]


def test_bema_on_deterministic_mp_spectrum():
    t = Bema().fit(deterministic_sv(), SHAPE)
    assert t.sigma2 == pytest.approx(1.0, rel=1e-5)
    assert t.diagnostics["lambda_plus"] == pytest.approx(3.526336, rel=1e-5)
    assert t.threshold == pytest.approx(60.091328, rel=1e-5)
    assert t.rank == 0


def test_bema_finds_the_five_spikes():
    t = Bema().fit(deterministic_sv(SPIKES), SHAPE)
    assert t.rank == 5
    assert t.sigma2 == pytest.approx(1.0, rel=1e-5)


def test_spike_positions_follow_bgn_forward_map():
    c = P / N
    z = np.sqrt((1 + THETAS**2) * (c + THETAS**2)) / THETAS
    assert z**2 == pytest.approx(SPIKES, rel=1e-5)


def test_cosines_test_vector():
    th = np.array([5.0, 4.0, 3.0, 2.0, 1.5])
    small2, large2 = squared_cosines(th, P / N)
    assert np.sqrt(small2) == pytest.approx([0.984427, 0.975438, 0.955452, 0.893969, 0.795786], rel=1e-5)
    assert np.sqrt(large2) == pytest.approx([0.979980, 0.968691, 0.944189, 0.872765, 0.766555], rel=1e-5)
    assert np.sqrt(small2).mean() == pytest.approx(0.921014, rel=1e-5)
    assert np.mean(np.sqrt(small2 * large2)) == pytest.approx(0.840397, rel=1e-5)


def test_avew_from_spiked_spectrum_recovers_the_test_vector():
    # The spikes sit exactly where θ = 5 … 1.5 land, so θ̂ inverts them and Avew is the SPEC value.
    a = analyse_spectrum(deterministic_sv(SPIKES), SHAPE, [Bema()])
    r = a.methods["bema"]
    assert r.rank == 5
    assert r.avew == pytest.approx(0.840397, rel=1e-4)
    cos = a.cosines("bema")
    # 1024 × 784: m > n, so the right vectors (R^784) are on the small side.
    assert cos.right[:5] == pytest.approx([0.984427, 0.975438, 0.955452, 0.893969, 0.795786], rel=1e-4)
    assert r.avew_right == pytest.approx(0.921014, rel=1e-4)


def test_bema_tau_with_exact_sigma_other_shape():
    sh = MatrixShape(512, 1024)
    law = MarchenkoPastur(sh.c)
    lam = law.ppf((np.arange(1, sh.p + 1) - 0.5) / sh.p)
    t = Bema().fit(np.sqrt(lam * sh.N)[::-1], sh)
    assert t.threshold == pytest.approx(54.722438, rel=1e-5)


def test_spec_random_check():
    W = np.random.default_rng(0).standard_normal((1024, 784))
    a = analyse_matrix(W)
    b, g = a.methods["bema"], a.methods["broadening"]
    assert b.sigma2 == pytest.approx(1.0009, abs=2e-4)
    assert b.threshold == pytest.approx(60.12, abs=0.01)
    assert b.rank == 0 and g.rank == 0
    assert g.sigma2 == pytest.approx(0.999, abs=2e-3)
    assert b.avew is None  # undefined at ŝ = 0


SHAPES = [(500, 500), (600, 400), (400, 600), (1000, 250), (250, 1000)]


@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("sigma", [0.02, 1.0, 30.0])
def test_pure_noise_sigma_within_one_percent(m, n, sigma):
    ranks = {"bema": [], "broadening": []}
    for seed in range(4):
        W = sigma * np.random.default_rng(seed).standard_normal((m, n)).astype(np.float32)
        a = analyse_matrix(W)
        for name, r in a.methods.items():
            assert r.sigma2 == pytest.approx(sigma**2, rel=0.01), (name, seed)
            ranks[name].append(r.rank)
    for name, rs in ranks.items():
        assert sum(r == 0 for r in rs) >= 3, (name, rs)


def test_bema_false_positive_rate_near_beta():
    zeros = sum(Bema().fit(singular_values(np.random.default_rng(100 + s).standard_normal((400, 300))),
                           MatrixShape(400, 300)).rank == 0 for s in range(60))
    assert 45 <= zeros <= 60  # β = 0.1 → about 90 %


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("transpose", [False, True])
def test_planted_rank(seed, transpose):
    W, _, _ = planted(1024, 784, [5, 4, 3, 2, 1.5], seed=seed)
    a = analyse_matrix(W.T if transpose else W)
    assert a.methods["bema"].rank == 5
    assert a.methods["broadening"].rank in (5, 6)


def test_two_pass_broadening_is_exactly_right_where_one_pass_is_not():
    """Outliers pull a single fit's σ̂ down; the refit without them must not over-count."""
    for seed in range(6):
        W, _, _ = planted(1024, 784, [5, 4, 3, 2, 1.5], seed=seed)
        t = Broadening().fit(singular_values(W), MatrixShape(1024, 784))
        assert t.rank == 5 and t.diagnostics["passes"] >= 2


@pytest.mark.parametrize("m,n", [(1024, 784), (784, 1024), (600, 600)])
def test_avew_tracks_ground_truth(m, n):
    thetas = [5, 4, 3, 2, 1.5]
    W, A, B = planted(m, n, thetas, seed=3)
    a = analyse_matrix(W)
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    true_left = np.abs(np.sum(U[:, :5] * A, axis=0))
    true_right = np.abs(np.sum(Vt[:5].T * B, axis=0))
    true = true_left * true_right
    for name, r in a.methods.items():
        assert r.rank == 5
        assert r.avew == pytest.approx(true.mean(), abs=0.05), name
        assert r.avew_left == pytest.approx(true_left.mean(), abs=0.05)
        assert r.avew_right == pytest.approx(true_right.mean(), abs=0.05)
        cos = a.cosines(name)
        assert np.max(np.abs(cos.product[:5] - true)) < 0.06


def test_avew_curve_and_weighting():
    W, _, _ = planted(600, 400, [6, 4, 3], seed=1)
    a = analyse_matrix(W)
    curve = a.avew_curve("bema")
    assert curve.shape == (400,)
    k = a.methods["bema"].rank
    assert curve[k - 1] == pytest.approx(a.methods["bema"].avew)
    assert np.all(np.diff(curve[k:]) <= 1e-12)  # noise components only dilute it
    aw = analyse_matrix(W, weighting="sv")
    # s-weighting favours the strongest (best-aligned) component.
    assert aw.methods["bema"].avew > a.methods["bema"].avew


@pytest.mark.parametrize("method", ["bema", "broadening"])
def test_invariance_transpose_and_scale(method):
    W, _, _ = planted(700, 300, [4, 2.5], seed=2)
    base = analyse_matrix(W, make_methods([method])).methods[method]
    tr = analyse_matrix(W.T, make_methods([method])).methods[method]
    assert (tr.rank, tr.sigma2, tr.threshold) == pytest.approx((base.rank, base.sigma2, base.threshold), rel=1e-6)
    for k in [1e-3, 7.0]:
        sc = analyse_matrix(W * k, make_methods([method])).methods[method]
        assert sc.rank == base.rank
        assert sc.sigma2 == pytest.approx(base.sigma2 * k * k, rel=1e-6)
        assert sc.threshold == pytest.approx(base.threshold * k, rel=1e-6)
        assert sc.avew == pytest.approx(base.avew, rel=1e-6)


def test_fit_quality_flags_a_non_mp_bulk():
    noise = analyse_matrix(np.random.default_rng(0).standard_normal((800, 500)))
    assert all(r.ks < 0.05 and not r.poor_fit for r in noise.methods.values())
    # Heavy-tailed entries: not a Marchenko–Pastur bulk.
    heavy = analyse_matrix(np.random.default_rng(0).standard_cauchy((800, 500)))
    assert any(r.poor_fit for r in heavy.methods.values())


def test_not_applicable_cases_have_reasons():
    small = analyse_matrix(np.random.default_rng(0).standard_normal((20, 40)))
    assert small.methods["bema"].reason.startswith("p = 20 < 30")
    assert small.methods["broadening"].reason.startswith("p = 20 < 30")
    assert analyse_matrix(np.zeros((64, 64))).methods["bema"].reason == "all-zero matrix"
    rank1 = np.outer(np.arange(1, 65.0), np.ones(50))
    assert "rank 1 < 2" in analyse_matrix(rank1).methods["broadening"].reason
    bad = np.ones((64, 64))
    bad[3, 3] = np.nan
    nan = analyse_matrix(bad)
    assert nan.reason.startswith("non-finite") and nan.sv.size == 0
    assert all(not r.ok for r in nan.methods.values())
    with pytest.raises(NotApplicable):
        Broadening().fit(np.ones(5), MatrixShape(5, 8))


def test_parameters_are_settable_and_validated():
    W, _, _ = planted(600, 400, [3], seed=0)
    sv, sh = singular_values(W), MatrixShape(600, 400)
    loose, strict = Bema(beta=0.1).fit(sv, sh), Bema(beta=0.01).fit(sv, sh)
    assert strict.threshold > loose.threshold
    assert Bema(alpha=0.1).fit(sv, sh).sigma2 != pytest.approx(loose.sigma2, rel=1e-9)
    assert Broadening(a=8, delta=0.05).fit(sv, sh).rank == 1
    assert Bema(beta=0.2).fit(sv, sh).threshold < loose.threshold  # any β: TW quantile computed
    for bad in [dict(alpha=0.6), dict(beta=0.7), dict(beta=0.0)]:
        with pytest.raises(ValueError):
            Bema(**bad)
    with pytest.raises(ValueError):
        Broadening(a=0)
    with pytest.raises(ValueError):
        make_methods(["nope"])


def test_float32_and_float64_agree():
    W, _, _ = planted(512, 384, [4, 2], seed=5)
    a64 = analyse_matrix(W).methods
    a32 = analyse_matrix(W.astype(np.float32)).methods
    for name in a64:
        assert a32[name].rank == a64[name].rank
        assert a32[name].sigma2 == pytest.approx(a64[name].sigma2, rel=1e-4)
        assert math.isclose(a32[name].avew, a64[name].avew, rel_tol=1e-4)


@pytest.mark.parametrize("case", ["tall", "wide", "square", "rank-deficient", "row-blocks", "wide-row-blocks",
                                  "strided", "float64", "float64-huge"])
def test_cpu_values_match_a_float64_svd(case):
    """The CPU path (float64 Gram eigenvalues, in blocks of rows) against a float64
    SVD: far inside float32 gesdd's own ~1e-6·s₁, and ~√ε₆₄·s₁ for values that are exactly zero."""
    import scipy.linalg

    from core.rmt.spectrum import gram_block_rows

    rng = np.random.default_rng(3)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w = {"tall": lambda: f32(784, 512), "wide": lambda: f32(512, 784), "square": lambda: f32(300, 300),
         "rank-deficient": lambda: (f32(400, 30) @ f32(30, 400)),
         "row-blocks": lambda: f32(gram_block_rows(64) * 2 + 17, 64),
         "wide-row-blocks": lambda: f32(64, gram_block_rows(64) + 5),
         "strided": lambda: f32(600, 900)[::2, ::3], "float64": lambda: rng.standard_normal((200, 120)),
         "float64-huge": lambda: rng.standard_normal((200, 120)) * 1e200}[case]()
    ref = scipy.linalg.svd(w.astype(np.float64), compute_uv=False)
    s = singular_values(w)
    assert s.shape == ref.shape and s.dtype == np.float64 and np.all(np.diff(s) <= 0)
    tol = 1e-7 if case == "rank-deficient" else 1e-11
    assert np.max(np.abs(s - ref)) < tol * ref[0]


def test_torch_path_used_for_gpus_matches_cpu_path():
    from core.rmt.spectrum import torch_singular_values

    W, _, _ = planted(600, 900, [5, 3], seed=8)
    ref = singular_values(W.astype(np.float32))
    s = torch_singular_values(torch.from_numpy(W), "cpu")
    assert np.max(np.abs(s - ref)) < 1e-5 * ref[0]
    a_gpu_style = analyse_spectrum(s, MatrixShape(600, 900))
    a_cpu = analyse_spectrum(ref, MatrixShape(600, 900))
    for name in a_cpu.methods:
        assert a_gpu_style.methods[name].rank == a_cpu.methods[name].rank
        assert a_gpu_style.methods[name].sigma2 == pytest.approx(a_cpu.methods[name].sigma2, rel=1e-4)


def test_device_resolution():
    from core.device import resolve_device
    from core.errors import RmtError

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RmtError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(RmtError):
        resolve_device("tpu")


@settings(max_examples=12, deadline=None)
@given(m=st.integers(40, 160), n=st.integers(40, 160), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_property_orientation_and_scale_invariance(m, n, scale, seed):
    W = np.random.default_rng(seed).standard_normal((m, n))
    base = analyse_matrix(W).methods
    for other, k in ((analyse_matrix(W.T).methods, 1.0), (analyse_matrix(W * scale).methods, scale)):
        for name, r in base.items():
            o = other[name]
            assert o.rank == r.rank and o.reason == r.reason
            if r.ok:
                assert o.sigma2 == pytest.approx(r.sigma2 * k * k, rel=1e-6)
                assert o.threshold == pytest.approx(r.threshold * k, rel=1e-6)
