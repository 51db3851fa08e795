"""ViViT (Arnab et al., ICCV 2021) and relatives, assembled from :mod:`vidtok.models.layers`.

One class covers the four ViViT variants, TimeSformer-style divided attention, frame-wise ViTs with TokShift and
the vidtok family, because they differ only in *which axis each attention attends over*, *where the class
token lives*, the *token mixer* in each block and an optional *token reducer* part-way::

    video (B, C, T, H, W)
      └─ TubeletEmbed (t×p×p) ─► tokens (B, T', S, D)          S = Hp·Wp
      └─ + PosEmbed (joint | separable | spatial | sincos)
      └─ class token:  "global" (B, 1, 1 + T'·S, D)  one for the clip (ViViT 1, TimeSformer)
                       "frame"  (B, T', 1 + S, D)    one per temporal slice (ViViT 2, TokShift)
                       "none"   (B, T', S, D)        mean pooling (ViViT 3/4, VideoMAE, vidtok)
      └─ for each block i:
           reducer stage, when i is one of reducer.at_blocks (one TokenReducer of any kind, vidtok.models.reducers):
               patch tokens (B, T', S, D) ─► (B, T', K, D) [+ keep mask (B, T', K)]
           block i  attn_type: joint (Model 1) | space | fsa (Model 3 / TimeSformer) | fdp (Model 4) | fe (Model 2);
                    reduced_attn_type from the reducer's first block on; token mixer (TokShift) inside
      └─ [Model 2: TemporalEncoder over the per-slice class tokens (+ its own CLS)]
      └─ norm ─► forward_features: tokens (B, T', N, D)
      └─ pool (cls | mean) → fc_norm → dropout → head ─► logits (B, num_classes)

All attention runs through :func:`vidtok.kernels.spacetime_attention` on views of one fused QKV projection.
The registered family members are written out in :mod:`vidtok.models.zoo`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from vidtok.models.layers import Attention, PosEmbed, TubeletEmbed
from vidtok.models.layers.blocks import ATTN_ORDERS, Block, FactorisedBlock
from vidtok.models.reducers import (
    ForwardContext,
    ModelFacts,
    TokenReducer,
    fill_masked,
    reducer_class,
    significance_from_attn,
)
from vidtok.models.temporal import TemporalEncoder
from vidtok.models.tokshift import TokShift

__all__ = ["ViViT", "Block", "FactorisedBlock", "ATTN_TYPES", "ATTN_ORDERS", "CLASS_TOKEN_MODES", "TOKEN_MIXERS"]

ATTN_TYPES = ("joint", "space", "fsa", "fdp", "fe")
CLASS_TOKEN_MODES = ("global", "frame", "none")
POOLS = ("cls", "mean")
TOKEN_MIXERS = {"tokshift": TokShift}

# parameter names some checkpoints carry (TokenLearner and Model 2's temporal parameters at the top level) and the
# module paths they load into
_RENAMED = (
    ("token_learner.", "reducer.learner."),
    ("token_learners.", "reducer.learners."),
    ("token_fusers.", "reducer.fusers."),
    ("norm_spatial.", "temporal.norm_in."),
    ("temporal_cls_token", "temporal.cls_token"),
    ("temporal_pos_embed", "temporal.pos_embed.table"),
    ("temporal_blocks.", "temporal.blocks."),
)


def _current_name(key: str) -> str:
    for old, new in _RENAMED:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def upgrade_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with the parameter names of older checkpoints mapped to the current ones (others unchanged)."""
    return {_current_name(k): v for k, v in state.items()}


