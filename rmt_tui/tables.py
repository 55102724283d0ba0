"""Rich tables for the CLI's human-readable output; each fits an 80-column terminal."""
from __future__ import annotations

import os

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from core.evaluate.outcomes import MetricSpec, metric_spec
from core.rmt.methods import short_label

from .render import fmt, metric_value, noise_cell, rank_cell, ranks_summary, shown


def report_table(doc: dict, methods) -> Table:
    # No vertical rules: the columns of a model with long tensor names still fit 80 columns.
    whitened = (doc.get("options") or {}).get("calibration")
    title = doc["checkpoint"] + (f" — W·L, whitened on {whitened.get('tokens', whitened.get('samples'))} "
                                 f"{'tokens' if 'tokens' in whitened else 'samples'}" if whitened else "")
    t = Table(title=shown(title), title_justify="left", pad_edge=False, expand=False, box=box.SIMPLE_HEAD)
    # Up to two methods: ŝ and Avew each; more: ŝ of each and the first one's Avew (80 columns).
    avew_of = methods if len(methods) <= 2 else methods[:1]
    noise = any(layer["noise"] for layer in doc["layers"])
    few = len(avew_of) == len(methods)
    if not few:
        t.caption, t.caption_justify = f"ŝ per method; Avew at {short_label(methods[0])}'s ŝ", "left"
    t.add_column("layer", overflow="ellipsis", no_wrap=True, max_width=24 if few else 16, min_width=None if few else 10)
    t.add_column("matrix", no_wrap=True, min_width=9)
    for m in methods:
        t.add_column(f"ŝ {short_label(m)}" if few else short_label(m), justify="right", no_wrap=True,
                     min_width=len(short_label(m)) + 2 if few else max(len(short_label(m)), 4))
        if m in avew_of:
            t.add_column("Avew", justify="right", no_wrap=True, min_width=5)
    if noise:
        t.add_column("noise", no_wrap=True, min_width=6)
    t.add_column("note", overflow="ellipsis", no_wrap=True, max_width=24 if few else 14, min_width=6)
    for layer in doc["layers"]:
        matrix = "×".join(map(str, layer["matrix"])) if layer["matrix"] else "–"
        results = [layer["methods"][m] for m in methods]
        cells = [c for m, r in zip(methods, results) for c in (fmt(r["rank"], "d"), *([fmt(r["avew"])] if m in avew_of
                                                                                          else []))]
        if noise:
            cells.append(noise_cell(layer["noise"]))
        poor = [short_label(m) for m, r in zip(methods, results) if r["poor_fit"]]
        if layer["status"] != "ok":
            note = shown(layer["reason"], "dim")
        elif all(r["reason"] for r in results):
            note = shown(f"n/a: {results[0]['reason']}", "dim")
        else:
            note = Text("poor MP fit: " + ",".join(poor), style="yellow") if poor else Text("fit ok")
        t.add_row(shown(layer["name"]), matrix, *cells, note)
    return t


def _primary(doc: dict) -> tuple[MetricSpec, str]:
    """The document's primary metric and its label."""
    spec = metric_spec(doc["primary"])
    return spec, spec.label


def eval_table(doc: dict) -> Table:
    spec, label = _primary(doc)
    t = Table(title=shown(f"{doc['checkpoint']} — evaluator {doc['evaluator']}"), title_justify="left")
    t.add_column("truncation")
    t.add_column(label, justify="right")
    t.add_column("ranks", overflow="fold")
    t.add_column("params saved", justify="right")
    t.add_column("Avew", justify="right")
    t.add_row("none (baseline)", spec.show(doc["baseline"][spec.key]), "", "", "")
    for m, o in doc["methods"].items():
        t.add_row(f"{short_label(m)} ŝ ({doc['mode']})", metric_value(spec, o["metrics"], o["value"]),
                  ranks_summary(o["ranks"]), f"{o['params_saved']:,}", fmt(o["mean_avew"]))
    return t


EXTRA_METRICS = ("ppl", "top1", "nn_agreement")  # shown beside the primary where the evaluator gives them


