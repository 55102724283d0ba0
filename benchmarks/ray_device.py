"""Ray on a GPU machine: one GPU and fractional GPUs per task, and CPU/GPU parity.

    python benchmarks/ray_device.py            # on a box with CUDA and pip install -e '.[ray]'; ~2 minutes

Builds 24 seeded 2048×2048 float32 matrices with a planted rank, then analyses them with
--executor ray at --gpus-per-task 1, 0.5 and 0.25 (a private local Ray sees the box's GPUs), and
locally on the CPU. Prints wall time, tasks and distinct worker processes per setting, the devices
the tasks ran on, and the largest relative difference of the singular values and the ŝ mismatches
against the CPU (torch float32 on the GPU vs float64 Gram on the CPU: ~1e-5 relative is expected).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from core.executors import LocalExecutor, RayExecutor, RaySettings
from core.io.checkpoint import open_checkpoint
from core.scan import AnalysisOptions


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this benchmark is for a GPU machine")
    g = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        mats = {}
        for i in range(24):
            a = g.standard_normal((2048, 2048)).astype(np.float32) * 0.02
            u, v = g.standard_normal((2048, 8)), g.standard_normal((2048, 8))
            mats[f"w{i}"] = torch.from_numpy(a + (u @ v.T).astype(np.float32) * 0.002)
        save_file(mats, str(path))
        ck = open_checkpoint(path)
        t0 = time.perf_counter()
        cpu = list(LocalExecutor().run(ck, ck.layers, AnalysisOptions(use_cache=False)))
        print(f"cpu local: {time.perf_counter() - t0:.1f} s")
        for gpus in (1.0, 0.5, 0.25):
            ex = RayExecutor(RaySettings(gpus_per_task=gpus))
            t0 = time.perf_counter()
            got = list(ex.run(ck, ck.layers, AnalysisOptions(use_cache=False, device="cuda")))
            dt = time.perf_counter() - t0
            diff = max(float(np.max(np.abs(a.analysis.sv - b.analysis.sv) / b.analysis.sv[0]))
                       for a, b in zip(got, cpu))
            ranks = sum(a.analysis.methods[m].rank != b.analysis.methods[m].rank for a, b in zip(got, cpu)
                        for m in ("bema", "broadening"))
            workers, devices = {t["pid"] for t in ex.task_log}, sorted({t["device"] for t in ex.task_log})
            print(f"ray, {gpus:g} GPU a task: {dt:.1f} s, {len(ex.task_log)} tasks, {len(workers)} workers, "
                  f"devices {devices}, "
                  f"CUDA_VISIBLE_DEVICES {sorted({t['cuda_visible_devices'] for t in ex.task_log})}; "
                  f"max |Δs|/s₁ vs CPU {diff:.1e}, ŝ mismatches {ranks}")


if __name__ == "__main__":
    main()
