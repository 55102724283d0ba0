"""Drive the real app with Pilot: select, analyse, analyse all, cancel, evaluate, sweep, find, help, quit."""
import time

import pytest
import torch
from helpers import panel_text, settle
from safetensors.torch import save_file

from core.evaluate.outcomes import EvaluatorChoice
from core.io.checkpoint import open_checkpoint
from core.jobs import AnalyseRequest
from core.paths import DEFAULT_DEMO_MODEL
from core.scan import analyse_checkpoint
from rmt_tui.app import RmtApp
from rmt_tui.engine import InlineEngine
from rmt_tui.messages import LayerAnalysed
from rmt_tui.plots import VIEWS
from rmt_tui.screens import ConfirmQuit, FindScreen, HelpScreen, OpenScreen
from rmt_tui.session import ALL_LAYERS, LayerKey
from rmt_tui.widgets import LayerTree, SpectrumPlot


def leaf_text(app, name, ckpt=0) -> str:
    return str(app.query_one(LayerTree).leaves[LayerKey(ckpt, name)].label)


class SlowEngine(InlineEngine):
    """The real analysis, in the worker thread, slowed to 0.2 s a layer so a cancel or a quit lands mid-way."""

    def call(self, request, *args, **kw):
        if isinstance(request, AnalyseRequest):
            time.sleep(0.2)
        return super().call(request, *args, **kw)


@pytest.fixture
def many_layers(tmp_path):
    """Twelve 300×200 layers."""
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "many.safetensors"
    save_file({f"blocks.{i}.weight": torch.randn(300, 200, generator=g) for i in range(12)}, str(path))
    return path


async def test_select_shows_the_core_record(tmp_path):
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.selected == LayerKey(0, "fc1.weight")
        expected = next(r for r in analyse_checkpoint(open_checkpoint(DEFAULT_DEMO_MODEL))
                        if r.layer.name == "fc1.weight").analysis.methods
        text = panel_text(app)
        assert "fc1.weight" in text and "p=512  N=784" in text
        assert f"{expected['bema'].rank}" in text and f"{expected['broadening'].rank}" in text
        assert f"B{expected['bema'].rank}" in leaf_text(app, "fc1.weight")
        assert app.query_one(SpectrumPlot).result.analysis.methods == expected
        assert app.sub_title == "mlp_bs16.safetensors"


async def test_navigation_analyse_all_and_views():
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("j", "j", "j")  # fc2 group, fc2.bias, fc2.weight
        await settle(app, pilot)
        assert app.selected == LayerKey(0, "fc2.weight")
        assert app.session.result(app.selected) is not None
        await pilot.press("k")
        await settle(app, pilot)
        assert app.selected == LayerKey(0, "fc2.bias")
        assert "not analysed: 1-D" in panel_text(app)
        assert "\\x0a" not in panel_text(app)  # a line break in the panel is a line break, not an escape
        await pilot.press("a")
        await settle(app, pilot)
        o = app.session.opened[0]
        assert set(o.results) == {l.name for l in o.ckpt.layers}
        assert "B–" in leaf_text(app, "fc3.weight")  # p = 10: BEMA not applicable, shown as such
        plot = app.query_one(SpectrumPlot)
        seen = []
        for _ in VIEWS:
            await pilot.press("v")
            await pilot.pause()
            seen.append(plot.view)
        assert seen == ["values", "sweep", "whitened", "histogram"]


async def test_hidden_views_are_drawn_ahead_so_cycling_views_draws_nothing(monkeypatch):
    import rmt_tui.widgets as widgets

    drawn = []
    for name in ("draw_histogram", "draw_values"):
        real = getattr(widgets, name)
        monkeypatch.setattr(widgets, name, lambda *a, _r=real, _n=name, **k: drawn.append(_n) or _r(*a, **k))
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        plot = app.query_one(SpectrumPlot)
        await pilot.pause(plot.PREDRAW_DELAY + 0.3)
        assert sorted(drawn) == ["draw_histogram", "draw_values"]  # the values view, drawn before it is shown
        await pilot.press("v")
        await pilot.pause()
        assert plot.view == "values" and "sorted singular values" in plot.render().plain
        assert len(drawn) == 2  # shown from the kept drawing
        await pilot.resize_terminal(100, 30)
        await pilot.pause(plot.PREDRAW_DELAY + 0.3)
        assert "draw_histogram" in drawn[2:]  # a new size: the hidden view is drawn again ahead of time
        n = len(drawn)
        await pilot.press("v", "v", "v")  # the sweep and whitened views (neither computed yet), then the histogram
        await pilot.pause()
        assert plot.view == "histogram" and "histogram of s" in plot.render().plain
        assert len(drawn) == n


