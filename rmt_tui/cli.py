# PYTHON_ARGCOMPLETE_OK  (argcomplete looks for this marker in the entry point's module)
"""The command line: ``rmt-tui [PATH ...]`` opens the app; ``report``, ``compare``, ``delta``,
``truncate``, ``eval`` and ``sweep`` give the same numbers without a terminal UI. This module is the
parser, the exit codes and ``main``; the handlers are in ``commands``, what they write in
``output``. stdout carries data only; progress and messages go to stderr. Textual is imported only
when the app is opened.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from core import __version__
from core.errors import (
    CheckpointError,
    EvaluationError,
    InsufficientMemoryError,
    MissingExtraError,
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
EXIT_INPUT = 3
EXIT_UNSAFE = 4
EXIT_EVAL = 5
EXIT_EXISTS = 6
EXIT_MEMORY = 7
EXIT_WRITE = 8
EXIT_INTERRUPTED = 130
# What each exit code means, as --help's epilog says it (the README's promises table says the same).
EXIT_MEANINGS = ((EXIT_OK, "ok"), (EXIT_USAGE, "usage error"), (EXIT_INPUT, "unreadable or invalid input"),
                 (EXIT_UNSAFE, "unsafe input (pickle that runs code; refused)"),
                 (EXIT_EVAL, "evaluator error, or an optional package missing (with its install line)"),
                 (EXIT_EXISTS, "output exists (use --force)"),
                 (EXIT_MEMORY, "not enough memory for a tensor (refused before reading it)"),
                 (EXIT_WRITE, "output cannot be written (disk full, read-only, permission denied; nothing left "
                              "behind)"),
                 (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"))

COMMANDS = ("report", "compare", "delta", "truncate", "eval", "sweep", "plot", "config")

EPILOG = "exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_MEANINGS)


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    from core.rmt.analysis import COSINES
    from core.rmt.methods import DEFAULT_METHODS, METHODS

    g = p.add_argument_group("analysis")
    g.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list of methods, from {', '.join(METHODS)} (default: %(default)s)")
    g.add_argument("--layers", action="append", metavar="GLOB", help="only layers matching GLOB (repeatable)")
    for cls in METHODS.values():  # each method's own parameters, as it declares them
        for prm, default in zip(cls.params, cls().settings().values()):
            g.add_argument(prm.flag, type=prm.type, default=default,
                           help=f"{prm.help} in {prm.allowed()}" + (" (default: %(default)s)" if default is not None
                                                                     else ""))
    g.add_argument("--weighting", choices=("uniform", "sv"), default="uniform",
                   help="Avew weights (default: %(default)s)")
    g.add_argument("--cosines", choices=COSINES, default="mp",
                   help="Avew's cosines from the MP formula, from the empirical D-transform of the bulk below "
                        "each method's cut, or empirical where the MP fit is poor (default: %(default)s)")
    g.add_argument("--equalise", action="store_true",
                   help="equalise row and column variances first: every method analyses W̃ (heteroscedastic "
                        "noise becomes MP), and W's own KS is kept beside")
    g.add_argument("--noise", action="store_true",
                   help="diagnose each layer's noise (mp, heteroscedastic, correlated, heavy-tailed) with its "
                        "evidence; costs a second spectrum and one shuffle per layer")
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


def _add_evaluator_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--evaluator", metavar="FILE.py|module:function",
                   help="your evaluate(state_dict) -> {'accuracy': …}; this runs your code. Default: the built-in "
                        "evaluator the checkpoint calls for (demo models: MNIST accuracy; Hugging Face folders: "
                        "label-free hf-causal-lm / hf-encoder)")
    p.add_argument("--text", metavar="FILE", help="text for the Hugging Face evaluators (default: CPython's "
                   "pydoc_data reference prose, present in every install)")


def _modes(text: str) -> tuple[str, ...]:
    from core.evaluate.outcomes import MODES

    modes = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(MODES)} (comma list with --compress)")
    return modes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _add_truncation_options(p: argparse.ArgumentParser, several: bool = False) -> None:
    """--mode, and the calibration data that --mode whitened needs (SPEC §13)."""
    g = p.add_argument_group("truncation")
    g.add_argument("--mode", type=_modes, default=("hard",), metavar="hard|shrink|whitened" + (",…" if several else ""),
                   help="hard: keep W's top values; shrink: de-bias them (σ̂²); whitened: keep the top values of "
                        "W·L, L the Cholesky factor of the layer's calibration-input Gram matrix, and map back "
                        "(activation-aware, SVD-LLM)" + ("; a comma list runs each at the same --compress budget"
                                                         if several else "") + " (default: hard)")
    g.add_argument("--calibration", metavar="FILE", help="calibration data for whitened: a text file (language "
                   "models, encoders) or an .npz of uint8 'images' (MNIST); default: the evaluator's own held-out "
                   "part (an earlier part of the text; for MNIST 1000 shipped training images), never the scored part")
    g.add_argument("--calibration-tokens", type=_positive_int, metavar="N",
                   help="tokens (language models) or samples (encoders' sentences, MNIST images) of calibration "
                        "data (default: 8192 tokens, 512 sentences, 1000 images)")


def _add_compress_options(p: argparse.ArgumentParser) -> None:
    from core.compress import DEFAULT_RULE, RULES

    p.add_argument("--compress", metavar="P%", help="remove P %% of the selected layers' stored parameters (a "
                   "rank-k layer counts k(m+n) when below mn, else mn), ranks allocated by --allocation")
    p.add_argument("--allocation", choices=RULES, default=DEFAULT_RULE,
                   help="how --compress spreads the ranks: sensitivity (each value's share of its layer's "
                        "(whitened) energy per parameter, weighted by the layer's measured damage: one evaluation "
                        "per layer), loss (the same, unweighted), uniform (the same fraction of every layer) or "
                        "shat (in proportion to each layer's ŝ); auto: sensitivity where the checkpoint has an "
                        "evaluator, else loss (default: %(default)s)")


def _add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="a config file read after the system and user ones (see `rmt-tui config`)")


def build_parser() -> argparse.ArgumentParser:
    from core.io.gguf import GGUF_OUT_TYPES
    from core.rmt.methods import DEFAULT_METHODS, METHODS

    ap = argparse.ArgumentParser(prog="rmt-tui", description="Signal and noise in neural-network weights: "
                                 "random-matrix spectra, thresholds, truncation and evaluation.", epilog=EPILOG)
    ap.add_argument("--version", action="version", version=f"rmt-tui {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="{app," + ",".join(COMMANDS) + "}")

    app = sub.add_parser("app", help="open the terminal app (the default when no command is given)", epilog=EPILOG)
    app.add_argument("paths", nargs="*", metavar="PATH", help="checkpoints to open (default: the bundled demo model)")
    _add_analysis_options(app)
    _add_executor_options(app)
    _add_evaluator_option(app)
    _add_truncation_options(app)

    rep = sub.add_parser("report", help="analyse every layer; table, JSON or CSV on stdout", epilog=EPILOG)
    rep.add_argument("path", metavar="PATH")
    rep.add_argument("--format", choices=("table", "json", "csv"), default="table")
    rep.add_argument("--whitened", action="store_true",
                     help="analyse W·L instead of W (L: the Cholesky factor of the layer's calibration-input Gram "
                          "matrix, SPEC §13); needs an evaluator that runs the model")
    g = rep.add_argument_group("calibration (--whitened)")
    g.add_argument("--calibration", metavar="FILE", help="as for eval --mode whitened")
    g.add_argument("--calibration-tokens", type=_positive_int, metavar="N", help="as for eval --mode whitened")
    _add_evaluator_option(rep)
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
    dl.add_argument("--extract-lora", type=Path, metavar="DIR|OUT.safetensors",
                    help="write a LoRA adapter with W_base + B·A = the truncated delta: a PEFT adapter folder "
                         "(adapter_config.json + adapter_model.safetensors, loadable by PEFT and llama.cpp's "
                         "converter), or bare lora_A/lora_B tensors for a .safetensors path")
    dl.add_argument("--lora-rank", default=DEFAULT_METHODS[0], metavar="|".join(METHODS) + "|rank:K",
                    help="the rank of each module in both exports (default: %(default)s, its ŝ(ΔW))")
    dl.add_argument("--force", action="store_true", help="replace output files that exist")
    _add_analysis_options(dl)

    tr = sub.add_parser("truncate", help="truncate layers to a method's rank and write safetensors (or GGUF)",
                        epilog=EPILOG)
    tr.add_argument("path", metavar="PATH")
    how = tr.add_mutually_exclusive_group(required=True)
    how.add_argument("--method", metavar="|".join(METHODS) + "|rank:K")
    how.add_argument("--plan", type=Path, metavar="PLAN.json", help="the ranks of `eval --each --budget … --plan-out`")
    how.add_argument("--compress", metavar="P%", help="remove P %% of the selected layers' stored parameters, ranks "
                     "allocated by --allocation")
    from core.compress import DEFAULT_RULE, RULES

    tr.add_argument("--allocation", choices=RULES, default=DEFAULT_RULE, help="with --compress (see eval --help; "
                    "default: %(default)s)")
    tr.add_argument("--factors", action="store_true",
                    help="also write each truncated layer's two factors, NAME.left (m×k) and NAME.right (k×n) with "
                         "W_k = left @ right, to OUT's stem + .factors.safetensors")
    _add_truncation_options(tr)
    _add_evaluator_option(tr)
    tr.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                    help="a .safetensors file, or for a GGUF source a .gguf (every metadata key, tensor name and "
                         "order kept, so llama.cpp runs it)")
    tr.add_argument("--gguf-type", choices=GGUF_OUT_TYPES, default="auto",
                    help="for a .gguf output, the truncated tensors' type; auto: their own when plain, else Q8_0 "
                         "(default: %(default)s)")
    tr.add_argument("--force", action="store_true", help="replace OUT if it exists")
    _add_analysis_options(tr)

    ev = sub.add_parser("eval", help="accuracy and Avew before and after truncation by each method", epilog=EPILOG)
    ev.add_argument("path", metavar="PATH")
    ev.add_argument("--format", choices=("table", "json"), default="table")
    _add_truncation_options(ev, several=True)
    _add_compress_options(ev)
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

    pl = sub.add_parser("plot", help="a publication figure (PNG, SVG or PDF) of one layer's view", epilog=EPILOG)
    pl.add_argument("paths", nargs="+", metavar="PATH", help="one checkpoint; two or more for compare and "
                    "trajectory; BASE TUNED for delta")
    pl.add_argument("--layer", required=True, metavar="NAME", help="the layer (its name in the first checkpoint)")
    pl.add_argument("--view", choices=("histogram", "values", "sweep", "compare", "compare-values", "trajectory",
                                       "delta"), default="histogram", help="as the app's views (default: %(default)s)")
    pl.add_argument("-o", "--output", required=True, type=Path, metavar="FIG.png|svg|pdf")
    pl.add_argument("--dpi", type=int, default=300, help="for PNG (default: %(default)s)")
    pl.add_argument("--size", default="3.5x2.6", metavar="WxH",
                    help="in inches (default: %(default)s, one column of a paper)")
    pl.add_argument("--force", action="store_true", help="replace FIG if it exists")
    _add_evaluator_option(pl)
    _add_analysis_options(pl)

    cf = sub.add_parser("config", help="print the effective settings and the file each came from", epilog=EPILOG)
    del cf  # its only option is --config, added to every command below

    sw = sub.add_parser("sweep", help="accuracy and Avew against the kept rank of one layer", epilog=EPILOG)
    sw.add_argument("path", metavar="PATH")
    sw.add_argument("--layer", required=True, metavar="NAME")
    sw.add_argument("--ranks", metavar="START:STOP:STEP", help="ranks to try (default: 16 points from 0 to p, "
                    "plus each method's ŝ)")
    sw.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _add_truncation_options(sw)
    _add_evaluator_option(sw)
    _add_analysis_options(sw)
    for p in sub.choices.values():
        _add_config_option(p)
    return ap


# Most specific first: an unsafe pickle is also a checkpoint error.
ERROR_CODES = [(UnsafeCheckpointError, EXIT_UNSAFE), (InsufficientMemoryError, EXIT_MEMORY),
               (CheckpointError, EXIT_INPUT), (EvaluationError, EXIT_EVAL), (MissingExtraError, EXIT_EVAL),
               (OutputExistsError, EXIT_EXISTS),
               (OutputWriteError, EXIT_WRITE), (UsageError, EXIT_USAGE), (RmtError, EXIT_INPUT)]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command, or a path first: open the app.
    if not argv or (argv[0] not in COMMANDS + ("app",) and argv[0] not in ("-h", "--help", "--version")):
        argv = ["app"] + argv
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer and exit
        _complete(parser)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    try:
        from . import config

        settings = config.load(parser, pre.parse_known_args(argv)[0].config)
    except UsageError as exc:
        print(f"rmt-tui: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    config.apply(parser, settings)
    args = parser.parse_args(argv)
    args.settings = settings
    if args.command != "app":  # Textual handles the app's own terminal and signals
        _stop_on_signals()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RmtWarning)
            warnings.showwarning = _show_warning
            from . import commands  # the handlers (and what they import) load only once parsing passed

            return getattr(commands, f"cmd_{args.command}")(args)
    except KeyboardInterrupt:
        print("rmt-tui: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except RmtError as exc:
        code = next(code for cls, code in ERROR_CODES if isinstance(exc, cls))
        print(f"rmt-tui: error: {printable(str(exc))}", file=sys.stderr)
        return code


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP (a closed SSH session) stop a command as Ctrl-C does: temporary files are
    removed on the way out and the exit code is 130."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)


def _layer_names(prefix: str, parsed_args, **kw) -> list[str]:
    """--layer / --layers completions: the layers of the checkpoint already on the line (reading its
    index only — a safetensors header, a GGUF index — never a tensor); nothing if it cannot be opened."""
    paths = [getattr(parsed_args, "path", None)] + list(getattr(parsed_args, "paths", None) or [])
    path = next((p for p in paths if p), None)
    if path is None:
        return []
    try:
        from core.io.checkpoint import open_checkpoint

        return [l.name for l in open_checkpoint(path).layers if l.name.startswith(prefix)]
    except Exception:  # completion must never print a traceback into the user's shell
        return []


def _complete(parser: argparse.ArgumentParser) -> None:
    try:
        import argcomplete
    except ImportError:
        return  # the [completion] extra is not installed: no completions, and no noise
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for p in sub.choices.values():
            for a in p._actions:
                if a.dest in ("layer", "layers"):
                    a.completer = _layer_names
    argcomplete.autocomplete(parser)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """RmtWarnings are messages for the user, one line on stderr; others keep Python's format."""
    if issubclass(category, RmtWarning):
        print(f"rmt-tui: warning: {printable(str(message))}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


if __name__ == "__main__":
    raise SystemExit(main())