def _check_arch(
    attn_type: str, reduced_attn_type: str, class_token: str, pool: str, token_mixer: str | None, sizes: tuple[int, ...]
) -> None:
    """One ValueError naming the argument when sizes ``(depth, embed_dim, num_heads, num_classes)``, attention
    types, class-token mode, pooling and mixer disagree."""
    depth, embed_dim, num_heads, num_classes = sizes
    if depth < 1 or embed_dim < 1 or num_heads < 1:
        raise ValueError(f"depth, embed_dim, num_heads must be positive, got {depth}, {embed_dim}, {num_heads}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    for name, value, allowed in (
        ("attn_type", attn_type, ATTN_TYPES),
        ("reduced_attn_type", reduced_attn_type, ATTN_TYPES),
        ("class_token", class_token, CLASS_TOKEN_MODES),
        ("pool", pool, POOLS),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if pool == "cls" and class_token == "none":
        raise ValueError("pool='cls' needs a class token; set class_token='global' or 'frame', or pool='mean'")
    if (attn_type == "fe") != (reduced_attn_type == "fe"):
        raise ValueError("attn_type 'fe' (factorised encoder) cannot be mixed with another reduced_attn_type")
    for kind in {attn_type, reduced_attn_type}:
        if kind == "fe" and class_token != "frame":
            raise ValueError(f"attn_type 'fe' needs class_token='frame' (a CLS per slice), got {class_token!r}")
        if kind == "space" and class_token == "global":
            raise ValueError(f"attn_type {kind!r} attends within frames; use class_token 'frame' or 'none'")
        if kind == "fdp" and class_token != "none":
            raise ValueError(f"attn_type 'fdp' needs class_token='none', got {class_token!r}")
        if kind == "fsa" and class_token == "frame":
            raise ValueError("attn_type 'fsa' supports class_token 'global' (TimeSformer-style) or 'none'")
        if kind == "joint" and class_token == "frame" and attn_type != "fe":
            raise ValueError("joint attention with per-frame class tokens is not supported; use class_token 'global'")
    if token_mixer is not None and class_token == "global":
        raise ValueError("a token mixer shifts along time and needs class_token 'frame' or 'none', not 'global'")


def _check_reducer(red: TokenReducer, blocks: nn.ModuleList, class_token: str) -> None:
    """One ValueError when the reducer ``red`` does not fit the backbone around it."""
    if any(b >= len(blocks) for b in red.at_blocks):
        raise ValueError(f"token_reducer at_block must be in [0, depth={len(blocks)}), got {max(red.at_blocks)}")
    if getattr(red, "joint", False) and class_token == "frame":
        raise ValueError(f"a joint {red.kind} leaves one temporal slice; it needs class_token 'global' or 'none'")
    if red.wraps_block and class_token != "none":
        raise ValueError(f"token_reducer {red.kind!r} needs class_token='none'")
    if red.uses_mask:
        for blk in blocks[red.at_blocks[0] :]:
            if not isinstance(blk, Block) or blk.attn.axis not in ("joint", "space"):
                raise ValueError(
                    f"token reducer {red.kind!r} masks tokens; the blocks after it need joint or space attention "
                    f"(attn_type / reduced_attn_type 'joint', 'space' or 'fe'), not fsa / fdp"
                )


def _reducer_args(
    token_reducer: str | Mapping[str, Any] | None, facts: ModelFacts
) -> tuple[type[TokenReducer] | None, dict[str, Any], int]:
    """The reducer class, its constructor arguments and its first block for the ``token_reducer`` argument (a kind
    or a spec); ``(None, {}, facts.at_block)`` without one."""
    if token_reducer is None:
        return None, {}, facts.at_block
    spec = {"kind": token_reducer} if isinstance(token_reducer, str) else dict(token_reducer)
    if spec.get("kind") is None:
        raise ValueError(f"token_reducer dict needs a 'kind', got {spec!r}")
    cls = reducer_class(spec.pop("kind"))
    args = cls.resolve(spec, facts)
    first = cls.first_block(args)
    if not 0 <= first < facts.depth:
        raise ValueError(f"token_reducer at_block must be in [0, depth={facts.depth}), got {first}")
    return cls, args, first


def _make_mixer(name: str | None, kwargs: dict[str, Any]) -> nn.Module | None:
    if name is None:
        return None
    if name not in TOKEN_MIXERS:
        raise ValueError(f"token_mixer must be None or one of {sorted(TOKEN_MIXERS)}, got {name!r}")
    return TOKEN_MIXERS[name](**kwargs)


def _make_blocks(
    kinds: list[str],
    dim: int,
    num_heads: int,
    drop_path: list[float],
    *,
    global_cls: bool,
    fsa: dict[str, Any],
    mixer: tuple[str | None, dict[str, Any] | None],
    **kw: Any,
) -> nn.ModuleList:
    """One block per attention type in ``kinds`` (``fsa``: a FactorisedBlock with the ``fsa`` arguments), each with
    its own token mixer ``mixer = (name, kwargs)``."""
    blocks = []
    for kind, dp in zip(kinds, drop_path, strict=True):
        m = _make_mixer(mixer[0], dict(mixer[1] or {}))
        if kind == "fsa":
            blocks.append(
                FactorisedBlock(dim, num_heads, global_cls=global_cls, drop_path=dp, token_mixer=m, **fsa, **kw)
            )
        else:
            axis = "space" if kind == "fe" else kind
            blocks.append(Block(dim, num_heads, axis=axis, drop_path=dp, token_mixer=m, **kw))
    return nn.ModuleList(blocks)


@dataclass
class _TokenState:
    """Bookkeeping of one forward pass: temporal slices ``T``, the patch tokens' keep mask and source index
    ``(B, T, N)`` from the reducer, and the attention weights a score-reading reducer stage takes."""

    T: int
    keep: torch.Tensor | None = None
    index: torch.Tensor | None = None
    attn: torch.Tensor | None = None


class ViViT(nn.Module):
    """Video vision transformer on tubelet tokens (see the module docstring for the data flow).

    Args:
        num_classes: classifier outputs (0: no head, ``forward`` returns the pooled embedding).
        num_frames: frames per clip the positional embeddings are built for.
        img_size: crop size (int or (H, W)) the positional embeddings are built for.
        in_chans: input channels.
        tubelet_size: ``(t, p, p)``; ``(1, 16, 16)`` is a frame-wise ViT-/16.
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        attn_type: "joint" (Model 1), "fe" (Model 2, factorised encoder), "fsa" (Model 3, factorised
            self-attention), "fdp" (Model 4, factorised dot product), "space" (frame-wise).
        reduced_attn_type: attention type of the blocks after the token reducer (default: ``attn_type``).
        attn_order: "space_time" or "time_space" (fsa).
        temporal_proj: fsa: a linear after temporal attention (TimeSformer's ``temporal_dense``).
        depth_temporal: fe: depth of the temporal transformer.
        class_token: "global", "frame" or "none".
        pool: "cls" or "mean" (mean over non-class tokens). Default: "cls" with a class token, else "mean".
        fc_norm: LayerNorm after pooling instead of before (VideoMAE); default: True for mean pooling.
        pos_embed: "joint", "separable", "spatial", "sincos" or "none".
        pos_embed_cls: whether the class token gets a positional embedding (joint / spatial tables).
        qkv_bias: "all", "qv" (no key bias) or "none" (bools accepted).
        act: MLP activation ("gelu", "gelu_tanh" / "gelu_fast", ...).
        norm_eps: LayerNorm epsilon of blocks and final norm; ``fc_norm_eps`` of the fc_norm (default norm_eps).
        token_mixer: None or "tokshift"; ``token_mixer_kwargs`` (e.g. ``{"fold_div": 4, "tokens": "cls"}``).
        token_reducer: None, a :mod:`vidtok.models.reducers` kind ("tokenlearner", "tokenlearner_fuser",
            "token_pooling", "ats", "dynamicvit", "mixed_scale") or a spec dict ``{kind, at_block?, ...}`` (config
            ``model.extra.token_reducer``; the other keys are the kind's arguments). Defaults come from the model:
            ``token_reducer_layer`` is the default ``at_block``, ``token_reducer_kwargs`` are the default arguments
            of the TokenLearner kinds (``num_tokens``, ``version``, ``bottleneck_dim``, ``joint``).
        dropout: dropout before the head.
        proj_drop_rate, pos_drop_rate: dropout in blocks / after the positional embedding.
        drop_path_rate: stochastic depth, linearly increasing to this value over the blocks.
        attn_backend: :func:`~vidtok.kernels.spacetime_attention` backend.
        init_std: truncated-normal std for linear layers, tokens and learned positional tables.
    """

    def __init__(
        self,
        *,
        num_classes: int = 400,
        num_frames: int = 32,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        tubelet_size: tuple[int, int, int] | list[int] = (2, 16, 16),
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        attn_type: str = "joint",
        reduced_attn_type: str | None = None,
        attn_order: str = "space_time",
        temporal_proj: bool = False,
        depth_temporal: int = 4,
        class_token: str = "global",
        pool: str | None = None,
        fc_norm: bool | None = None,
        pos_embed: str = "joint",
        pos_embed_cls: bool = True,
        qkv_bias: str | bool = "all",
        act: str = "gelu",
        norm_eps: float = 1e-6,
        fc_norm_eps: float | None = None,
        token_mixer: str | None = None,
        token_mixer_kwargs: dict[str, Any] | None = None,
        token_reducer: str | dict[str, Any] | None = None,
        token_reducer_layer: int = 4,
        token_reducer_kwargs: dict[str, Any] | None = None,
        dropout: float = 0.0,
        proj_drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_backend: str = "auto",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        img = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        reduced_attn_type = reduced_attn_type or attn_type
        pool = pool or ("cls" if class_token != "none" else "mean")
        _check_arch(
            attn_type, reduced_attn_type, class_token, pool, token_mixer, (depth, embed_dim, num_heads, num_classes)
        )
        facts = ModelFacts(embed_dim, depth, token_reducer_layer, norm_eps, dict(token_reducer_kwargs or {}))
        red_cls, red_args, token_reducer_layer = _reducer_args(token_reducer, facts)

        self.num_classes, self.num_frames, self.img_size = num_classes, num_frames, img
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim  # timm: token and pre-logits width
        self.depth, self.depth_temporal = depth, (depth_temporal if attn_type == "fe" else 0)
        self.attn_type, self.reduced_attn_type = attn_type, reduced_attn_type
        self.class_token, self.pool = class_token, pool
        self.use_fc_norm = pool == "mean" if fc_norm is None else fc_norm
        self.token_reducer = red_cls.kind if red_cls is not None else None
        self.token_reducer_layer = token_reducer_layer
        self.init_std, self.attn_backend, self.grad_checkpointing = init_std, attn_backend, False
        self.model_name: str | None = None
        self.model_kwargs: dict[str, Any] = {}
        self.pretrained_cfg: dict[str, Any] = {}

        self.patch_embed = TubeletEmbed(in_chans=in_chans, embed_dim=embed_dim, tubelet_size=tuple(tubelet_size))
        self.grid = self.patch_embed.grid(num_frames, *img)
        if min(self.grid) < 1:
            raise ValueError(f"num_frames={num_frames}, img_size={img} give an empty token grid {self.grid}")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token != "none" else None
        n_prefix = int(class_token != "none" and pos_embed_cls and pos_embed != "sincos")
        self.pos_embed = PosEmbed(kind=pos_embed, grid=self.grid, dim=embed_dim, num_prefix=n_prefix, init_std=init_std)
        self.pos_drop = nn.Dropout(pos_drop_rate)

        n_total = depth + self.depth_temporal
        dpr = [drop_path_rate * i / max(n_total - 1, 1) for i in range(n_total)]  # linear decay rule
        common = dict(
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, act=act, norm_eps=norm_eps, proj_drop=proj_drop_rate,
            backend=attn_backend,
        )  # fmt: skip
        kinds = [reduced_attn_type if red_cls and i >= token_reducer_layer else attn_type for i in range(depth)]
        self.blocks = _make_blocks(
            kinds, embed_dim, num_heads, dpr[:depth], global_cls=class_token == "global",
            fsa=dict(order=attn_order, temporal_proj=temporal_proj), mixer=(token_mixer, token_mixer_kwargs), **common,
        )  # fmt: skip
        self.reducer: TokenReducer | None = red_cls(**red_args) if red_cls is not None else None
        if self.reducer is not None:
            _check_reducer(self.reducer, self.blocks, class_token)
        self.temporal: TemporalEncoder | None = None
        if attn_type == "fe":
            self.temporal = TemporalEncoder(
                embed_dim, num_heads, depth=depth_temporal, num_slices=self.grid[0], drop_path=dpr[depth:],
                init_std=init_std, **common,
            )  # fmt: skip
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if not self.use_fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=fc_norm_eps or norm_eps) if self.use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()
        self._register_load_state_dict_pre_hook(_upgrade_hook)

    # ----------------------------------------------------------------------------------------------- init / info
    def _init_weights(self) -> None:
        std = self.init_std
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=std, a=-2 * std, b=2 * std)
        for m in self.modules():
            if isinstance(m, FactorisedBlock):
                m.zero_init_temporal()
            elif isinstance(m, (TokenReducer, TemporalEncoder)):
                m.reset_parameters()

    @property
    def num_layers(self) -> int:
        """Transformer blocks (spatial + temporal); layer ids run 0 (embeddings) .. num_layers + 1 (head)."""
        return self.depth + self.depth_temporal

    def get_layer_id(self, param_name: str) -> int:
        """Layer index of a parameter for layer-wise lr decay: 0 embeddings, i + 1 block i (a reducer's parameters:
        its stage's block, :meth:`TokenReducer.param_block`; the temporal encoder: after the spatial blocks),
        num_layers + 1 head."""
        head, _, rest = param_name.partition(".")
        if head in ("patch_embed", "cls_token", "pos_embed"):
            return 0
        if head == "blocks":
            return int(rest.split(".")[0]) + 1
        if head == "reducer" and self.reducer is not None:
            return self.reducer.param_block(rest) + 1
        if head == "temporal":
            sub = rest.split(".")
            return self.depth + 1 + (int(sub[1]) if sub[0] == "blocks" else 0)
        return self.num_layers + 1

    def no_weight_decay(self) -> set[str]:
        """Parameters to exclude from weight decay: class tokens, positional tables, biases and norm weights."""
        return {
            n
            for n, p in self.named_parameters()
            if p.ndim <= 1
            or n in ("cls_token", "temporal.cls_token")
            or n.startswith(("pos_embed.", "temporal.pos_embed."))
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer block's activations in the backward pass instead of storing them (timm's
        method; ``torch.utils.checkpoint`` with ``use_reentrant=False``, RNG state preserved, so dropout / drop-path
        give the same gradients). Only active while autograd records: inference, ``torch.export`` and ONNX export are
        unaffected."""
        self.grad_checkpointing = bool(enable)

    def _run(self, blk: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """``blk(*args, **kwargs)``, through activation checkpointing when it is on and gradients are recorded."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(blk, *args, use_reentrant=False, **kwargs)
        return blk(*args, **kwargs)

    def set_attn_backend(self, backend: str) -> None:
        """Switch every attention layer to ``backend`` ("auto", "triton", "sdpa", "math")."""
        from vidtok.kernels import BACKENDS

        if backend not in BACKENDS:
            raise ValueError(f"attn_backend must be one of {BACKENDS}, got {backend!r}")
        self.attn_backend = backend
        for m in self.modules():
            if isinstance(m, Attention):
                m.backend = backend

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` outputs (0: identity)."""
        self.num_classes = num_classes
        dev = self.patch_embed.proj.weight.device
        if num_classes > 0:
            self.head = nn.Linear(self.embed_dim, num_classes, device=dev)
            nn.init.trunc_normal_(self.head.weight, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std)
            nn.init.zeros_(self.head.bias)
        else:
            self.head = nn.Identity()

    # ------------------------------------------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        B = x.shape[0]
        tokens = self.patch_embed(x)  # (B, T', S, D)
        T, S, D = tokens.shape[1:]
        grid = self.patch_embed.grid(*x.shape[2:])
        patch_pe, prefix_pe = self.pos_embed.tables(grid)
        if patch_pe is not None:
            tokens = tokens + patch_pe.to(tokens.dtype)
        if self.class_token == "none":
            return self.pos_drop(tokens), grid
        cls = self.cls_token.to(tokens.dtype)  # (1, 1, D)
        if prefix_pe is not None:
            cls = cls + prefix_pe.to(tokens.dtype)
        if self.class_token == "global":
            x = torch.cat([cls[:, None].expand(B, 1, 1, D), tokens.reshape(B, 1, T * S, D)], dim=2)  # (B,1,1+TS,D)
        else:
            x = torch.cat([cls[:, None].expand(B, T, 1, D), tokens], dim=2)  # (B, T', 1 + S, D)
        return self.pos_drop(x), grid

    def _split(self, x: torch.Tensor, T: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Class tokens and patch tokens ``(B, T, S, D)`` of the current layout."""
        B, D = x.shape[0], x.shape[-1]
        if self.class_token == "global":
            return x[:, :, :1], x[:, 0, 1:].reshape(B, T, -1, D)
        if self.class_token == "frame":
            return x[:, :, :1], x[:, :, 1:]
        return None, x

    def _merge(self, cls: torch.Tensor | None, p: torch.Tensor) -> torch.Tensor:
        if cls is None:
            return p
        if self.class_token == "global":
            return torch.cat([cls, p.flatten(1, 2)[:, None]], dim=2)  # (B, 1, 1 + T·S, D)
        return torch.cat([cls, p], dim=2)  # (B, T, 1 + S, D)

    def forward_features(
        self, x: torch.Tensor, *, return_aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
        """Tokens after the last block and norm.

        Args:
            x: ``(B, C, T, H, W)`` clip.
            return_aux: also return a dict with ``"grid"`` (T', Hp, Wp) of the tubelet grid, ``"last_attn"``
                ``(B, N, N)`` head-averaged attention weights of the last block when it is a joint-attention block,
                and the reducer's ``info`` (TokenLearner: ``"learned_tokens"`` ``(B, T', S, D)`` and ``"token_maps"``
                ``(B, T', S, Hp, Wp)``, joint: ``(B, 1, S, T'·Hp·Wp)``; other kinds: ``"reducer_<name>"``) plus
                ``"token_keep"`` / ``"token_index"`` (``(B, T', N)`` or None).

        Returns:
            ``(B, T', N, D)``: ``N = S`` without class token, ``1 + S`` per slice with ``class_token="frame"``;
            with ``class_token="global"`` (and for Model 2) ``(B, 1, 1 + T'·S, D)`` (``(B, 1, 1 + T', D)``), the
            class token first.
        """
        video = x
        x, grid = self._embed(x)
        aux: dict[str, Any] | None = {"grid": grid} if return_aux else None
        st = _TokenState(T=grid[0])
        red = self.reducer
        for i, blk in enumerate(self.blocks):
            if red is not None and i in red.at_blocks:
                x = self._reduce(
                    x,
                    st,
                    red.at_blocks.index(i),
                    ForwardContext(grid=grid, video=video, block=partial(self._run, blk)),
                    aux,
                )
                if red.wraps_block:
                    continue
            x = self._block(i, blk, x, st, aux)
        if self.temporal is not None:
            x, attn = self.temporal(x, run=self._run, return_attn=return_aux)
            if aux is not None:
                aux["last_attn"] = attn
        x = self.norm(x)
        if st.keep is not None and self.temporal is None:  # masked slots → masked mean, so mean pooling stays exact
            cls, p = self._split(x, st.T)
            x = self._merge(cls, fill_masked(p, st.keep))
        if aux is not None and red is not None:
            aux["token_keep"], aux["token_index"] = st.keep, st.index
        return (x, aux) if aux is not None else x

    def _reduce(
        self, x: torch.Tensor, st: _TokenState, stage: int, ctx: ForwardContext, aux: dict[str, Any] | None
    ) -> torch.Tensor:
        """The reducer's stage ``stage`` on the patch tokens of ``x``; updates ``st`` (and ``aux``)."""
        red = self.reducer
        cls, p = self._split(x, st.T)
        scores = None
        if red.needs_scores and st.attn is not None:
            scores = significance_from_attn(st.attn, has_cls=self.class_token == "global", num_slices=st.T)
        if red.at_embed:
            ctx = ctx._replace(patch_embed=self.patch_embed, pos=self.pos_embed.tables(ctx.grid)[0])
        out = red(
            p, ctx=ctx._replace(keep=st.keep, index=st.index, scores=scores, stage=stage)
        )  # keyword: module hooks see positional args only
        st.T, st.keep, st.index = out.tokens.shape[1], out.keep, out.info.get("index")
        if aux is not None:
            aux.update({f"{red.aux_prefix}{n}": v for n, v in out.info.items()})
        return self._merge(cls, out.tokens)

    def _block(
        self, i: int, blk: nn.Module, x: torch.Tensor, st: _TokenState, aux: dict[str, Any] | None
    ) -> torch.Tensor:
        """Block ``i``: masked attention after a masking reducer; attention weights kept when the next reducer
        stage reads scores or ``aux`` wants the last block's."""
        if st.keep is not None:
            return self._run(blk, x, st.T, key_weight=self._key_weight(st.keep, x))
        red = self.reducer
        wants_scores = red is not None and red.needs_scores and i + 1 in red.at_blocks
        wants_last = aux is not None and i == len(self.blocks) - 1 and self.temporal is None
        if (wants_scores or wants_last) and isinstance(blk, Block) and blk.attn.axis == "joint":
            x, attn = self._run(blk, x, st.T, return_attn=True)
            if wants_scores:
                st.attn = attn
            if wants_last:
                aux["last_attn"] = attn
            return x
        return self._run(blk, x, st.T)

    def aux_loss(self) -> torch.Tensor:
        """Auxiliary training loss of the last forward, a 0-dim tensor: the reducer's (DynamicViT's ratio loss,
        mixed-scale's batch shaping), zero without one. A training loop adds it to the task loss."""
        if self.reducer is not None:
            return self.reducer.aux_loss()
        return self.patch_embed.proj.weight.new_zeros(())

    def _key_weight(self, keep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Attention key weights in the layout of ``x`` from the patch-token ``keep`` ``(B, T, N)``."""
        if self.class_token == "none":
            return keep
        ones = keep.new_ones(keep.shape[0], x.shape[1], 1)
        if self.class_token == "global":
            return torch.cat([ones, keep.flatten(1)[:, None]], dim=2)  # (B, 1, 1 + T·N)
        return torch.cat([ones, keep], dim=2)  # (B, T, 1 + N)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool tokens from :meth:`forward_features` → clip embedding ``(B, D)`` (``pre_logits``) or logits."""
        global_layout = self.class_token == "global" or self.attn_type == "fe"
        if self.pool == "cls":
            x = x[:, 0, 0] if global_layout else x[:, :, 0].mean(1)  # frame: average the per-slice class tokens
        else:
            start = 1 if self.class_token != "none" else 0
            x = x[:, 0, start:].mean(1) if global_layout else x[:, :, start:].mean((1, 2))
        x = self.fc_norm(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))


def _upgrade_hook(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: older parameter names under ``prefix`` → current ones, in place."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = _current_name(key[len(prefix) :])
        if prefix + name != key:
            state_dict[prefix + name] = state_dict.pop(key)
