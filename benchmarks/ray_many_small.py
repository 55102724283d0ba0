"""Many small matrices (a mixture of experts' shape), local against Ray on this machine.

    python benchmarks/ray_many_small.py [--experts 2000] [--shape 512x1024]   # bf16 on disk; ~3 minutes

Prints the wall time of `local` (the in-process loop, small matrices in bulk) and of `ray` (a
private local instance: its start-up, the preflight, then batched tasks), with the ratio, and
checks that both give the same ranks. On one 2-core machine Ray can only lose (it adds start-up,
serialisation and one-thread BLAS per task); the point of the number is the overhead per matrix,
which is what a cluster has to beat.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.executors import LocalExecutor, RayExecutor
from core.io.checkpoint import open_checkpoint
from core.scan import AnalysisOptions


def build(folder: Path, experts: int, m: int, n: int) -> Path:
    g = torch.Generator().manual_seed(0)
    path = folder / "experts.safetensors"
    save_file({f"layers.{i // 64}.experts.{i % 64}.weight": (torch.randn(m, n, generator=g) / n ** 0.5).to(
        torch.bfloat16) for i in range(experts)}, str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=2000)
    ap.add_argument("--shape", default="512x1024")
    args = ap.parse_args()
    m, n = map(int, args.shape.split("x"))
    opts = AnalysisOptions(use_cache=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp), args.experts, m, n)
        ck = open_checkpoint(path)
        print(f"{args.experts} matrices {m}×{n} bf16 ({path.stat().st_size / 2**30:.2f} GiB), no cache")
        t0 = time.perf_counter()
        local = [r.analysis.methods["bema"].rank for r in LocalExecutor().run(ck, ck.layers, opts)]
        t_local = time.perf_counter() - t0
        import ray

        t0 = time.perf_counter()
        ex = RayExecutor()
        remote = [r.analysis.methods["bema"].rank for r in ex.run(ck, ck.layers, opts)]
        t_ray = time.perf_counter() - t0
        tasks = len(ex.task_log)
        ray.shutdown()
    print(f"local: {t_local:6.1f} s ({1000 * t_local / args.experts:.1f} ms a matrix)")
    print(f"ray:   {t_ray:6.1f} s ({1000 * t_ray / args.experts:.1f} ms a matrix; {tasks} tasks, start-up included)")
    print(f"ray / local: {t_ray / t_local:.2f}; same ranks: {local == remote}")


if __name__ == "__main__":
    main()