def compress_table(doc: dict) -> Table:
    spec, label = _primary(doc)
    c = doc["compress"]
    base = doc["baseline"]
    extra = [k for k in EXTRA_METRICS if k in base]
    rules = sorted({o["allocation"] for o in c["modes"].values()})
    t = Table(title=shown(f"{doc['checkpoint']} — {c['target']:.0%} of the parameters removed "
                          f"({', '.join(rules)} allocation), evaluator {doc['evaluator']}"), title_justify="left")
    for name, right in (("truncation", False), ("removed", True), ("params saved", True), (label, True),
                        *((k, True) for k in extra), ("hard fallback", True)):
        t.add_column(name, justify="right" if right else "left")
    t.add_row("none (baseline)", "", "", spec.show(base[spec.key]), *[fmt(base[k], ".4g") for k in extra], "")
    for mode, o in c["modes"].items():
        t.add_row(mode, f"{o['achieved']:.1%}", f"{o['params_saved']:,}", metric_value(spec, o["metrics"], o["value"]),
                  *[fmt(o["metrics"][k], ".4g") for k in extra], str(len(o["fallback"])) if mode == "whitened" else "")
    if cal := c.get("calibration"):
        unit = "tokens" if "tokens" in cal else "samples"
        t.caption = shown(f"calibration: {cal[unit]} {unit} of {cal['source']}"
                          + ("" if cal["disjoint"] else " (OVERLAPS the scored data)"))
        t.caption_justify = "left"
    return t


def sweep_table(doc: dict) -> Table:
    spec, label = _primary(doc)
    marks = [(v, short_label(m)) for m, v in doc["method_ranks"].items() if v is not None]
    t = Table(title=shown(f"{doc['layer']} (p = {doc['p']}), baseline {label} {spec.show(doc['baseline'][spec.key])}"),
              title_justify="left")
    t.add_column("rank k", justify="right")
    t.add_column(label, justify="right")
    methods = list(doc["method_ranks"])
    for m in methods:
        t.add_column(f"Avew ({short_label(m)} σ̂)", justify="right")
    t.add_column("")
    for pt in doc["points"]:
        here = [lbl for k, lbl in marks if k == pt["rank"]]
        t.add_row(str(pt["rank"]), spec.show(pt["value"]), *[fmt(pt["avew"][m]) for m in methods],
                  f"← ŝ {', '.join(here)}" if here else "")
    return t


