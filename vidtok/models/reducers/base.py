"""The :class:`TokenReducer` interface shared by every token reducer, and helpers for masked token sets.

A reducer takes the patch tokens of the current layer and returns fewer tokens, optionally a *keep* mask, and
what a visualisation needs::

    tokens (B, T, N, D), ForwardContext(keep (B, T, N), index (B, T, N), scores (B, T, N), stage, grid, ...)
      └─ reducer ─► ReducerOutput(tokens (B, T', K, D), keep (B, T', K) or None, info {...})

``keep`` is a float tensor: 1 for a real token, 0 for a padding slot (variable token counts batched with padding,
ATS / mixed-scale) or a token pruned in training (DynamicViT masks instead of dropping, so gradients reach its
predictor). The backbone turns it into a key weight of the following attention layers (masked attention, math
path) and fills the slots with the masked mean at the end, so mean pooling stays exact.

``info`` keys (all optional): ``"index"`` ``(B, T', K)`` long, the input position (``0 .. N-1`` of the original
grid, ``-1`` for padding / coarse tokens) each output token comes from; ``"assign"`` ``(B, T, N)`` cluster of each
input token (Token Pooling); ``"scores"`` ``(B, T, N)`` per-token significance or keep probability; ``"gate"``
``(B, T, R)`` fine-scale probability per region (mixed-scale); ``"learned_tokens"`` / ``"token_maps"`` (TokenLearner,
reported without the ``reducer_`` prefix, see :attr:`TokenReducer.aux_prefix`).

Defaults come from the model: :meth:`TokenReducer.defaults` turns the backbone's :class:`ModelFacts` (width, depth,
the family's reducer layer) into the kind's arguments, and a spec's own keys override them, so ``{"kind": k}`` alone
builds ``k`` on any backbone that accepts it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TokenReducer",
    "ReducerOutput",
    "ModelFacts",
    "ForwardContext",
    "NO_CONTEXT",
    "significance_from_attn",
    "fill_masked",
    "parameter_free_scores",
]


@dataclass(frozen=True)
class ModelFacts:
    """What a backbone tells a reducer kind when it builds one (the source of every default).

    ``at_block``: the family's reducer layer (``token_reducer_layer``); ``kwargs``: the family's
    ``token_reducer_kwargs`` (read by the TokenLearner kinds only).
    """

    dim: int
    depth: int = 12
    at_block: int = 4
    norm_eps: float = 1e-6
    kwargs: Mapping[str, Any] = field(default_factory=dict)


class ForwardContext(NamedTuple):
    """What the backbone hands a reducer at its call besides the tokens; each kind reads what it needs."""

    keep: torch.Tensor | None = None  # (B, T, N) of the incoming tokens: 1 token, 0 padding / pruned (module docstring)
    index: torch.Tensor | None = None  # (B, T, N) their source positions
    scores: torch.Tensor | None = None  # (B, T, N) significance (needs_scores kinds)
    stage: int = 0  # position of this call's block in at_blocks
    grid: tuple[int, int, int] | None = None  # (T', Hp, Wp) of the tubelet grid
    video: torch.Tensor | None = None  # the model input (mixed-scale re-embeds it)
    patch_embed: nn.Module | None = None
    pos: torch.Tensor | None = None  # patch positional table (T' or 1, S, D)
    block: Callable[[torch.Tensor, int], torch.Tensor] | None = None  # block(x, T) of this stage (wraps_block kinds)


NO_CONTEXT = ForwardContext()


class ReducerOutput(NamedTuple):
    """What a reducer returns (see the module docstring)."""

    tokens: torch.Tensor  # (B, T', K, D)
    keep: torch.Tensor | None  # (B, T', K) float in {0, 1} (straight-through gradients in training) or None
    info: dict[str, torch.Tensor]


class TokenReducer(nn.Module):
    """Base class: a module called by the backbone before each block in ``at_blocks`` (stage ``j`` = position in
    ``at_blocks``), or on the embedding when ``at_embed``.

    Class attributes tell the backbone what the reducer needs:

    * ``uses_mask``: the output may carry a ``keep`` mask, so the blocks after it need masked attention (joint or
      per-frame ``space`` attention in a plain :class:`~vidtok.models.vivit.Block`; not ``fsa`` / ``fdp``).
    * ``needs_scores``: wants per-token significance scores (the class-token row of the previous block's attention,
      or the mean attention each token receives without a class token).
    * ``at_embed``: works on the tubelet embedding (mixed-scale tubelets); see
      :class:`~vidtok.models.reducers.mixed_scale.MixedScaleTubelets`.
    * ``wraps_block``: runs the block of its stage itself (``ForwardContext.block``; TokenLearner + TokenFuser);
      its output is the block's output.
    * ``aux_prefix``: prefix of its ``info`` keys in ``forward_features(..., return_aux=True)``.
    """

    kind: str = ""
    uses_mask: bool = False
    needs_scores: bool = False
    at_embed: bool = False
    wraps_block: bool = False
    aux_prefix: str = "reducer_"

    def __init__(self, *, at_blocks: int | list[int] | tuple[int, ...]) -> None:
        super().__init__()
        blocks = (at_blocks,) if isinstance(at_blocks, int) else tuple(int(b) for b in at_blocks)
        if not blocks or any(b < 0 for b in blocks) or list(blocks) != sorted(set(blocks)):
            raise ValueError(f"at_block must be a non-negative int or an increasing list of them, got {at_blocks!r}")
        self.at_blocks = blocks

    @classmethod
    def defaults(cls, facts: ModelFacts) -> dict[str, Any]:
        """Constructor arguments this kind takes from the model (a spec's keys override them)."""
        return {"at_blocks": facts.at_block}

    @classmethod
    def resolve(cls, spec: Mapping[str, Any], facts: ModelFacts) -> dict[str, Any]:
        """Constructor arguments for a config spec (keys as documented, ``at_block`` for ``at_blocks``): the
        spec's keys over :meth:`defaults`.

        Raises:
            ValueError: a key this kind does not take (named, with the ones it does).
        """
        spec = dict(spec)
        if "at_block" in spec:
            spec["at_blocks"] = spec.pop("at_block")
        params = inspect.signature(cls.__init__).parameters
        takes = [k for k in params if k not in ("self", "dim", "depth")]
        args = {**cls.defaults(facts), **spec}
        unknown = sorted(k for k in spec if k not in takes) + sorted(k for k in args if k not in params)
        if unknown:
            known = ", ".join(sorted({"at_block"} | set(takes) - {"at_blocks"}))
            raise ValueError(f"token_reducer {cls.kind!r} has no argument {unknown[0]!r} (it takes {known})")
        return args

    @classmethod
    def first_block(cls, args: Mapping[str, Any]) -> int:
        """The first block the reducer resolved to ``args`` runs before (0 on the embedding)."""
        at = args.get("at_blocks", 0)
        if cls.at_embed or isinstance(at, int):
            return 0 if cls.at_embed else at
        return int(list(at)[0]) if len(at) else 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], facts: ModelFacts) -> TokenReducer:
        """Build from a config spec over the model's defaults (:meth:`resolve`)."""
        return cls(**cls.resolve(spec, facts))

    def param_block(self, name: str) -> int:
        """Block whose layer-wise lr a parameter ``name`` (relative to the reducer) shares: the first stage's."""
        return self.at_blocks[0]

    def reset_parameters(self) -> None:
        """Re-apply the reducer's own initialisation (the backbone calls it after its generic init)."""

    def aux_loss(self) -> torch.Tensor:
        """Auxiliary training loss of the last forward (DynamicViT ratio loss, mixed-scale batch shaping); 0 else.

        The training loop adds it to the task loss (``loss = ce + model.reducer.aux_loss()``).
        """
        p = next(self.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)

    def forward(
        self, x: torch.Tensor, ctx: ForwardContext = NO_CONTEXT
    ) -> ReducerOutput:  # pragma: no cover - interface
        """Patch tokens ``x`` ``(B, T, N, D)`` of stage ``ctx.stage`` (with their ``ctx.keep`` / ``ctx.index`` /
        ``ctx.scores``) → :class:`ReducerOutput`."""
        raise NotImplementedError


