"""The command line: ``rmt-tui [PATH ...]`` opens the app; ``report``, ``truncate``, ``eval`` and
``sweep`` give the same numbers without a terminal UI. stdout carries data only; progress and
messages go to stderr. Textual is imported only when the app is opened.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

from core import __version__
from core.errors import (
    CheckpointError,
    EvaluationError,
    InsufficientMemoryError,
    OutputExistsError,
    OutputWriteError,
    RmtError,
    RmtWarning,
    UnsafeCheckpointError,
    UsageError,
)
from core.text import printable

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3  # unreadable or invalid checkpoint / data
EXIT_UNSAFE = 4  # a pickle that asked to run code
EXIT_EVAL = 5  # evaluator missing or failed
EXIT_EXISTS = 6  # output exists and --force was not given
EXIT_MEMORY = 7  # a tensor (or its analysis) needs more memory than is available; refused before reading
EXIT_WRITE = 8  # the output could not be written (disk full, read-only, permission denied); nothing left behind
EXIT_INTERRUPTED = 130

COMMANDS = ("report", "compare", "delta", "truncate", "eval", "sweep")

EPILOG = """exit codes: 0 ok, 2 usage error, 3 unreadable or invalid input, 4 unsafe input (pickle that
runs code; refused), 5 evaluator error, 6 output exists (use --force), 7 not enough memory for a
tensor (refused before reading it), 8 output cannot be written (disk full, read-only, permission
denied; nothing left behind), 130 interrupted (Ctrl-C)"""


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    from core.rmt.methods import DEFAULT_METHODS, METHODS

    g = p.add_argument_group("analysis")
    g.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list of methods, from {', '.join(METHODS)} (default: %(default)s)")
    g.add_argument("--layers", action="append", metavar="GLOB", help="only layers matching GLOB (repeatable)")
    for cls in METHODS.values():  # each method's own parameters, as it declares them
        for prm, default in zip(cls.params, cls().settings().values()):
            g.add_argument(prm.flag, type=prm.type, default=default,
                           help=f"{prm.help} in {prm.allowed()} (default: %(default)s)")
    g.add_argument("--weighting", choices=("uniform", "sv"), default="uniform",
                   help="Avew weights (default: %(default)s)")
    g.add_argument("--conv-view", choices=("reshape", "positions"), default="reshape",
                   help="conv kernels as (out, in·kh·kw) or one out×in matrix per position (default: %(default)s)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the spectrum cache")


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where analyses run")
    g.add_argument("--executor", default="local", metavar="local|ray|ray:HOST:PORT|ray://HOST:PORT",
                   help="local (default), or a Ray cluster: `ray` follows Ray's rule (RAY_ADDRESS, a cluster "
                        "started on this host, else a private local one); needs pip install 'rmt-tui[ray]'")
    g.add_argument("--gpus-per-task", type=float, default=0.0, metavar="G",
                   help="GPUs per Ray task, fractions allowed (default: %(default)s)")
    g.add_argument("--cpus-per-task", type=float, default=1.0, metavar="C",
                   help="CPUs per Ray task (default: %(default)s)")
    g.add_argument("--max-retries", type=int, default=3, metavar="N",
                   help="times a Ray task is re-run when its worker or node is lost (default: %(default)s)")


def executor_from(args):
    from core.executors import make_executor

    return make_executor(getattr(args, "executor", "local"), getattr(args, "gpus_per_task", 0.0),
                         getattr(args, "cpus_per_task", 1.0), getattr(args, "max_retries", 3))


def _add_evaluator_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--evaluator", metavar="FILE.py|module:function",
                   help="your evaluate(state_dict) -> {'accuracy': …}; this runs your code. Default: the built-in "
                        "evaluator the checkpoint calls for (demo models: MNIST accuracy; Hugging Face folders: "
                        "label-free hf-causal-lm / hf-encoder)")
    p.add_argument("--text", metavar="FILE", help="text for the Hugging Face evaluators (default: CPython's "
                   "pydoc_data reference prose, present in every install)")


def build_parser() -> argparse.ArgumentParser:
    from core.rmt.methods import DEFAULT_METHODS, METHODS

    ap = argparse.ArgumentParser(prog="rmt-tui", description="Signal and noise in neural-network weights: "
                                 "random-matrix spectra, thresholds, truncation and evaluation.", epilog=EPILOG)
    ap.add_argument("--version", action="version", version=f"rmt-tui {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="{app,report,compare,delta,truncate,eval,sweep}")

    app = sub.add_parser("app", help="open the terminal app (the default when no command is given)", epilog=EPILOG)
    app.add_argument("paths", nargs="*", metavar="PATH", help="checkpoints to open (default: the bundled demo model)")
    _add_analysis_options(app)
    _add_executor_options(app)
    _add_evaluator_option(app)

    rep = sub.add_parser("report", help="analyse every layer; table, JSON or CSV on stdout", epilog=EPILOG)
    rep.add_argument("path", metavar="PATH")
    rep.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _add_analysis_options(rep)
    _add_executor_options(rep)

    cmp = sub.add_parser("compare", help="the same layers of several checkpoints side by side (spectra, ŝ, fit)",
                         epilog=EPILOG)
    cmp.add_argument("paths", nargs="+", metavar="PATH", help="two or more checkpoints (any formats, mixed)")
    cmp.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _add_analysis_options(cmp)

    dl = sub.add_parser("delta", help="what fine-tuning changed: the spectrum of W_tuned − W_base per layer",
                        epilog=EPILOG)
    dl.add_argument("base", metavar="BASE")
    dl.add_argument("tuned", metavar="TUNED")
    dl.add_argument("--format", choices=("table", "json", "csv"), default="table")
    dl.add_argument("--rank-pattern", type=Path, metavar="OUT.json",
                    help="write each module's ŝ(ΔW) as PEFT rank_pattern/alpha_pattern (adapter_config fields)")
    dl.add_argument("--extract-lora", type=Path, metavar="OUT.safetensors",
                    help="write a LoRA adapter (lora_A, lora_B per module) with W_base + B·A = the truncated delta")
    dl.add_argument("--lora-rank", default=DEFAULT_METHODS[0], metavar="|".join(METHODS) + "|rank:K",
                    help="the rank of each module in both exports (default: %(default)s, its ŝ(ΔW))")
    dl.add_argument("--force", action="store_true", help="replace output files that exist")
    _add_analysis_options(dl)

    tr = sub.add_parser("truncate", help="truncate layers to a method's rank and write safetensors", epilog=EPILOG)
    tr.add_argument("path", metavar="PATH")
    how = tr.add_mutually_exclusive_group(required=True)
    how.add_argument("--method", metavar="|".join(METHODS) + "|rank:K")
    how.add_argument("--plan", type=Path, metavar="PLAN.json", help="the ranks of `eval --each --budget … --plan-out`")
    tr.add_argument("--mode", choices=("hard", "shrink"), default="hard")
    tr.add_argument("-o", "--output", required=True, type=Path, metavar="OUT")
    tr.add_argument("--force", action="store_true", help="replace OUT if it exists")
    _add_analysis_options(tr)

    ev = sub.add_parser("eval", help="accuracy and Avew before and after truncation by each method", epilog=EPILOG)
    ev.add_argument("path", metavar="PATH")
    ev.add_argument("--mode", choices=("hard", "shrink"), default="hard")
    ev.add_argument("--format", choices=("table", "json"), default="table")
    ev.add_argument("--each", action="store_true",
                    help="per-layer sensitivity: truncate each layer alone to each method's ŝ, sorted by damage")
    ev.add_argument("--budget", metavar="METRIC=VALUE", help="with --each: add layers, least damaging first, while "
                    "the model stays within e.g. kl=0.05, fidelity=0.99 or accuracy=-0.5pt")
    ev.add_argument("--plan-method", default=DEFAULT_METHODS[0], choices=tuple(METHODS),
                    help="the method whose ŝ the plan uses (default: %(default)s)")
    ev.add_argument("--plan-out", type=Path, metavar="PLAN.json",
                    help="write the plan (layer → rank) for `truncate --plan`; --force replaces it")
    ev.add_argument("--force", action="store_true", help="replace --plan-out if it exists")
    _add_evaluator_option(ev)
    _add_analysis_options(ev)

    sw = sub.add_parser("sweep", help="accuracy and Avew against the kept rank of one layer", epilog=EPILOG)
    sw.add_argument("path", metavar="PATH")
    sw.add_argument("--layer", required=True, metavar="NAME")
    sw.add_argument("--ranks", metavar="START:STOP:STEP", help="ranks to try (default: 16 points from 0 to p, "
                    "plus each method's ŝ)")
    sw.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _add_evaluator_option(sw)
    _add_analysis_options(sw)
    return ap


# ------------------------------------------------------------------------------------------ helpers


def analysis_options(args, resolve_auto: bool = True):
    """The analysis options from the command line. The app leaves ``--device auto`` for its
    analysis process to resolve, so that starting it does not wait for torch to import."""
    from core.device import resolve_device
    from core.rmt.methods import METHODS
    from core.scan import AnalysisOptions

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown method {unknown[0] if unknown else '(none)'!r}; choose from {', '.join(METHODS)}")
    params = {m: {prm.name: getattr(args, prm.dest) for prm in METHODS[m].params} for m in methods}
    opts = AnalysisOptions.make(methods, params, weighting=args.weighting,
                                device=resolve_device(args.device) if resolve_auto or args.device != "auto" else "auto",
                                use_cache=not args.no_cache)
    try:
        opts.method_objects()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return opts


def options_record(args, opts) -> dict:
    return {"methods": list(opts.methods), "params": {m: dict(p) for m, p in opts.params},
            "weighting": opts.weighting, "conv_view": args.conv_view, "layers": args.layers or None}


@contextmanager
def progress_bar(label: str):
    """A transient Rich progress bar on stderr (layer i/n, ETA); nothing when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield lambda done, total, what: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[what]}"),
                  console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(label, total=None, what="")

        def update(done, total, what):
            prog.update(task, completed=done, total=total, what=what)

        yield update


