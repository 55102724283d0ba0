"""SVG snapshots of the app at 80×24 and 120×40 (update with: pytest tests/test_snapshots.py --snapshot-update)."""
import pytest

from core.paths import DEFAULT_DEMO_MODEL
from rmt_tui.app import RmtApp


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
