"""Tubelet embedding: non-overlapping ``t × p × p`` space-time patches → tokens (ViViT §3.2).

Input ``(B, C, T, H, W)`` → Conv3d with kernel = stride = ``(t, p, p)`` → tokens ``(B, T', Hp·Wp, D)`` with
``T' = T // t``, ``Hp = H // p``, ``Wp = W // p``. With ``t = 1`` this is a frame-wise 2D patch embedding.

Initialisation: truncated normal (random), or inflated from a 2D patch embedding (``inflate_2d_kernel``):
"central" puts the 2D kernel at temporal index ``t // 2`` and zeros elsewhere (ViViT paper, scenic), so the
model starts as a frame-wise ViT on the central frame of each tubelet; "average" replicates it divided by ``t``
(I3D), so a clip of identical frames gives the 2D ViT's patch features.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TubeletEmbed", "inflate_2d_kernel", "INFLATE_MODES"]

INFLATE_MODES = ("central", "average")


def _triple(x: int | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    if isinstance(x, int):
        return (x, x, x)
    if len(x) != 3:
        raise ValueError(f"tubelet_size must be an int or 3 ints (t, p, p), got {x!r}")
    return (int(x[0]), int(x[1]), int(x[2]))


def inflate_2d_kernel(weight_2d: torch.Tensor, t: int, mode: str = "central") -> torch.Tensor:
    """A Conv3d kernel ``(D, C, t, p, p)`` from a Conv2d kernel ``(D, C, p, p)``.

    Args:
        weight_2d: 2D patch-embedding kernel.
        t: temporal extent of the tubelet.
        mode: ``"central"`` (2D kernel at index ``t // 2``, zeros elsewhere) or ``"average"`` (kernel / t at every
            index).
    """
    if weight_2d.dim() != 4:
        raise ValueError(f"weight_2d must be (D, C, p, p), got shape {tuple(weight_2d.shape)}")
    if mode not in INFLATE_MODES:
        raise ValueError(f"mode must be one of {INFLATE_MODES}, got {mode!r}")
    D, C, ph, pw = weight_2d.shape
    if mode == "average":
        return weight_2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t  # (D, C, t, p, p)
    out = weight_2d.new_zeros(D, C, t, ph, pw)
    out[:, :, t // 2] = weight_2d
    return out


class TubeletEmbed(nn.Module):
    """Conv3d tubelet embedding.

    Args:
        in_chans: input channels.
        embed_dim: token width D.
        tubelet_size: ``(t, p, p)`` kernel = stride (an int means a cube).
        bias: conv bias.
        init_std: std of the truncated-normal initialisation.
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        embed_dim: int = 768,
        tubelet_size: int | tuple[int, int, int] = (2, 16, 16),
        bias: bool = True,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.tubelet_size = _triple(tubelet_size)
        if min(self.tubelet_size) < 1:
            raise ValueError(f"tubelet_size must be positive, got {tubelet_size!r}")
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=self.tubelet_size, stride=self.tubelet_size, bias=bias)
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.proj.weight, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std)
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)

    def grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid ``(T', Hp, Wp)`` for an input of that size."""
        t, ph, pw = self.tubelet_size
        return num_frames // t, height // ph, width // pw

    @torch.no_grad()
    def inflate_from_2d(self, weight_2d: torch.Tensor, bias: torch.Tensor | None = None, mode: str = "central") -> None:
        """Initialise from a 2D patch embedding (see :func:`inflate_2d_kernel`)."""
        w = inflate_2d_kernel(weight_2d, self.tubelet_size[0], mode)
        if w.shape != self.proj.weight.shape:
            raise ValueError(f"2D kernel inflates to {tuple(w.shape)}, expected {tuple(self.proj.weight.shape)}")
        self.proj.weight.copy_(w)
        if bias is not None and self.proj.bias is not None:
            self.proj.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, T', Hp·Wp, D)``; frames / pixels that don't fill a tubelet are dropped."""
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input (B, {self.in_chans}, T, H, W), got shape {tuple(x.shape)}")
        T, H, W = x.shape[2:]
        t, ph, pw = self.tubelet_size
        if min(T - t, H - ph, W - pw) < 0:
            raise ValueError(f"input (T, H, W) = {(T, H, W)} is smaller than one tubelet {self.tubelet_size}")
        y = self.proj(x)  # (B, D, T', Hp, Wp)
        return y.flatten(3).permute(0, 2, 3, 1)  # (B, T', Hp·Wp, D)
