"""Threshold methods are plug-ins: a method declared in one class, registered once, is found by the
report JSON, the CLI's flags and --help, the cache key and the app's panel — with no other edit."""
import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from helpers import panel_text, settle

from core.cache import config_key
from core.paths import DEFAULT_DEMO_MODEL
from core.rmt.methods import METHODS, Param, Threshold, ThresholdMethod, make_methods, register, unregister
from core.rmt.spectrum import MatrixShape
from core.scan import AnalysisOptions
from rmt_tui.cli import EXIT_OK, EXIT_USAGE, main


@dataclass(frozen=True)
class TopShare(ThresholdMethod):
    """Keeps a fixed share of the singular values: a throwaway method for these tests."""

    share: float = 0.1

    name: ClassVar[str] = "top-share"
    label: ClassVar[str] = "top share"
    short: ClassVar[str] = "TS"
    params: ClassVar[tuple[Param, ...]] = (
        Param("share", "--top-share", float, "top-share fraction of values kept", "share", 0.0, 1.0, open_low=True),
    )

    def _fit(self, sv: np.ndarray, shape: MatrixShape) -> Threshold:
        k = max(1, int(self.share * shape.p))
        tau = float(0.5 * (sv[k - 1] + sv[k]))
        return Threshold(float(np.mean(sv[k:] ** 2)) / shape.N, tau, k)


@pytest.fixture
def top_share():
    register(TopShare)
    yield TopShare
    unregister(TopShare.name)


def test_a_registered_method_reports_in_json_with_its_declared_options(top_share, capsys):
    assert main(["report", str(DEFAULT_DEMO_MODEL), "--methods", "bema,top-share", "--top-share", "0.25",
                 "--format", "json", "--no-cache"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["options"]["methods"] == ["bema", "top-share"]
    assert doc["options"]["params"]["top-share"] == {"share": 0.25}
    fc1 = next(layer for layer in doc["layers"] if layer["name"] == "fc1.weight")
    assert fc1["methods"]["top-share"]["rank"] == int(0.25 * fc1["p"])
    assert fc1["methods"]["top-share"]["avew"] is not None and fc1["methods"]["bema"]["rank"] > 0
    # The shared guard ran in the base class: the 10-way head is too small for every method.
    head = next(layer for layer in doc["layers"] if layer["name"] == "fc3.weight")
    assert "too few singular values" in head["methods"]["top-share"]["reason"]


def test_a_registered_method_has_its_flag_in_help_and_its_range_checked(top_share, capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "--top-share" in out and "top-share fraction of values kept in (0, 1]" in out and "top-share" in out
    assert main(["report", str(DEFAULT_DEMO_MODEL), "--methods", "top-share", "--top-share", "0"]) == EXIT_USAGE
    assert "top-share share (--top-share) must be float in (0, 1], got 0.0" in capsys.readouterr().err


def test_a_method_parameter_changes_the_cache_key(top_share):
    a, b = make_methods(["top-share"], **{"top-share": {"share": 0.1}}), make_methods(["top-share"],
                                                                                    **{"top-share": {"share": 0.2}})
    assert config_key(a, "uniform") != config_key(b, "uniform")


def test_two_methods_cannot_own_one_flag():
    @dataclass(frozen=True)
    class Clash(TopShare):
        name: ClassVar[str] = "clash"
        params: ClassVar[tuple[Param, ...]] = (Param("share", "--alpha", float, "clashes with BEMA's α"),)

    with pytest.raises(ValueError, match="flag --alpha is already bema's"):
        register(Clash)
    assert "clash" not in METHODS


async def test_a_registered_method_gets_a_column_in_the_panel(top_share):
    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine

    app = RmtApp([DEFAULT_DEMO_MODEL], options=AnalysisOptions.make(("bema", "top-share"), use_cache=False),
                 engine=InlineEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        text = panel_text(app)
        result = app.session.result(app.selected)
        assert "TS" in text and f"{result.analysis.methods['top-share'].rank}" in text
        assert [m for m in result.analysis.methods] == ["bema", "top-share"]
