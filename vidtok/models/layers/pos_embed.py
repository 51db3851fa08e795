"""Positional embeddings for a ``(T', Hp, Wp)`` token grid, with correct resizing.

Kinds:
    * ``"joint"``: one learned table over all ``T'·Hp·Wp`` positions (ViViT Model 1, HF ``VivitEmbeddings``).
    * ``"separable"``: learned spatial table ``(Hp·Wp)`` + learned temporal table ``(T')`` (TimeSformer, ViViT FE).
    * ``"spatial"``: spatial table only (a frame-wise ViT, e.g. TokShift: time comes from the shift).
    * ``"sincos"``: fixed 1D sinusoid over the flattened ``t·Hp·Wp + h·Wp + w`` index (VideoMAE), a buffer.

Class-token positions (``num_prefix`` rows at the start of the table for "joint", of the spatial table for
"separable"/"spatial") are kept as they are. When the grid differs from the one the table was built for, the
temporal axis is interpolated linearly and the spatial axes bicubically, *separately* — unlike HF ViViT's
``interpolate_pos_encoding``, which treats the whole ``T'·Hp·Wp`` table as one square 2D grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["PosEmbed", "sincos_table", "resize_grid_table", "POS_EMBED_KINDS"]

POS_EMBED_KINDS = ("joint", "separable", "spatial", "sincos", "none")


def sincos_table(n_position: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed table ``(n_position, dim)``: sin on even, cos on odd channels, float64-exact like numpy."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]  # (N, 1)
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(
        torch.tensor(10000.0, dtype=torch.float64), 2 * torch.div(j, 2, rounding_mode="floor") / dim
    )
    table = angle.clone()
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


def resize_grid_table(table: torch.Tensor, old: tuple[int, int, int], new: tuple[int, int, int]) -> torch.Tensor:
    """Resize a ``(T·H·W, D)`` table from grid ``old`` to grid ``new``: time linearly, space bicubically.

    Each axis is interpolated on its own, so a table that is constant along time stays constant along time and a
    spatial pattern is not smeared across frames.
    """
    T0, H0, W0 = old
    T1, H1, W1 = new
    if (T0, H0, W0) == (T1, H1, W1):
        return table
    dtype = table.dtype
    g = rearrange(table.float(), "(t h w) d -> t d h w", t=T0, h=H0, w=W0)
    if (H0, W0) != (H1, W1):
        g = F.interpolate(g, size=(H1, W1), mode="bicubic", align_corners=False)  # (T0, D, H1, W1)
    if T0 != T1:
        g = rearrange(g, "t d h w -> (h w) d t")
        g = F.interpolate(g, size=T1, mode="linear", align_corners=False)  # (H1·W1, D, T1)
        g = rearrange(g, "(h w) d t -> t d h w", h=H1, w=W1)
    return rearrange(g, "t d h w -> (t h w) d").to(dtype)


def _resize_1d(table: torch.Tensor, n: int) -> torch.Tensor:
    """``(N0, D)`` → ``(n, D)`` by linear interpolation (temporal tables)."""
    if table.shape[0] == n:
        return table
    y = F.interpolate(table.float().t()[None], size=n, mode="linear", align_corners=False)  # (1, D, n)
    return y[0].t().to(table.dtype)


class PosEmbed(nn.Module):
    """Positional embedding for a token grid plus ``num_prefix`` class-token positions.

    Args:
        kind: one of :data:`POS_EMBED_KINDS`.
        grid: ``(T', Hp, Wp)`` the tables are built for.
        dim: embedding width.
        num_prefix: class-token rows (0 or 1) at the start of the joint / spatial table.
        init_std: std of the truncated-normal initialisation of learned tables (0: left at zero for the owner to
            initialise).

    Parameters (stable names, used by checkpoint converters):
        ``table`` ``(1, num_prefix + T'·Hp·Wp, D)`` for "joint";
        ``spatial`` ``(1, num_prefix + Hp·Wp, D)`` and ``temporal`` ``(1, T', D)`` for "separable" ("spatial" has
        only the former); "sincos" has a non-persistent buffer ``table`` (not in the state dict).
    """

    def __init__(
        self, *, kind: str, grid: tuple[int, int, int], dim: int, num_prefix: int = 0, init_std: float = 0.02
    ) -> None:
        super().__init__()
        if kind not in POS_EMBED_KINDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_KINDS}, got {kind!r}")
        if num_prefix not in (0, 1):
            raise ValueError(f"num_prefix must be 0 or 1, got {num_prefix}")
        if kind == "sincos" and num_prefix:
            raise ValueError("a fixed sincos table has no class-token position; use num_prefix=0")
        self.kind = kind
        self.grid = tuple(int(g) for g in grid)
        self.dim = dim
        self.num_prefix = num_prefix
        T, H, W = self.grid
        if kind == "joint":
            self.table = nn.Parameter(torch.zeros(1, num_prefix + T * H * W, dim))
        elif kind in ("separable", "spatial"):
            self.spatial = nn.Parameter(torch.zeros(1, num_prefix + H * W, dim))
            if kind == "separable":
                self.temporal = nn.Parameter(torch.zeros(1, T, dim))
        elif kind == "sincos":
            self.register_buffer("table", sincos_table(T * H * W, dim)[None], persistent=False)
        for p in self.parameters() if init_std > 0 else ():
            nn.init.trunc_normal_(p, std=init_std, a=-2 * init_std, b=2 * init_std)

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters()}

    def forward(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Tables for ``grid``: ``(patch (T', Hp·Wp, D) or None, prefix (num_prefix, D) or None)``, as new tensors.

        Module outputs that are views of parameters trip torch's module tracker (``FlopCounterMode`` under
        ``no_grad``: "Expected gradient function to be set"), so the module call returns copies; the backbone reads
        the tables through :meth:`tables` (no copy, no module hooks).
        """
        patch, prefix = self.tables(grid)
        return (
            patch.clone() if patch is not None else None,
            prefix.clone() if prefix is not None else None,
        )

    def tables(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Like :meth:`forward`, but the tables may be views of the parameters."""
        T, H, W = grid
        T0, H0, W0 = self.grid
        if self.kind == "none":
            return None, None
        if self.kind in ("joint", "sincos"):
            table = self.table[0]
            prefix = table[: self.num_prefix] if self.num_prefix else None
            patch = resize_grid_table(table[self.num_prefix :], self.grid, (T, H, W))
            return patch.view(T, H * W, self.dim), prefix  # (T', S, D)
        table = self.spatial[0]
        prefix = table[: self.num_prefix] if self.num_prefix else None
        spatial = resize_grid_table(table[self.num_prefix :], (1, H0, W0), (1, H, W))  # (S, D)
        if self.kind == "spatial":
            return spatial[None], prefix  # (1, S, D)
        temporal = _resize_1d(self.temporal[0], T)  # (T', D)
        return spatial[None] + temporal[:, None], prefix  # (T', S, D)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, grid={self.grid}, dim={self.dim}, num_prefix={self.num_prefix}"
