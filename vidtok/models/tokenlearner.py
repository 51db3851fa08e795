"""TokenLearner and TokenFuser (Ryoo et al., NeurIPS 2021), per temporal slice for video.

Read from scenic's ``projects/token_learner/model.py``. TokenLearner turns the ``N = Hp·Wp`` tokens of each
temporal slice into ``S`` learned tokens, each a weighted pooling of the slice under its own attention map::

    x (B, T, N, D) ─LN─► maps (B, T, S, N) ─► learned (B, T, S, D) = maps @ x

* v1.1 (default; the authors' recommendation): maps = softmax_N(MLP(LN(x))), MLP = Linear(D, 64) → GELU →
  Linear(64, S); the maps sum to 1 over positions.
* v1.0: maps = sigmoid(conv3×3 → GELU ×3 → conv3×3 (S channels, no bias) over the (Hp, Wp) grid of LN(x)),
  then sum (or mean) pooling.

With ``joint=True`` the maps range over all ``T·N`` tokens of the clip and the output is ``(B, 1, S, D)``.

TokenFuser maps S tokens back onto the N positions (for "TokenLearner + TokenFuser" stacks)::

    y (B, T, S, D) ─LN → Linear over S (zero-init) → LN─► y'
    w = sigmoid(MLP(LN(x))) (B, T, N, S);   out = w @ y'  (B, T, N, D)   (the caller adds the residual x)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidtok.models.layers.mlp import Mlp

__all__ = ["TokenLearner", "TokenFuser", "TL_VERSIONS"]

TL_VERSIONS = ("1.1", "1.0")


class TokenLearner(nn.Module):
    """Learn ``num_tokens`` tokens per temporal slice.

    Args:
        dim: token width D.
        num_tokens: S, learned tokens per slice (or per clip when ``joint``).
        version: ``"1.1"`` (MLP + softmax) or ``"1.0"`` (convs + sigmoid).
        bottleneck_dim: hidden width of the v1.1 MLP.
        joint: learn tokens over all ``T·N`` tokens of a clip instead of per slice.
        sum_pooling: v1.0 only: sum (True, scenic's default) or mean over positions.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_tokens: int = 8,
        version: str = "1.1",
        bottleneck_dim: int = 64,
        joint: bool = False,
        sum_pooling: bool = True,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        version = str(version)
        if version not in TL_VERSIONS:
            raise ValueError(f"TokenLearner version must be one of {TL_VERSIONS}, got {version!r}")
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if version == "1.0" and joint:
            raise ValueError("TokenLearner v1.0 works on a 2D grid per slice; joint=True needs version 1.1")
        self.dim = dim
        self.num_tokens = num_tokens
        self.version = version
        self.joint = joint
        self.sum_pooling = sum_pooling
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        if version == "1.1":
            self.mlp = Mlp(dim, bottleneck_dim, num_tokens, act="gelu")
        else:
            convs = [nn.Conv2d(dim, num_tokens, 3, padding=1, bias=False)]
            convs += [nn.Conv2d(num_tokens, num_tokens, 3, padding=1, bias=False) for _ in range(3)]
            self.convs = nn.ModuleList(convs)

    def maps(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Attention maps ``(B, T, S, N)`` (``(B, 1, S, T·N)`` when joint) for tokens ``x`` ``(B, T, N, D)``."""
        B, T, N, D = x.shape
        if self.joint:
            x = x.reshape(B, 1, T * N, D)  # (B, 1, T·N, D)
        y = self.norm(x)
        if self.version == "1.1":
            return self.mlp(y).transpose(-1, -2).softmax(-1)  # (B, T, S, N)
        Hp, Wp = grid_hw
        if Hp * Wp != N:
            raise ValueError(f"TokenLearner v1.0 needs the grid: Hp·Wp = {Hp}·{Wp} != N = {N}")
        y = rearrange(y, "b t (h w) d -> (b t) d h w", h=Hp, w=Wp)
        for i, conv in enumerate(self.convs):
            y = conv(y)
            if i < len(self.convs) - 1:
                y = F.gelu(y)
        return rearrange(torch.sigmoid(y), "(b t) s h w -> b t s (h w)", b=B)  # (B, T, S, N)

    def forward(
        self, x: torch.Tensor, grid_hw: tuple[int, int] | None = None, *, return_maps: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, N, D)`` → learned tokens ``(B, T, S, D)`` (``(B, 1, S, D)`` when joint), maps on request."""
        if x.dim() != 4:
            raise ValueError(f"TokenLearner expects (B, T, N, D), got shape {tuple(x.shape)}")
        B, T, N, D = x.shape
        maps = self.maps(x, grid_hw if grid_hw is not None else (N, 1))
        feats = x.reshape(B, 1, T * N, D) if self.joint else x
        out = maps.to(feats.dtype) @ feats  # (B, T, S, D)
        if self.version == "1.0" and not self.sum_pooling:
            out = out / feats.shape[2]
        return (out, maps) if return_maps else out

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, version={self.version}, joint={self.joint}"


class TokenFuser(nn.Module):
    """Map learned tokens ``(B, T, S, D)`` back to the ``N`` positions of the original tokens.

    Args:
        dim: token width D.
        num_tokens: S.
        bottleneck_dim: hidden width of the mixing-weight MLP.
        norm_eps: LayerNorm epsilon.
        drop: dropout on the output.
    """

    def __init__(
        self, *, dim: int, num_tokens: int, bottleneck_dim: int = 64, norm_eps: float = 1e-6, drop: float = 0.0
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.norm_in = nn.LayerNorm(dim, eps=norm_eps)
        self.token_mix = nn.Linear(num_tokens, num_tokens)  # over the token axis
        self.norm_out = nn.LayerNorm(dim, eps=norm_eps)
        self.norm_orig = nn.LayerNorm(dim, eps=norm_eps)
        self.mix_mlp = Mlp(dim, bottleneck_dim, num_tokens, act="gelu")
        self.drop = nn.Dropout(drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The token mix starts at zero, so a fresh fuser adds nothing to the residual stream."""
        nn.init.zeros_(self.token_mix.weight)
        nn.init.zeros_(self.token_mix.bias)

    def forward(self, tokens: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(B, T, S, D)``, ``original`` ``(B, T, N, D)`` → ``(B, T, N, D)`` (without the residual)."""
        y = self.norm_in(tokens)
        y = self.token_mix(y.transpose(-1, -2)).transpose(-1, -2)  # (B, T, S, D)
        y = self.norm_out(y)
        w = torch.sigmoid(self.mix_mlp(self.norm_orig(original)))  # (B, T, N, S)
        return self.drop(w @ y)  # (B, T, N, D)
