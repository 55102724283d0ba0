"""Rich tables for the CLI's human-readable output; each fits an 80-column terminal."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

from core.methods import short_label
from core.text import printable


def shown(text: str, style: str = "") -> Text:
    """A name or message from a checkpoint as terminal text: control characters escaped, and
    never read as Rich markup (a tensor may be called "[red]x")."""
    return Text(printable(text), style=style)


def fmt(x, spec=".3g") -> str:
    """A number, or – when it does not apply."""
    return "–" if x is None else format(x, spec)


def report_table(doc: dict, methods) -> Table:
    t = Table(title=shown(doc["checkpoint"]), title_justify="left", pad_edge=False, expand=False)
    t.add_column("layer", overflow="ellipsis", no_wrap=True, max_width=28)
    t.add_column("matrix", no_wrap=True)
    for m in methods:
        t.add_column(f"ŝ {short_label(m)}", justify="right")
        t.add_column("Avew", justify="right")
    t.add_column("note", overflow="ellipsis", no_wrap=True, max_width=24)
    for layer in doc["layers"]:
        matrix = "×".join(map(str, layer["matrix"])) if layer["matrix"] else "–"
        results = [layer["methods"][m] for m in methods]
        cells = [c for r in results for c in (fmt(r["rank"], "d"), fmt(r["avew"]))]
        poor = [short_label(m) for m, r in zip(methods, results) if r["poor_fit"]]
        if layer["status"] != "ok":
            note = shown(layer["reason"], "dim")
        elif all(r["reason"] for r in results):
            note = shown(f"n/a: {results[0]['reason']}", "dim")
        else:
            note = Text("poor MP fit: " + ",".join(poor), style="yellow") if poor else Text("fit ok")
        t.add_row(shown(layer["name"]), matrix, *cells, note)
    return t


def eval_table(doc: dict) -> Table:
    t = Table(title=shown(f"{doc['checkpoint']} — evaluator {doc['evaluator']}"), title_justify="left")
    t.add_column("truncation")
    t.add_column("accuracy", justify="right")
    t.add_column("ranks", overflow="fold")
    t.add_column("params saved", justify="right")
    t.add_column("Avew", justify="right")
    t.add_row("none (baseline)", f"{doc['baseline']['accuracy']:.4f}", "", "", "")
    for m, o in doc["methods"].items():
        ranks = shown(" ".join(f"{k.rsplit('.', 1)[0]}:{v}" for k, v in o["ranks"].items()))
        t.add_row(f"{short_label(m)} ŝ ({doc['mode']})", f"{o['accuracy']:.4f}", ranks, f"{o['params_saved']:,}",
                  fmt(o["mean_avew"]))
    return t


def sweep_table(doc: dict) -> Table:
    marks = [(v, short_label(m)) for m, v in doc["method_ranks"].items() if v is not None]
    t = Table(title=shown(f"{doc['layer']} (p = {doc['p']}), baseline accuracy {doc['baseline']['accuracy']:.4f}"),
              title_justify="left")
    t.add_column("rank k", justify="right")
    t.add_column("accuracy", justify="right")
    methods = list(doc["method_ranks"])
    for m in methods:
        t.add_column(f"Avew ({short_label(m)} σ̂)", justify="right")
    t.add_column("")
    for pt in doc["points"]:
        here = [label for k, label in marks if k == pt["rank"]]
        t.add_row(str(pt["rank"]), f"{pt['accuracy']:.4f}", *[fmt(pt["avew"][m]) for m in methods],
                  f"← ŝ {', '.join(here)}" if here else "")
    return t
