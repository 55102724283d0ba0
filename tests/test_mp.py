import numpy as np
import pytest
from scipy.integrate import quad

from core.rmt.mp import TRACY_WIDOM_1, MarchenkoPastur, tracy_widom_quantile
from core.rmt.spectrum import MatrixShape, mp_edge


@pytest.mark.parametrize("c", [0.05, 0.3, 0.765625, 1.0])
@pytest.mark.parametrize("sigma2", [1.0, 0.01, 7.0])
def test_pdf_integrates_to_one_and_cdf_matches_quadrature(c, sigma2):
    mp = MarchenkoPastur(c, sigma2)
    total, _ = quad(mp.pdf, mp.lower, mp.upper, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)
    for x in np.linspace(mp.lower, mp.upper, 7)[1:-1]:
        assert mp.cdf(x) == pytest.approx(quad(mp.pdf, mp.lower, x, limit=200)[0], abs=1e-7)


@pytest.mark.parametrize("c", [0.1, 0.765625, 1.0])
def test_ppf_inverts_cdf(c):
    mp = MarchenkoPastur(c, 2.5)
    q = np.linspace(0.0005, 0.9995, 501)
    assert np.max(np.abs(mp.cdf(mp.ppf(q)) - q)) < 1e-12
    assert mp.ppf(0.0) == pytest.approx(mp.lower) and mp.ppf(1.0) == pytest.approx(mp.upper)


def test_singular_value_law_edges_and_density():
    # SPEC §8 MP edges for σ = 1.
    for (m, n), edge in {(1024, 784): 60.0, (512, 512): 45.254834, (300, 784): 45.320508}.items():
        sh = MatrixShape(m, n)
        law = MarchenkoPastur(sh.c).singular_values(sh.N)
        assert law.upper == pytest.approx(edge, rel=1e-7)
        assert mp_edge(1.0, sh) == pytest.approx(edge, rel=1e-7)
        assert quad(law.pdf, law.lower, law.upper, limit=200)[0] == pytest.approx(1.0, abs=1e-6)
        assert law.cdf(law.ppf(0.3)) == pytest.approx(0.3, abs=1e-12)


def test_parameters_are_validated():
    with pytest.raises(ValueError):
        MarchenkoPastur(1.5)
    with pytest.raises(ValueError):
        MarchenkoPastur(0.5, -1.0)
    with pytest.raises(ValueError):
        MarchenkoPastur(0.5).ppf(1.2)


def test_tracy_widom_table_and_painleve_computation():
    from core.rmt.mp import _tw1_quantile

    assert tracy_widom_quantile(0.9) == 0.450143
    for level, t in TRACY_WIDOM_1.items():  # the computed law reproduces the SPEC's table
        assert _tw1_quantile(level) == pytest.approx(t, abs=1e-6)
    assert tracy_widom_quantile(0.5) == pytest.approx(-1.2686, abs=1e-3)  # the TW1 median
    assert tracy_widom_quantile(0.8) < tracy_widom_quantile(0.9) < tracy_widom_quantile(0.95)
    with pytest.raises(ValueError):
        tracy_widom_quantile(1.0)
