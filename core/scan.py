"""Analyse the layers of a checkpoint one at a time, with progress, cancellation and the cache."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache

import numpy as np

from core.cache import SpectrumCache, config_key, content_key
from core.io.checkpoint import Checkpoint
from core.io.layers import Layer
from core.memory import require_memory
from core.progress import CancelToken, Progress, tracked
from core.rmt.analysis import MatrixAnalysis, analyse_matrix, analyse_small
from core.rmt.methods import DEFAULT_METHODS, make_methods
from core.rmt.spectrum import MatrixShape, working_bytes


@dataclass(frozen=True)
class LayerResult:
    """A layer and, when it has a matrix view, its analysis."""

    layer: Layer
    analysis: MatrixAnalysis | None

    @property
    def status(self) -> str:
        return "ok" if self.reason is None else "skipped"

    @property
    def reason(self) -> str | None:
        return self.layer.reason or (self.analysis.reason if self.analysis else None)


@dataclass(frozen=True)
class AnalysisOptions:
    methods: tuple[str, ...] = DEFAULT_METHODS
    params: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # ((method, ((key, value), …)), …)
    weighting: str = "uniform"
    device: str = "cpu"
    use_cache: bool = True
    cosines: str = "mp"  # mp | empirical | auto (core.rmt.analysis.COSINES)
    equalise: bool = False  # analyse W̃ (rows and columns equalised) instead of W
    noise: bool = False  # add the noise diagnosis per layer

    def analyse(self, w) -> MatrixAnalysis:
        """``analyse_matrix`` of ``w`` with these options."""
        return analyse_matrix(w, self.method_objects(), self.weighting, self.device, self.cosines, self.equalise,
                              self.noise)

    @classmethod
    def make(cls, methods=DEFAULT_METHODS, params: dict | None = None, **kw) -> AnalysisOptions:
        frozen = tuple((m, tuple(sorted(p.items()))) for m, p in (params or {}).items())
        return cls(tuple(methods), frozen, **kw)

    def method_objects(self):
        return _method_objects(self.methods, self.params)

    def checked(self) -> AnalysisOptions:
        """These options, once every method accepts its parameters (else a UsageError naming the
        parameter, its flag and the allowed range)."""
        from core.errors import UsageError

        try:
            self.method_objects()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return self


def select_layers(ckpt: Checkpoint, patterns: Iterable[str] | None = None) -> list[Layer]:
    """Layers whose name (or stored tensor name) matches any glob; all when no pattern is given."""
    pats = [p for p in (patterns or []) if p]
    if not pats:
        return list(ckpt.layers)
    return [l for l in ckpt.layers if any(fnmatchcase(l.name, p) or fnmatchcase(l.tensor, p) for p in pats)]


@lru_cache(maxsize=64)
def _method_objects(methods: tuple[str, ...], params: tuple) -> tuple:
    """Built once per configuration, not once per layer (MoE models have tens of thousands)."""
    return tuple(make_methods(methods, **{m: dict(p) for m, p in params}))


@lru_cache(maxsize=64)
def config_of(options: AnalysisOptions) -> str:
    return config_key(options.method_objects(), options.weighting, options.cosines, options.equalise, options.noise)


def analyse_layer(ckpt: Checkpoint, layer: Layer, options: AnalysisOptions = AnalysisOptions(),
                  cache: SpectrumCache | None = None) -> LayerResult:
    if not layer.analysable:
        return LayerResult(layer, None)
    shape = MatrixShape(*layer.matrix)
    cache = cache if cache is not None else (SpectrumCache() if options.use_cache else None)
    if cache is None or _unfit_shape(layer.matrix, options):
        # Where no method can run the analysis is one small eigensolve, cheaper than the cache's
        # file lookups (measured ~1 ms a layer to store, 0.17 ms to load).
        return LayerResult(layer, options.analyse(_read_matrix(ckpt, layer, shape)))
    if (hit := cached_analysis(ckpt, layer, options, cache)) is not None:
        return LayerResult(layer, hit)
    cfg = config_of(options)
    w = _read_matrix(ckpt, layer, shape)
    key = content_key(w, extra=f"pos={layer.position}")
    cache.remember_key(ckpt.fingerprint(layer), key)
    if (hit := cache.load(key, shape, cfg)) is not None:  # the same bytes seen in another file
        return LayerResult(layer, hit)
    a = options.analyse(w)
    cache.store(key, cfg, a)
    return LayerResult(layer, a)


def cached_analysis(ckpt: Checkpoint, layer: Layer, options: AnalysisOptions, cache: SpectrumCache | None
                    ) -> MatrixAnalysis | None:
    """The layer's analysis from the cache, found without reading the tensor: an unchanged file
    maps straight to its content key. None on a miss, or where the cache is not used (no cache, no
    matrix, or a shape no method fits)."""
    if cache is None or layer.matrix is None or _unfit_shape(layer.matrix, options):
        return None
    key = cache.content_key_for(ckpt.fingerprint(layer))
    return cache.load(key, MatrixShape(*layer.matrix), config_of(options)) if key is not None else None


def _read_matrix(ckpt: Checkpoint, layer: Layer, shape: MatrixShape):
    """The layer's matrix, once its analysis is known to fit in memory."""
    require_memory(ckpt.nbytes(layer.tensor) + working_bytes(shape), ckpt.path, f"analysing {layer.name!r}")
    return ckpt.matrix(layer)


