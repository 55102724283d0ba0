"""A user's own evaluator: a Python file or ``module:function`` whose ``evaluate(state_dict)``
returns ``{"accuracy": …}`` (or the metric it names in ``evaluate.primary``). This imports and
runs the user's code, which is why it is only ever done on their explicit request."""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from core.errors import EvaluationError
from core.evaluate.base import SelfContained
from core.evaluate.outcomes import metric_spec


class FunctionEvaluator(SelfContained):
    """A user's ``evaluate`` function, with the primary metric it declares (accuracy by default)."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name
        key = getattr(fn, "primary", "accuracy")
        if not isinstance(key, str):
            raise EvaluationError(f"{name}: evaluate.primary must be a metric name, got {key!r}")
        # As a document's primary record is read back (so the CLI and the app format it alike).
        self.primary = metric_spec({"metric": key, "label": str(getattr(fn, "primary_label", key)),
                                    "higher_is_better": bool(getattr(fn, "higher_is_better", True))})

    def __call__(self, state):
        return self.fn(state)


def load_evaluator(spec: str) -> FunctionEvaluator:
    """``path/to/file.py`` (its ``evaluate``), ``path/to/file.py:func``, or ``package.module:func``."""
    target, _, func = spec.partition(":") if not spec.endswith(".py") else (spec, "", "")
    func = func or "evaluate"
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise EvaluationError(f"{path}: evaluator file not found")
            mod_spec = importlib.util.spec_from_file_location(f"rmt_user_evaluator_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"{spec}: cannot load the evaluator ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise EvaluationError(f"{spec}: no callable {func!r} in {target}; define evaluate(state_dict) -> dict")
    return FunctionEvaluator(fn, spec)
