"""TokenLearner (Ryoo et al., NeurIPS 2021) as token-reducer kinds: ``tokenlearner`` and ``tokenlearner_fuser``.

The layers are :class:`~vidtok.models.tokenlearner.TokenLearner` and
:class:`~vidtok.models.tokenlearner.TokenFuser`; these classes place them in a backbone::

    tokenlearner        before block k:      x (B, T', N, D) ─TokenLearner─► (B, T', S, D); blocks k.. see S tokens
    tokenlearner_fuser  at every block j ≥ k: x ─TokenLearner_j─► y (B, T', S, D) ─block j─► y'
                                              x ← x + TokenFuser_j(y', x)          (B, T', N, D): the grid stays

``info`` (reported as ``learned_tokens`` / ``token_maps`` in the backbone's aux, for the visualisations): the learned
tokens and their attention maps ``(B, T', S, Hp, Wp)`` (joint: ``(B, 1, S, T'·Hp·Wp)``), from the first stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vidtok.models.reducers.base import NO_CONTEXT, ForwardContext, ModelFacts, ReducerOutput, TokenReducer
from vidtok.models.tokenlearner import TokenFuser, TokenLearner

__all__ = ["TokenLearnerReducer", "TokenLearnerFuser"]


def _info(tokens: torch.Tensor, maps: torch.Tensor, grid: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """The aux entries of a TokenLearner stage: per-slice maps unflattened onto the ``(Hp, Wp)`` grid."""
    hw = grid[1:]
    return {"learned_tokens": tokens, "token_maps": maps.unflatten(-1, hw) if maps.shape[-1] == hw[0] * hw[1] else maps}


class TokenLearnerReducer(TokenReducer):
    """One TokenLearner before block ``at_blocks``: ``num_tokens`` learned tokens per slice from there on.

    Args:
        dim: token width D.
        at_blocks: the block before which the tokens are learned.
        num_tokens, version, bottleneck_dim, joint, sum_pooling, norm_eps: of
            :class:`~vidtok.models.tokenlearner.TokenLearner`.
    """

    kind = "tokenlearner"
    aux_prefix = ""

    def __init__(
        self,
        *,
        dim: int,
        at_blocks: int | list[int] = 4,
        num_tokens: int = 8,
        version: str = "1.1",
        bottleneck_dim: int = 64,
        joint: bool = False,
        sum_pooling: bool = True,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__(at_blocks=at_blocks)
        if len(self.at_blocks) != 1:
            raise ValueError(f"tokenlearner runs at one block, got at_block={at_blocks!r}")
        self.joint = joint
        self.learner = TokenLearner(
            dim=dim, num_tokens=num_tokens, version=version, bottleneck_dim=bottleneck_dim, joint=joint,
            sum_pooling=sum_pooling, norm_eps=norm_eps,
        )  # fmt: skip

    @classmethod
    def defaults(cls, facts: ModelFacts) -> dict[str, Any]:
        return {"dim": facts.dim, "at_blocks": facts.at_block, "norm_eps": facts.norm_eps, **facts.kwargs}

    @property
    def num_tokens(self) -> int:
        return self.learner.num_tokens

    def extra_repr(self) -> str:
        return self.learner.extra_repr()

    def forward(self, x: torch.Tensor, ctx: ForwardContext = NO_CONTEXT) -> ReducerOutput:
        """``x`` ``(B, T', N, D)`` → learned tokens ``(B, T', S, D)`` (``(B, 1, S, D)`` when joint)."""
        if ctx.keep is not None:
            raise ValueError("tokenlearner cannot follow a reducer that masks tokens")
        grid = ctx.grid if ctx.grid is not None else (x.shape[1], x.shape[2], 1)
        tokens, maps = self.learner(x, grid[1:], return_maps=True)
        return ReducerOutput(tokens, None, _info(tokens, maps, grid))


class TokenLearnerFuser(TokenReducer):
    """TokenLearner → block → TokenFuser at every block from ``at_blocks`` on (the token grid is kept).

    Args:
        dim: token width D.
        depth: blocks of the backbone (the stages run to the last one).
        at_blocks: the first block (an int), or every block with a stage (an increasing list).
        num_tokens, version, bottleneck_dim, joint, sum_pooling, norm_eps: of each stage's
            :class:`~vidtok.models.tokenlearner.TokenLearner` (and ``num_tokens``, ``bottleneck_dim``, ``norm_eps``
            of its :class:`~vidtok.models.tokenlearner.TokenFuser`).
    """

    kind = "tokenlearner_fuser"
    wraps_block = True
    aux_prefix = ""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        at_blocks: int | list[int] = 4,
        num_tokens: int = 8,
        version: str = "1.1",
        bottleneck_dim: int = 64,
        joint: bool = False,
        sum_pooling: bool = True,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__(at_blocks=list(range(at_blocks, depth)) if isinstance(at_blocks, int) else at_blocks)
        self.joint = joint
        tl = dict(version=version, bottleneck_dim=bottleneck_dim, joint=joint, sum_pooling=sum_pooling)
        n = len(self.at_blocks)
        self.learners = nn.ModuleList(
            TokenLearner(dim=dim, num_tokens=num_tokens, norm_eps=norm_eps, **tl) for _ in range(n)
        )
        self.fusers = nn.ModuleList(
            TokenFuser(dim=dim, num_tokens=num_tokens, bottleneck_dim=bottleneck_dim, norm_eps=norm_eps)
            for _ in range(n)
        )

    @classmethod
    def defaults(cls, facts: ModelFacts) -> dict[str, Any]:
        return {
            "dim": facts.dim, "depth": facts.depth, "at_blocks": facts.at_block, "norm_eps": facts.norm_eps,
            **facts.kwargs,
        }  # fmt: skip

    @property
    def num_tokens(self) -> int:
        return self.learners[0].num_tokens

    def extra_repr(self) -> str:
        return self.learners[0].extra_repr()

    def param_block(self, name: str) -> int:
        """``learners.j.*`` / ``fusers.j.*`` belong to the block of stage j."""
        return self.at_blocks[int(name.split(".")[1])]

    def reset_parameters(self) -> None:
        for f in self.fusers:
            f.reset_parameters()

    def forward(self, x: torch.Tensor, ctx: ForwardContext = NO_CONTEXT) -> ReducerOutput:
        """``x`` ``(B, T', N, D)`` → ``x + TokenFuser(block(TokenLearner(x)), x)`` ``(B, T', N, D)``."""
        if ctx.block is None or ctx.grid is None:
            raise ValueError("tokenlearner_fuser runs the block of its stage; it needs ForwardContext.block and grid")
        if ctx.keep is not None:
            raise ValueError("tokenlearner_fuser cannot follow a reducer that masks tokens")
        y, maps = self.learners[ctx.stage](x, ctx.grid[1:], return_maps=True)
        y_out = ctx.block(y, y.shape[1])
        out = x + self.fusers[ctx.stage](y_out, x)
        return ReducerOutput(out, None, _info(y_out, maps, ctx.grid) if ctx.stage == 0 else {})
