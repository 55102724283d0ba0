"""The engine processes: same numbers as core, errors come back as messages, progress streams back, cancel
and close are prompt, and the UI process never imports torch."""
import os
import subprocess
import sys
import threading
import time

import pytest

from core.errors import RmtError
from core.io.checkpoint import open_checkpoint
from core.jobs import AnalyseRequest, EvaluateRequest, SweepRequest
from core.paths import DEFAULT_DEMO_MODEL
from core.progress import Cancelled, CancelToken
from core.scan import AnalysisOptions, analyse_layer
from rmt_tui.engine import ProcessEngine


def analysed(engine, name, options=AnalysisOptions()):
    return engine.call(AnalyseRequest(str(DEFAULT_DEMO_MODEL), name, options))


@pytest.fixture
def engine():
    e = ProcessEngine()
    yield e
    e.close()


def test_process_engine_matches_core(engine):
    ck = open_checkpoint(DEFAULT_DEMO_MODEL)
    ref = analyse_layer(ck, ck.layer("fc2.weight"), AnalysisOptions(use_cache=False))
    got = engine.call(AnalyseRequest(str(DEFAULT_DEMO_MODEL), "fc2.weight", AnalysisOptions(use_cache=False)))
    assert got.layer == ref.layer and got.analysis.methods == ref.analysis.methods
    assert (got.analysis.sv == ref.analysis.sv).all()


def test_errors_come_back_and_the_process_survives(engine, tmp_path):
    with pytest.raises(RmtError, match="no such file"):
        engine.call(AnalyseRequest(str(tmp_path / "missing.pt"), "w", AnalysisOptions()))
    with pytest.raises(RmtError, match="no layer named"):
        engine.call(AnalyseRequest(str(DEFAULT_DEMO_MODEL), "nope", AnalysisOptions()))
    assert analysed(engine, "fc3.weight").layer.name == "fc3.weight"


def test_cancel_stops_waiting_and_close_is_immediate(engine):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        engine.call(AnalyseRequest(str(DEFAULT_DEMO_MODEL), "fc1.weight", AnalysisOptions()), token)
    # The abandoned reply is dropped: the next answer is for the next question.
    assert analysed(engine, "fc2.weight").layer.name == "fc2.weight"
    t = time.perf_counter()
    engine.close()
    assert time.perf_counter() - t < 3
    with pytest.raises(RmtError, match="analysis process stopped"):
        engine.call(AnalyseRequest(str(DEFAULT_DEMO_MODEL), "fc2.weight", AnalysisOptions()))


def test_engine_runs_at_lower_priority_than_the_ui(engine):
    """Analyses are background work: under CPU contention the UI process must win the cores."""
    import os

    from rmt_tui.engine import ENGINE_NICENESS

    engine.call(AnalyseRequest(str(DEFAULT_DEMO_MODEL), "fc3.weight", AnalysisOptions()))  # the child is up
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, engine._proc.pid) == min(mine + ENGINE_NICENESS, 19)


def test_evaluation_and_sweep_run_in_the_engine_with_progress_and_cancel(engine):
    """The same reports as core's, computed in the child; progress arrives; cancel stops it."""
    from core.evaluate.measure import evaluate_truncations
    from core.evaluate.mnist import MnistEvaluator
    from core.io.checkpoint import open_checkpoint

    opts = AnalysisOptions(use_cache=False)
    r = engine.call(AnalyseRequest(str(DEFAULT_DEMO_MODEL), "fc2.weight", opts))
    seen = []
    rep = engine.call(EvaluateRequest(str(DEFAULT_DEMO_MODEL), (r,), methods=opts.methods),
                      progress=lambda *a: seen.append(a))
    local = evaluate_truncations(open_checkpoint(DEFAULT_DEMO_MODEL), [r], MnistEvaluator(), opts.methods)
    assert rep.evaluator == "mnist-mlp" and rep.baseline == local.baseline
    assert {m: o.metrics for m, o in rep.outcomes.items()} == {m: o.metrics for m, o in local.outcomes.items()}
    assert seen[0][:2] == (0, 3) and seen[-1][:2] == (3, 3)
    sweep = engine.call(SweepRequest(str(DEFAULT_DEMO_MODEL), r, ranks=(0, 8, 256)))
    assert [p.rank for p in sweep.points] == [0, 8, 256] and sweep.points[-1].metrics == sweep.baseline
    token = CancelToken()
    t = threading.Timer(0.3, token.cancel)
    t.start()
    with pytest.raises(Cancelled):
        engine.call(SweepRequest(str(DEFAULT_DEMO_MODEL), r, ranks=tuple(range(0, 256, 2))), cancel=token)
    assert engine.call(AnalyseRequest(str(DEFAULT_DEMO_MODEL), "fc3.weight", opts)).layer.name == "fc3.weight"


APP_IN_A_FRESH_PROCESS = """
import asyncio, sys
from core.paths import DEFAULT_DEMO_MODEL
from rmt_tui.app import RmtApp

async def main():
    app = RmtApp([DEFAULT_DEMO_MODEL])
    async with app.run_test(size=(120, 40)) as pilot:
        for key in ("", "e", "s"):  # first: wait for the first layer's analysis
            if key:
                await pilot.press(key)
            for _ in range(600):
                await pilot.pause(0.05)
                if not app.session.jobs and app.selected is not None:
                    break
        o = app.session.opened[0]
        print(sorted(o.evals), sorted(o.sweeps), app.last_error, app.evaluation_process.pid is not None)
    print("torch" in sys.modules)

asyncio.run(main())
"""


def test_the_ui_process_never_imports_torch(tmp_path):
    r = subprocess.run([sys.executable, "-c", APP_IN_A_FRESH_PROCESS], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RMT_TUI_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    results, torch_imported = r.stdout.strip().splitlines()[-2:]
    assert results == "['fc1.weight'] ['fc1.weight'] None True"
    assert torch_imported == "False"