def open_and_analyse(args, ws=None):
    """Open ``args.path`` (in the workspace ``ws``, when the job that follows uses it) and analyse
    the selected layers; returns (checkpoint, options, results)."""
    from core.jobs import Workspace
    from core.scan import select_layers

    opts = analysis_options(args)
    executor = executor_from(args)
    ckpt = (ws or Workspace()).checkpoint(args.path, args.conv_view)
    layers = select_layers(ckpt, args.layers)
    if args.layers and not layers:
        raise UsageError(f"no layer of {args.path} matches {', '.join(args.layers)}")
    with progress_bar("analysing") as tick:
        results = list(executor.run(ckpt, layers, opts, progress=tick))
    return ckpt, opts, results


def write_json(doc) -> None:
    json.dump(doc, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def write_csv(header, rows) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)  # the csv module writes None as an empty field


def emit(fmt: str, doc, table, csv_rows=None) -> None:
    """A command's document on stdout: JSON, CSV (``csv_rows(doc)`` → header, rows) or a Rich
    table (``table(tables_module, doc)``; the tables module, and Rich, load only for this)."""
    if fmt == "json":
        write_json(doc)
    elif fmt == "csv":
        write_csv(*csv_rows(doc))
    else:
        from . import tables

        print_table(table(tables, doc))


