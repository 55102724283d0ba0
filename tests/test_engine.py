"""The app's analysis process: same numbers as core, errors come back as messages, cancel and close are prompt."""
import time

import pytest

from core.checkpoint import open_checkpoint
from core.errors import RmtError
from core.paths import DEFAULT_DEMO_MODEL
from core.scan import AnalysisOptions, Cancelled, CancelToken, analyse_layer
from rmt_tui.engine import ProcessEngine


@pytest.fixture
def engine():
    e = ProcessEngine()
    yield e
    e.close()


def test_process_engine_matches_core(engine):
    ck = open_checkpoint(DEFAULT_DEMO_MODEL)
    ref = analyse_layer(ck, ck.layer("fc2.weight"), AnalysisOptions(use_cache=False))
    got = engine.analyse(DEFAULT_DEMO_MODEL, "reshape", "fc2.weight", AnalysisOptions(use_cache=False))
    assert got.layer == ref.layer and got.analysis.methods == ref.analysis.methods
    assert (got.analysis.sv == ref.analysis.sv).all()


def test_errors_come_back_and_the_process_survives(engine, tmp_path):
    with pytest.raises(RmtError, match="no such file"):
        engine.analyse(tmp_path / "missing.pt", "reshape", "w", AnalysisOptions())
    with pytest.raises(RmtError, match="no layer named"):
        engine.analyse(DEFAULT_DEMO_MODEL, "reshape", "nope", AnalysisOptions())
    assert engine.analyse(DEFAULT_DEMO_MODEL, "reshape", "fc3.weight", AnalysisOptions()).layer.name == "fc3.weight"


def test_cancel_stops_waiting_and_close_is_immediate(engine):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        engine.analyse(DEFAULT_DEMO_MODEL, "reshape", "fc1.weight", AnalysisOptions(), token)
    # The abandoned reply is dropped: the next answer is for the next question.
    assert engine.analyse(DEFAULT_DEMO_MODEL, "reshape", "fc2.weight", AnalysisOptions()).layer.name == "fc2.weight"
    t = time.perf_counter()
    engine.close()
    assert time.perf_counter() - t < 3
    with pytest.raises(RmtError, match="analysis process stopped"):
        engine.analyse(DEFAULT_DEMO_MODEL, "reshape", "fc2.weight", AnalysisOptions())


def test_engine_runs_at_lower_priority_than_the_ui(engine):
    """Analyses are background work: under CPU contention the UI process must win the cores."""
    import os

    from rmt_tui.engine import ENGINE_NICENESS

    engine.analyse(DEFAULT_DEMO_MODEL, "reshape", "fc3.weight", AnalysisOptions())  # the child is up
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, engine._proc.pid) == min(mine + ENGINE_NICENESS, 19)
