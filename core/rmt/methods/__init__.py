"""Registry of noise-threshold methods. A new method is one module (a ``ThresholdMethod`` with its
``params`` declared) plus one ``register`` call here; everything else — CLI flags, JSON options,
cache keys, the app's panel and plots — reads the registry."""
from __future__ import annotations

from core.rmt.methods.base import NotApplicable, Param, Threshold, ThresholdMethod
from core.rmt.methods.bema import Bema
from core.rmt.methods.broadening import Broadening
from core.rmt.methods.gavish_donoho import GavishDonoho
from core.rmt.methods.screenot import ScreeNOT
from core.rmt.methods.shuffle import Shuffle

METHODS: dict[str, type[ThresholdMethod]] = {}


def register(cls: type[ThresholdMethod]) -> type[ThresholdMethod]:
    """Add a method class; its name and its parameters' flags must be new (flags are shared by all
    commands, so two methods cannot both own ``--alpha``)."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered")
    taken = {p.flag: m.name for m in METHODS.values() if m is not cls for p in m.params}
    for p in cls.params:
        if p.flag in taken:
            raise ValueError(f"method {cls.name}: flag {p.flag} is already {taken[p.flag]}'s")
    METHODS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    METHODS.pop(name, None)


register(Bema)
register(Broadening)
register(ScreeNOT)
register(GavishDonoho)
register(Shuffle)
DEFAULT_METHODS = ("bema", "broadening")


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


__all__ = ["METHODS", "DEFAULT_METHODS", "register", "unregister", "make_methods", "short_label", "NotApplicable",
           "Param", "Threshold", "ThresholdMethod", "Bema", "Broadening", "ScreeNOT", "GavishDonoho", "Shuffle"]
