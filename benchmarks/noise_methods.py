"""Benchmark: what the noise-model methods and options cost, as ratios to the values-only floor
measured in the same run (SPEC §12; targets from the issue that added them).

    python benchmarks/noise_methods.py            # 1024×4096 and 768×3072, float32

For each seeded matrix (noise plus a planted rank 8) it prints, each as a multiple of
  floor    : one values-only gesdd (scipy, float32, tall orientation) of the matrix;
  default  : analyse_matrix with BEMA and broadening (the default report's per-matrix work);
  +SN+GD   : the same plus ScreeNOT and Gavish–Donoho (they reuse the singular values; target:
             the default report no more than 10 % slower: these add ≤ 0.1 × the floor);
  shuffle  : the shuffle null's fit alone, 3 shuffles (target ≤ 0.5 × the floor);
  equalise : the Sinkhorn scaling alone, and the --equalise analysis (a second spectrum);
  noise    : the --noise analysis (W̃'s spectrum and one shuffle on top of the default).
Each figure is the best of three runs.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = [(1024, 4096), (768, 3072)]


def best(f, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(m: int, n: int) -> list[float]:
    """[floor seconds, then each figure as a multiple of it] for one seeded m × n matrix."""
    import scipy.linalg

    from core.rmt.analysis import analyse_matrix
    from core.rmt.equalise import equalise
    from core.rmt.methods import Shuffle, make_methods
    from core.rmt.spectrum import MatrixShape, singular_values

    rng = np.random.default_rng(0)
    w = rng.standard_normal((m, n), dtype=np.float32) * 0.02
    w += (rng.standard_normal((m, 8), dtype=np.float32) @ rng.standard_normal((8, n), dtype=np.float32)) * (
        0.04 / np.sqrt(n))
    tall = w.T if m < n else w
    floor = best(lambda: scipy.linalg.svd(tall, compute_uv=False, lapack_driver="gesdd", check_finite=False))
    default = make_methods(["bema", "broadening"])
    more = make_methods(["bema", "broadening", "screenot", "gavish-donoho"])
    sv, shape = singular_values(w), MatrixShape(m, n)
    row = [best(lambda: analyse_matrix(w, default)), best(lambda: analyse_matrix(w, more)),
           best(lambda: Shuffle(shuffles=3).fit(sv, shape, w)), best(lambda: equalise(w)),
           best(lambda: analyse_matrix(w, default, equalise=True)),
           best(lambda: analyse_matrix(w, default, noise=True))]
    return [floor] + [x / floor for x in row]


def main() -> None:
    from core.rmt.analysis import analyse_matrix
    from core.rmt.methods import make_methods

    analyse_matrix(np.random.default_rng(0).standard_normal((64, 48)), make_methods(
        ["bema", "screenot", "shuffle"]), noise=True)  # every lazy import, done
    print(f"{'matrix':>10} {'floor s':>8} {'default':>8} {'+SN+GD':>8} {'shuffle':>8} {'Sinkhorn':>9} "
          f"{'equalise':>9} {'noise':>7}")
    for m, n in SHAPES:
        floor, *ratios = measure(m, n)
        print(f"{m}×{n:<5} {floor:8.2f} " + " ".join(f"{x:8.2f}×" for x in ratios))


if __name__ == "__main__":
    main()
