"""SVG snapshots of the app at 80×24 and 120×40 (update with: pytest tests/test_snapshots.py --snapshot-update)."""
import pytest
from helpers import finetune_pair

from core.paths import DEFAULT_DEMO_MODEL
from rmt_tui.app import RmtApp
from rmt_tui.session import LayerKey
from rmt_tui.widgets import LayerTree


async def _settled(pilot):
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _analyse_all(pilot):
    await _settled(pilot)
    await pilot.press("a")
    await _settled(pilot)
    pilot.app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_histogram_view(snap_compare, size):
    assert snap_compare(RmtApp([DEFAULT_DEMO_MODEL]), terminal_size=size, run_before=_analyse_all)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_values_view(snap_compare, size):
    async def before(pilot):
        await _analyse_all(pilot)
        pilot.app.query_one("#plot").cycle()
        await pilot.pause()

    assert snap_compare(RmtApp([DEFAULT_DEMO_MODEL]), terminal_size=size, run_before=before)


def test_help_screen(snap_compare):
    async def before(pilot):
        await _settled(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(RmtApp([DEFAULT_DEMO_MODEL]), terminal_size=(120, 40), run_before=before)


DEMOS = [DEFAULT_DEMO_MODEL.parent / f"mlp_bs{bs}.safetensors" for bs in (16, 64, 128, 256, 1024)]


async def _press_settled(pilot, *keys):
    await _settled(pilot)
    for key in keys:
        await pilot.press(key)
        for _ in range(3):  # a key can start a job whose end starts the next
            await _settled(pilot)
    pilot.app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_compare_view(snap_compare, size):
    """fc1 of the five batch-size demo models overlaid (the paper's Fig. 3), with the per-checkpoint table."""
    async def before(pilot):
        await _press_settled(pilot, "c")

    assert snap_compare(RmtApp(DEMOS), terminal_size=size, run_before=before)


def test_compare_values_raw(snap_compare):
    async def before(pilot):
        await _press_settled(pilot, "c", "c", "n")

    assert snap_compare(RmtApp(DEMOS), terminal_size=(120, 40), run_before=before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_grid_view(snap_compare, size):
    async def before(pilot):
        await _press_settled(pilot, "g", "a")

    assert snap_compare(RmtApp(DEMOS), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_delta_view(snap_compare, size, tmp_path):
    base, tuned = finetune_pair(tmp_path)

    async def before(pilot):
        await _press_settled(pilot, "b")
        pilot.app.query_one(LayerTree).reveal(LayerKey(1, "blocks.0.weight"))
        await _press_settled(pilot, "d")

    assert snap_compare(RmtApp([base, tuned]), terminal_size=size, run_before=before)
