"""The Ray executor against a real Ray: a private local instance (module-scoped, 2 CPUs and 4
declared GPUs), then a two-node ray.cluster_utils.Cluster with one node removed mid-run."""
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import ray
import torch
from helpers import settle
from safetensors.torch import save_file

from core.errors import RmtError
from core.executors import FAULT_ENV, LocalExecutor, RayExecutor, RaySettings, make_executor
from core.io.checkpoint import open_checkpoint
from core.paths import DEFAULT_DEMO_MODEL
from core.progress import Cancelled, CancelToken
from core.scan import AnalysisOptions, SpectrumCache
from rmt_tui.cli import main

NO_CACHE = AnalysisOptions(use_cache=False)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    fault = tmp_path_factory.mktemp("fault") / "kill-once"
    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {FAULT_ENV: str(fault)}})
    yield fault
    ray.shutdown()


def stack(path, big=2, small=60, seed=0):
    """Planted-rank matrices: a few big ones (one task each) and many small ones (batched)."""
    g = np.random.default_rng(seed)
    sd = {}
    for i in range(big):
        a = g.standard_normal((400, 300)).astype(np.float32) * 0.05
        a[:, :3] += 0.5 * g.standard_normal((400, 1)).astype(np.float32)
        sd[f"big.{i}.weight"] = torch.from_numpy(a)
    for i in range(small):
        sd[f"experts.{i}.weight"] = torch.from_numpy(g.standard_normal((48, 40)).astype(np.float32))
    sd["norm.weight"] = torch.ones(300)
    save_file(sd, str(path))
    return path


def same(a, b):
    """Same layers, statuses and ranks; floats equal to float64 round-off (Ray runs BLAS on one
    thread per task, so sums may differ in the last bit)."""
    assert [r.layer.name for r in a] == [r.layer.name for r in b]
    for x, y in zip(a, b):
        assert x.status == y.status and (x.analysis is None) == (y.analysis is None)
        if x.analysis is None:
            continue
        np.testing.assert_allclose(x.analysis.sv, y.analysis.sv, rtol=1e-10, atol=1e-12)
        for m, rx in x.analysis.methods.items():
            ry = y.analysis.methods[m]
            assert rx.rank == ry.rank and rx.reason == ry.reason
            for f in ("sigma2", "threshold", "avew", "ks"):
                vx, vy = getattr(rx, f), getattr(ry, f)
                assert (vx is None) == (vy is None) and (vx is None or math.isclose(vx, vy, rel_tol=1e-8)), (m, f)


def test_same_numbers_as_local_on_the_demo_and_a_stack(local_ray, tmp_path):
    ex = RayExecutor()
    for path in (DEFAULT_DEMO_MODEL, stack(tmp_path / "s.safetensors")):
        ck = open_checkpoint(path)
        same(list(ex.run(ck, ck.layers, NO_CACHE)), list(LocalExecutor().run(ck, ck.layers, NO_CACHE)))
    assert ex.task_log and all(t["device"] == "cpu" for t in ex.task_log)
    assert len(ex.task_log) < 2 + 3 + 60  # small matrices went several to a task


def test_every_method_and_the_noise_diagnosis_give_the_local_numbers_on_ray(local_ray):
    opts = AnalysisOptions.make(("bema", "screenot", "gavish-donoho", "shuffle"), use_cache=False, noise=True,
                                cosines="auto")
    ck = open_checkpoint(DEFAULT_DEMO_MODEL)
    remote, local = list(RayExecutor().run(ck, ck.layers, opts)), list(LocalExecutor().run(ck, ck.layers, opts))
    same(remote, local)
    for x, y in zip(remote, local):  # the same diagnosis (to rounding: a worker's BLAS may sum in another order)
        nx, ny = (x.analysis.noise, y.analysis.noise) if x.analysis else (None, None)
        assert (nx is None) == (ny is None) and (nx is None or (nx.model == ny.model and all(
            math.isclose(getattr(nx, f), getattr(ny, f), rel_tol=1e-9) for f in ("ks_raw", "ks_equalised",
                                                                                 "shuffle_edge_ratio"))))
    assert any(r.analysis and r.analysis.noise and r.analysis.noise.model for r in remote)


