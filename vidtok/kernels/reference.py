"""Plain math reference for space-time attention: the oracle every fast path is tested against."""

from __future__ import annotations

import torch


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale) v over the second-to-last axis, computed in float32.

    Args:
        q, k, v: ``(..., N, Dh)`` with identical leading dims.
        scale: defaults to ``Dh ** -0.5``.

    Returns:
        ``(..., N, Dh)`` in the dtype of ``q``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale  # (..., N, N)
    attn = attn.softmax(dim=-1)
    return torch.matmul(attn, v.float()).to(q.dtype)  # (..., N, Dh)
