"""The app's state without Textual: what is open, what is known, which jobs run, and the base/delta rules."""
import numpy as np
import pytest
from helpers import finetune_pair
from safetensors.numpy import save_file

from core.errors import CheckpointError
from core.evaluate.outcomes import EvalReport, SweepReport
from core.scan import LayerResult
from rmt_tui.session import ALL_LAYERS, LayerKey, Session


@pytest.fixture
def pair(tmp_path):
    base, tuned = finetune_pair(tmp_path)
    s = Session()
    s.open(base)
    s.open(tuned)
    return s


def test_open_is_idempotent_and_a_bad_path_is_a_typed_error(tmp_path):
    save_file({"w": np.ones((40, 40), np.float32)}, str(tmp_path / "a.safetensors"))
    s = Session()
    first = s.open(tmp_path / "a.safetensors")
    assert s.open(tmp_path / "." / "a.safetensors") is first and len(s.opened) == 1
    with pytest.raises(CheckpointError, match="no such file"):
        s.open(tmp_path / "missing.safetensors")
    assert s.match is None  # one checkpoint: nothing to pair


def test_layers_are_matched_across_checkpoints(pair):
    key = LayerKey(1, "blocks.0.weight")
    assert pair.matched(key) == [LayerKey(0, "blocks.0.weight"), key]
    assert pair.matched(LayerKey(1, "head.weight")) == [None, LayerKey(1, "head.weight")]  # the base has none


def test_results_evaluations_and_sweeps_are_recorded_per_checkpoint(pair):
    key = LayerKey(0, "blocks.1.weight")
    assert pair.result(key) is None
    r = LayerResult(pair.layer(key), None)
    pair.record_result(key, r)
    assert pair.result(key) is r and pair.result(LayerKey(1, "blocks.1.weight")) is None
    rep = EvalReport({"accuracy": 1.0})
    pair.record_eval(0, ALL_LAYERS, rep)
    assert pair.opened[0].evals == {ALL_LAYERS: rep}
    sweep = SweepReport("blocks.1.weight", 256, {"accuracy": 1.0}, [], {})
    pair.record_sweep(key, sweep)
    assert pair.opened[0].sweeps == {"blocks.1.weight": sweep} and pair.opened[1].sweeps == {}
    assert [k for _, k in pair.unanalysed()] == ["blocks.0.weight", "blocks.0.weight", "blocks.1.weight",
                                                   "head.weight"]


def test_base_and_delta_rules(pair):
    tuned = LayerKey(1, "blocks.0.weight")
    assert not pair.delta_wanted(tuned) and pair.base_key(tuned) is None  # no base marked
    assert pair.toggle_base(0) == 0
    assert pair.delta_wanted(tuned) and pair.base_key(tuned) == LayerKey(0, "blocks.0.weight")
    assert not pair.delta_wanted(LayerKey(0, "blocks.0.weight"))  # the base itself has no delta
    assert pair.delta(tuned) is None and pair.delta_note(tuned) == ""
    head = LayerKey(1, "head.weight")
    assert pair.delta_wanted(head) and pair.base_key(head) is None
    assert "base.safetensors (base) has no such layer" in pair.delta_note(head)
    pair.record_delta(0, tuned, "ΔW")
    assert pair.delta(tuned) == "ΔW"
    assert pair.toggle_base(0) is None and pair.delta(tuned) is None  # unmarked: deltas are off


def test_a_new_job_replaces_the_one_of_the_same_name_and_cancel_all_stops_every_job():
    s = Session()
    first = s.start_job("evaluate", "evaluate all")
    second = s.start_job("evaluate", "evaluate fc1")
    assert first.token.cancelled and not s.is_current(first) and s.is_current(second)
    s.finish_job(first)  # a replaced job's end does not remove its successor
    assert s.jobs == {"evaluate": second}
    s.start_job("sweep", "sweep fc1")
    assert sorted(s.cancel_all()) == ["evaluate fc1", "sweep fc1"] and not s.jobs and second.token.cancelled


def test_job_progress_is_throttled_but_the_end_always_reported():
    s = Session()
    seen = []
    job = s.start_job("analyse-all", "analyse all", on_progress=lambda j: seen.append(j.done))
    for i in range(1000):
        job.progress(i, 1000)
    job.progress(1000, 1000)
    assert seen[-1] == 1000 and len(seen) < 50
    stage = job.stage(10, 20, "evaluate")
    stage(3, 10, "fc1")
    assert (job.done, job.total, job.what) == (13, 20, "evaluate fc1")
