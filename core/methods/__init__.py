"""Registry of noise-threshold methods. A new method is one module plus one entry here."""
from __future__ import annotations

from .base import NotApplicable, Threshold, ThresholdMethod
from .bema import Bema
from .broadening import Broadening

METHODS: dict[str, type] = {Bema.name: Bema, Broadening.name: Broadening}
DEFAULT_METHODS = tuple(METHODS)


def short_label(name: str) -> str:
    """A method's short label ("BEMA", "GB"); the name itself for an unknown method."""
    return METHODS[name].short if name in METHODS else name


def make_methods(names=DEFAULT_METHODS, **params) -> list[ThresholdMethod]:
    """Instantiate methods by name; ``params`` maps a method name to its keyword arguments."""
    out = []
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        out.append(METHODS[name](**params.get(name, {})))
    return out


__all__ = ["METHODS", "DEFAULT_METHODS", "make_methods", "short_label", "NotApplicable", "Threshold", "ThresholdMethod",
           "Bema", "Broadening"]
