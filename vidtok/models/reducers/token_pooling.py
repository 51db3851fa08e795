"""Token Pooling (Marin et al., "Token Pooling in Vision Transformers", 2021): downsample tokens by clustering.

Parameter-free. After a chosen block, the N tokens of each temporal slice (or of the whole clip with
``joint=True``) are clustered into K clusters on their features, and each cluster becomes one token::

    x (B, T, N, D) ─cdist─► D (B·T, N, N)
      init: K centres spread over the grid (every N/K-th token, so K = N starts from every token)
      repeat iters: assign each token to its nearest centre;
                    K-medoids: centre = the member minimising the weighted sum of distances to its cluster
                    K-means:   centre = weighted mean of its members
      out (B, T, K, D): the medoids (K-medoids) or weighted means (K-means), in centre order

The weights are the tokens' significance scores (class-token attention of the previous joint block when the
backbone has it, as the paper's weighted clustering; uniform otherwise). Distances are computed on detached
features (the assignment is discrete); the output keeps gradients to the selected / averaged tokens.
With K = N every token is its own centre and the output equals the input.
"""

from __future__ import annotations

import torch

from vidtok.models.reducers.base import NO_CONTEXT, ForwardContext, ReducerOutput, TokenReducer

__all__ = ["TokenPooling"]

METHODS = ("kmedoids", "kmeans")


class TokenPooling(TokenReducer):
    """Cluster tokens into ``num_tokens`` per slice.

    Args:
        at_blocks: block index before which the tokens are pooled.
        num_tokens: K, clusters per slice (per clip with ``joint``); clamped to the number of tokens.
        method: ``"kmedoids"`` (weighted K-medoids, the paper's best) or ``"kmeans"`` (weighted K-means).
        iters: clustering iterations.
        weighted: weight tokens by significance scores from the backbone (else uniform weights).
        joint: cluster all ``T·N`` tokens of a clip together (output ``(B, 1, K, D)``).
    """

    kind = "token_pooling"

    def __init__(
        self,
        *,
        at_blocks: int | list[int] = 4,
        num_tokens: int = 16,
        method: str = "kmedoids",
        iters: int = 5,
        weighted: bool = True,
        joint: bool = False,
    ) -> None:
        super().__init__(at_blocks=at_blocks)
        if len(self.at_blocks) != 1:
            raise ValueError(f"token_pooling runs at one block, got at_block={at_blocks!r}")
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        self.num_tokens = num_tokens
        self.method = method
        self.iters = iters
        self.weighted = weighted
        self.joint = joint
        self.needs_scores = weighted

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, method={self.method}, iters={self.iters}, joint={self.joint}"

    def forward(self, x: torch.Tensor, ctx: ForwardContext = NO_CONTEXT) -> ReducerOutput:
        """``x`` ``(B, T, N, D)`` → ``(B, T, K, D)`` (``(B, 1, K, D)`` when joint); ``info["assign"]`` ``(B, T, N)``
        cluster of each input token, ``info["index"]`` the centre positions (medoids; K-means: initial centres)."""
        keep, index, scores = ctx.keep, ctx.index, ctx.scores
        if keep is not None:
            raise ValueError("token_pooling cannot follow a reducer that masks tokens")
        B, T, N, D = x.shape
        if self.joint:
            x = x.reshape(B, 1, T * N, D)  # (B, 1, T·N, D)
            scores = scores.reshape(B, 1, T * N) if scores is not None else None
            index = index.reshape(B, 1, T * N) if index is not None else None
            T, N = 1, T * N
        K = min(self.num_tokens, N)
        M = B * T
        xf = x.reshape(M, N, D)  # (B·T, N, D)
        w = (
            scores.reshape(M, N).float().clamp_min(0) + 1e-6
            if scores is not None and self.weighted
            else torch.ones(M, N, device=x.device)
        )  # (M, N)
        feats = xf.detach().float()
        dist = torch.cdist(feats, feats)  # (M, N, N)
        centres = torch.linspace(0, N - 1, K, device=x.device).round().long()[None].expand(M, K).contiguous()  # (M,K)
        ar = torch.arange(M, device=x.device)[:, None]
        cfeat = feats[ar, centres]  # (M, K, D) (K-means centres)
        for _ in range(self.iters):
            if self.method == "kmedoids":
                d_to_c = dist.gather(2, centres[:, None, :].expand(M, N, K))  # (M, N, K)
            else:
                d_to_c = torch.cdist(feats, cfeat)  # (M, N, K)
            assign = d_to_c.argmin(-1)  # (M, N)
            if self.method == "kmedoids":  # a centre is always closest to itself (ties: its own cluster)
                assign[ar, centres] = torch.arange(K, device=x.device)[None].expand(M, K)
            onehot = torch.nn.functional.one_hot(assign, K).float() * w[..., None]  # (M, N, K) weighted membership
            if self.method == "kmedoids":
                cost = onehot.transpose(1, 2) @ dist  # (M, K, N): weighted distance of candidate j to cluster c
                member = onehot.transpose(1, 2) > 0  # (M, K, N)
                cost = cost.masked_fill(~member, float("inf"))
                new = cost.argmin(-1)  # (M, K)
                empty = ~member.any(-1)
                centres = torch.where(empty, centres, new)
            else:
                mass = onehot.sum(1)  # (M, K)
                mean = onehot.transpose(1, 2) @ feats / mass.clamp_min(1e-12)[..., None]  # (M, K, D)
                cfeat = torch.where(mass[..., None] > 0, mean, cfeat)
        if self.method == "kmedoids":
            d_to_c = dist.gather(2, centres[:, None, :].expand(M, N, K))
            assign = d_to_c.argmin(-1)
            assign[ar, centres] = torch.arange(K, device=x.device)[None].expand(M, K)
            out = xf[ar, centres]  # (M, K, D) medoids, with gradients
        else:
            assign = torch.cdist(feats, cfeat).argmin(-1)
            onehot = torch.nn.functional.one_hot(assign, K).to(xf.dtype) * w[..., None].to(xf.dtype)
            mass = onehot.sum(1).clamp_min(1e-12)  # (M, K)
            out = (onehot.transpose(1, 2) @ xf) / mass[..., None]  # (M, K, D) weighted means, with gradients
            empty = onehot.sum(1) == 0
            if empty.any():
                out = torch.where(empty[..., None], xf[ar, centres], out)
        pos = centres if index is None else index.reshape(M, N).gather(1, centres)
        info = {"index": pos.reshape(B, T, K), "assign": assign.reshape(B, T, N)}
        return ReducerOutput(out.reshape(B, T, K, D), None, info)