async def test_cancel_stops_analyse_all_and_never_paints_stale_results(many_layers):
    app = RmtApp([many_layers], engine=SlowEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("a")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await settle(app, pilot)
        o = app.session.opened[0]
        assert len(o.results) < 12
        assert app.session.jobs == {}
        n = len(o.results)
        await pilot.pause(0.5)
        assert len(o.results) == n  # nothing arrives after the cancel


async def test_result_for_another_layer_updates_tree_not_plot():
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        plot = app.query_one(SpectrumPlot)
        shown = plot.result
        ck = app.session.opened[0].ckpt
        other = next(r for r in analyse_checkpoint(ck) if r.layer.name == "fc2.weight")
        app.post_message(LayerAnalysed(LayerKey(0, "fc2.weight"), other))
        await pilot.pause()
        assert plot.result is shown
        assert f"B{other.analysis.methods['bema'].rank}" in leaf_text(app, "fc2.weight")


async def test_evaluate_layer_and_all_and_sweep():
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("e")
        await settle(app, pilot)
        o = app.session.opened[0]
        rep = o.evals["fc1.weight"]
        assert rep.baseline["accuracy"] > 0.97 and set(rep.outcomes) == {"bema", "broadening"}
        text = panel_text(app)
        assert "evaluation: this layer" in text and f"{rep.baseline['accuracy']:.4f}" in text
        await pilot.press("E")
        await settle(app, pilot)
        assert set(o.evals[ALL_LAYERS].outcomes["bema"].ranks) == {"fc1.weight", "fc2.weight"}
        assert "evaluation: all layers" in panel_text(app)
        await pilot.press("s")
        await settle(app, pilot)
        plot = app.query_one(SpectrumPlot)
        assert plot.view == "sweep" and plot.sweep is o.sweeps["fc1.weight"]
        assert plot.sweep.points[-1].metrics == plot.sweep.baseline
        assert "accuracy and Avew vs kept rank" in str(plot.render())


async def test_find_help_and_palette():
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("slash")
        await pilot.pause()
        assert isinstance(app.screen, FindScreen)
        await pilot.press(*"fc2.w", "enter")
        await settle(app, pilot)
        assert app.selected == LayerKey(0, "fc2.weight")
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        listed = {k for k, _ in app.screen.rows}
        assert {"a", "e", "E", "s", "v", "/", "o", "esc", "?", "q", "j / k, ↓ / ↑", "ctrl+p"} <= listed
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Go to fc3.weight" in titles and any(t.startswith("Analyse every layer") for t in titles)


async def test_quit_asks_while_work_runs_and_exits_promptly(many_layers):
    app = RmtApp([many_layers], engine=SlowEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("a")
        await pilot.pause(0.2)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmQuit) and app.is_running
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
    assert app.session.jobs == {} and not app.is_running


async def test_quit_without_work_exits_at_once():
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running


async def test_unreadable_path_offers_to_open_another(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 3)
    app = RmtApp([bad])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, OpenScreen)
        assert "broken.safetensors" in str(app.screen.query_one("#open-error").render())
        inp = app.screen.query_one("Input")
        inp.value = str(tmp_path / "missing.pt")
        await pilot.press("enter")
        await pilot.pause()
        assert "no such file" in str(app.screen.query_one("#open-error").render())
        inp.value = str(DEFAULT_DEMO_MODEL)
        await pilot.press("enter")
        await settle(app, pilot)
        assert not isinstance(app.screen, OpenScreen)
        assert app.selected == LayerKey(0, "fc1.weight")


async def test_evaluator_failure_is_shown_and_the_app_keeps_running(tmp_path, many_layers):
    ev = tmp_path / "ev.py"
    ev.write_text("def evaluate(sd):\n    raise RuntimeError('dataset unavailable')\n")
    app = RmtApp([many_layers], evaluator=EvaluatorChoice(str(ev)))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("e")
        await settle(app, pilot)
        assert "dataset unavailable" in panel_text(app)
        assert app.is_running and app.session.jobs == {}
    no_eval = RmtApp([many_layers])
    async with no_eval.run_test(size=(120, 40)) as pilot:
        await settle(no_eval, pilot)
        await pilot.press("s")
        await settle(no_eval, pilot)
        assert "--evaluator" in panel_text(no_eval)


