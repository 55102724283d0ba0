"""Peak memory of `delta` over a few-hundred-MB pair, against the largest tensor pair as stored.

    python benchmarks/delta_memory.py            # fp32 and bf16 pairs, 4 × 4096×4096 each; ~2 minutes

The delta reads one matched pair at a time: the target is a peak (above the resident size after
the imports) of at most ~3× the largest pair, beside the peak of analysing one checkpoint alone.
Each run is in a fresh process whose high-water mark is reset after the imports, as in
benchmarks/run.py.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from peak import peak_in_fresh_process  # benchmarks/peak.py, beside this script
from safetensors.torch import save_file

SHAPE, LAYERS, RANK = (4096, 4096), 4, 16


def build(folder: Path, dtype: torch.dtype) -> tuple[Path, Path, int]:
    rng = np.random.default_rng(0)
    base, tuned = {}, {}
    for i in range(LAYERS):
        w = (rng.standard_normal(SHAPE, dtype=np.float32) / np.sqrt(SHAPE[1]))
        u = np.linalg.qr(rng.standard_normal((SHAPE[0], RANK)))[0]
        v = np.linalg.qr(rng.standard_normal((SHAPE[1], RANK)))[0]
        d = ((u * np.linspace(2, 1, RANK) * 0.05) @ v.T).astype(np.float32)
        base[f"layers.{i}.weight"] = torch.from_numpy(w).to(dtype)
        tuned[f"layers.{i}.weight"] = torch.from_numpy(w + d).to(dtype)
    name = str(dtype).removeprefix("torch.")
    a, b = folder / f"base-{name}.safetensors", folder / f"tuned-{name}.safetensors"
    save_file(base, str(a))
    save_file(tuned, str(b))
    pair = 2 * SHAPE[0] * SHAPE[1] * torch.tensor([], dtype=dtype).element_size()
    return a, b, pair


def measure(a: Path, b: Path | None) -> dict:
    """The delta of a and b; with b None, the plain analysis of a alone (the reference)."""
    return peak_in_fresh_process(f"""
a, b = open_checkpoint({str(a)!r}), open_checkpoint({str(b)!r})
result = [d.analysis.methods["bema"].rank for d in delta_checkpoints(a, b, match_layers([a, b]).rows,
                                                                     AnalysisOptions(use_cache=False))]
""" if b is not None else f"""
result = [r.analysis.methods["bema"].rank for r in analyse_checkpoint(open_checkpoint({str(a)!r}),
                                                                      AnalysisOptions(use_cache=False))]
""")


def main() -> None:
    print(f"{LAYERS} layers {SHAPE[0]}×{SHAPE[1]} per checkpoint, a planted rank-{RANK} update in each")
    print("delta: ΔW of each pair; analyse: the base alone, as `report` does (the reference: a values-only")
    print("analysis of a float32 matrix holds it and its float64 Gram matrix, 2× its size when square)")
    print(f"{'dtype':9} {'job':8} {'pair MB':>8} {'ckpt MB':>8} {'peak+ MB':>9} {'peak/pair':>9} {'s':>6}  "
          "ŝ BEMA per layer")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in (torch.float32, torch.bfloat16):
            a, b, pair = build(Path(tmp), dtype)
            for what, other in (("delta", b), ("analyse", None)):
                r = measure(a, other)
                peak = (r["peak_kb"] - r["baseline_kb"]) * 1024
                print(f"{str(dtype).removeprefix('torch.'):9} {what:8} {pair / 2**20:8.0f} "
                      f"{a.stat().st_size / 2**20:8.0f} {peak / 2**20:9.0f} {peak / pair:9.2f} {r['seconds']:6.1f}  "
                      f"{r['result']}")
                time.sleep(0.5)


if __name__ == "__main__":
    main()
