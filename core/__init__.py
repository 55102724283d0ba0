"""rmt-tui's engine: spectra, random-matrix noise thresholds, Avew, checkpoints, truncation and
evaluation, as plain Python. Nothing here imports Textual or Rich; torch is imported only by the
verbs that need it (pickles, truncation, evaluation).

The verbs below are the public API: everything the CLI and the app show comes from them. They are
named apart from the sub-packages (``core.evaluate`` is the evaluators' package,
``core.evaluate_checkpoint`` the verb), which hold the parts: ``core.io`` (checkpoint formats),
``core.rmt`` (the numerics), ``core.evaluate`` (evaluators), ``core.compare`` (matching, deltas,
LoRA), ``core.jobs`` (the job layer both front ends call).

Example::

    import core

    ckpt = core.open_checkpoint("demo_models/mlp_bs16.safetensors")
    for r in core.analyse_checkpoint(ckpt):
        if r.analysis is not None and r.reason is None:
            print(r.layer.name, r.analysis.methods["bema"].rank)
"""
from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.evaluate.outcomes import EvalReport
    from core.io.checkpoint import Checkpoint
    from core.rmt.analysis import MatrixAnalysis
    from core.scan import LayerResult

try:
    __version__ = _dist_version("rmt-tui")  # one place for the version: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

def _options(methods: Sequence[str] | None, params: dict | None, use_cache: bool):
    """Analysis options (None: the default methods, BEMA and broadening); a bad name or value is a
    UsageError that says what is allowed."""
    from core.rmt.methods import DEFAULT_METHODS
    from core.scan import AnalysisOptions

    return AnalysisOptions.make(tuple(methods or DEFAULT_METHODS), params, use_cache=use_cache).checked()


def open_checkpoint(path: str | Path, conv_view: str = "reshape") -> Checkpoint:
    """Open a checkpoint without reading its tensors.

    Args:
        path: a ``.safetensors``, ``.pt``/``.pth``/``.bin`` (weights-only pickle), ``.npz`` or
            ``.gguf`` file, or a Hugging Face model folder (single or sharded).
        conv_view: ``"reshape"`` (a conv kernel as out × in·kh·kw) or ``"positions"`` (one
            out × in matrix per kernel position).

    Returns:
        A ``Checkpoint``: ``.layers`` lists every tensor (each with its matrix view or the reason it
        has none); ``.matrix(name)`` reads one.

    Example:
        >>> ckpt = open_checkpoint("demo_models/mlp_bs16.safetensors")
        >>> [l.name for l in ckpt.layers][:2]
        ['fc1.bias', 'fc1.weight']
    """
    from core.io.checkpoint import open_checkpoint as _open

    return _open(path, conv_view)


def analyse_matrix(w, methods: Sequence[str] | None = None, params: dict | None = None,
                   weighting: str = "uniform") -> MatrixAnalysis:
    """Every method's noise fit, threshold, kept rank and Avew for one matrix.

    Args:
        w: a 2-D numpy array or torch tensor (m × n, any orientation).
        methods: registered method names (``core.rmt.methods.METHODS``; None: BEMA and broadening).
        params: per-method parameters, e.g. ``{"bema": {"alpha": 0.2, "beta": 0.1}}``.
        weighting: Avew weights, ``"uniform"`` or ``"sv"``.

    Returns:
        A frozen ``MatrixAnalysis``: ``.sv`` (descending singular values), ``.methods[name]`` with
        ``sigma2``, ``threshold``, ``rank``, ``avew`` (and left/right parts), ``ks`` and ``reason``.

    Example:
        >>> import numpy as np
        >>> a = analyse_matrix(np.random.default_rng(0).standard_normal((1024, 784)))
        >>> a.methods["bema"].rank
        0
    """
    from core.rmt.analysis import analyse_matrix as _analyse

    return _analyse(w, _options(methods, params, False).method_objects(), weighting)


def analyse_checkpoint(ckpt: Checkpoint | str | Path, methods: Sequence[str] | None = None,
                       params: dict | None = None, layers: Sequence[str] | None = None,
                       use_cache: bool = True, progress=None) -> list[LayerResult]:
    """Analyse the layers of a checkpoint, one tensor in memory at a time.

    Args:
        ckpt: an open ``Checkpoint`` or a path.
        methods, params: as ``analyse_matrix``.
        layers: glob patterns of layer names (all layers when None).
        use_cache: read and write the on-disk spectrum cache.
        progress: called as ``progress(done, total, layer_name)``.

    Returns:
        One ``LayerResult`` per layer, in model order: ``.layer``, ``.analysis`` (None without a
        matrix view) and ``.reason`` (why a layer was not analysed).
    """
    from core.scan import analyse_checkpoint as _scan
    from core.scan import select_layers

    ckpt = ckpt if not isinstance(ckpt, (str, Path)) else open_checkpoint(ckpt)
    return list(_scan(ckpt, _options(methods, params, use_cache), select_layers(ckpt, layers), progress))


