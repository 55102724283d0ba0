"""Does the Marchenko–Pastur law describe W·L (the whitened weights, SPEC §13) better than W?
For each model: the median KS distance of BEMA's MP fit over its block matrices, for W and for
W·L, and how many matrices each fits well (KS ≤ 0.10).

    python benchmarks/whitened_fit.py [--gguf SmolLM2-135M-Instruct.Q4_1.gguf]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compress import models  # noqa: E402

from core.calibration import CalibrationChoice  # noqa: E402
from core.evaluate.outcomes import EvaluatorChoice  # noqa: E402
from core.jobs import WhitenedRequest, Workspace, whitened  # noqa: E402
from core.rmt.fit_quality import KS_LIMIT  # noqa: E402
from core.scan import AnalysisOptions, select_layers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf")
    ap.add_argument("--only")
    args = ap.parse_args()
    opts = AnalysisOptions(methods=("bema",), use_cache=False)
    print("| model | matrices | median KS, W | median KS, W·L | KS ≤ 0.10: W | KS ≤ 0.10: W·L |")
    print("|---|---|---|---|---|---|")
    for label, path, layers in models(args):
        ws = Workspace()
        ckpt = ws.checkpoint(path)
        names = tuple(x.name for x in select_layers(ckpt, layers) if x.analysable)
        plain = [opts.analyse(ckpt.matrix(ckpt.layer(n))).methods["bema"].ks for n in names]
        white, _ = whitened(WhitenedRequest(path, names, opts, EvaluatorChoice(), CalibrationChoice()), ws=ws)
        wl = [r.analysis.methods["bema"].ks for r in white if r.analysis is not None]
        plain = [k for k in plain if k is not None]
        wl = [k for k in wl if k is not None]
        good = lambda ks: f"{sum(k <= KS_LIMIT for k in ks)}/{len(ks)}"  # noqa: E731
        print(f"| {label} | {len(names)} | {np.median(plain):.3f} | {np.median(wl):.3f} | {good(plain)} | "
              f"{good(wl)} |", flush=True)


if __name__ == "__main__":
    main()
