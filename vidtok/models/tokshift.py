"""TokShift: a zero-parameter temporal shift of token channels (Zhang et al., ACM MM 2021).

Read from the authors' ``vit_models/modeling_tokshift.py``. For tokens ``x`` ``(B, T, N, C)`` and
``fold = C // fold_div``::

    channels [0, fold)        of frame t  ←  frame t+1   (zero at t = T-1)
    channels [fold, 2·fold)   of frame t  ←  frame t-1   (zero at t = 0)
    channels [2·fold, C)      unchanged

applied to the CLS token only (``tokens="cls"``, the paper's default), to every token (``"all"``) or to every
token but the first (``"patch"``). Placement in a block (the shifted tensor is also the residual)::

    x = shift(x); x = x + attn(norm1(x))
    x = shift(x); x = x + mlp(norm2(x))
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["token_shift", "TokShift", "SHIFT_TOKENS"]

SHIFT_TOKENS = ("cls", "all", "patch")


def token_shift(x: torch.Tensor, fold_div: int = 4, tokens: str = "cls") -> torch.Tensor:
    """Shift ``1/fold_div`` of the channels one frame back and another ``1/fold_div`` one frame forward.

    Args:
        x: ``(B, T, N, C)`` tokens per frame (token 0 is the CLS token for ``"cls"`` / ``"patch"``).
        fold_div: a ``1/fold_div`` share of the channels moves in each direction; ``fold = C // fold_div``.
        tokens: ``"cls"``, ``"all"`` or ``"patch"``.

    Returns:
        A new ``(B, T, N, C)`` tensor (x is not modified).
    """
    if x.dim() != 4:
        raise ValueError(f"token_shift expects (B, T, N, C), got shape {tuple(x.shape)}")
    if tokens not in SHIFT_TOKENS:
        raise ValueError(f"tokens must be one of {SHIFT_TOKENS}, got {tokens!r}")
    if fold_div < 1:
        raise ValueError(f"fold_div must be >= 1, got {fold_div}")
    fold = x.shape[3] // fold_div
    sel = {"cls": slice(0, 1), "all": slice(None), "patch": slice(1, None)}[tokens]
    out = x.clone()  # unshifted channels and unselected tokens
    o, s = out[:, :, sel], x[:, :, sel]  # (B, T, n, C) views
    o[:, :-1, :, :fold] = s[:, 1:, :, :fold]  # frame t <- t+1
    o[:, -1, :, :fold] = 0
    o[:, 1:, :, fold : 2 * fold] = s[:, :-1, :, fold : 2 * fold]  # frame t <- t-1
    o[:, 0, :, fold : 2 * fold] = 0
    return out


class TokShift(nn.Module):
    """Module form of :func:`token_shift` (a block's token mixer)."""

    def __init__(self, *, fold_div: int = 4, tokens: str = "cls") -> None:
        super().__init__()
        if tokens not in SHIFT_TOKENS:
            raise ValueError(f"tokens must be one of {SHIFT_TOKENS}, got {tokens!r}")
        if fold_div < 1:
            raise ValueError(f"fold_div must be >= 1, got {fold_div}")
        self.fold_div = fold_div
        self.tokens = tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return token_shift(x, self.fold_div, self.tokens)

    def extra_repr(self) -> str:
        return f"fold_div={self.fold_div}, tokens={self.tokens}"
