"""The one contract every noise-threshold method implements, and the declaration of its parameters.

A method is a frozen dataclass subclassing ``ThresholdMethod``. It declares its parameters once, in
``params`` (name, type, default, allowed range, help); the CLI flags, the JSON ``options``, the cache
key (the dataclass repr) and the panel rows are all derived from that declaration. The guard every
method shares runs once, in ``fit`` (scipy.stats' template-method idiom: the public ``pdf`` checks,
the subclass's ``_pdf`` computes); a method implements ``_fit`` and, where it needs more values
than the common minimum, ``min_p``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from core.rmt.spectrum import MatrixShape

# Fewer singular values than this leave no bulk to match or broaden: the MP law is an asymptotic
# statement, and on a handful of values (a 10-way classifier head) it would call everything noise.
MIN_P = 30


class NotApplicable(Exception):
    """The method cannot run on this spectrum; ``str()`` says why in words a user can act on."""


@dataclass(frozen=True)
class Param:
    """One parameter of a method: the dataclass field ``name``, its command-line ``flag``, the
    type, the allowed range (``low``/``high``; ``open_low``/``open_high`` exclude the end) and help."""

    name: str
    flag: str
    type: type
    help: str
    symbol: str = ""  # how the panel and the help name it (α, β, …); the name when empty
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False  # None is allowed (the method then chooses, e.g. from the matrix's size)

    @property
    def dest(self) -> str:
        """The argparse attribute of ``flag``."""
        return self.flag.lstrip("-").replace("-", "_")

    def allowed(self) -> str:
        """The allowed range in words, e.g. "[0, 0.5)" or "≥ 1"."""
        if self.low is not None and self.high is not None:
            return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '≥'} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.open_high else '≤'} {self.high:g}"
        return "any"

    def check(self, method: str, value: Any) -> None:
        """ValueError naming the method, the parameter, its flag and the allowed range."""
        if value is None and self.optional:
            return
        ok = isinstance(value, self.type) or (self.type is float and isinstance(value, int))
        ok = ok and not isinstance(value, bool) and (self.type is not float or math.isfinite(value))
        if ok and self.low is not None:
            ok = value > self.low if self.open_low else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.open_high else value <= self.high
        if not ok:
            raise ValueError(f"{method} {self.symbol or self.name} ({self.flag}) must be {self.type.__name__} "
                             f"in {self.allowed()}{' (or unset)' if self.optional else ''}, got {value!r}")


@dataclass(frozen=True)
class Threshold:
    """A method's fit: noise entry variance σ̂² (None for a method that implies none), singular-value
    threshold τ, kept rank ŝ."""

    sigma2: float | None
    threshold: float
    rank: int
    diagnostics: dict[str, Any] = field(default_factory=dict)


class ThresholdMethod:
    """Base of every method (subclasses are frozen dataclasses whose fields are its ``params``)."""

    name: ClassVar[str]
    label: ClassVar[str]
    short: ClassVar[str]  # for table columns and the panel
    mark: ClassVar[str] = ""  # one letter for the tree's ŝ marks (default: the short label's first)
    params: ClassVar[tuple[Param, ...]] = ()
    # A method that needs the matrix's entries, not only its singular values (the shuffle null).
    uses_matrix: ClassVar[bool] = False
    # Whether the fit estimates a noise variance σ̂² (shrinkage and the MP cosines need one).
    implies_sigma2: ClassVar[bool] = True

    def __post_init__(self):
        declared = {p.name for p in self.params}
        have = {f.name for f in fields(self)}  # type: ignore[arg-type]
        if declared != have:  # a programming error in the method module, caught on first use
            raise TypeError(f"method {self.name}: params declare {sorted(declared)}, fields are {sorted(have)}")
        for p in self.params:
            p.check(self.name, getattr(self, p.name))

    def min_p(self) -> int:
        """The fewest singular values this method can run on."""
        return MIN_P

    def too_small(self, shape: MatrixShape) -> str | None:
        """Why the method cannot run on any matrix of this shape (None when it may): decided from
        the shape alone, so a checkpoint of many small matrices need not try each one."""
        least = self.min_p()
        return f"p = {shape.p} < {least}: too few singular values to {self.needs}" if shape.p < least else None

    needs: ClassVar[str] = "fit a bulk"  # what the minimum is for, in the too-small reason

    def fit(self, sv: np.ndarray, shape: MatrixShape, matrix: np.ndarray | None = None) -> Threshold:
        """``sv``: all p singular values, descending; ``matrix``: the entries, for a method that
        ``uses_matrix``. Raises NotApplicable (``too_small`` first)."""
        if (why := self.too_small(shape)) is not None:
            raise NotApplicable(why)
        if not self.uses_matrix:
            return self._fit(np.asarray(sv), shape)
        if matrix is None:
            raise NotApplicable("needs the matrix's entries, which were not given (only its singular values)")
        return self._fit(np.asarray(sv), shape, matrix)

    def _fit(self, sv: np.ndarray, shape: MatrixShape, *matrix) -> Threshold:
        raise NotImplementedError

    @classmethod
    def tree_mark(cls) -> str:
        return cls.mark or cls.short[0]

    def settings(self) -> dict[str, Any]:
        """The parameter values, by name (the JSON ``options.params`` of this method)."""
        return {p.name: getattr(self, p.name) for p in self.params}


def count_above(sv: np.ndarray, tau: float) -> int:
    return int(np.sum(np.asarray(sv) > tau))
