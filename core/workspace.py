"""What one front end keeps open between jobs: opened checkpoints, evaluators with their reference
outputs, calibration data, layer pairings and started executors (``core.jobs`` runs in one)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.calibration import CalibrationChoice
from core.errors import EvaluationError
from core.evaluate.outcomes import EvaluatorChoice


class Workspace:
    """What one front end keeps open between jobs."""

    def __init__(self):
        self.opened: dict[tuple[str, str], Any] = {}  # (path, conv view) → Checkpoint
        self.evaluators: dict[tuple[str, EvaluatorChoice], tuple[str, Any]] = {}  # → (name, evaluator)
        self.pairs: dict[tuple[str, str, str], Any] = {}  # (base, tuned, view) → MatchTable
        self.executors: dict[tuple, Any] = {}  # make_executor's arguments → a started executor
        self.calibrations: dict[tuple, Any] = {}  # (path, EvaluatorChoice, CalibrationChoice) → Calibration

    def checkpoint(self, path: str | Path, conv_view: str = "reshape"):
        from core.io.checkpoint import open_checkpoint

        key = (str(path), conv_view)
        if key not in self.opened:
            self.opened[key] = open_checkpoint(path, conv_view)
        return self.opened[key]

    def evaluator(self, path: str | Path, conv_view: str, choice: EvaluatorChoice) -> tuple[str, Any]:
        """(name, evaluator) for this checkpoint, its reference outputs computed once."""
        from core.evaluate.registry import choose_evaluator

        key = (str(path), choice)
        if key not in self.evaluators:
            self.evaluators[key] = choose_evaluator(self.checkpoint(path, conv_view), choice)
        return self.evaluators[key]

    def calibration(self, path: str | Path, conv_view: str, choice: EvaluatorChoice, cal: CalibrationChoice):
        """The checkpoint's calibration Gram matrices (collected once per evaluator and data)."""
        key = (str(path), choice, cal)
        if key not in self.calibrations:
            try:
                name, evaluator = self.evaluator(path, conv_view, choice)
            except EvaluationError as exc:
                raise EvaluationError(f"whitened truncation needs calibration data, which come from an evaluator "
                                      f"that can run the model: {exc}") from None
            if not callable(getattr(evaluator, "calibrate", None)):
                raise EvaluationError(f"{path}: whitened truncation needs calibration data, and the evaluator "
                                      f"{name!r} cannot feed any (it has no calibrate(state, count, source) "
                                      "method); use --mode hard, or a built-in evaluator")
            ckpt = self.checkpoint(path, conv_view)
            self.calibrations[key] = evaluator.calibrate(ckpt.state_dict(), cal.count, cal.source)
        return self.calibrations[key]

    def whitening(self, path: str | Path, conv_view: str, choice: EvaluatorChoice, cal: CalibrationChoice,
                  names) -> tuple[dict, dict, dict]:
        """(layer → Fed, layer → why it falls back to hard, the calibration's record)."""
        from core.truncation import whitening

        calibration = self.calibration(path, conv_view, choice, cal)
        fed, fallback = whitening(self.checkpoint(path, conv_view), names, calibration)
        return fed, fallback, calibration.record()

    def pair(self, base: str | Path, tuned: str | Path, conv_view: str = "reshape"):
        from core.compare.matching import match_layers

        key = (str(base), str(tuned), conv_view)
        if key not in self.pairs:
            self.pairs[key] = match_layers([self.checkpoint(base, conv_view), self.checkpoint(tuned, conv_view)])
        return self.pairs[key]

    def executor(self, spec: tuple):
        from core.executors import make_executor

        if spec not in self.executors:
            self.executors[spec] = make_executor(*spec)
        return self.executors[spec]

    def close(self) -> None:
        for ckpt in self.opened.values():
            ckpt.close()
        self.opened.clear()
        self.evaluators.clear()
        self.pairs.clear()
        self.calibrations.clear()