def analyse_checkpoint(ckpt: Checkpoint, options: AnalysisOptions = AnalysisOptions(),
                       layers: Iterable[Layer] | None = None, progress: Progress | None = None,
                       cancel: CancelToken | None = None) -> Iterator[LayerResult]:
    """Yield one LayerResult per layer, in order, holding one layer's tensor at a time.

    Serial on purpose: reading and hashing the next layer on a helper thread was measured slower
    (1.30× vs 1.10× the LAPACK floor on the bert benchmark): scipy's LAPACK holds the GIL and the
    helper only competed with BLAS for the two cores."""
    todo = list(ckpt.layers if layers is None else layers)
    cache = SpectrumCache() if options.use_cache else None
    small: dict[int, LayerResult] = {}  # results computed ahead, in bulk, for small matrices
    for i, layer in enumerate(tracked(todo, progress, cancel, label=lambda l: l.name)):
        if i not in small and options.device == "cpu" and _unfit(layer, options):
            small = _analyse_small_run(ckpt, todo, i, options)
        yield small.pop(i) if i in small else analyse_layer(ckpt, layer, options, cache)


SMALL_BATCH = 2048  # layers analysed ahead at a time: bounds the memory the batch holds


def _unfit(layer: Layer, options: AnalysisOptions) -> bool:
    """True when no method can run on this layer's shape (only its values are computed)."""
    return layer.matrix is not None and _unfit_shape(layer.matrix, options)


@lru_cache(maxsize=1024)
def _unfit_shape(matrix: tuple[int, int], options: AnalysisOptions) -> bool:
    shape = MatrixShape(*matrix)
    return all(m.too_small(shape) is not None for m in options.method_objects())


def _analyse_small_run(ckpt: Checkpoint, todo: list[Layer], start: int, options: AnalysisOptions
                       ) -> dict[int, LayerResult]:
    """Analyse the run of small float32 layers that starts at ``start`` (up to SMALL_BATCH of
    them), grouped by shape, with one batched eigensolve per group. Such layers skip the cache
    anyway (see ``analyse_layer``), so the results are the ones it would give."""
    stop = start
    while stop < len(todo) and stop - start < SMALL_BATCH and _unfit(todo[stop], options):
        stop += 1
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    out = {}
    for i, w in enumerate(ckpt.matrices(todo[start:stop]), start):
        if isinstance(w, np.ndarray) and w.dtype == np.float32:
            groups.setdefault(w.shape, []).append((i, w))
        else:  # torch tensors and float64 (whose values may need rescaling) one at a time
            out[i] = LayerResult(todo[i], options.analyse(w))
    for items in groups.values():
        stack = np.stack([w for _, w in items])
        for (j, _), a in zip(items, analyse_small(stack, options.method_objects(), options.weighting)):
            out[j] = LayerResult(todo[j], a)
    return out