def print_table(table) -> None:
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 80).print(table)


# ------------------------------------------------------------------------------------------ commands


def cmd_report(args) -> int:
    from core.report import report_csv_rows, report_document

    ckpt, opts, results = open_and_analyse(args)
    doc = report_document(str(ckpt.path), results, opts.methods, options_record(args, opts))
    emit(args.format, doc, lambda t, d: t.report_table(d, opts.methods), lambda d: report_csv_rows(d, opts.methods))
    return EXIT_OK


def open_matched(paths, args, labels=None, ws=None):
    """Open the checkpoints and pair their layers; the match summary goes to stderr before any
    analysis starts. With a workspace (two paths) the pairing is the one its jobs use."""
    from core.compare.delta import select_rows
    from core.compare.matching import match_layers
    from core.jobs import Workspace

    ws = ws or Workspace()
    ckpts = [ws.checkpoint(p, args.conv_view) for p in paths]
    table = ws.pair(*paths, args.conv_view) if len(paths) == 2 and labels is None else match_layers(ckpts, labels)
    rows = select_rows(table, args.layers)
    if args.layers and not rows:
        raise UsageError(f"no layer matches {', '.join(args.layers)}")
    for line in table.summary_lines():
        print(f"match: {printable(line)}", file=sys.stderr)
    return ckpts, table, rows


