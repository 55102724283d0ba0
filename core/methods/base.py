"""The one interface every noise-threshold method implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from ..spectrum import MatrixShape

# Fewer singular values than this leave no bulk to match or broaden: the MP law is an asymptotic
# statement, and on a handful of values (a 10-way classifier head) it would call everything noise.
MIN_P = 30


class NotApplicable(Exception):
    """The method cannot run on this spectrum; ``str()`` says why in words a user can act on."""


@dataclass(frozen=True)
class Threshold:
    """A method's fit: noise entry variance σ̂², singular-value threshold τ, kept rank ŝ."""

    sigma2: float
    threshold: float
    rank: int
    diagnostics: dict[str, Any] = field(default_factory=dict)


class ThresholdMethod(Protocol):
    name: ClassVar[str]
    label: ClassVar[str]
    short: ClassVar[str]  # for table columns and tree marks

    def too_small(self, shape: MatrixShape) -> str | None:
        """Why the method cannot run on any matrix of this shape (None when it may): decided from
        the shape alone, so a checkpoint of many small matrices need not try each one."""
        ...

    def fit(self, sv: np.ndarray, shape: MatrixShape) -> Threshold:
        """``sv``: all p singular values, descending. Raises NotApplicable (``too_small`` first)."""
        ...


def count_above(sv: np.ndarray, tau: float) -> int:
    return int(np.sum(np.asarray(sv) > tau))
