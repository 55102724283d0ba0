"""Plain-data renderings of the analysis, evaluation and sweep records (JSON documents, CSV rows).

The schemas are versioned; the README documents them. Numbers that do not apply are None/null.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UsageError
from core.rmt.analysis import METHOD_FIELDS
from core.scan import LayerResult

if TYPE_CHECKING:  # evaluation needs torch; a report does not
    from core.evaluate.outcomes import EvalReport, MetricSpec, SensitivityReport, SweepReport

REPORT_SCHEMA = "rmt-tui/report/1"
EVAL_SCHEMA = "rmt-tui/eval/2"
SWEEP_SCHEMA = "rmt-tui/sweep/2"
SENSITIVITY_SCHEMA = "rmt-tui/sensitivity/1"
PLAN_SCHEMA = "rmt-tui/plan/1"
COMPRESS_SCHEMA = "rmt-tui/compress/1"


def options_record(opts, conv_view: str, layers) -> dict[str, Any]:
    """The ``options`` of a report or compare document: what produced its numbers."""
    return {"methods": list(opts.methods), "params": {m: dict(p) for m, p in opts.params},
            "weighting": opts.weighting, "conv_view": conv_view, "layers": list(layers) if layers else None,
            "cosines": opts.cosines, "equalise": opts.equalise, "noise": opts.noise}


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
        "equalised": a.equalised if a is not None else False,
        "ks_raw": a.ks_raw if a is not None else None,
        "noise": a.noise.to_dict() if a is not None and a.noise is not None else None,
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


CSV_LAYER_FIELDS = ("name", "shape", "matrix", "kind", "dtype", "status", "reason", "p", "N", "c", "sv_max",
                    "equalised", "ks_raw", "noise")


def report_csv_rows(doc: dict[str, Any], methods: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    header = list(CSV_LAYER_FIELDS) + [f"{m}_{f}" for m in methods for f in METHOD_FIELDS]
    rows = []
    for layer in doc["layers"]:
        row = [layer[f] for f in CSV_LAYER_FIELDS]
        row[1] = "x".join(map(str, row[1]))  # shape
        if row[2] is not None:  # matrix
            row[2] = "x".join(map(str, row[2]))
        row[-1] = row[-1]["model"] if row[-1] else None  # the noise model (its evidence is in the JSON)
        for m in methods:
            row += layer["methods"][m].values()  # METHOD_FIELDS order (to_dict)
        rows.append(row)
    return header, rows


def primary_record(spec: MetricSpec) -> dict[str, Any]:
    return {"metric": spec.key, "label": spec.label, "higher_is_better": spec.higher_is_better}


def eval_document(checkpoint: str, evaluator: str, rep: EvalReport) -> dict[str, Any]:
    key = rep.primary.key
    return {
        "schema": EVAL_SCHEMA, "checkpoint": checkpoint, "evaluator": evaluator, "primary": primary_record(rep.primary),
        "mode": rep.mode, "baseline": rep.baseline,
        **({"calibration": rep.calibration, "fallback": rep.fallback} if rep.mode == "whitened" else {}),
        "methods": {m: {"value": o.metrics[key], "metrics": o.metrics, "ranks": o.ranks,
                        "params_saved": o.params_saved, "avew": o.avew, "mean_avew": o.mean_avew}
                    for m, o in rep.outcomes.items()},
    }


def compress_document(checkpoint: str, rep) -> dict[str, Any]:
    """``eval --compress``: the baseline, and per mode what was achieved at the same budget."""
    return {
        "schema": COMPRESS_SCHEMA, "checkpoint": checkpoint, "evaluator": rep.evaluator,
        "primary": primary_record(rep.primary), "baseline": rep.baseline,
        "compress": {"target": rep.target, "allocation": rep.rule, "calibration": rep.calibration,
                     "modes": {m: {"achieved": o.allocation.achieved, "allocation": o.allocation.rule,
                                   "ranks": o.allocation.ranks, "params_saved": o.allocation.params_saved,
                                   "metrics": o.metrics, "value": o.metrics[rep.primary.key],
                                   "fallback": o.fallback, "seconds": o.seconds}
                               for m, o in rep.outcomes.items()}},
    }


def sweep_document(checkpoint: str, evaluator: str, rep: SweepReport) -> dict[str, Any]:
    key = rep.primary.key
    return {
        "schema": SWEEP_SCHEMA, "checkpoint": checkpoint, "evaluator": evaluator,
        "primary": primary_record(rep.primary), "layer": rep.layer, "p": rep.p, "mode": rep.mode,
        "baseline": rep.baseline,
        "method_ranks": rep.method_ranks,
        "points": [{"rank": pt.rank, "value": pt.metrics[key], "metrics": pt.metrics, "avew": pt.avew}
                   for pt in rep.points],
    }


def sweep_csv_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    methods = list(doc["method_ranks"])
    return (["rank", doc["primary"]["metric"]] + [f"avew_{m}" for m in methods],
            [[pt["rank"], pt["value"]] + [pt["avew"][m] for m in methods] for pt in doc["points"]])


def sensitivity_document(checkpoint: str, rep: SensitivityReport) -> dict[str, Any]:
    key = rep.primary.key
    plan = None
    if rep.plan_method is not None:
        plan = {"method": rep.plan_method, "budget": rep.budget, "ranks": rep.planned,
                "steps": [{"layer": s.layer, "rank": s.rank, "value": s.metrics[key], "within": s.within,
                           "metrics": s.metrics} for s in rep.plan]}
    return {
        "schema": SENSITIVITY_SCHEMA, "checkpoint": checkpoint, "evaluator": rep.evaluator,
        "primary": primary_record(rep.primary), "baseline": rep.baseline,
        "seconds_per_evaluation": rep.seconds_per_eval,
        "layers": [{"layer": r.layer, "method": r.method, "rank": r.rank, "p": r.p, "value": r.metrics[key],
                    "damage": r.damage, "params_saved": r.params_saved, "metrics": r.metrics} for r in rep.rows],
        "plan": plan,
    }


def plan_document(checkpoint: str, rep: SensitivityReport) -> dict[str, Any]:
    """What ``truncate --plan`` reads: layer → rank, with the budget it was found under, and the
    same ranks as PEFT LoraConfig fields (rank_pattern) for training or extracting an adapter."""
    from core.compare.lora import module_name, rank_pattern_document

    pattern = rank_pattern_document({module_name(n): k for n, k in rep.planned.items()}, rep.plan_method or "")
    return {"schema": PLAN_SCHEMA, "checkpoint": checkpoint, "method": rep.plan_method, "budget": rep.budget,
            "primary": primary_record(rep.primary), "ranks": rep.planned, "rank_pattern": pattern}


def read_plan(path: Path) -> tuple[dict[str, int], str]:
    """A plan written by ``plan_document`` (`eval --each --budget … --plan-out`): (layer → rank,
    the method it used)."""
    try:
        doc = json.loads(path.read_text())
        ranks = doc["ranks"]
        if not isinstance(ranks, dict) or not all(isinstance(k, int) and k >= 0 for k in ranks.values()):
            raise ValueError("'ranks' must map layer names to ranks ≥ 0")
        return {str(n): int(k) for n, k in ranks.items()}, str(doc.get("method") or "plan")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a plan written by `rmt-tui eval --each --budget … --plan-out` ({exc})") from None


COMPARE_SCHEMA = "rmt-tui/compare/1"
DELTA_SCHEMA = "rmt-tui/delta/1"


def compare_document(labels: Sequence[str], paths: Sequence[str], table, analysed: Sequence[tuple],
                     methods: Sequence[str], options: dict[str, Any]) -> dict[str, Any]:
    """``analysed``: (MatchRow, [LayerResult | None per checkpoint]) pairs."""
    layers = []
    for row, results in analysed:
        per = {}
        for label, entry, r in zip(labels, row.entries, results):
            rec = {"state": entry.state, "note": entry.note or None}
            if r is not None:
                rec.update(layer_record(r, methods))
                a = r.analysis  # s₁/s₊ per method: comparable across shapes and scales
                rec["sv_max_over_edge"] = {m: a.edge_ratio(m) for m in a.methods} if a is not None else {}
            per[label] = rec
        layers.append({"key": row.key, "status": row.status, "rule": row.rule, "warnings": list(row.warnings),
                       "per_checkpoint": per})
    return {"schema": COMPARE_SCHEMA, "checkpoints": [{"label": l, "path": p} for l, p in zip(labels, paths)],
            "options": options, "match": table.summary(), "layers": layers}


def compare_csv_rows(doc: dict[str, Any], methods: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """One row per (layer, checkpoint)."""
    header = ["key", "checkpoint", "state"] + list(CSV_LAYER_FIELDS) + \
        [f"{m}_{f}" for m in methods for f in METHOD_FIELDS]
    rows = []
    for layer in doc["layers"]:
        for label, rec in layer["per_checkpoint"].items():
            base = [layer["key"], label, rec["state"]]
            if "name" not in rec:
                rows.append(base + [None] * (len(header) - 3))
                continue
            _, [row] = report_csv_rows({"layers": [rec]}, methods)
            rows.append(base + row)
    return header, rows


def delta_record(d, methods: Sequence[str]) -> dict[str, Any]:
    a = d.analysis
    entries = d.row.entries
    rec = {
        "key": d.key, "base_name": entries[0].name, "tuned_name": entries[1].name,
        "shape": list(d.base.shape) if d.base is not None else None,
        "matrix": [a.shape.m, a.shape.n] if a is not None else None,
        "dtypes": [e.layer.dtype if e.layer is not None else None for e in entries],
        "match": d.row.rule, "status": d.status, "reason": d.reason,
        "rel_fro": d.rel_fro, "energy_rank": {"90": d.energy_rank_90, "99": d.energy_rank_99},
        "stable_rank": d.stable_rank, "p": a.shape.p if a is not None else None,
        "sv_max": a.sv_max if a is not None else None, "methods": {}, "warnings": list(d.warnings),
        "noise": a.noise.to_dict() if a is not None and a.noise is not None else None,
    }
    for m in methods:
        res = a.methods.get(m) if a is not None else None
        rec["methods"][m] = res.to_dict() if res is not None else {f: None for f in METHOD_FIELDS}
    return rec


def delta_document(base: str, tuned: str, table, results: Sequence, methods: Sequence[str],
                   options: dict[str, Any]) -> dict[str, Any]:
    return {"schema": DELTA_SCHEMA, "base": base, "tuned": tuned, "options": options, "match": table.summary(),
            "layers": [delta_record(d, methods) for d in results]}


DELTA_CSV_FIELDS = ("key", "base_name", "tuned_name", "status", "reason", "rel_fro", "stable_rank", "p", "sv_max")


def delta_csv_rows(doc: dict[str, Any], methods: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    header = list(DELTA_CSV_FIELDS) + ["energy_rank_90", "energy_rank_99"] + \
        [f"{m}_{f}" for m in methods for f in METHOD_FIELDS] + ["warnings"]
    rows = []
    for rec in doc["layers"]:
        row = [rec[f] for f in DELTA_CSV_FIELDS] + [rec["energy_rank"]["90"], rec["energy_rank"]["99"]]
        for m in methods:
            row += rec["methods"][m].values()
        rows.append(row + ["; ".join(rec["warnings"])])
    return header, rows