def report_checkpoint(path: str | Path, methods: Sequence[str] | None = None, params: dict | None = None,
                      layers: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``rmt-tui/report/1`` document of ``rmt-tui report PATH --format json``.

    Returns:
        ``{"schema", "checkpoint", "options", "layers": [...]}``, exactly what the CLI prints.
    """
    from core.report import options_record, report_document

    ckpt = open_checkpoint(path)
    results = analyse_checkpoint(ckpt, methods, params, layers)
    opts = _options(methods, params, True)
    return report_document(str(ckpt.path), results, opts.methods, options_record(opts, ckpt.conv_view, layers))


def truncate_checkpoint(path: str | Path, output: str | Path, method: str = "bema", mode: str = "hard",
                        layers: Sequence[str] | None = None, overwrite: bool = False,
                        compress: float | None = None, allocation: str = "auto", calibration: str | None = None,
                        calibration_count: int | None = None) -> dict[str, int]:
    """Truncate layers to a method's ŝ (or ``rank:K``, or a parameter budget) and write a
    safetensors file.

    Args:
        path: the source checkpoint (never modified).
        output: the ``.safetensors`` file to write (atomically; refused if it exists unless
            ``overwrite``).
        method: a method name (its ŝ per layer) or ``"rank:K"``; ignored with ``compress``.
        mode: ``"hard"`` (keep the top singular values), ``"shrink"`` (de-biased values) or
            ``"whitened"`` (W·L's top values mapped back, SPEC §13; calibration data from the
            checkpoint's evaluator).
        compress: a fraction in (0, 1) of the layers' parameters to remove, ranks by ``allocation``
            (``"auto"``: ``"sensitivity"``, which evaluates each layer, where the checkpoint has an
            evaluator, else ``"loss"``; or ``"loss"``, ``"uniform"``, ``"shat"``).
        calibration, calibration_count: the whitened mode's data (a file; tokens or samples).

    Returns:
        The ranks kept, layer name → k.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "small.safetensors"
        >>> ranks = truncate_checkpoint("demo_models/tiny-llama", out, mode="whitened", compress=0.2,
        ...                             layers=["model.layers.*"])
        >>> all(0 < k < 64 for k in ranks.values())
        True
    """
    from core import jobs
    from core.calibration import CalibrationChoice
    from core.evaluate.outcomes import EvaluatorChoice
    from core.truncation import resolve_ranks

    ws = jobs.Workspace()
    ckpt = ws.checkpoint(path)
    cal, choice = CalibrationChoice(calibration, calibration_count), EvaluatorChoice()
    if compress is not None:
        results = _budget_layers(ckpt, layers, allocation == "shat", [method])
        alloc = jobs.budget_allocation(ws, str(path), "reshape", results, compress, mode, allocation, choice, cal,
                                       method)
        plan, method, sigma2 = alloc.plan, f"compress:{compress:.0%}:{alloc.rule}", {}
    else:
        opts = _options(None if method.startswith("rank:") else [method], None, True)
        results = [r for r in analyse_checkpoint(ckpt, opts.methods, layers=layers) if r.layer.analysable]
        plan = resolve_ranks(method, results)
        sigma2 = jobs.shrink_variances(method, results, plan, opts) if mode == "shrink" else {}
    jobs.truncate(jobs.TruncateRequest(str(path), plan, Path(output), method, mode, sigma2, overwrite,
                                       evaluator=choice, calibration=cal), ws=ws)
    return plan


def evaluate_checkpoint(path: str | Path, methods: Sequence[str] | None = None, evaluator: str | None = None,
                        layers: Sequence[str] | None = None, mode: str = "hard", text: str | None = None,
                        device: str = "cpu", calibration: str | None = None,
                        calibration_count: int | None = None) -> EvalReport:
    """Truncate every selected layer to each method's ŝ and evaluate, beside the original.

    Args:
        evaluator: None for the one the checkpoint calls for (demo models: MNIST accuracy; Hugging
            Face folders and GGUF: the label-free ``hf-causal-lm`` / ``hf-encoder``), a built-in
            name, or your own ``FILE.py`` / ``module:function`` (this runs your code).
        text: the evaluation text for the Hugging Face evaluators.
        mode: ``"hard"``, ``"shrink"`` or ``"whitened"`` (``calibration``, ``calibration_count``:
            its data, as ``truncate_checkpoint``).

    Returns:
        An ``EvalReport``: ``.baseline`` (metrics of the original), ``.outcomes[method]`` with its
        ``metrics``, ``ranks`` and ``params_saved``, and ``.primary`` (the metric that matters).
    """
    from core import jobs
    from core.calibration import CalibrationChoice
    from core.evaluate.outcomes import EvaluatorChoice

    ws = jobs.Workspace()
    results = analyse_checkpoint(ws.checkpoint(path), methods, layers=layers)
    req = jobs.EvaluateRequest(str(path), tuple(results), EvaluatorChoice(evaluator, text, device),
                               _options(methods, None, True).methods, mode, "reshape",
                               CalibrationChoice(calibration, calibration_count))
    return jobs.evaluate(req, ws=ws)


def _budget_layers(ckpt, layers, analyse: bool, methods=None):
    """The layers a budget covers: analysed (by ``methods``) where the allocation needs ŝ, else
    only listed (a budget needs no spectrum of W until it allocates)."""
    from core.scan import LayerResult, select_layers

    if analyse:
        return list(analyse_checkpoint(ckpt, methods, layers=layers))
    return [LayerResult(x, None) for x in select_layers(ckpt, layers) if x.analysable]


def compress_checkpoint(path: str | Path, target: float, modes: Sequence[str] = ("hard", "whitened"),
                        allocation: str = "auto", layers: Sequence[str] | None = None, evaluator: str | None = None,
                        text: str | None = None, calibration: str | None = None, calibration_count: int | None = None,
                        device: str = "cpu"):
    """Remove ``target`` (a fraction in (0, 1)) of the selected layers' stored parameters in each
    of ``modes``, at the same budget, and evaluate (what ``eval --compress`` prints).

    Returns:
        A ``CompressReport``: ``.baseline``, ``.outcomes[mode]`` with ``.allocation`` (ranks,
        achieved, params_saved), ``.metrics`` and ``.fallback`` (layers truncated hard), and
        ``.calibration`` (source, tokens or samples, disjoint).

    Example:
        >>> rep = compress_checkpoint("demo_models/tiny-llama", 0.2, layers=["model.layers.*"])
        >>> rep.outcomes["whitened"].metrics["kl"] < rep.outcomes["hard"].metrics["kl"]
        True
    """
    from core import jobs
    from core.calibration import CalibrationChoice
    from core.compress import parse_target
    from core.evaluate.outcomes import EvaluatorChoice

    parse_target(target * 100)
    ws = jobs.Workspace()
    ckpt = ws.checkpoint(path)
    results = tuple(_budget_layers(ckpt, layers, allocation == "shat"))
    req = jobs.CompressRequest(str(path), results, EvaluatorChoice(evaluator, text, device),
                               calibration=CalibrationChoice(calibration, calibration_count), target=target,
                               modes=tuple(modes), rule=allocation)
    return jobs.compress(req, ws=ws)


def compare_checkpoints(paths: Sequence[str | Path], methods: Sequence[str] | None = None,
                        layers: Sequence[str] | None = None) -> dict[str, Any]:
    """The same layers of several checkpoints side by side, paired by name (never by position).

    Args:
        paths: two or more checkpoints, any formats, mixed.
        methods: as ``analyse_matrix``.
        layers: glob patterns of layer names (all matched layers when None).

    Returns:
        The ``rmt-tui/compare/1`` document ``rmt-tui compare --format json`` prints: per layer, how
        it was paired and each checkpoint's analysis.

    Example:
        >>> doc = compare_checkpoints(["demo_models/mlp_bs16.safetensors", "demo_models/mlp_bs64.safetensors"])
        >>> doc["schema"], len(doc["checkpoints"])
        ('rmt-tui/compare/1', 2)
    """
    from core.compare.delta import compare_checkpoints, select_rows
    from core.compare.matching import match_layers
    from core.report import compare_document, options_record

    ckpts = [open_checkpoint(p) for p in paths]
    table = match_layers(ckpts)
    opts = _options(methods, None, True)
    analysed = list(compare_checkpoints(ckpts, select_rows(table, layers), opts))
    return compare_document(table.labels, [str(c.path) for c in ckpts], table, analysed, opts.methods,
                            options_record(opts, "reshape", layers))


def delta_checkpoints(base: str | Path, tuned: str | Path, methods: Sequence[str] | None = None) -> list:
    """ΔW = W_tuned − W_base of every matched layer, analysed as a weight matrix.

    Returns:
        One ``DeltaResult`` per matched layer: ``.status`` (ok, unchanged, skipped, …),
        ``.analysis`` of ΔW, ``.rel_fro`` (‖ΔW‖/‖W‖), the energy and stable ranks, ``.warnings``.
    """
    from core import jobs

    return jobs.delta(jobs.DeltaRequest(str(base), str(tuned), _options(methods, None, True)))


__all__ = ["__version__", "open_checkpoint", "analyse_matrix", "analyse_checkpoint", "report_checkpoint",
           "compress_checkpoint", "truncate_checkpoint", "evaluate_checkpoint", "compare_checkpoints",
           "delta_checkpoints"]