def cmd_compare(args) -> int:
    from core.compare.delta import compare_checkpoints
    from core.report import compare_csv_rows, compare_document

    if len(args.paths) < 2:
        raise UsageError("compare needs two or more checkpoints")
    opts = analysis_options(args)
    ckpts, table, rows = open_matched(args.paths, args)
    with progress_bar("comparing") as tick:
        analysed = list(compare_checkpoints(ckpts, rows, opts, progress=tick))
    doc = compare_document(table.labels, [str(c.path) for c in ckpts], table, analysed, opts.methods,
                           options_record(args, opts))
    emit(args.format, doc, lambda t, d: t.compare_table(d, opts.methods), lambda d: compare_csv_rows(d, opts.methods))
    return EXIT_OK


def cmd_delta(args) -> int:
    from core import jobs
    from core.jobs import DeltaRequest, Workspace
    from core.paths import refuse_existing
    from core.report import delta_csv_rows, delta_document

    outputs = [p for p in (args.rank_pattern, args.extract_lora) if p is not None]
    for out in outputs:  # before the analysis, not after it
        refuse_existing(out, args.force)
        if out.resolve() in (Path(args.base).resolve(), Path(args.tuned).resolve()):
            raise UsageError(f"{out}: refusing to write over a source checkpoint")
    opts = analysis_options(args)
    ws = Workspace()
    (base, tuned), table, rows = open_matched([args.base, args.tuned], args, ws=ws)
    pairs = tuple(tuple(e.name for e in r.entries) for r in rows)
    with progress_bar("delta") as tick:
        results = jobs.delta(DeltaRequest(args.base, args.tuned, opts, pairs, args.conv_view), tick, ws=ws)
    doc = delta_document(str(base.path), str(tuned.path), table, results, opts.methods, options_record(args, opts))
    if outputs:
        write_delta_exports(args, base, tuned, results)
    emit(args.format, doc, lambda t, d: t.delta_table(d, opts.methods), lambda d: delta_csv_rows(d, opts.methods))
    return EXIT_OK


def write_delta_exports(args, base, tuned, results) -> None:
    from core.compare.lora import delta_ranks, extract_lora, rank_pattern_document
    from core.paths import write_text_output

    plan = delta_ranks(results, args.lora_rank)
    if args.rank_pattern is not None:
        doc = rank_pattern_document(plan, args.lora_rank)
        write_text_output(args.rank_pattern, json.dumps(doc, indent=2) + "\n", overwrite=args.force)
        print(f"wrote {args.rank_pattern} ({len(doc['rank_pattern'])} modules)", file=sys.stderr)
    if args.extract_lora is not None:
        from core.truncation import export_safetensors

        with progress_bar("extracting LoRA"):
            state = extract_lora(base, tuned, results, plan)
        meta = {"rmt_tui.base": str(base.path), "rmt_tui.tuned": str(tuned.path), "rmt_tui.rank": args.lora_rank,
                "rmt_tui.rank_pattern": json.dumps({m: k for m, k in plan.items() if k > 0})}
        export_safetensors(state, args.extract_lora, meta, overwrite=args.force)
        print(f"wrote {args.extract_lora} ({len(state) // 2} modules, ranks {args.lora_rank})", file=sys.stderr)


