"""Benchmark: the tool's full analysis against the raw LAPACK floor, measured in the same run.

    python benchmarks/run.py                 # all three checkpoints (a few minutes on 2 cores)
    python benchmarks/run.py --only mlp,bert # a subset
    python benchmarks/run.py --device cuda   # the tool on the GPU (the floor stays CPU gesdd)

For each seeded synthetic checkpoint it prints
  floor  : values-only gesdd (scipy, float32, tall orientation) on the same matrices, in this process;
  cold   : `analyse_checkpoint` with an empty cache (read, hash, SVD, both thresholds, Avew, KS, cache write);
  warm   : the same with the cache filled;
  ratios : cold/floor (target ≤ 1.15) and warm/floor (target ≤ 0.05);
  memory : peak RSS of a cold analysis in a fresh process, above its baseline after imports,
           as a multiple of the largest tensor (target: a small multiple, never the whole model).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from peak import peak_in_fresh_process  # benchmarks/peak.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHECKPOINTS = {
    "mlp": [("fc1.weight", (512, 784)), ("fc2.weight", (256, 512)), ("fc3.weight", (10, 256))],
    "bert": [(f"encoder.layer.{i}.{n}.weight", s) for i in range(12) for n, s in
             [("attention.self.query", (768, 768)), ("attention.self.key", (768, 768)),
              ("attention.self.value", (768, 768)), ("attention.output.dense", (768, 768)),
              ("intermediate.dense", (3072, 768)), ("output.dense", (768, 3072))]],
    "llama-mlp": [("mlp.up_proj.weight", (11008, 4096))],
}
SHORT_FLOOR_S, SHORT_ROUNDS = 0.5, 15


def build(name: str, folder: Path) -> Path:
    """Noise plus a planted low-rank part, seeded; float32 safetensors."""
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    state = {}
    for tensor, (m, n) in CHECKPOINTS[name]:
        w = rng.standard_normal((m, n), dtype=np.float32) * 0.02
        r = min(8, min(m, n) // 4)
        a, b = rng.standard_normal((m, r), dtype=np.float32), rng.standard_normal((r, n), dtype=np.float32)
        w += (a @ b) * (0.02 * 2.0 / np.sqrt(max(m, n)))
        state[tensor] = torch.from_numpy(w)
    path = folder / f"{name}.safetensors"
    save_file(state, str(path))
    return path


def floor_seconds(path: Path) -> float:
    import scipy.linalg
    from safetensors.numpy import load_file

    mats = [a for a in load_file(str(path)).values() if a.ndim == 2]
    t0 = time.perf_counter()
    for a in mats:
        tall = a.T if a.shape[0] < a.shape[1] else a
        scipy.linalg.svd(tall, compute_uv=False, lapack_driver="gesdd", check_finite=False)
    return time.perf_counter() - t0


def tool_seconds(path: Path, device: str, cache: Path) -> float:
    from core.io.checkpoint import open_checkpoint
    from core.scan import AnalysisOptions, analyse_checkpoint

    os.environ["RMT_TUI_CACHE_DIR"] = str(cache)
    t0 = time.perf_counter()
    with open_checkpoint(path) as ck:
        for _ in analyse_checkpoint(ck, AnalysisOptions(device=device)):
            pass
    return time.perf_counter() - t0


def peak_memory(path: Path, device: str) -> dict:
    """Cold analysis in a fresh process: peak RSS above the resident size after the imports."""
    return peak_in_fresh_process(f"""
with open_checkpoint({str(path)!r}) as ck:
    for _ in analyse_checkpoint(ck, AnalysisOptions(device={device!r}, use_cache=False)):
        pass
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(CHECKPOINTS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=2,
                    help=f"interleaved repetitions, best of each kept (≥ {SHORT_ROUNDS} for short checkpoints)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = ap.parse_args()

    from core.device import resolve_device

    device = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            path = build(name, Path(tmp))
            sizes = [m * n * 4 for _, (m, n) in CHECKPOINTS[name]]
            # Interleave floor, cold and warm so that a noisy neighbour hits all three alike.
            floors, colds, warms = [], [], []
            # A checkpoint that takes tens of milliseconds is at the mercy of scheduler noise: give
            # it more rounds (they cost little) so the best of each is a stable estimate.
            rounds = args.rounds if floor_seconds(path) >= SHORT_FLOOR_S else max(args.rounds, SHORT_ROUNDS)
            for r in range(rounds):
                cache = Path(tmp) / f"cache-{name}-{r}"
                floors.append(floor_seconds(path))
                colds.append(tool_seconds(path, device, cache))
                warms.append(tool_seconds(path, device, cache))
            floor, cold, warm = min(floors), min(colds), min(warms)
            mem = peak_memory(path, device)
            extra_mb = (mem["peak_kb"] - mem["baseline_kb"]) / 1024
            rows.append({"checkpoint": name, "rounds": rounds, "matrices": len(sizes), "model_mb": sum(sizes) / 2**20,
                         "largest_mb": max(sizes) / 2**20, "floor_s": floor, "cold_s": cold, "warm_s": warm,
                         "cold_ratio": cold / floor, "warm_ratio": warm / floor, "peak_extra_mb": extra_mb,
                         "peak_per_largest": extra_mb / (max(sizes) / 2**20)})
    hdr = (f"{'checkpoint':<10} {'rounds':>6} {'mats':>4} {'model MB':>8} {'floor s':>8} {'cold s':>7} {'warm s':>7} "
           f"{'cold/floor':>10} {'warm/floor':>10} {'peak+ MB':>8} {'peak/largest':>12}")
    print(f"device: {device}; floor: scipy gesdd values-only, float32, tall, same process; "
          f"best of each over interleaved rounds (≥ {SHORT_ROUNDS} when the floor is under {SHORT_FLOOR_S} s)")
    print(hdr)
    for r in rows:
        print(f"{r['checkpoint']:<10} {r['rounds']:>6} {r['matrices']:>4} {r['model_mb']:>8.1f} {r['floor_s']:>8.3f} "
              f"{r['cold_s']:>7.3f} "
              f"{r['warm_s']:>7.3f} {r['cold_ratio']:>10.2f} {r['warm_ratio']:>10.3f} {r['peak_extra_mb']:>8.0f} "
              f"{r['peak_per_largest']:>12.2f}")
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