async def test_narrow_terminal_moves_the_panel_below(monkeypatch):
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.query_one("#main").has_class("narrow")
        panel, plot = app.query_one("#side"), app.query_one(SpectrumPlot)
        assert panel.region.y >= plot.region.bottom and panel.region.height > 0
    wide = RmtApp([DEFAULT_DEMO_MODEL])
    async with wide.run_test(size=(140, 40)) as pilot:
        await settle(wide, pilot)
        assert not wide.query_one("#main").has_class("narrow")


async def test_no_color_plot_has_no_colour_codes(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.no_color
        text = app.query_one(SpectrumPlot).render()
        assert not any(span.style and getattr(span.style, "color", None) for span in text.spans)


async def test_two_checkpoints_side_by_side():
    others = sorted(DEFAULT_DEMO_MODEL.parent.glob("mlp_bs1024.safetensors"))
    app = RmtApp([DEFAULT_DEMO_MODEL, *others])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert len(app.session.opened) == 2
        app.query_one(LayerTree).reveal(LayerKey(1, "fc1.weight"))
        await settle(app, pilot)
        assert app.selected == LayerKey(1, "fc1.weight")
        assert app.session.result(LayerKey(1, "fc1.weight")).analysis.sv.size == 512


async def test_footer_keys_do_not_accumulate(many_layers):
    """Textual's Footer rebuilds its keys on every bindings change and kept the old ones alive
    (a soak grew the UI by 190 MB in ten minutes); moving and starting/cancelling work must not."""
    import gc

    from textual.widgets._footer import FooterKey

    app = RmtApp([many_layers], engine=SlowEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        for i in range(30):
            await pilot.press("j" if i % 3 else "k")
            await pilot.press("a" if i % 2 else "escape")
        await pilot.press("escape")
        await settle(app, pilot)
        gc.collect()
        assert sum(type(o) is FooterKey for o in gc.get_objects()) <= 2 * len(app.BINDINGS)


async def test_every_method_shows_in_the_panel_and_the_palette_chooses_them():
    """Five methods: the panel lists each (a row per method), the tree carries the first two, the
    plots mark every τ; the palette removes a method, turns the noise diagnosis on, and everything
    is analysed again with the new choice."""
    from core.scan import AnalysisOptions

    methods = ("bema", "screenot", "broadening", "gavish-donoho", "shuffle")
    app = RmtApp([DEFAULT_DEMO_MODEL], options=AnalysisOptions.make(methods, use_cache=False), engine=InlineEngine())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        r = app.session.result(app.selected)
        text = panel_text(app)
        for label in ("BEMA", "SN", "GB", "GD", "SH"):
            assert label in text
        assert f"{r.analysis.methods['shuffle'].rank}" in text and "empirical cosines" in text
        leaf = app.query_one(LayerTree).leaves[app.selected].label.plain
        assert f"B{r.analysis.methods['bema'].rank}" in leaf and f"S{r.analysis.methods['screenot'].rank}" in leaf
        assert "G" not in leaf.split("fc1.weight")[-1]  # the third method is in the panel only
        titles = {c.title: c for c in app.get_system_commands(app.screen)}
        assert "Methods: remove ScreeNOT" in titles and "Noise diagnosis: on" in titles
        titles["Methods: remove ScreeNOT"].callback()
        await settle(app, pilot, rounds=2)
        assert app.options.methods == ("bema", "broadening", "gavish-donoho", "shuffle")
        assert "screenot" not in app.session.result(app.selected).analysis.methods
        {c.title: c for c in app.get_system_commands(app.screen)}["Noise diagnosis: on"].callback()
        await settle(app, pilot, rounds=2)
        noise = app.session.result(app.selected).analysis.noise
        assert noise is not None and f"({noise.model}: KS" in panel_text(app)
        leaf = app.query_one(LayerTree).leaves[app.selected].label.plain
        assert f"{ {'mp': 'm', 'heteroscedastic': 'h', 'correlated': 'c', 'heavy-tailed': 't'}[noise.model]} B" in leaf


async def test_braille_curves_from_the_palette():
    """The palette's "Plot curves: braille" redraws the MP fits in braille dots (finer), and back."""
    app = RmtApp([DEFAULT_DEMO_MODEL], engine=InlineEngine(), braille=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        plot = app.query_one(SpectrumPlot)

        def dots() -> int:
            return sum(0x2801 <= ord(ch) <= 0x28FF for ch in plot.render().plain)

        before = dots()
        {c.title: c for c in app.get_system_commands(app.screen)}["Plot curves: braille (finer)"].callback()
        await pilot.pause()
        assert plot.braille and dots() > before + 20
        {c.title: c for c in app.get_system_commands(app.screen)}["Plot curves: markers"].callback()
        await pilot.pause()
        assert not plot.braille and dots() == before