def test_out_of_order_completion_counts_each_layer_once_and_keeps_order(local_ray, tmp_path):
    ck = open_checkpoint(stack(tmp_path / "s.safetensors", big=3, small=40))
    seen = []
    ordered = list(RayExecutor().run(ck, ck.layers, NO_CACHE, progress=lambda d, t, w: seen.append((d, t, w))))
    assert [r.layer.name for r in ordered] == [l.name for l in ck.layers]
    names = [w for _, _, w in seen if w]
    assert sorted(names) == sorted(l.name for l in ck.layers if l.analysable)  # each counted once
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and seen[-1][:2] == (len(ck.layers), len(ck.layers))
    unordered = list(RayExecutor().run(ck, ck.layers, NO_CACHE, ordered=False))
    assert sorted(r.layer.name for r in unordered) == sorted(l.name for l in ck.layers)


def test_cache_lives_on_the_driver_and_cancel_is_prompt(local_ray, tmp_path):
    g = np.random.default_rng(1)
    save_file({f"w{i}": torch.from_numpy(g.standard_normal((1400, 1100)).astype(np.float32)) for i in range(6)},
              str(tmp_path / "big.safetensors"))
    ck = open_checkpoint(tmp_path / "big.safetensors")
    opts = AnalysisOptions()
    ex = RayExecutor(RaySettings(window=2))
    token, got, when = CancelToken(), [], {}

    def progress(done, total, what):
        if what and not token.cancelled:
            token.cancel()
            when["cancel"] = time.monotonic()

    with pytest.raises(Cancelled):
        for r in ex.run(ck, ck.layers, opts, progress=progress, cancel=token):
            got.append(r)
    assert time.monotonic() - when["cancel"] < 1.5
    cache = SpectrumCache()
    cached = [l.name for l in ck.layers if cache.content_key_for(ck.fingerprint(l)) is not None]
    assert 1 <= len(cached) <= 2  # what finished before the cancel, nothing for the cancelled layers
    # A second run submits only what the driver's cache lacks.
    before = len(ex.task_log)
    results = list(ex.run(ck, ck.layers, opts))
    assert len(results) == 6 and len(ex.task_log) - before == 6 - len(cached)


def test_a_task_that_kills_its_worker_once_still_completes(local_ray, tmp_path):
    ck = open_checkpoint(stack(tmp_path / "s.safetensors", big=2, small=0))
    local_ray.write_text("x")  # the next task to start exits its worker, once
    results = list(RayExecutor(RaySettings(max_retries=2)).run(ck, ck.layers, NO_CACHE))
    assert not local_ray.exists() and all(r.status == "ok" for r in results if r.layer.analysable)
    same(results, list(LocalExecutor().run(ck, ck.layers, NO_CACHE)))


def test_fractional_gpus_schedule_four_at_once_and_reuse_workers(local_ray, tmp_path):
    g = np.random.default_rng(2)
    save_file({f"w{i}": torch.from_numpy(g.standard_normal((1600, 1200)).astype(np.float32)) for i in range(12)},
              str(tmp_path / "g.safetensors"))
    ck = open_checkpoint(tmp_path / "g.safetensors")
    # 0.25 GPU and 0.5 CPU a task: four at once on the two CPUs, all on one declared GPU.
    ex = RayExecutor(RaySettings(gpus_per_task=0.25, cpus_per_task=0.5))
    with pytest.warns(Warning, match="CUDA is not available there"):
        results = list(ex.run(ck, ck.layers, NO_CACHE))
    first = {t["pid"] for t in ex.task_log}
    ex.task_log.clear()
    again = list(ex.run(ck, ck.layers, NO_CACHE))  # the workers are up now: timing is the tasks' own
    assert len(results) == len(again) == 12 and all(t["device"] == "cpu" for t in ex.task_log)  # no real GPU
    assert all(t["cuda_visible_devices"] not in (None, "") for t in ex.task_log)
    spans = [(t["start"], t["end"]) for t in ex.task_log]
    most = max(sum(s <= t0 < e for s, e in spans) for t0, _ in spans)
    assert 3 <= most <= 4
    assert {t["pid"] for t in ex.task_log} <= first and len(first) <= 6  # max_calls=0: workers reused


