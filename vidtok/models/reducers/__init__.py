"""Token reducers behind one interface (:class:`TokenReducer`), selected by config.

``model.extra.token_reducer: {kind: ..., at_block: ..., ...}`` (a dict for :class:`~vidtok.models.vivit.ViViT`'s
``token_reducer`` argument; every key but ``kind`` is optional, the defaults come from the model). Kinds:

* ``tokenlearner``: :class:`TokenLearnerReducer` (Ryoo et al. 2021), S learned tokens per slice from one block on.
* ``tokenlearner_fuser``: :class:`TokenLearnerFuser`, TokenLearner → block → TokenFuser at every block from one on.
* ``token_pooling``: :class:`TokenPooling` (Marin et al. 2021), clustering, parameter-free.
* ``ats``: :class:`AdaptiveTokenSampling` (Fayyaz et al. 2022), score-CDF sampling, at most K tokens, padded.
* ``dynamicvit``: :class:`DynamicViTPruning` (Rao et al. 2021), predictors at several blocks.
* ``mixed_scale``: :class:`MixedScaleTubelets` (Havtorn et al. 2023), a fine/coarse gate on the embedding.

::

    spec {kind, at_block?, ...} + ModelFacts (dim, depth, the family's layer) ─build_reducer─► TokenReducer
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vidtok.models.reducers.ats import AdaptiveTokenSampling
from vidtok.models.reducers.base import (
    NO_CONTEXT,
    ForwardContext,
    ModelFacts,
    ReducerOutput,
    TokenReducer,
    fill_masked,
    significance_from_attn,
)
from vidtok.models.reducers.dynamicvit import DynamicViTPruning
from vidtok.models.reducers.mixed_scale import MixedScaleTubelets
from vidtok.models.reducers.token_pooling import TokenPooling
from vidtok.models.reducers.tokenlearner import TokenLearnerFuser, TokenLearnerReducer

__all__ = [
    "TokenReducer",
    "ReducerOutput",
    "ModelFacts",
    "ForwardContext",
    "NO_CONTEXT",
    "TokenLearnerReducer",
    "TokenLearnerFuser",
    "TokenPooling",
    "AdaptiveTokenSampling",
    "DynamicViTPruning",
    "MixedScaleTubelets",
    "REDUCER_KINDS",
    "build_reducer",
    "reducer_class",
    "fill_masked",
    "significance_from_attn",
]

REDUCER_KINDS: dict[str, type[TokenReducer]] = {
    c.kind: c
    for c in (
        TokenLearnerReducer, TokenLearnerFuser, TokenPooling, AdaptiveTokenSampling, DynamicViTPruning,
        MixedScaleTubelets,
    )
}  # fmt: skip


def reducer_class(kind: str) -> type[TokenReducer]:
    """The class of reducer ``kind`` (ValueError naming the kinds if there is none)."""
    if kind not in REDUCER_KINDS:
        raise ValueError(f"token_reducer kind must be one of {sorted(REDUCER_KINDS)}, got {kind!r}")
    return REDUCER_KINDS[kind]


def build_reducer(spec: Mapping[str, Any], facts: ModelFacts) -> TokenReducer:
    """Build the reducer a spec ``{kind, at_block?, ...}`` names, its defaults taken from ``facts``.

    Raises:
        ValueError: unknown kind, a key the kind does not take, or a value it rejects (the message names it).
    """
    spec = dict(spec)
    if "kind" not in spec:
        raise ValueError(f"token_reducer needs a 'kind', got {spec!r}")
    return reducer_class(spec.pop("kind")).from_spec(spec, facts)
