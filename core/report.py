"""Plain-data renderings of the analysis, evaluation and sweep records (JSON documents, CSV rows).

The schemas are versioned; the README documents them. Numbers that do not apply are None/null.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .analysis import METHOD_FIELDS
from .scan import LayerResult

if TYPE_CHECKING:  # evaluation needs torch; a report does not
    from .evaluation import EvalReport, SweepReport

REPORT_SCHEMA = "rmt-tui/report/1"
EVAL_SCHEMA = "rmt-tui/eval/1"
SWEEP_SCHEMA = "rmt-tui/sweep/1"


def layer_record(r: LayerResult, methods: Sequence[str]) -> dict[str, Any]:
    a = r.analysis
    shape = a.shape if a is not None else None
    out = {
        "name": r.layer.name,
        "shape": list(r.layer.shape),
        "matrix": list(r.layer.matrix) if r.layer.matrix else None,
        "kind": r.layer.kind,
        "dtype": r.layer.dtype,
        "status": r.status,
        "reason": r.reason,
        "p": shape.p if shape else None,
        "N": shape.N if shape else None,
        "c": shape.c if shape else None,
        "sv_max": a.sv_max if a is not None else None,
        "methods": {},
    }
    for m in methods:
        res = a.methods.get(m) if a is not None else None
        out["methods"][m] = res.to_dict() if res is not None else {f: None for f in METHOD_FIELDS}
        if res is None:
            out["methods"][m]["reason"] = r.reason
    return out


def report_document(checkpoint: str, results: Sequence[LayerResult], methods: Sequence[str],
                    options: dict[str, Any]) -> dict[str, Any]:
    return {"schema": REPORT_SCHEMA, "checkpoint": checkpoint, "options": options,
            "layers": [layer_record(r, methods) for r in results]}


CSV_LAYER_FIELDS = ("name", "shape", "matrix", "kind", "dtype", "status", "reason", "p", "N", "c", "sv_max")


def report_csv_rows(doc: dict[str, Any], methods: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    header = list(CSV_LAYER_FIELDS) + [f"{m}_{f}" for m in methods for f in METHOD_FIELDS]
    rows = []
    for layer in doc["layers"]:
        row = [layer[f] for f in CSV_LAYER_FIELDS]
        row[1] = "x".join(map(str, row[1]))  # shape
        if row[2] is not None:  # matrix
            row[2] = "x".join(map(str, row[2]))
        for m in methods:
            row += layer["methods"][m].values()  # METHOD_FIELDS order (to_dict)
        rows.append(row)
    return header, rows


def eval_document(checkpoint: str, evaluator: str, rep: EvalReport) -> dict[str, Any]:
    return {
        "schema": EVAL_SCHEMA, "checkpoint": checkpoint, "evaluator": evaluator, "mode": rep.mode,
        "baseline": rep.baseline,
        "methods": {m: {"accuracy": o.accuracy, "metrics": o.metrics, "ranks": o.ranks,
                        "params_saved": o.params_saved, "avew": o.avew, "mean_avew": o.mean_avew}
                    for m, o in rep.outcomes.items()},
    }


def sweep_document(checkpoint: str, evaluator: str, rep: SweepReport) -> dict[str, Any]:
    return {
        "schema": SWEEP_SCHEMA, "checkpoint": checkpoint, "evaluator": evaluator, "layer": rep.layer, "p": rep.p,
        "baseline": rep.baseline, "method_ranks": rep.method_ranks,
        "points": [{"rank": pt.rank, "accuracy": pt.accuracy, "metrics": pt.metrics, "avew": pt.avew}
                   for pt in rep.points],
    }