def cmd_truncate(args) -> int:
    from core import jobs
    from core.jobs import TruncateRequest, Workspace
    from core.paths import refuse_existing
    from core.report import read_plan
    from core.truncation import resolve_ranks

    refuse_existing(args.output, args.force)  # before the analysis, not after it
    if args.output.resolve() == Path(args.path).resolve():
        raise UsageError(f"{args.output}: refusing to write over the source checkpoint")
    if args.plan is not None:
        plan, args.method = read_plan(args.plan)
        args.layers = (args.layers or []) + list(plan)
    ws = Workspace()
    ckpt, opts, results = open_and_analyse(args, ws)
    if args.plan is None:
        plan = resolve_ranks(args.method, [r for r in results if r.layer.analysable])
    elif missing := [n for n in plan if n not in {r.layer.name for r in results if r.layer.analysable}]:
        raise UsageError(f"{args.plan}: names layers {args.path} has no matrix for: {', '.join(missing[:3])}")
    sigma2 = jobs.shrink_variances(args.method, results, plan, opts.methods) if args.mode == "shrink" else {}
    with progress_bar("truncating"):
        jobs.truncate(TruncateRequest(args.path, plan, args.output, args.method, args.mode, sigma2, args.force,
                                      args.conv_view), ws=ws)
    for name, k in plan.items():
        print(f"{name}: rank {k}", file=sys.stderr)
    print(f"wrote {args.output} ({len(plan)} layers truncated, {args.mode})", file=sys.stderr)
    return EXIT_OK


def evaluator_choice(args):
    from core.device import resolve_device
    from core.evaluate.outcomes import EvaluatorChoice

    return EvaluatorChoice(args.evaluator, args.text, resolve_device(args.device))


def cmd_eval(args) -> int:
    from core import jobs
    from core.jobs import EvaluateRequest, Workspace
    from core.report import eval_document

    if (args.budget or args.plan_out) and not args.each:
        raise UsageError("--budget and --plan-out go with --each")
    if args.plan_out and not args.budget:
        raise UsageError("--plan-out needs a --budget to plan within")
    if args.plan_out is not None:
        from core.paths import refuse_existing

        refuse_existing(args.plan_out, args.force)
    ws = Workspace()
    ckpt, opts, results = open_and_analyse(args, ws)
    choice = evaluator_choice(args)
    ws.evaluator(args.path, args.conv_view, choice)  # chosen (and its reference set) before the bar starts
    if args.each:
        return eval_each(args, ws, opts, results, choice)
    with progress_bar("evaluating") as tick:
        rep = jobs.evaluate(EvaluateRequest(args.path, tuple(results), choice, opts.methods, args.mode,
                                            args.conv_view), tick, ws=ws)
    emit(args.format, eval_document(str(ckpt.path), rep.evaluator, rep), lambda t, d: t.eval_table(d))
    _say_where(args, ws, choice)
    return EXIT_OK


def _say_where(args, ws, choice) -> None:
    """Under a table, what the evaluator scored (the label-free ones' text windows)."""
    _, evaluator = ws.evaluator(args.path, args.conv_view, choice)
    if args.format == "table" and (where := getattr(evaluator, "where", None)):
        print(f"evaluated on {where}", file=sys.stderr)


