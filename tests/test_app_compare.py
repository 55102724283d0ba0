"""Several checkpoints in the app: compare overlays, trajectory, the grid, and deltas against a marked base."""
from functools import partial

from helpers import finetune_pair, panel_text
from helpers import settle as settle_rounds

from core.io.checkpoint import open_checkpoint
from core.paths import DEMO_DIR
from core.scan import analyse_checkpoint
from rmt_tui.app import RmtApp
from rmt_tui.engine import InlineEngine
from rmt_tui.grid import GridScreen
from rmt_tui.session import LayerKey
from rmt_tui.widgets import LayerTree, SpectrumPlot

BATCH_SIZES = (16, 64, 128, 256, 1024)
DEMOS = [DEMO_DIR / f"mlp_bs{bs}.safetensors" for bs in BATCH_SIZES]


settle = partial(settle_rounds, rounds=3)  # a finished job can start the next (a compare after a selection)


def ranks(path, name="fc1.weight"):
    r = next(r for r in analyse_checkpoint(open_checkpoint(path)) if r.layer.name == name)
    return {m: x.rank for m, x in r.analysis.methods.items()}


async def test_compare_views_overlay_every_checkpoint():
    app = RmtApp(DEMOS, engine=InlineEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        plot = app.query_one(SpectrumPlot)
        assert plot.compare is not None and "compare-density" in plot.views()
        await pilot.press("c")
        await settle(app, pilot)
        assert plot.view == "compare-density"
        assert [a is not None for a in plot.compare.analyses] == [True] * 5
        assert plot.compare.short == ("16", "64", "128", "256", "1024")
        text = panel_text(app)
        for bs, path in zip(BATCH_SIZES, DEMOS):
            want = ranks(path)
            assert f"{want['bema']}" in text and f"{want['broadening']}" in text, (bs, want)
        line = next(l for l in text.splitlines() if l.strip().startswith("1024"))
        assert str(ranks(DEMOS[-1])["bema"]) in line
        await pilot.press("c")
        assert plot.view == "compare-values"
        assert plot.normalise  # the default with three or more checkpoints
        await pilot.pause()
        assert "÷ own edge s₊" in str(plot.render())
        await pilot.press("n")
        await pilot.pause()
        assert not plot.normalise and "÷ own edge s₊" not in str(plot.render())
        await pilot.press("t")
        await pilot.pause()
        assert plot.view == "trajectory" and "checkpoint" in str(plot.render())
        await pilot.press("v")  # the cycle goes on past the compare views, back to the histogram
        assert plot.view == "histogram"


async def test_one_checkpoint_has_no_compare_keys():
    app = RmtApp(DEMOS[:1], engine=InlineEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert not app.check_action("compare", ()) and not app.check_action("grid", ())
        await pilot.press("c")
        assert app.query_one(SpectrumPlot).view == "histogram"
        assert "compare-density" not in app.query_one(SpectrumPlot).views()


async def test_grid_navigates_and_opens_a_layer():
    app = RmtApp(DEMOS, engine=InlineEngine())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("g")
        await pilot.pause()
        grid = app.screen
        assert isinstance(grid, GridScreen) and [r.key for r in grid.rows] == ["fc1.weight", "fc2.weight",
                                                                              "fc3.weight"]
        await pilot.press("a")
        await settle(app, pilot)
        from textual.widgets import DataTable

        table = grid.query_one(DataTable)
        want = ranks(DEMOS[2], "fc2.weight")
        assert str(table.get_cell("1", "2")).startswith(f"{want['bema']}/{want['broadening']}")
        assert str(table.get_cell("2", "0")) == "–/–"  # fc3: too small for either method
        await pilot.press("l", "j")  # from (fc1, bs16) to (fc2, bs64)
        await pilot.press("enter")
        await settle(app, pilot)
        assert not isinstance(app.screen, GridScreen)
        assert app.selected == LayerKey(1, "fc2.weight")


async def test_delta_against_a_marked_base(tmp_path):
    base, tuned = finetune_pair(tmp_path)
    app = RmtApp([base, tuned], engine=InlineEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.selected.ckpt == 0
        assert not app.check_action("delta", ())
        await pilot.press("b")
        assert app.session.base == 0 and "(base)" in app.sub_title
        tree = app.query_one(LayerTree)
        tree.reveal(LayerKey(1, "blocks.0.weight"))
        await settle(app, pilot)
        assert app.check_action("delta", ())
        await pilot.press("d")
        await settle(app, pilot)
        plot = app.query_one(SpectrumPlot)
        assert plot.view == "delta"
        d = app.session.deltas[0, LayerKey(1, "blocks.0.weight")]
        assert d.status == "ok" and {m: r.rank for m, r in d.analysis.methods.items()} == {"bema": 6,
                                                                                          "broadening": 6}
        text = panel_text(app)
        assert "ΔW = tuned − base" in text and f"r90={d.energy_rank_90}" in text and "stable rank" in text
        assert "ΔW = tuned − base" in str(plot.render())
        # A layer fine-tuning left alone, and one the base does not have.
        tree.reveal(LayerKey(1, "blocks.1.weight"))
        await settle(app, pilot)
        assert app.session.deltas[0, LayerKey(1, "blocks.1.weight")].status == "unchanged"
        assert "unchanged" in panel_text(app)
        tree.reveal(LayerKey(1, "head.weight"))
        await settle(app, pilot)
        assert "base.safetensors (base) has no such layer" in str(plot.render())
        tree.reveal(LayerKey(1, "blocks.0.weight"))
        await settle(app, pilot)
        await pilot.press("b")  # the tuned checkpoint becomes the base: no delta for its own layers
        await settle(app, pilot)
        assert app.session.base == 1 and plot.view == "histogram" and "delta" not in plot.views()
        await pilot.press("b")  # pressed again on the base: deltas are off
        assert app.session.base is None and "(base)" not in app.sub_title