def significance_from_attn(attn: torch.Tensor, *, has_cls: bool, num_slices: int) -> torch.Tensor:
    """Per-token significance ``(B, T, S)`` from head-averaged joint attention weights ``(B, L, L)``.

    With a (global) class token first, the class token's attention row over the patch tokens (ATS); without one,
    the mean attention each token receives over all queries.
    """
    s = attn[:, 0, 1:] if has_cls else attn.mean(1)  # (B, T·S)
    return s.reshape(attn.shape[0], num_slices, -1)  # (B, T, S)


def parameter_free_scores(x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Fallback significance ``(B, T, N)`` when no attention weights are at hand: attention of the (masked) mean
    token of each slice to every token, on layer-normalised features without parameters."""
    h = F.layer_norm(x.detach().float(), x.shape[-1:])
    if keep is None:
        q = h.mean(2, keepdim=True)
    else:
        q = (h * keep[..., None]).sum(2, keepdim=True) / keep.sum(2, keepdim=True).clamp_min(1)[..., None]
    s = (h * q).sum(-1) / h.shape[-1] ** 0.5  # (B, T, N)
    if keep is not None:
        s = s.masked_fill(keep <= 0, float("-inf"))
    return s.softmax(-1)


def fill_masked(p: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Replace masked tokens of ``p`` ``(B, T, N, D)`` (``keep`` ``(B, T, N)`` == 0) by the mean of the kept tokens
    of the clip, so a plain mean over all tokens equals the masked mean over the kept ones."""
    w = (keep > 0).to(p.dtype)[..., None]  # (B, T, N, 1)
    mean = (p * w).sum((1, 2), keepdim=True) / w.sum((1, 2), keepdim=True).clamp_min(1)  # (B, 1, 1, D)
    return torch.where(w > 0, p, mean)
