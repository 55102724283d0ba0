"""Measure the noise-model methods on real checkpoints, for demo_models/EXPERIMENTS.md:
per matrix kind, ŝ per method (median), BEMA's KS raw and equalised (median), how many matrices
each noise model describes, and mean Avew at BEMA's ŝ from the MP and from the empirical cosines.

    python scripts/noise_experiments.py CHECKPOINT [CHECKPOINT ...] > section.md

Every number comes from core (the analysis the report uses, with --noise), nothing else.
"""
from __future__ import annotations

import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.io.checkpoint import open_checkpoint  # noqa: E402
from core.rmt.cosines import avew_at, empirical_cosines, estimated_cosines  # noqa: E402
from core.rmt.noise import MODELS  # noqa: E402
from core.scan import AnalysisOptions, analyse_checkpoint  # noqa: E402

METHODS = ("bema", "broadening", "screenot", "gavish-donoho", "shuffle")
SHORT = {"bema": "BEMA", "broadening": "GB", "screenot": "SN", "gavish-donoho": "GD", "shuffle": "SH"}
# Matrix kinds by name (HF and GGUF spellings).
KINDS = [("q", r"q_proj|attn_q\b|query"), ("k", r"k_proj|attn_k\b|key"), ("v", r"v_proj|attn_v\b|value"),
         ("o", r"o_proj|attn_output|attention\.output\.dense"), ("gate", r"gate_proj|ffn_gate"),
         ("up", r"up_proj|ffn_up|intermediate\.dense"), ("down", r"down_proj|ffn_down|output\.dense"),
         ("embed", r"embed|token_embd|wte|word_embeddings|position|token_type"), ("head", r"lm_head|output\.weight")]


def kind_of(name: str) -> str:
    if m := re.match(r"(fc\d+)\.", name):  # the MNIST MLPs: each layer is its own kind
        return m.group(1)
    return next((k for k, pat in KINDS if re.search(pat, name)), "other")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".3g"):
    return "–" if x is None else format(x, spec)


def measure(path: str) -> None:
    ckpt = open_checkpoint(path)
    opts = AnalysisOptions.make(METHODS, noise=True, use_cache=False)
    t0 = time.perf_counter()
    results = [r for r in analyse_checkpoint(ckpt, opts) if r.analysis is not None and r.reason is None
               and r.analysis.methods["bema"].ok]
    seconds = time.perf_counter() - t0
    rows = defaultdict(list)
    for r in results:
        rows[kind_of(r.layer.name)].append(r)
    print(f"\n### {Path(path).name}\n")
    print(f"{len(results)} matrices analysed by BEMA (of {sum(1 for l in ckpt.layers if l.matrix)} with a matrix "
          f"view), all five methods and the noise diagnosis in {seconds:.0f} s.\n")
    print("| kind | n | p × N | " + " | ".join(f"ŝ {SHORT[m]}" for m in METHODS)
          + " | KS raw | KS equalised | " + " | ".join(MODELS) + " | Avew MP | Avew empirical |")
    print("|---" * (3 + len(METHODS) + 2 + len(MODELS) + 2) + "|")
    totals = defaultdict(int)
    order = [k for k, _ in KINDS]
    for kind in sorted(rows, key=lambda k: (order.index(k) if k in order else len(order), k)):
        rs = rows[kind]
        shapes = sorted({(r.analysis.shape.p, r.analysis.shape.N) for r in rs})
        ranks = [fmt(median([r.analysis.methods[m].rank for r in rs]), "g") for m in METHODS]
        noise = [r.analysis.noise for r in rs]
        counts = [sum(n.model == model for n in noise) for model in MODELS]
        for model, c in zip(MODELS, counts):
            totals[model] += c
        av_mp, av_emp = [], []
        for r in rs:
            a, b = r.analysis, r.analysis.methods["bema"]
            if b.rank:
                av_mp.append(avew_at(estimated_cosines(a.sv, b.sigma2, a.shape), a.sv, b.rank).product)
                av_emp.append(avew_at(empirical_cosines(a.sv, b.rank, a.shape), a.sv, b.rank).product)
        dims = ", ".join(f"{p}×{n}" for p, n in shapes[:2]) + ("…" if len(shapes) > 2 else "")
        ks = f"{fmt(median([n.ks_raw for n in noise]), '.2f')} | {fmt(median([n.ks_equalised for n in noise]), '.2f')}"
        print(f"| {kind} | {len(rs)} | {dims} | " + " | ".join(ranks) + f" | {ks} | " + " | ".join(map(str, counts))
              + f" | {fmt(statistics.mean(av_mp) if av_mp else None, '.3f')} | "
              f"{fmt(statistics.mean(av_emp) if av_emp else None, '.3f')} |")
    print(f"\nNoise models over all {len(results)} matrices: "
          + ", ".join(f"{model} {totals[model]}" for model in MODELS) + ".")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        measure(p)