def test_preflight_lists_what_a_node_lacks(local_ray, tmp_path):
    path = stack(tmp_path / "s.safetensors", big=1, small=2)
    ck = open_checkpoint(path)
    path.unlink()  # opened by the driver, then gone: no node can read it
    with pytest.raises(RmtError) as e:
        list(RayExecutor().run(ck, ck.layers, NO_CACHE))
    assert "cannot run this analysis" in str(e.value) and "No such file" in str(e.value)


def test_cli_report_with_ray_equals_local(local_ray, tmp_path, capsys):
    path = stack(tmp_path / "s.safetensors", big=1, small=5)
    assert main(["report", str(path), "--format", "json", "--no-cache", "--executor", "ray"]) == 0
    ray_doc = capsys.readouterr().out
    assert main(["report", str(path), "--format", "json", "--no-cache"]) == 0
    local_doc = capsys.readouterr().out
    import json

    a, b = json.loads(ray_doc)["layers"], json.loads(local_doc)["layers"]
    assert [(x["name"], x["methods"]["bema"]["rank"]) for x in a] == [(x["name"], x["methods"]["bema"]["rank"])
                                                                        for x in b]
    with pytest.raises(Exception, match="unknown executor"):
        make_executor("dask")


async def test_app_analyse_all_runs_on_ray(local_ray, tmp_path):
    from rmt_tui.app import RmtApp
    from rmt_tui.engine import InlineEngine

    path = stack(tmp_path / "s.safetensors", big=2, small=20)
    app = RmtApp([path], engine=InlineEngine(), executor=("ray", 0.0, 1.0, 3))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("a")
        await settle(app, pilot, rounds=3)
        results = app.session.opened[0].results
        assert len(results) == len(app.session.opened[0].ckpt.layers)
        ck = open_checkpoint(path)
        local = {r.layer.name: r for r in LocalExecutor().run(ck, ck.layers, NO_CACHE)}
        same([results[n] for n in local], list(local.values()))


def test_importing_the_app_never_imports_ray():
    code = "import sys, rmt_tui.cli, rmt_tui.app, core.executors; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_two_node_cluster_survives_losing_a_node(tmp_path):
    """Last in the file: it replaces the module's instance with a two-node cluster."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        cluster.wait_for_nodes()
        g = np.random.default_rng(3)
        save_file({f"w{i}": torch.from_numpy(g.standard_normal((1500, 1400)).astype(np.float32)) for i in range(12)},
                  str(tmp_path / "c.safetensors"))
        ck = open_checkpoint(tmp_path / "c.safetensors")
        ex = RayExecutor(RaySettings(max_retries=3))
        out = []
        started = threading.Event()

        def consume():
            for r in ex.run(ck, ck.layers, NO_CACHE, ordered=False,
                            progress=lambda d, t, w: started.set() if w else None):
                out.append(r)

        t = threading.Thread(target=consume)
        t.start()
        assert started.wait(60)
        done_at_removal = len(out)
        cluster.remove_node(worker)  # mid-run: its tasks are re-run on the head
        t.join(120)
        assert done_at_removal < 12, "the node went away after the work was done: nothing was tested"
        assert not t.is_alive() and len(out) == 12 and all(r.status == "ok" for r in out)
        out.sort(key=lambda r: [l.name for l in ck.layers].index(r.layer.name))
        same(out, list(LocalExecutor().run(ck, ck.layers, NO_CACHE)))
    finally:
        ray.shutdown()
        cluster.shutdown()
