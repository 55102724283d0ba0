"""Regenerate the seed paper's Figures 1–3 (arXiv:2512.12911) on the bundled demo models, as PNG
under demo_models/figures/ (needs the [plots] extra):

  1. fig1_mp_fits.png      — the histogram of fc1's singular values (batch size 16) with the BEMA and
                             Gaussian-broadening MP fits and both thresholds;
  2. fig2_rank_sweep.png   — test accuracy and Avew against the kept rank of fc1;
  3. fig3_batch_sizes.png  — ŝ of fc1 by both methods across the batch-size series 16 … 1024.

    python scripts/paper_figures.py [--out demo_models/figures]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import core  # noqa: E402
from core import jobs  # noqa: E402
from core.paths import DEMO_DIR  # noqa: E402
from rmt_tui import figures  # noqa: E402

BATCH_SIZES = (16, 64, 128, 256, 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEMO_DIR / "figures")
    out = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    demo = DEMO_DIR / "mlp_bs16.safetensors"
    fc1 = next(r for r in core.analyse_checkpoint(demo) if r.layer.name == "fc1.weight")
    title = "MNIST MLP (batch size 16): fc1"
    figures.save(lambda ax: figures.draw_histogram(ax, fc1.analysis, title), out / "fig1_mp_fits.png",
                 caption=figures.caption(fc1.analysis), overwrite=True)
    rep = jobs.sweep(jobs.SweepRequest(str(demo), fc1, ranks=tuple(range(0, 513, 16))))
    figures.save(lambda ax: figures.draw_sweep(ax, rep, title), out / "fig2_rank_sweep.png", overwrite=True)
    series = [DEMO_DIR / f"mlp_bs{bs}.safetensors" for bs in BATCH_SIZES]
    analyses = [next(r for r in core.analyse_checkpoint(p) if r.layer.name == "fc1.weight").analysis for p in series]
    figures.save(lambda ax: figures.draw_trajectory(ax, [str(bs) for bs in BATCH_SIZES], analyses,
                                                    "fc1 across batch sizes (ŝ per method)", "batch size"),
                 out / "fig3_batch_sizes.png", overwrite=True)
    for f in sorted(out.glob("fig*.png")):
        print(f)


if __name__ == "__main__":
    main()
