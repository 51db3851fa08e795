"""Token reducers behind one interface (:class:`TokenReducer`), selected by config.

``model.extra.token_reducer: {kind: ..., at_block: ..., ...}`` (a dict for :class:`~vidtok.models.vivit.ViViT`'s
``token_reducer`` argument). Kinds:

* ``tokenlearner`` / ``tokenlearner_fuser``: the backbone's own TokenLearner path
  (:mod:`vidtok.models.tokenlearner`; other keys are its ``token_reducer_kwargs``).
* ``token_pooling``: :class:`TokenPooling` (Marin et al. 2021), clustering, parameter-free.
* ``ats``: :class:`AdaptiveTokenSampling` (Fayyaz et al. 2022), score-CDF sampling, at most K tokens, padded.
* ``dynamicvit``: :class:`DynamicViTPruning` (Rao et al. 2021), predictors at several blocks.
* ``mixed_scale``: :class:`MixedScaleTubelets` (Havtorn et al. 2023), a fine/coarse gate on the embedding.
"""

from __future__ import annotations

from typing import Any

from vidtok.models.reducers.ats import AdaptiveTokenSampling
from vidtok.models.reducers.base import ReducerOutput, TokenReducer, fill_masked, significance_from_attn
from vidtok.models.reducers.dynamicvit import DynamicViTPruning
from vidtok.models.reducers.mixed_scale import MixedScaleTubelets
from vidtok.models.reducers.token_pooling import TokenPooling

__all__ = [
    "TokenReducer",
    "ReducerOutput",
    "TokenPooling",
    "AdaptiveTokenSampling",
    "DynamicViTPruning",
    "MixedScaleTubelets",
    "REDUCER_KINDS",
    "build_reducer",
    "fill_masked",
    "significance_from_attn",
]

REDUCER_KINDS = {
    "token_pooling": TokenPooling,
    "ats": AdaptiveTokenSampling,
    "dynamicvit": DynamicViTPruning,
    "mixed_scale": MixedScaleTubelets,
}
_NEEDS_DIM = ("dynamicvit", "mixed_scale")


def build_reducer(kind: str, *, dim: int, at_block: int | list[int] | None = None, **kwargs: Any) -> TokenReducer:
    """Build the reducer ``kind`` for tokens of width ``dim``, called before block(s) ``at_block``.

    Raises:
        ValueError: unknown kind, or an argument the reducer rejects (the message names it).
    """
    if kind not in REDUCER_KINDS:
        raise ValueError(f"token_reducer kind must be one of {sorted(REDUCER_KINDS)} or tokenlearner, got {kind!r}")
    cls = REDUCER_KINDS[kind]
    if kind in _NEEDS_DIM:
        kwargs["dim"] = dim
    if kind == "mixed_scale":
        if at_block not in (None, 0):
            raise ValueError(f"mixed_scale works on the embedding; at_block must be 0, got {at_block!r}")
    elif at_block is not None:
        kwargs["at_blocks"] = at_block
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"token_reducer {kind!r}: {e}") from e
