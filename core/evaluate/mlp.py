"""The demo models' architecture: a ReLU MLP whose layers are named fc1, fc2, …"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from core.errors import EvaluationError


class MLP(nn.Module):
    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.widths = list(widths)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            setattr(self, f"fc{i}", nn.Linear(a, b))
        self.depth = len(widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.depth:
                x = torch.relu(x)
        return x


def mlp_from_state_dict(state: Mapping[str, torch.Tensor]) -> MLP:
    """Build the MLP that ``state`` belongs to, inferring the widths from fc1.weight, fc2.weight, …"""
    idx = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"fc(\d+)\.weight", k)))
    if not idx or idx != list(range(1, len(idx) + 1)):
        raise EvaluationError("the MNIST evaluator expects an MLP with layers fc1, fc2, …; "
                              f"found tensors {sorted(state)[:6]}")
    widths = [state["fc1.weight"].shape[1]] + [state[f"fc{i}.weight"].shape[0] for i in idx]
    model = MLP(widths)
    try:
        model.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()})
    except RuntimeError as exc:
        raise EvaluationError(f"the state dict does not fit an MLP {widths}: {exc}") from exc
    return model.eval()
