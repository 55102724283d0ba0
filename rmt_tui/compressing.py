"""What the commands do for whitened truncation and parameter budgets (SPEC §13): the mode and
calibration flags, the budget's ranks, ``eval --compress`` and ``report --whitened``, and the lines
they say on stderr (calibration used, damping needed, layers truncated hard)."""
from __future__ import annotations

import sys

from core.errors import UsageError
from core.text import printable

from . import commands
from .cli import EXIT_OK


def whitened_results(args, ws, opts, results):
    """report --whitened: each layer's W·L analysed in place of W (the layers the model does not
    feed say why)."""
    from core import jobs

    choice = commands.evaluator_choice(args)
    say_calibration(ws, args, choice)
    req = jobs.WhitenedRequest(args.path, tuple(r.layer.name for r in results if r.layer.analysable), opts, choice,
                               calibration_choice(args), args.conv_view)
    with commands.progress_bar("whitened spectra") as tick:
        white, record = jobs.whitened(req, tick, ws=ws)
    by_name = {r.layer.name: r for r in white}
    return [by_name.get(r.layer.name, r) for r in results], {**record, "whitened": True}


def budget_ranks(args, ws, choice, mode: str, target: float) -> dict[str, int]:
    """truncate --compress: the allocation's ranks (the layers it leaves dense left out)."""
    from core import jobs
    from core.compress import describe

    results = compress_layers(args, ws, args.allocation == "shat")
    with commands.progress_bar("allocating") as tick:  # sensitivity: one evaluation per layer
        alloc = jobs.budget_allocation(ws, args.path, args.conv_view, results, target, mode, args.allocation, choice,
                                       calibration_choice(args), commands.analysis_options(args).methods[0], tick)
    say = describe(alloc) if alloc.off_target else f"removes {alloc.achieved:.1%} of the parameters"
    why = f" (auto: {'the evaluator scores each layer' if alloc.rule == 'sensitivity' else 'no evaluator'})" \
        if args.allocation == "auto" else ""
    print(f"{alloc.rule} allocation{why}: {say} ({alloc.params_saved:,} saved)", file=sys.stderr)
    args.method = f"compress:{target:.0%}:{alloc.rule}"  # what chose the ranks, in the output's metadata
    return alloc.plan


def one_mode(args) -> str:
    if len(args.mode) > 1:
        raise UsageError(f"--mode {','.join(args.mode)}: several modes run only with eval --compress (each at the "
                         "same budget); give one")
    return args.mode[0]


def compress_target(args) -> float | None:
    from core.compress import parse_target

    return parse_target(args.compress) if args.compress is not None else None


def calibration_choice(args):
    from core.calibration import CalibrationChoice

    return CalibrationChoice(args.calibration, args.calibration_tokens)


def say_fallback(fallback) -> None:
    """Which layers whitened truncation could not feed, and so truncated hard."""
    if fallback:
        shown_ = ", ".join(list(fallback)[:4]) + ("…" if len(fallback) > 4 else "")
        print(f"whitened: {len(fallback)} layers truncated hard instead ({shown_}): "
              f"{printable(next(iter(fallback.values())))}", file=sys.stderr)


def say_calibration(ws, args, choice) -> None:
    cal = ws.calibration(args.path, args.conv_view, choice, calibration_choice(args))
    print(f"calibration: {printable(cal.describe())}", file=sys.stderr)
    if damped := cal.dampings():
        print(f"calibration: {len(damped)} of {len(cal.grams)} Gram matrices needed damping λ = "
              f"{min(damped.values()):.0e}…{max(damped.values()):.0e} × mean diag G (fewer independent inputs than "
              "the layer is wide)", file=sys.stderr)


def compress_layers(args, ws, need_shat: bool):
    """The layers a budget covers (the analysis only where the allocation needs ŝ)."""
    from core.scan import LayerResult, select_layers

    if need_shat:
        return commands.open_and_analyse(args, ws)[2]
    ckpt = ws.checkpoint(args.path, args.conv_view)
    layers = select_layers(ckpt, args.layers)
    if args.layers and not layers:
        raise UsageError(f"no layer of {args.path} matches {', '.join(args.layers)}")
    return [LayerResult(layer, None) for layer in layers if layer.analysable]


def eval_compress(args, ws, target: float) -> int:
    from core import jobs
    from core.report import compress_document

    choice = commands.evaluator_choice(args)
    results = compress_layers(args, ws, args.allocation == "shat")
    ws.evaluator(args.path, args.conv_view, choice)
    if "whitened" in args.mode:
        say_calibration(ws, args, choice)
    req = jobs.CompressRequest(args.path, tuple(results), choice, commands.analysis_options(args).methods, args.mode[0],
                               args.conv_view, calibration_choice(args), target, args.mode, args.allocation,
                               args.plan_method)
    with commands.progress_bar("compressing") as tick:
        rep = jobs.compress(req, tick, ws=ws)
    for o in rep.outcomes.values():
        if o.allocation.off_target:
            from core.compress import describe

            print(f"{o.mode}: {describe(o.allocation)}", file=sys.stderr)
        say_fallback(o.fallback)
    commands.emit(args.format, compress_document(str(ws.checkpoint(args.path, args.conv_view).path), rep),
                  lambda t, d: t.compress_table(d))
    commands.say_where(args, ws, choice)
    return EXIT_OK
