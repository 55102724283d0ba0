"""The commands' handlers: each turns its parsed arguments into core requests (``core.jobs``),
runs them with a progress bar, and emits the document. Domain rules live in core, not here."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from core.errors import UsageError
from core.text import printable

from . import compressing  # whitened truncation and budgets (it calls back into this module)
from .cli import EXIT_OK
from .compressing import calibration_choice, one_mode
from .output import emit, progress_bar


def executor_from(args):
    from core.executors import make_executor

    return make_executor(getattr(args, "executor", "local"), getattr(args, "gpus_per_task", 0.0),
                         getattr(args, "cpus_per_task", 1.0), getattr(args, "max_retries", 3))


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
    return AnalysisOptions.make(methods, params, weighting=args.weighting,
                                device=resolve_device(args.device) if resolve_auto or args.device != "auto" else "auto",
                                use_cache=not args.no_cache, cosines=args.cosines, equalise=args.equalise,
                                noise=args.noise).checked()


def options_record(args, opts) -> dict:
    from core.report import options_record as record

    return record(opts, args.conv_view, args.layers)


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


def cmd_report(args) -> int:
    from core.report import report_csv_rows, report_document

    ws = None
    if args.whitened:
        from core.jobs import Workspace

        ws = Workspace()
    ckpt, opts, results = open_and_analyse(args, ws)
    record = options_record(args, opts)
    if args.whitened:
        results, record["calibration"] = compressing.whitened_results(args, ws, opts, results)
    doc = report_document(str(ckpt.path), results, opts.methods, record)
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
        refuse_existing(out, args.force, sources=[args.base, args.tuned], folder=out is args.extract_lora
                        and out.suffix != ".safetensors")
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
    from core.compare.lora import adapter_config, delta_ranks, extract_lora, rank_pattern_document, task_type_of
    from core.paths import write_text_output

    plan = delta_ranks(results, args.lora_rank)
    if args.rank_pattern is not None:
        doc = rank_pattern_document(plan, args.lora_rank)
        write_text_output(args.rank_pattern, json.dumps(doc, indent=2) + "\n", overwrite=args.force)
        print(f"wrote {args.rank_pattern} ({len(doc['rank_pattern'])} modules)", file=sys.stderr)
    if args.extract_lora is not None:
        # Provenance in the tensors' metadata: adapter_config.json holds only what PEFT knows.
        meta = {"rmt_tui.base": str(base.path), "rmt_tui.tuned": str(tuned.path), "rmt_tui.method": args.lora_rank,
                "rmt_tui.ranks": json.dumps({m: k for m, k in plan.items() if k > 0})}
        folder = args.extract_lora.suffix != ".safetensors"
        config = adapter_config(plan, str(base.path), task_type_of(base)) if folder else None
        with progress_bar("extracting LoRA"):
            state = extract_lora(base, tuned, results, plan, lora_alpha=config["lora_alpha"] if folder else None)
        if folder:
            from core.compare.lora import write_adapter_folder

            write_adapter_folder(args.extract_lora, state, config, meta, overwrite=args.force)
            what = "PEFT adapter folder: adapter_config.json, adapter_model.safetensors"
        else:
            from core.truncation import export_safetensors

            export_safetensors(state, args.extract_lora, meta, overwrite=args.force)
            what = "bare lora_A/lora_B tensors"
        print(f"wrote {args.extract_lora} ({what}; {len(state) // 2} modules, ranks {args.lora_rank})",
              file=sys.stderr)


def cmd_truncate(args) -> int:
    from core import jobs
    from core.jobs import TruncateRequest, Workspace
    from core.paths import refuse_existing
    from core.report import read_plan
    from core.truncation import resolve_ranks

    mode, target = one_mode(args), compressing.compress_target(args)
    factors = args.output.with_name(args.output.stem + ".factors.safetensors") if args.factors else None
    refuse_existing(args.output, args.force, sources=[args.path])  # before the analysis, not after it
    if factors is not None:
        refuse_existing(factors, args.force, sources=[args.path])
    if args.plan is not None:
        plan, args.method = read_plan(args.plan)
        args.layers = (args.layers or []) + list(plan)
    from core.rmt.methods import METHODS

    jobs.check_gguf_output(args.path, args.output)
    if args.method in METHODS:  # the method that sets the ranks is the one to analyse
        args.methods = args.method
    if target is not None and mode == "shrink":
        raise UsageError("--compress with --mode shrink: shrinkage needs a method's σ̂², a budget gives ranks only; "
                         "use hard or whitened")
    if mode == "shrink" and not args.method.startswith("rank:"):
        jobs.check_mode(mode, analysis_options(args), (args.method,))
    ws = Workspace()
    choice = evaluator_choice(args)
    if target is not None:
        plan = compressing.budget_ranks(args, ws, choice, mode, target)
        results = []
    else:
        ckpt, opts, results = open_and_analyse(args, ws)
    if args.plan is None and target is None:
        plan = resolve_ranks(args.method, [r for r in results if r.layer.analysable])
    elif args.plan is not None and (missing := [n for n in plan if n not in {r.layer.name for r in results
                                                                               if r.layer.analysable}]):
        raise UsageError(f"{args.plan}: names layers {args.path} has no matrix for: {', '.join(missing[:3])}")
    sigma2 = jobs.shrink_variances(args.method, results, plan, analysis_options(args)) if mode == "shrink" else {}
    if mode == "whitened":
        compressing.say_calibration(ws, args, choice)
        compressing.say_fallback(ws.whitening(args.path, args.conv_view, choice, calibration_choice(args),
                                              list(plan))[1])
    with progress_bar("truncating"):
        jobs.truncate(TruncateRequest(args.path, plan, args.output, args.method, mode, sigma2, args.force,
                                      args.conv_view, args.gguf_type, choice, calibration_choice(args), factors),
                      ws=ws)
    for name, k in plan.items():
        print(f"{printable(name)}: rank {k}", file=sys.stderr)
    print(f"wrote {args.output} ({len(plan)} layers truncated, {mode})"
          + (f" and their factors to {factors}" if factors else ""), file=sys.stderr)
    return EXIT_OK


def evaluator_choice(args):
    from core.device import resolve_device
    from core.evaluate.outcomes import EvaluatorChoice

    return EvaluatorChoice(args.evaluator, args.text, resolve_device(args.device))


def cmd_eval(args) -> int:
    from core import jobs
    from core.jobs import EvaluateRequest, Workspace
    from core.report import eval_document

    target = compressing.compress_target(args)
    if args.compress and args.each:
        raise UsageError("--compress and --each are separate jobs: a parameter budget, or each layer alone")
    if (args.budget or args.plan_out) and not args.each:
        raise UsageError("--budget and --plan-out go with --each")
    if args.plan_out and not args.budget:
        raise UsageError("--plan-out needs a --budget to plan within")
    if args.plan_out is not None:
        from core.paths import refuse_existing

        refuse_existing(args.plan_out, args.force)
    for mode in args.mode:
        jobs.check_mode(mode, analysis_options(args))  # before the analysis, not after it
    ws = Workspace()
    if target is not None:
        return compressing.eval_compress(args, ws, target)
    mode = one_mode(args)
    ckpt, opts, results = open_and_analyse(args, ws)
    choice = evaluator_choice(args)
    ws.evaluator(args.path, args.conv_view, choice)  # chosen (and its reference set) before the bar starts
    if args.each:
        return eval_each(args, ws, opts, results, choice)
    with progress_bar("evaluating") as tick:
        rep = jobs.evaluate(EvaluateRequest(args.path, tuple(results), choice, opts.methods, mode,
                                            args.conv_view, calibration_choice(args)), tick, ws=ws)
    compressing.say_fallback(rep.fallback)
    emit(args.format, eval_document(str(ckpt.path), rep.evaluator, rep), lambda t, d: t.eval_table(d))
    say_where(args, ws, choice)
    return EXIT_OK


def say_where(args, ws, choice) -> None:
    """Under a table, what the evaluator scored (the label-free ones' text windows)."""
    _, evaluator = ws.evaluator(args.path, args.conv_view, choice)
    if args.format == "table" and (where := getattr(evaluator, "where", None)):
        print(f"evaluated on {where}", file=sys.stderr)


def eval_each(args, ws, opts, results, choice) -> int:
    from core import jobs
    from core.jobs import SensitivityRequest
    from core.report import plan_document, sensitivity_document

    req = SensitivityRequest(args.path, tuple(results), choice, opts.methods, one_mode(args), args.conv_view,
                             calibration_choice(args), plan_method=args.plan_method, budget=args.budget)
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
    if one_mode(args) == "shrink":
        raise UsageError("sweep runs hard or whitened truncation (shrink's values depend on each method's σ̂²)")
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
        rep = jobs.sweep(SweepRequest(args.path, result, choice, ranks, args.conv_view, one_mode(args),
                                      calibration_choice(args)), tick, ws=ws)
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
    s = args.settings
    RmtApp(paths, options=opts, conv_view=args.conv_view, evaluator=choice, executor=executor, keymap=s.keymap,
           theme=s.theme, theme_file=s.write_to, braille=s.braille, mode=one_mode(args),
           calibration=calibration_choice(args)).run()
    # A cancelled worker may still be inside one LAPACK call, which cannot be interrupted; its
    # result is discarded anyway (cache writes are atomic), so do not make the user wait for it.
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


def cmd_plot(args) -> int:
    """A figure of one view of one layer, from the same records the app draws."""
    from core import jobs
    from core.jobs import DeltaRequest, SweepRequest, Workspace
    from core.paths import refuse_existing

    from . import figures

    figures.check_output(args.output)
    figures.pyplot()  # a missing extra fails now, before any work
    refuse_existing(args.output, args.force)
    try:
        w, h = (float(v) for v in args.size.lower().split("x"))
        if not (0 < w <= 50 and 0 < h <= 50) or not 10 <= args.dpi <= 2400:
            raise ValueError
    except ValueError:
        raise UsageError(f"--size {args.size} --dpi {args.dpi}: give WxH in inches (each up to 50) and a dpi in "
                         "[10, 2400]") from None
    several = args.view in ("compare", "compare-values", "trajectory", "delta")
    if several and len(args.paths) < 2:
        raise UsageError(f"--view {args.view} needs two or more checkpoints")
    if not several and len(args.paths) > 1:
        raise UsageError(f"--view {args.view} draws one checkpoint; give one PATH")
    if args.view == "delta" and len(args.paths) != 2:
        raise UsageError("--view delta needs BASE TUNED")
    opts, ws = analysis_options(args), Workspace()
    save = lambda draw, caption=None: figures.save(draw, args.output, (w, h), args.dpi, caption, args.force)  # noqa
    if not several:
        args.path, args.layers = args.paths[0], [args.layer]
        ckpt, opts, results = open_and_analyse(args, ws)
        r = next((r for r in results if r.layer.name == args.layer), None)
        if r is None or r.analysis is None or r.reason is not None:
            raise UsageError(f"{args.layer!r} of {args.path}: " + (r.reason if r else "no such layer"))
        title = f"{ckpt.path.name}: {args.layer}"
        if args.view == "sweep":
            choice = evaluator_choice(args)
            with progress_bar("sweeping") as tick:
                rep = jobs.sweep(SweepRequest(args.path, r, choice, conv_view=args.conv_view), tick, ws=ws)
            save(lambda ax: figures.draw_sweep(ax, rep, title))
        else:
            draw = figures.draw_histogram if args.view == "histogram" else figures.draw_values
            save(lambda ax: draw(ax, r.analysis, title), figures.caption(r.analysis))
    else:
        args.layers = [args.layer]
        ckpts, table, rows = open_matched(args.paths, args, ws=ws if len(args.paths) == 2 else None)
        row = next((row for row in rows if row.entries[0].name == args.layer), rows[0] if rows else None)
        if row is None:
            raise UsageError(f"no layer {args.layer!r} is matched across {', '.join(map(str, args.paths))}")
        if args.view == "delta":
            pair = tuple(e.name for e in row.entries)
            [d] = jobs.delta(DeltaRequest(args.paths[0], args.paths[1], opts, (pair,), args.conv_view), ws=ws)
            if d.analysis is None:
                raise UsageError(f"ΔW of {args.layer!r}: {d.status} ({d.reason})")
            save(lambda ax: figures.draw_histogram(ax, d.analysis, f"ΔW = tuned − base: {args.layer}"),
                 figures.caption(d.analysis) + f", ‖ΔW‖/‖W‖ = {d.rel_fro:.2g}")
        else:
            from core.compare.delta import compare_checkpoints

            [(_, results)] = list(compare_checkpoints(ckpts, [row], opts))
            analyses = [r.analysis if r is not None and r.reason is None else None for r in results]
            labels = list(table.labels)
            if args.view == "trajectory":
                save(lambda ax: figures.draw_trajectory(ax, labels, analyses, f"ŝ across checkpoints: {row.key}"))
            else:
                save(lambda ax: figures.draw_overlay(ax, labels, analyses, args.view == "compare-values",
                                                     f"{row.key} in {len(labels)} checkpoints"))
    print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_config(args) -> int:
    """The effective settings, one per line, each with the file it came from (or "default")."""
    from . import config
    from .cli import build_parser

    for line in config.describe(build_parser(), args.settings, args):
        print(printable(line))
    return EXIT_OK
