"""ViViT Model 2's temporal encoder (factorised encoder): a transformer over the per-slice class tokens.

::

    spatial tokens (B, T', 1 + S, D) ─norm_in─► per-slice CLS c (B, T', D)
      z = [cls_token + pos_prefix, c + pos (T', D)]        (B, 1, 1 + T', D)   PosEmbed "joint" over (T', 1, 1)
      └─ blocks (joint attention over the 1 + T' tokens) ─► (B, 1, 1 + T', D)

The positional table is built for the model's ``T'`` and resized linearly for other clip lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vidtok.models.layers.blocks import Block
from vidtok.models.layers.pos_embed import PosEmbed

__all__ = ["TemporalEncoder"]


class TemporalEncoder(nn.Module):
    """Temporal transformer of ViViT Model 2.

    Args:
        dim, num_heads: token width and heads.
        depth: temporal blocks.
        num_slices: T', the temporal slices the positional table is built for.
        drop_path: stochastic-depth rate of each block (``depth`` values).
        norm_eps: LayerNorm epsilon of ``norm_in`` (the spatial encoder's final norm) and of the blocks.
        init_std: truncated-normal std of the class token and the positional table.
        block_kwargs: the remaining :class:`~vidtok.models.layers.blocks.Block` arguments (mlp_ratio, qkv_bias, ...).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        depth: int,
        num_slices: int,
        drop_path: list[float],
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth_temporal must be >= 1 for attn_type 'fe', got {depth}")
        self.init_std = init_std
        self.norm_in = nn.LayerNorm(dim, eps=norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # drawn once, by reset_parameters after the backbone's generic init: a seeded model's draws follow that order
        self.pos_embed = PosEmbed(kind="joint", grid=(num_slices, 1, 1), dim=dim, num_prefix=1, init_std=0.0)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, axis="joint", drop_path=drop_path[j], norm_eps=norm_eps, **block_kwargs)
            for j in range(depth)
        )

    def reset_parameters(self) -> None:
        """Truncated-normal class token and positional table (the backbone calls it after its generic init)."""
        std = self.init_std
        for p in (self.cls_token, self.pos_embed.table):
            nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)

    def forward(
        self, x: torch.Tensor, *, run: Callable[..., Any] | None = None, return_attn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``(B, T', 1 + S, D)`` → ``((B, 1, 1 + T', D), last block's attention (B, L, L) or None)``.

        ``run(blk, *args, **kwargs)`` calls a block (the backbone's activation checkpointing); default: directly.
        """
        x = self.norm_in(x)
        B, T, _, D = x.shape
        c = x[:, :, 0]  # (B, T', D) per-slice class tokens
        patch_pe, prefix_pe = self.pos_embed.tables((T, 1, 1))  # (T', 1, D), (1, D)
        z = torch.cat([(self.cls_token[0] + prefix_pe).expand(B, 1, D), c + patch_pe[:, 0]], dim=1)[:, None]
        attn = None
        for j, blk in enumerate(self.blocks):
            if return_attn and j == len(self.blocks) - 1:
                z, attn = blk(z, return_attn=True)
            else:
                z = run(blk, z) if run is not None else blk(z)
        return z, attn