def eval_each(args, ws, opts, results, choice) -> int:
    from core import jobs
    from core.jobs import SensitivityRequest
    from core.report import plan_document, sensitivity_document

    req = SensitivityRequest(args.path, tuple(results), choice, opts.methods, args.mode, args.plan_method,
                             args.budget, args.conv_view)
    with progress_bar("each layer" + (" and a plan" if args.budget else "")) as tick:
        rep = jobs.sensitivity(req, tick, ws=ws)
    path = str(ws.checkpoint(args.path, args.conv_view).path)
    if args.plan_out is not None:
        from core.paths import write_text_output

        write_text_output(args.plan_out, json.dumps(plan_document(path, rep), indent=2) + "\n", overwrite=args.force)
        print(f"wrote {args.plan_out} ({len(rep.planned)} layers)", file=sys.stderr)
    emit(args.format, sensitivity_document(path, rep), lambda t, d: t.sensitivity_table(d))
    return EXIT_OK


def cmd_sweep(args) -> int:
    from core import jobs
    from core.evaluate.measure import parse_ranks
    from core.jobs import SweepRequest, Workspace
    from core.report import sweep_csv_rows, sweep_document

    args.layers = [args.layer]
    ws = Workspace()
    ckpt, opts, results = open_and_analyse(args, ws)
    result = next((r for r in results if r.layer.name == args.layer), None)
    if result is None:
        raise UsageError(f"no layer named {args.layer!r} in {args.path}")
    choice = evaluator_choice(args)
    ws.evaluator(args.path, args.conv_view, choice)
    p = result.analysis.shape.p if result.analysis else 0
    ranks = tuple(parse_ranks(args.ranks, p)) if args.ranks else None
    with progress_bar("sweeping") as tick:
        rep = jobs.sweep(SweepRequest(args.path, result, choice, ranks, args.conv_view), tick, ws=ws)
    emit(args.format, sweep_document(str(ckpt.path), rep.evaluator, rep), lambda t, d: t.sweep_table(d),
         sweep_csv_rows)
    return EXIT_OK


def cmd_app(args) -> int:
    from core.paths import DEFAULT_DEMO_MODEL

    from .app import RmtApp

    opts = analysis_options(args, resolve_auto=False)
    paths = [Path(p) for p in args.paths] or [DEFAULT_DEMO_MODEL]
    from core.evaluate.outcomes import EvaluatorChoice

    choice = EvaluatorChoice(args.evaluator, args.text, opts.device if opts.device != "auto" else "cpu")
    executor_from(args)  # a bad --executor fails here, before the app starts
    executor = (args.executor, args.gpus_per_task, args.cpus_per_task, args.max_retries)
    RmtApp(paths, options=opts, conv_view=args.conv_view, evaluator=choice, executor=executor).run()
    # A cancelled worker may still be inside one LAPACK call, which cannot be interrupted; its
    # result is discarded anyway (cache writes are atomic), so do not make the user wait for it.
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


# Most specific first: an unsafe pickle is also a checkpoint error.
ERROR_CODES = [(UnsafeCheckpointError, EXIT_UNSAFE), (InsufficientMemoryError, EXIT_MEMORY),
               (CheckpointError, EXIT_INPUT), (EvaluationError, EXIT_EVAL), (OutputExistsError, EXIT_EXISTS),
               (OutputWriteError, EXIT_WRITE), (UsageError, EXIT_USAGE), (RmtError, EXIT_INPUT)]

HANDLERS = {"report": cmd_report, "compare": cmd_compare, "delta": cmd_delta, "truncate": cmd_truncate,
            "eval": cmd_eval, "sweep": cmd_sweep, "app": cmd_app}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command, or a path first: open the app.
    if not argv or (argv[0] not in COMMANDS + ("app",) and argv[0] not in ("-h", "--help", "--version")):
        argv = ["app"] + argv
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RmtWarning)
            warnings.showwarning = _show_warning
            return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print("rmt-tui: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except RmtError as exc:
        code = next(code for cls, code in ERROR_CODES if isinstance(exc, cls))
        print(f"rmt-tui: error: {printable(str(exc))}", file=sys.stderr)
        return code


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """RmtWarnings are messages for the user, one line on stderr; others keep Python's format."""
    if issubclass(category, RmtWarning):
        print(f"rmt-tui: warning: {printable(str(message))}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


if __name__ == "__main__":
    raise SystemExit(main())