def sensitivity_table(doc: dict, top: int | None = None) -> Group:
    """Layers by the damage truncating each alone does (least first), then the plan, if any."""
    spec, label = _primary(doc)
    t = Table(title=shown(f"{doc['checkpoint']} — each layer alone at ŝ; {label} baseline "
                          f"{spec.show(doc['baseline'][spec.key])}"),
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("layer", overflow="ellipsis", no_wrap=True, max_width=30)
    t.add_column("method", no_wrap=True)
    t.add_column("ŝ/p", justify="right", no_wrap=True)
    t.add_column(label, justify="right", no_wrap=True)
    t.add_column("damage", justify="right", no_wrap=True)
    t.add_column("saved", justify="right", no_wrap=True)
    rows = doc["layers"][:top] if top else doc["layers"]
    for r in rows:
        t.add_row(shown(r["layer"]), short_label(r["method"]), f"{r['rank']}/{r['p']}",
                  metric_value(spec, r["metrics"], r["value"]),
                  f"{r['damage']:+.3g}", f"{r['params_saved']:,}")
    parts = [t]
    if doc["plan"] is not None:
        plan = doc["plan"]
        p = Table(title=shown(f"plan ({short_label(plan['method'])}, budget {plan['budget']}): layers added, least "
                              "damaging first, evaluated together"), title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
        p.add_column("step", justify="right")
        p.add_column("layer added", overflow="ellipsis", no_wrap=True, max_width=30)
        p.add_column("ŝ", justify="right")
        p.add_column(label, justify="right")
        p.add_column("")
        for i, s in enumerate(plan["steps"], start=1):
            p.add_row(str(i), shown(s["layer"]), str(s["rank"]), spec.show(s["value"]),
                      Text("within" if s["within"] else "over budget: stop", style="" if s["within"] else "yellow"))
        parts += [p, Text(f"plan: {len(plan['ranks'])} layers truncated within {plan['budget']}")]
    return Group(*parts)


def short_labels(labels: list[str]) -> tuple[list[str], str]:
    """Labels without their common prefix and suffix (mlp_bs16.safetensors, mlp_bs64… → 16, 64…),
    and the pattern they came from (mlp_bs*.safetensors); the labels as they are when nothing
    is shared or a label would be left empty."""
    if len(labels) < 2:
        return labels, ""
    pre = os.path.commonprefix(labels)
    suf = os.path.commonprefix([l[::-1] for l in labels])[::-1]
    n = min(len(l) for l in labels)
    if len(pre) + len(suf) > n:
        suf = suf[len(pre) + len(suf) - n:]
    cut = [l[len(pre):len(l) - len(suf)] for l in labels]
    if not (pre or suf) or not all(cut):
        return labels, ""
    return cut, f"{pre}*{suf}"


def compare_table(doc: dict, methods) -> Table:
    """Layers × checkpoints, each cell ŝ per method (e.g. 97/185); layers no checkpoint could
    analyse are left out, and a cell says why it is empty."""
    labels = [c["label"] for c in doc["checkpoints"]]
    heads, pattern = short_labels(labels)
    noise = any(r.get("noise") for layer in doc["layers"] for r in layer["per_checkpoint"].values())
    title = f"ŝ {'/'.join(short_label(m) for m in methods)} per checkpoint{' ' + pattern if pattern else ''} " \
            "(⚠ poor MP fit" + ("; noise m/h/c/t: MP, heteroscedastic, correlated, heavy-tailed)" if noise else ")")
    t = Table(title=shown(title), title_justify="left", pad_edge=False)
    t.add_column("layer", overflow="ellipsis", no_wrap=True, min_width=10, max_width=28)
    for head in heads:
        t.add_column(shown(head), justify="right", overflow="ellipsis", no_wrap=True, max_width=14)
    if any(l["status"] != "matched" or l["warnings"] for l in doc["layers"]):
        t.add_column("match", overflow="ellipsis", no_wrap=True, max_width=16)
    for layer in doc["layers"]:
        per = [layer["per_checkpoint"][label] for label in labels]
        if not any(r.get("status") == "ok" for r in per):
            continue
        cells = []
        for r in per:
            if r["state"] == "missing":
                cells.append(Text("missing", style="dim"))
            elif r["status"] != "ok":
                cells.append(Text("–", style="dim"))
            else:
                cells.append(rank_cell(r["methods"], methods).append_text(noise_cell(r["noise"], letter=True)))
        note = layer["status"] if layer["status"] != "matched" else ("dtype" if layer["warnings"] else "")
        extra = [Text(note, style="yellow")] if len(t.columns) > len(labels) + 1 else []
        t.add_row(shown(layer["key"]), *cells, *extra)
    return t


# Short tags for the delta table's note column; the full warnings follow the table.
WARNING_TAGS = (("dtype differs", "dtype"), ("rounding level", "rounding?"), ("one lineage", "lineage?"))


def delta_table(doc: dict, methods) -> Group:
    t = Table(title=shown(f"ΔW = {doc['tuned']} − {doc['base']}"), title_justify="left", pad_edge=False)
    t.add_column("layer", overflow="ellipsis", no_wrap=True, max_width=30)
    t.add_column(f"ŝ {'/'.join(short_label(m) for m in methods)}", justify="right", no_wrap=True)
    t.add_column("r90", justify="right", no_wrap=True)
    t.add_column("stable", justify="right", no_wrap=True, min_width=6)
    t.add_column("ΔW/W", justify="right", no_wrap=True)
    noise = any(rec["noise"] for rec in doc["layers"])
    if noise:
        t.add_column("noise", no_wrap=True)
    t.add_column("note", overflow="ellipsis", no_wrap=True, max_width=18)
    notes = []
    for rec in doc["layers"]:
        if rec["status"] == "ok":
            ranks = "/".join(fmt(rec["methods"][m]["rank"], "d") for m in methods)
            tags = [tag for w in rec["warnings"] for key, tag in WARNING_TAGS if key in w]
            note = Text(" ".join(tags), style="yellow")
            notes += [shown(f"{rec['key']}: {w}", "yellow") for w in rec["warnings"]]
        else:
            ranks = "–"
            note = shown("unchanged" if rec["status"] == "unchanged" else rec["reason"] or rec["status"], "dim")
        t.add_row(shown(rec["key"]), ranks, fmt(rec["energy_rank"]["90"], "d"), fmt(rec["stable_rank"], ".1f"),
                  fmt(rec["rel_fro"], ".2g"), *([noise_cell(rec["noise"])] if noise else []), note)
    return Group(t, *notes)
