"""DynamicViT-style token pruning (Rao et al., "DynamicViT: Efficient Vision Transformers with Dynamic Token
Sparsification", NeurIPS 2021).

A light prediction module before each of several blocks scores the surviving tokens of each slice; stage s keeps
the fraction ``keep_ratio ** (s + 1)`` of the original tokens::

    x (B, T, N, D), keep (B, T, N) ─LN → Linear(D, D) → GELU─► [local (D/2) | masked mean of global (D/2)]
      ─Linear(D, D/2) → GELU → Linear(D/2, D/4) → GELU → Linear(D/4, 2)─► log p(keep), log p(drop)
    training:  decision = GumbelSoftmax_hard(logits)[keep] · keep        (straight-through)
               tokens stay; the next blocks' attention is masked by the decision (self-attention kept, the
               paper's G_ij), and a ratio loss (mean kept fraction − target)² pulls each stage to its ratio
    inference: top-k of p(keep) over the surviving tokens, k = round(N₀ · keep_ratio^(s+1)); the rest are dropped

The paper's distillation losses (self-distillation of tokens and logits from a teacher) are left out; the ratio
loss is :meth:`DynamicViTPruning.aux_loss`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidtok.models.reducers.base import NO_CONTEXT, ForwardContext, ModelFacts, ReducerOutput, TokenReducer

__all__ = ["DynamicViTPruning", "TokenPredictor"]


class TokenPredictor(nn.Module):
    """DynamicViT's prediction module: per-token keep/drop log-probabilities from local + (masked) global features."""

    def __init__(self, dim: int, *, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(dim, eps=norm_eps), nn.Linear(dim, dim), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim // 4), nn.GELU(), nn.Linear(dim // 4, 2)
        )

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x`` ``(M, N, D)``, ``keep`` ``(M, N)`` → log-probabilities ``(M, N, 2)`` (index 0 = keep)."""
        h = self.in_conv(x)  # (M, N, D)
        d = h.shape[-1] // 2
        local, glob = h[..., :d], h[..., d:]
        w = keep[..., None]
        glob = (glob * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)  # (M, 1, D/2); w: 0/1
        h = torch.cat([local, glob.expand_as(local)], dim=-1)
        return F.log_softmax(self.out_conv(h), dim=-1)


class DynamicViTPruning(TokenReducer):
    """Hierarchical token pruning with learned predictors at ``at_blocks``.

    Args:
        dim: token width D.
        at_blocks: blocks before which a predictor prunes (the paper: 3 stages, e.g. blocks 3, 6, 9 of 12).
        keep_ratio: fraction of the previous stage's tokens each stage keeps (stage s keeps ``ratio^(s+1)`` of the
            original; the paper: 0.7).
        loss_weight: weight of the ratio loss (the paper: 2.0).
        tau: Gumbel-softmax temperature.
        joint: prune over all ``T·N`` tokens of a clip instead of per slice (output ``(B, 1, K, D)``).
        norm_eps: LayerNorm epsilon.
    """

    kind = "dynamicvit"
    uses_mask = True

    def __init__(
        self,
        *,
        dim: int,
        at_blocks: int | list[int] = (3, 6, 9),
        keep_ratio: float = 0.7,
        loss_weight: float = 2.0,
        tau: float = 1.0,
        joint: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__(at_blocks=at_blocks)
        if not 0 < keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.keep_ratio = keep_ratio
        self.loss_weight = loss_weight
        self.tau = tau
        self.joint = joint
        self.predictors = nn.ModuleList(TokenPredictor(dim, norm_eps=norm_eps) for _ in self.at_blocks)
        self.generator: torch.Generator | None = None  # Gumbel noise source (None: torch's global generator)
        self._losses: list[torch.Tensor] = []
        self._n0 = 0

    @classmethod
    def defaults(cls, facts: ModelFacts) -> dict[str, Any]:
        """Three stages from the family's reducer layer to the last block (blocks 4, 6, 9 of 12 from layer 4)."""
        at, depth = facts.at_block, facts.depth
        return {"dim": facts.dim, "at_blocks": sorted({at + (depth - at) * s // 3 for s in range(3)})}

    def extra_repr(self) -> str:
        return f"at_blocks={self.at_blocks}, keep_ratio={self.keep_ratio}, joint={self.joint}"

    def num_kept(self, n: int, stage: int) -> int:
        """Tokens kept per slice at inference after ``stage`` from ``n`` original tokens."""
        return max(1, int(round(n * self.keep_ratio ** (stage + 1))))

    def aux_loss(self) -> torch.Tensor:
        if not self._losses:
            return self.predictors[0].out_conv[-1].weight.new_zeros(())
        return self.loss_weight * torch.stack(self._losses).mean()

    def _gumbel(self, logits: torch.Tensor) -> torch.Tensor:
        u = torch.rand(logits.shape, generator=self.generator, device=logits.device, dtype=logits.dtype)
        g = -torch.log(-torch.log(u.clamp(1e-9, 1 - 1e-9)))
        soft = ((logits + g) / self.tau).softmax(-1)
        hard = F.one_hot(soft.argmax(-1), 2).to(soft.dtype)
        return hard - soft.detach() + soft  # straight-through

    def forward(self, x: torch.Tensor, ctx: ForwardContext = NO_CONTEXT) -> ReducerOutput:
        """Training: same tokens plus ``keep`` ``(B, T, N)``; inference: ``(B, T, k, D)`` top-k tokens, no mask.
        ``info``: ``"scores"`` keep probability ``(B, T, N)``, ``"index"`` source positions of the output tokens."""
        keep, index, stage = ctx.keep, ctx.index, ctx.stage
        B, T, N, D = x.shape
        if stage == 0:
            self._losses = []
            self._n0 = N * (T if self.joint else 1)  # original tokens per row: the ratios are relative to it
        if self.joint and T > 1:
            x = x.reshape(B, 1, T * N, D)
            keep = keep.reshape(B, 1, T * N) if keep is not None else None
            index = index.reshape(B, 1, T * N) if index is not None else None
            T, N = 1, T * N
        M = B * T
        xf = x.reshape(M, N, D)
        kf = keep.reshape(M, N) if keep is not None else xf.new_ones(M, N)
        if index is None:
            index = torch.arange(N, device=x.device)[None, None].expand(B, T, N)
        logp = self.predictors[stage](xf, kf)  # (M, N, 2)
        p_keep = logp[..., 0].exp()
        if self.training:
            dec = self._gumbel(logp)[..., 0] * kf  # (M, N)
            target = self.keep_ratio ** (stage + 1)
            self._losses.append(((dec.sum(1) / self._n0) - target).pow(2).mean())
            info = {"scores": p_keep.reshape(B, T, N).detach(), "index": index}
            return ReducerOutput(x, dec.reshape(B, T, N), info)
        k = min(N, self.num_kept(self._n0, stage))
        s = p_keep if keep is None else p_keep.masked_fill(kf <= 0, -1.0)
        top = s.topk(k, dim=1).indices.sort(1).values  # (M, k), original order kept
        out = xf.gather(1, top[..., None].expand(M, k, D))
        src = index.reshape(M, N).gather(1, top)
        info = {"scores": p_keep.reshape(B, T, N).detach(), "index": src.reshape(B, T, k)}
        return ReducerOutput(out.reshape(B, T, k, D), None, info)
