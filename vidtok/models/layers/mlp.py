"""Transformer feed-forward block (``fc1 → act → drop → fc2 → drop``) with the activations checkpoints use."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mlp", "get_act", "ACTS"]

ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    # tanh approximation; HF's "gelu_fast" / "gelu_new" (ViViT's default) compute the same function
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
}


def get_act(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` (one of :data:`ACTS`)."""
    if name not in ACTS:
        raise ValueError(f"act must be one of {sorted(ACTS)}, got {name!r}")
    return ACTS[name]


class Mlp(nn.Module):
    """Two linear layers with an activation between them.

    Args:
        in_features: input (and default output) width.
        hidden_features: hidden width.
        out_features: output width (default ``in_features``).
        act: activation name (see :data:`ACTS`).
        drop: dropout after the activation and after ``fc2``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        *,
        act: str = "gelu",
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.act_name = act
        self.act = get_act(act)
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))

    def extra_repr(self) -> str:
        return f"act={self.act_name}"
