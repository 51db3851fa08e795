"""Transformer blocks on a ``(B, T, N, D)`` token grid: :class:`Block` (attention along one axis) and
:class:`FactorisedBlock` (spatial then temporal attention, ViViT Model 3 / TimeSformer)::

    x (B, T, N, D) ─mix─► + attn(norm1) ─mix─► + mlp(norm2) ─► (B, T, N, D)          Block
    x ─mix─► + attn_space(norm1) ─► + attn_time(norm_t) [→ proj_t] ─mix─► + mlp(norm2)  FactorisedBlock
"""

from __future__ import annotations

import torch
from torch import nn

from vidtok.models.layers.attention import Attention
from vidtok.models.layers.drop_path import DropPath
from vidtok.models.layers.mlp import Mlp

__all__ = ["Block", "FactorisedBlock", "ATTN_ORDERS"]

ATTN_ORDERS = ("space_time", "time_space")


class Block(nn.Module):
    """Pre-norm transformer block on a ``(B, T, N, D)`` grid, attention along one axis.

    ``x = mix(x); x = x + drop_path(attn(norm1(x))); x = mix(x); x = x + drop_path(mlp(norm2(x)))`` where ``mix``
    is the token mixer (identity by default; TokShift places the shift exactly there, and the shifted tensor is the
    residual).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        axis: str = "joint",
        mlp_ratio: float = 4.0,
        qkv_bias: str = "all",
        act: str = "gelu",
        norm_eps: float = 1e-6,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        backend: str = "auto",
        token_mixer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.mixer = token_mixer if token_mixer is not None else nn.Identity()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, axis=axis, qkv_bias=qkv_bias, proj_drop=proj_drop, backend=backend)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        num_frames: int | None = None,
        *,
        return_attn: bool = False,
        key_weight: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, T, N, D)`` → same shape (``num_frames`` is unused; it keeps one block signature).

        ``key_weight`` ``(B, T, N)``: masked attention for token reducers (0 = padding / pruned key).
        """
        x = self.mixer(x)
        attn_w = None
        if return_attn:
            y, attn_w = self.attn(self.norm1(x), return_attn=True)
        else:
            y = self.attn(self.norm1(x), key_weight=key_weight)
        x = x + self.drop_path1(y)
        x = self.mixer(x)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return (x, attn_w) if return_attn else x


class FactorisedBlock(nn.Module):
    """Factorised self-attention block: spatial and temporal attention in sequence, each pre-norm with its own
    residual, then the MLP (ViViT Model 3; TimeSformer's "divided space-time" with ``order="time_space"``,
    ``temporal_proj=True``).

    With a global class token (input ``(B, 1, 1 + T·S, D)``), as TimeSformer: the class token skips temporal
    attention; for spatial attention it is replicated into every frame and the T outputs are averaged into its
    residual. Without one, the input is ``(B, T, S, D)``. The last linear of the temporal branch (``proj_t`` if
    present, else ``attn_t.proj``) is zero-initialised, so the block starts as a spatial (image) block.

    Parameters: ``norm1``/``attn`` (spatial), ``norm_t``/``attn_t``/``proj_t`` (temporal; ``proj_t`` is
    TimeSformer's ``temporal_dense``), ``norm2``/``mlp``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        order: str = "space_time",
        temporal_proj: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: str = "all",
        act: str = "gelu",
        norm_eps: float = 1e-6,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        backend: str = "auto",
        token_mixer: nn.Module | None = None,
        global_cls: bool = False,
    ) -> None:
        super().__init__()
        if order not in ATTN_ORDERS:
            raise ValueError(f"attn_order must be one of {ATTN_ORDERS}, got {order!r}")
        self.order = order
        self.global_cls = global_cls
        if global_cls and token_mixer is not None:
            raise ValueError("a token mixer needs per-frame tokens; it cannot be combined with a global class token")
        self.mixer = token_mixer if token_mixer is not None else nn.Identity()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, axis="space", qkv_bias=qkv_bias, proj_drop=proj_drop, backend=backend)
        self.norm_t = nn.LayerNorm(dim, eps=norm_eps)
        self.attn_t = Attention(dim, num_heads, axis="time", qkv_bias=qkv_bias, proj_drop=proj_drop, backend=backend)
        self.proj_t = nn.Linear(dim, dim) if temporal_proj else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act, drop=proj_drop)
        self.zero_init_temporal()

    def zero_init_temporal(self) -> None:
        last = self.proj_t if self.proj_t is not None else self.attn_t.proj
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _temporal(self, p: torch.Tensor) -> torch.Tensor:
        y = self.drop_path(self.attn_t(self.norm_t(p)))
        if self.proj_t is not None:
            y = self.proj_t(y)
        return p + y

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """``(B, T, S, D)`` or, with a global class token, ``(B, 1, 1 + T·S, D)`` plus ``num_frames = T``."""
        B = x.shape[0]
        if self.global_cls:
            if num_frames is None or x.shape[1] != 1 or (x.shape[2] - 1) % num_frames:
                raise ValueError(
                    f"expected (B, 1, 1 + T·S, D) with T = num_frames = {num_frames}, got {tuple(x.shape)}"
                )
            cls = x[:, 0, :1]  # (B, 1, D)
            p = x[:, 0, 1:].reshape(B, num_frames, -1, x.shape[-1])  # (B, T, S, D)
        else:
            cls, p = None, self.mixer(x)
        for step in ("space", "time") if self.order == "space_time" else ("time", "space"):
            if step == "time":
                p = self._temporal(p)
            elif cls is None:
                p = p + self.drop_path(self.attn(self.norm1(p)))
            else:
                T = p.shape[1]
                tok = torch.cat([cls[:, None].expand(B, T, 1, cls.shape[-1]), p], dim=2)  # (B, T, 1 + S, D)
                y = self.drop_path(self.attn(self.norm1(tok)))
                cls = cls + y[:, :, 0].mean(1, keepdim=True)  # average the per-frame class outputs
                p = p + y[:, :, 1:]
        if cls is None:
            p = self.mixer(p)
            return p + self.drop_path(self.mlp(self.norm2(p)))
        x = torch.cat([cls, p.flatten(1, 2)], dim=1)[:, None]  # (B, 1, 1 + T·S, D)
        return x + self.drop_path(self.mlp(self.norm2(x)))
