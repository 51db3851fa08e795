"""Adaptive Token Sampling (Fayyaz et al., "Adaptive Token Sampling for Efficient Vision Transformers", ECCV 2022).

Parameter-free. The significance of each token is the class token's attention to it (the previous joint block's
head-averaged weights; without a class token the mean attention a token receives; without joint attention a
parameter-free proxy, :func:`~vidtok.models.reducers.base.parameter_free_scores`). The kept tokens are drawn by
inverse-transform sampling of the normalised scores' CDF at K evenly spaced points; points that land on the same
token pick it once, so an input keeps *at most* K tokens and simple inputs keep fewer::

    scores (B, T, N) ─normalise─► cdf (B, T, N)
    points u_k = (k + 0.5) / K, k < K ─searchsorted(cdf)─► indices (B, T, K) ─unique per row─► kept ≤ K
    out (B, T, K, D): kept tokens in their original order, then padding slots (keep = 0) up to K

The paper weighs the scores by the value norms ‖V_j‖ and samples inside the attention layer; here the scores
come from the attention weights alone and the sampling sits between blocks (docs/reducers.md).
"""

from __future__ import annotations

import torch

from vidtok.models.reducers.base import NO_CONTEXT, ForwardContext, ReducerOutput, TokenReducer, parameter_free_scores

__all__ = ["AdaptiveTokenSampling"]


class AdaptiveTokenSampling(TokenReducer):
    """Keep at most ``num_tokens`` tokens per slice (per clip with ``joint``), chosen by score-CDF sampling.

    Args:
        at_blocks: block index before which tokens are sampled.
        num_tokens: K, the budget per slice (per clip with ``joint``); clamped to the number of tokens.
        joint: sample over all ``T·N`` tokens of a clip (output ``(B, 1, K, D)``).
    """

    kind = "ats"
    uses_mask = True
    needs_scores = True

    def __init__(self, *, at_blocks: int | list[int] = 4, num_tokens: int = 16, joint: bool = False) -> None:
        super().__init__(at_blocks=at_blocks)
        if len(self.at_blocks) != 1:
            raise ValueError(f"ats runs at one block, got at_block={at_blocks!r}")
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.num_tokens = num_tokens
        self.joint = joint

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, joint={self.joint}"

    @staticmethod
    def sample(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse-transform sampling: ``scores`` ``(M, N)`` ≥ 0 → (indices ``(M, k)`` ascending, padding slots
        repeating the last kept index, valid ``(M, k)`` bool); at most ``k`` distinct indices per row."""
        M, N = scores.shape
        p = scores.float().clamp_min(0)
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
        cdf = p.cumsum(-1)  # (M, N)
        cdf[:, -1] = 1.0 + 1e-6  # every point lands on a token despite rounding
        u = (torch.arange(k, device=scores.device, dtype=torch.float32) + 0.5) / k  # (k,)
        # searchsorted(cdf, u) as a count (cdf is non-decreasing): the same indices, and it exports to ONNX, which
        # has no searchsorted
        idx = (cdf[:, None, :] < u[None, :, None]).sum(-1)  # (M, k) sorted
        idx = idx.clamp_max(N - 1)
        first = torch.ones_like(idx, dtype=torch.bool)
        first[:, 1:] = idx[:, 1:] != idx[:, :-1]  # sorted, so duplicates are adjacent
        # compact: unique indices first (stable), duplicates become padding
        # (a plain sort on distinct keys = the stable sort on ~first; ONNX has no stable sort)
        key = (~first).long() * k + torch.arange(k, device=idx.device)  # (M, k)
        order = torch.sort(key, dim=1).indices  # (M, k)
        idx = idx.gather(1, order)
        valid = first.gather(1, order)
        last = idx.gather(1, (valid.sum(1, keepdim=True) - 1).clamp_min(0))
        idx = torch.where(valid, idx, last)
        return idx, valid

    def forward(self, x: torch.Tensor, ctx: ForwardContext = NO_CONTEXT) -> ReducerOutput:
        """``x`` ``(B, T, N, D)`` → ``(B, T, K, D)`` plus ``keep`` ``(B, T, K)`` (0 = padding slot); ``info``:
        ``"index"`` (source positions, -1 for padding), ``"scores"`` (the normalised significance ``(B, T, N)``)."""
        keep, index, scores = ctx.keep, ctx.index, ctx.scores
        B, T, N, D = x.shape
        if scores is None:
            scores = parameter_free_scores(x, keep)
        scores = scores.detach()
        if keep is not None:
            scores = scores * (keep > 0)
        if self.joint:
            x, scores = x.reshape(B, 1, T * N, D), scores.reshape(B, 1, T * N)
            index = index.reshape(B, 1, T * N) if index is not None else None
            T, N = 1, T * N
        K = min(self.num_tokens, N)
        M = B * T
        idx, valid = self.sample(scores.reshape(M, N), K)  # (M, K)
        out = x.reshape(M, N, D).gather(1, idx[..., None].expand(M, K, D))  # (M, K, D)
        src = idx if index is None else index.reshape(M, N).gather(1, idx)
        src = torch.where(valid, src, torch.full_like(src, -1))
        w = valid.to(x.dtype)
        info = {"index": src.reshape(B, T, K), "scores": (scores / scores.sum(-1, keepdim=True).clamp_min(1e-12))}
        return ReducerOutput(out.reshape(B, T, K, D), w.reshape(B, T, K), info)
