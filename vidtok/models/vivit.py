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
      └─ blocks[0:k]  attn_type: joint (Model 1) | space | fsa (Model 3 / TimeSformer) | fdp (Model 4) | fe (Model 2)
                      token mixer (TokShift) before attention and before the MLP
      └─ token reducer at layer k (TokenLearner: (B, T', S, D) → (B, T', S_k, D)), then blocks[k:] with
         reduced_attn_type
      └─ [Model 2: per-slice CLS → temporal transformer over T' (+ its own CLS)]
      └─ norm ─► forward_features: tokens (B, T', N, D)
      └─ pool (cls | mean) → fc_norm → dropout → head ─► logits (B, num_classes)

All attention runs through :func:`vidtok.kernels.spacetime_attention` on views of one fused QKV projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vidtok.models.layers import Attention, DropPath, Mlp, PosEmbed, TubeletEmbed
from vidtok.models.reducers import TokenReducer, build_reducer, fill_masked, significance_from_attn
from vidtok.models.tokenlearner import TokenFuser, TokenLearner
from vidtok.models.tokshift import TokShift

__all__ = ["ViViT", "Block", "FactorisedBlock", "ATTN_TYPES", "CLASS_TOKEN_MODES", "TOKEN_MIXERS", "TOKEN_REDUCERS"]

ATTN_TYPES = ("joint", "space", "fsa", "fdp", "fe")
CLASS_TOKEN_MODES = ("global", "frame", "none")
POOLS = ("cls", "mean")
TOKEN_MIXERS = {"tokshift": TokShift}
TOKEN_REDUCERS = ("tokenlearner", "tokenlearner_fuser")
ATTN_ORDERS = ("space_time", "time_space")


def _make_mixer(name: str | None, kwargs: dict[str, Any]) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name not in TOKEN_MIXERS:
        raise ValueError(f"token_mixer must be None or one of {sorted(TOKEN_MIXERS)}, got {name!r}")
    return TOKEN_MIXERS[name](**kwargs)


class Block(nn.Module):
    """Pre-norm transformer block on a ``(B, T, N, D)`` grid, attention along one axis.

    ``x = mix(x); x = x + drop_path(attn(norm1(x))); x = mix(x); x = x + drop_path(mlp(norm2(x)))`` where ``mix``
    is the token mixer (identity by default; TokShift places the shift exactly there, and the shifted tensor is the
    residual).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        axis: str = "joint",
        mlp_ratio: float = 4.0,
        qkv_bias: str = "all",
        act: str = "gelu",
        norm_eps: float = 1e-6,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        backend: str = "auto",
        token_mixer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.mixer = token_mixer if token_mixer is not None else nn.Identity()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, axis=axis, qkv_bias=qkv_bias, proj_drop=proj_drop, backend=backend)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        num_frames: int | None = None,
        *,
        return_attn: bool = False,
        key_weight: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, T, N, D)`` → same shape (``num_frames`` is unused; it keeps one block signature).

        ``key_weight`` ``(B, T, N)``: masked attention for token reducers (0 = padding / pruned key).
        """
        x = self.mixer(x)
        attn_w = None
        if return_attn:
            y, attn_w = self.attn(self.norm1(x), return_attn=True)
        else:
            y = self.attn(self.norm1(x), key_weight=key_weight)
        x = x + self.drop_path1(y)
        x = self.mixer(x)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return (x, attn_w) if return_attn else x


class FactorisedBlock(nn.Module):
    """Factorised self-attention block: spatial and temporal attention in sequence, each pre-norm with its own
    residual, then the MLP (ViViT Model 3; TimeSformer's "divided space-time" with ``order="time_space"``,
    ``temporal_proj=True``).

    With a global class token (input ``(B, 1, 1 + T·S, D)``), as TimeSformer: the class token skips temporal
    attention; for spatial attention it is replicated into every frame and the T outputs are averaged into its
    residual. Without one, the input is ``(B, T, S, D)``. The last linear of the temporal branch (``proj_t`` if
    present, else ``attn_t.proj``) is zero-initialised, so the block starts as a spatial (image) block.

    Parameters: ``norm1``/``attn`` (spatial), ``norm_t``/``attn_t``/``proj_t`` (temporal; ``proj_t`` is
    TimeSformer's ``temporal_dense``), ``norm2``/``mlp``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        order: str = "space_time",
        temporal_proj: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: str = "all",
        act: str = "gelu",
        norm_eps: float = 1e-6,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        backend: str = "auto",
        token_mixer: nn.Module | None = None,
        global_cls: bool = False,
    ) -> None:
        super().__init__()
        if order not in ATTN_ORDERS:
            raise ValueError(f"attn_order must be one of {ATTN_ORDERS}, got {order!r}")
        self.order = order
        self.global_cls = global_cls
        if global_cls and token_mixer is not None:
            raise ValueError("a token mixer needs per-frame tokens; it cannot be combined with a global class token")
        self.mixer = token_mixer if token_mixer is not None else nn.Identity()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, axis="space", qkv_bias=qkv_bias, proj_drop=proj_drop, backend=backend)
        self.norm_t = nn.LayerNorm(dim, eps=norm_eps)
        self.attn_t = Attention(dim, num_heads, axis="time", qkv_bias=qkv_bias, proj_drop=proj_drop, backend=backend)
        self.proj_t = nn.Linear(dim, dim) if temporal_proj else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act, drop=proj_drop)
        self.zero_init_temporal()

    def zero_init_temporal(self) -> None:
        last = self.proj_t if self.proj_t is not None else self.attn_t.proj
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _temporal(self, p: torch.Tensor) -> torch.Tensor:
        y = self.drop_path(self.attn_t(self.norm_t(p)))
        if self.proj_t is not None:
            y = self.proj_t(y)
        return p + y

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """``(B, T, S, D)`` or, with a global class token, ``(B, 1, 1 + T·S, D)`` plus ``num_frames = T``."""
        B = x.shape[0]
        if self.global_cls:
            if num_frames is None or x.shape[1] != 1 or (x.shape[2] - 1) % num_frames:
                raise ValueError(
                    f"expected (B, 1, 1 + T·S, D) with T = num_frames = {num_frames}, got {tuple(x.shape)}"
                )
            cls = x[:, 0, :1]  # (B, 1, D)
            p = x[:, 0, 1:].reshape(B, num_frames, -1, x.shape[-1])  # (B, T, S, D)
        else:
            cls, p = None, self.mixer(x)
        for step in ("space", "time") if self.order == "space_time" else ("time", "space"):
            if step == "time":
                p = self._temporal(p)
            elif cls is None:
                p = p + self.drop_path(self.attn(self.norm1(p)))
            else:
                T = p.shape[1]
                tok = torch.cat([cls[:, None].expand(B, T, 1, cls.shape[-1]), p], dim=2)  # (B, T, 1 + S, D)
                y = self.drop_path(self.attn(self.norm1(tok)))
                cls = cls + y[:, :, 0].mean(1, keepdim=True)  # average the per-frame class outputs
                p = p + y[:, :, 1:]
        if cls is None:
            p = self.mixer(p)
            return p + self.drop_path(self.mlp(self.norm2(p)))
        x = torch.cat([cls, p.flatten(1, 2)], dim=1)[:, None]  # (B, 1, 1 + T·S, D)
        return x + self.drop_path(self.mlp(self.norm2(x)))


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
        token_reducer: None, "tokenlearner" (once, before block ``token_reducer_layer``) or "tokenlearner_fuser"
            (TokenLearner → block → TokenFuser at every block from that layer on); ``token_reducer_kwargs``
            (``num_tokens``, ``version``, ``bottleneck_dim``, ``joint``). Or a dict ``{kind, at_block, ...}``
            (config ``model.extra.token_reducer``): kind "tokenlearner"/"tokenlearner_fuser" (the other keys update
            ``token_reducer_kwargs``) or any :mod:`vidtok.models.reducers` kind ("token_pooling", "ats",
            "dynamicvit", "mixed_scale"; the other keys are its arguments, ``token_reducer_kwargs`` is ignored).
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
        reducer_spec: dict[str, Any] | None = None  # a vidtok.models.reducers kind: built after the blocks
        if isinstance(token_reducer, dict):
            spec = dict(token_reducer)
            token_reducer = spec.pop("kind", None)
            if token_reducer is None:
                raise ValueError(f"token_reducer dict needs a 'kind', got {spec!r}")
            at = spec.pop("at_block", token_reducer_layer if token_reducer in TOKEN_REDUCERS else None)
            if token_reducer in TOKEN_REDUCERS:
                token_reducer_layer = at
                token_reducer_kwargs = {**(token_reducer_kwargs or {}), **spec}
            else:
                reducer_spec = {"kind": token_reducer, "at_block": at, **spec}
                if token_reducer == "mixed_scale":
                    at = 0
                elif at is None:
                    raise ValueError(f"token_reducer {token_reducer!r} needs at_block")
                token_reducer_layer = at if isinstance(at, int) else int(list(at)[0])
                token_reducer_kwargs = None
        for name, value, allowed in (
            ("attn_type", attn_type, ATTN_TYPES),
            ("reduced_attn_type", reduced_attn_type, ATTN_TYPES),
            ("class_token", class_token, CLASS_TOKEN_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        pool = pool or ("cls" if class_token != "none" else "mean")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if pool == "cls" and class_token == "none":
            raise ValueError("pool='cls' needs a class token; set class_token='global' or 'frame', or pool='mean'")
        if depth < 1 or embed_dim < 1 or num_heads < 1:
            raise ValueError(f"depth, embed_dim, num_heads must be positive, got {depth}, {embed_dim}, {num_heads}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if (attn_type == "fe") != (reduced_attn_type == "fe"):
            raise ValueError("attn_type 'fe' (factorised encoder) cannot be mixed with another reduced_attn_type")
        for kind in {attn_type, reduced_attn_type}:
            if kind == "fe" and class_token != "frame":
                raise ValueError(f"attn_type 'fe' needs class_token='frame' (a CLS per slice), got {class_token!r}")
            if kind in ("space",) and class_token == "global":
                raise ValueError(f"attn_type {kind!r} attends within frames; use class_token 'frame' or 'none'")
            if kind in ("fdp",) and class_token != "none":
                raise ValueError(f"attn_type 'fdp' needs class_token='none', got {class_token!r}")
            if kind == "fsa" and class_token == "frame":
                raise ValueError("attn_type 'fsa' supports class_token 'global' (TimeSformer-style) or 'none'")
            if kind == "joint" and class_token == "frame" and attn_type != "fe":
                raise ValueError(
                    "joint attention with per-frame class tokens is not supported; use class_token 'global'"
                )
        if token_mixer is not None and class_token == "global":
            raise ValueError("a token mixer shifts along time and needs class_token 'frame' or 'none', not 'global'")
        if token_reducer is not None and token_reducer not in TOKEN_REDUCERS and reducer_spec is None:
            raise ValueError(f"token_reducer must be None or one of {TOKEN_REDUCERS}, got {token_reducer!r}")
        if token_reducer is not None and not 0 <= token_reducer_layer < depth:
            raise ValueError(f"token_reducer_layer must be in [0, depth={depth}), got {token_reducer_layer}")
        reducer_kwargs = dict(token_reducer_kwargs or {})
        if token_reducer == "tokenlearner_fuser" and class_token != "none":
            raise ValueError("token_reducer 'tokenlearner_fuser' needs class_token='none'")
        if reducer_kwargs.get("joint") and class_token == "frame":
            raise ValueError("a joint TokenLearner leaves one temporal slice; it needs class_token 'global' or 'none'")

        self.num_classes = num_classes
        self.num_frames = num_frames
        self.img_size = img
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim  # timm: token and pre-logits width
        self.grad_checkpointing = False
        self.depth = depth
        self.attn_type = attn_type
        self.reduced_attn_type = reduced_attn_type
        self.class_token = class_token
        self.pool = pool
        self.token_reducer = token_reducer
        self.token_reducer_layer = token_reducer_layer
        self.init_std = init_std
        self.attn_backend = attn_backend
        self.use_fc_norm = pool == "mean" if fc_norm is None else fc_norm
        self.model_name: str | None = None
        self.model_kwargs: dict[str, Any] = {}
        self.pretrained_cfg: dict[str, Any] = {}

        self.patch_embed = TubeletEmbed(in_chans=in_chans, embed_dim=embed_dim, tubelet_size=tuple(tubelet_size))
        self.grid = self.patch_embed.grid(num_frames, *img)
        if min(self.grid) < 1:
            raise ValueError(f"num_frames={num_frames}, img_size={img} give an empty token grid {self.grid}")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token != "none" else None
        self.pos_embed = PosEmbed(
            kind=pos_embed,
            grid=self.grid,
            dim=embed_dim,
            num_prefix=int(class_token != "none" and pos_embed_cls and pos_embed != "sincos"),
            init_std=init_std,
        )
        self.pos_drop = nn.Dropout(pos_drop_rate)

        mixer_kwargs = dict(token_mixer_kwargs or {})
        n_total = depth + (depth_temporal if attn_type == "fe" else 0)
        dpr = [drop_path_rate * i / max(n_total - 1, 1) for i in range(n_total)]  # linear decay rule
        common = dict(
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, act=act, norm_eps=norm_eps, proj_drop=proj_drop_rate,
            backend=attn_backend,
        )  # fmt: skip
        blocks = []
        for i in range(depth):
            kind = reduced_attn_type if token_reducer is not None and i >= token_reducer_layer else attn_type
            mixer = _make_mixer(token_mixer, mixer_kwargs)
            if kind == "fsa":
                blk = FactorisedBlock(
                    embed_dim, num_heads, order=attn_order, temporal_proj=temporal_proj, drop_path=dpr[i],
                    token_mixer=mixer if token_mixer else None, global_cls=class_token == "global", **common,
                )  # fmt: skip
            else:
                axis = "space" if kind == "fe" else kind
                blk = Block(embed_dim, num_heads, axis=axis, drop_path=dpr[i], token_mixer=mixer, **common)
            blocks.append(blk)
        self.blocks = nn.ModuleList(blocks)

        # token reducer (TokenLearner) part-way
        self.token_learner: TokenLearner | None = None
        self.token_learners: nn.ModuleList | None = None
        self.token_fusers: nn.ModuleList | None = None
        self.reducer: TokenReducer | None = None  # any vidtok.models.reducers kind (TokenLearner keeps its own path)
        if reducer_spec is not None:
            self.reducer = build_reducer(dim=embed_dim, **reducer_spec)
            if any(b >= depth for b in self.reducer.at_blocks):
                raise ValueError(f"token reducer at_block must be < depth={depth}, got {self.reducer.at_blocks}")
            if getattr(self.reducer, "joint", False) and class_token == "frame":
                raise ValueError("a joint token reducer leaves one temporal slice; use class_token 'global' or 'none'")
            if self.reducer.uses_mask:
                for blk in self.blocks[token_reducer_layer:]:
                    if not isinstance(blk, Block) or blk.attn.axis not in ("joint", "space"):
                        raise ValueError(
                            f"token reducer {token_reducer!r} masks tokens; the blocks after it need joint or space "
                            f"attention (attn_type / reduced_attn_type 'joint', 'space' or 'fe'), not fsa / fdp"
                        )
        elif token_reducer is not None:
            tl_kwargs = {"norm_eps": norm_eps, **reducer_kwargs}
            if token_reducer == "tokenlearner":
                self.token_learner = TokenLearner(dim=embed_dim, **tl_kwargs)
            else:
                n = depth - token_reducer_layer
                s = tl_kwargs.get("num_tokens", 8)
                bdim = tl_kwargs.get("bottleneck_dim", 64)
                self.token_learners = nn.ModuleList(TokenLearner(dim=embed_dim, **tl_kwargs) for _ in range(n))
                self.token_fusers = nn.ModuleList(
                    TokenFuser(dim=embed_dim, num_tokens=s, bottleneck_dim=bdim, norm_eps=norm_eps) for _ in range(n)
                )

        # Model 2: temporal transformer over the per-slice class tokens
        self.depth_temporal = depth_temporal if attn_type == "fe" else 0
        if attn_type == "fe":
            if depth_temporal < 1:
                raise ValueError(f"depth_temporal must be >= 1 for attn_type 'fe', got {depth_temporal}")
            self.norm_spatial = nn.LayerNorm(embed_dim, eps=norm_eps)
            self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.temporal_pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] + 1, embed_dim))
            self.temporal_blocks = nn.ModuleList(
                Block(embed_dim, num_heads, axis="joint", drop_path=dpr[depth + j], **common)
                for j in range(depth_temporal)
            )

        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if not self.use_fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=fc_norm_eps or norm_eps) if self.use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

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
        for p in (self.cls_token, getattr(self, "temporal_cls_token", None), getattr(self, "temporal_pos_embed", None)):
            if p is not None:
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
        for m in self.modules():
            if isinstance(m, TokenFuser):
                nn.init.zeros_(m.token_mix.weight)
                nn.init.zeros_(m.token_mix.bias)
            elif isinstance(m, FactorisedBlock):
                m.zero_init_temporal()
            elif isinstance(m, TokenReducer):
                m.reset_parameters()

    @property
    def num_layers(self) -> int:
        """Transformer blocks (spatial + temporal); layer ids run 0 (embeddings) .. num_layers + 1 (head)."""
        return self.depth + self.depth_temporal

    def get_layer_id(self, param_name: str) -> int:
        """Layer index of a parameter for layer-wise lr decay: 0 embeddings, i + 1 block i, num_layers + 1 head."""
        parts = param_name.split(".")
        if parts[0] in ("patch_embed", "cls_token", "pos_embed"):
            return 0
        if parts[0] == "blocks":
            return int(parts[1]) + 1
        if parts[0] in ("token_learner", "reducer"):
            return self.token_reducer_layer + 1
        if parts[0] in ("token_learners", "token_fusers"):
            return self.token_reducer_layer + int(parts[1]) + 1
        if parts[0] == "temporal_blocks":
            return self.depth + int(parts[1]) + 1
        if parts[0] in ("norm_spatial", "temporal_cls_token", "temporal_pos_embed"):
            return self.depth + 1
        return self.num_layers + 1

    def no_weight_decay(self) -> set[str]:
        """Parameters to exclude from weight decay: class tokens, positional tables, biases and norm weights."""
        keep = {"cls_token", "temporal_cls_token", "temporal_pos_embed"}
        return {
            n for n, p in self.named_parameters() if n in keep or n.startswith("pos_embed.") or p.ndim <= 1
        }  # fmt: skip

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
            return_aux: also return a dict with ``"grid"`` (T', Hp, Wp) of the tubelet grid, ``"token_maps"``
                ``(B, T', S, Hp, Wp)`` and ``"learned_tokens"`` ``(B, T', S, D)`` when a TokenLearner is used
                (joint TokenLearner: ``(B, 1, S, T'·Hp·Wp)`` maps), and ``"last_attn"`` ``(B, N, N)`` head-averaged
                attention weights of the last block when it is a joint-attention block.

        Returns:
            ``(B, T', N, D)``: ``N = S`` without class token, ``1 + S`` per slice with ``class_token="frame"``;
            with ``class_token="global"`` (and for Model 2) ``(B, 1, 1 + T'·S, D)`` (``(B, 1, 1 + T', D)``), the
            class token first.
        """
        aux: dict[str, Any] = {}
        video = x
        x, grid = self._embed(x)
        T = grid[0]
        aux["grid"] = grid
        k = self.token_reducer_layer if self.token_reducer is not None else -1
        last = len(self.blocks) - 1
        red, keep, index, attn = self.reducer, None, None, None  # keep (B, T, N): 1 token, 0 padding / pruned
        if red is not None and red.at_embed:
            cls, p = self._split(x, T)
            out = red(p, video=video, patch_embed=self.patch_embed, pos=self.pos_embed.tables(grid)[0], grid=grid)
            x, keep, index = self._merge(cls, out.tokens), out.keep, out.info.get("index")
            if return_aux:
                aux.update({f"reducer_{n}": v for n, v in out.info.items()})
        for i, blk in enumerate(self.blocks):
            if red is not None and not red.at_embed and i in red.at_blocks:
                cls, p = self._split(x, T)
                scores = None
                if red.needs_scores and attn is not None:
                    scores = significance_from_attn(attn, has_cls=self.class_token == "global", num_slices=T)
                out = red(p, keep=keep, index=index, scores=scores, stage=red.at_blocks.index(i))
                p, keep, index = out.tokens, out.keep, out.info.get("index")
                T = p.shape[1]
                x = self._merge(cls, p)
                if return_aux:
                    aux.update({f"reducer_{n}": v for n, v in out.info.items()})
            if red is not None and keep is not None:
                x = self._run(blk, x, T, key_weight=self._key_weight(keep, x))
                continue
            if (
                red is not None
                and red.needs_scores
                and i + 1 in red.at_blocks
                and isinstance(blk, Block)
                and blk.attn.axis == "joint"
            ):
                x, attn = self._run(blk, x, T, return_attn=True)  # the reducer's significance scores come from these
                continue
            if i == k and self.token_learner is not None:
                cls, p = self._split(x, T)
                p, maps = self.token_learner(p, grid[1:], return_maps=True)  # (B, T', S_k, D)
                T = p.shape[1]
                x = self._merge(cls, p)
                if return_aux:
                    aux["learned_tokens"] = p
                    aux["token_maps"] = maps.unflatten(-1, grid[1:]) if maps.shape[-1] == grid[1] * grid[2] else maps
            if self.token_fusers is not None and i >= k:
                j = i - k
                y, maps = self.token_learners[j](x, grid[1:], return_maps=True)
                y = self._run(blk, y, y.shape[1])
                x = x + self.token_fusers[j](y, x)
                if return_aux and j == 0:
                    aux["learned_tokens"] = y
                    aux["token_maps"] = maps.unflatten(-1, grid[1:]) if maps.shape[-1] == grid[1] * grid[2] else maps
                continue
            if (
                return_aux
                and i == last
                and self.attn_type != "fe"
                and isinstance(blk, Block)
                and blk.attn.axis == "joint"
            ):
                x, aux["last_attn"] = blk(x, T, return_attn=True)
            else:
                x = self._run(blk, x, T)
        if self.attn_type == "fe":
            x = self.norm_spatial(x)
            B, D = x.shape[0], x.shape[-1]
            c = x[:, :, 0]  # (B, T', D) per-slice class tokens
            pe = self.temporal_pos_embed[0]  # (1 + T0, D)
            t_pe = pe[1:]
            if t_pe.shape[0] != c.shape[1]:
                from vidtok.models.layers.pos_embed import _resize_1d

                t_pe = _resize_1d(t_pe, c.shape[1])
            z = torch.cat([(self.temporal_cls_token[0] + pe[:1]).expand(B, 1, D), c + t_pe], dim=1)[:, None]
            for j, blk in enumerate(self.temporal_blocks):
                if return_aux and j == len(self.temporal_blocks) - 1:
                    z, aux["last_attn"] = blk(z, return_attn=True)
                else:
                    z = self._run(blk, z)
            x = z  # (B, 1, 1 + T', D)
        x = self.norm(x)
        if keep is not None and self.attn_type != "fe":  # masked slots → masked mean, so mean pooling stays exact
            cls, p = self._split(x, T)
            x = self._merge(cls, fill_masked(p, keep))
        if return_aux and red is not None:
            aux["token_keep"] = keep
            aux["token_index"] = index
        return (x, aux) if return_aux else x

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


# ------------------------------------------------------------------------------------------------------------ zoo
# Preprocessing each family expects; ViViT (scenic) and ImageNet-21k ViT initialisations scale pixels to [-1, 1].
_VIVIT_CFG = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), frame_stride=2, short_side=256, test_clips=4, test_crops=3)
_TOKSHIFT_CFG = dict(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), frame_stride=8, short_side=256, test_clips=10, test_crops=3
)
_VIDTOK_CFG = dict(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), frame_stride=2, short_side=256, test_clips=4, test_crops=1
)

_SIZES = {
    "ti": dict(embed_dim=192, depth=12, num_heads=3),
    "s": dict(embed_dim=384, depth=12, num_heads=6),
    "b": dict(embed_dim=768, depth=12, num_heads=12),
    "l": dict(embed_dim=1024, depth=24, num_heads=16),
}


def _build(defaults: dict[str, Any], overrides: dict[str, Any], pretrained_cfg: dict[str, Any]) -> ViViT:
    from vidtok.models.hub import make_pretrained_cfg

    args = {**defaults, **overrides}
    model = ViViT(**args)
    model.pretrained_cfg = make_pretrained_cfg(
        model,
        **pretrained_cfg,
        num_frames=args.get("num_frames", 32),
        crop_size=args["img_size"] if isinstance(args.get("img_size", 224), int) else args["img_size"][0],
    )
    return model


def _vivit(size: str, **extra: Any) -> dict[str, Any]:
    return dict(num_frames=32, img_size=224, tubelet_size=(2, 16, 16), **_SIZES[size], **extra)


def _tokshift(size: str) -> dict[str, Any]:
    return dict(
        num_frames=8, img_size=224, tubelet_size=(1, 16, 16), **_SIZES[size], attn_type="space", class_token="frame",
        pos_embed="spatial", token_mixer="tokshift", token_mixer_kwargs={"fold_div": 4, "tokens": "cls"},
    )  # fmt: skip


def _vidtok(size: str) -> dict[str, Any]:
    return dict(
        num_frames=16, img_size=224, tubelet_size=(2, 16, 16), **_SIZES[size], attn_type="space",
        reduced_attn_type="joint", class_token="none", pool="mean", pos_embed="separable", token_mixer="tokshift",
        token_mixer_kwargs={"fold_div": 8, "tokens": "all"}, token_reducer="tokenlearner", token_reducer_layer=4,
        token_reducer_kwargs={"num_tokens": 8, "version": "1.1"},
    )  # fmt: skip


def _register_all() -> None:
    from vidtok.models.registry import register_model

    def reg(name: str, defaults: dict[str, Any], cfg: dict[str, Any], doc: str) -> None:
        def entry(**kwargs: Any) -> ViViT:
            return _build(defaults, kwargs, cfg)

        entry.__name__ = entry.__qualname__ = name
        entry.__doc__ = doc
        register_model(entry)

    for s, label in (("ti", "Ti"), ("s", "S"), ("b", "B"), ("l", "L")):
        reg(f"vivit_{s}16x2", _vivit(s), _VIVIT_CFG, f"ViViT-{label}/16x2 Model 1 (joint space-time), 32×224².")
    reg("vivit_b16x2_fe", _vivit("b", attn_type="fe", class_token="frame", pos_embed="spatial", depth_temporal=4),
        _VIVIT_CFG, "ViViT-B/16x2 Model 2: factorised encoder (12 spatial + 4 temporal layers).")  # fmt: skip
    reg("vivit_b16x2_fsa", _vivit("b", attn_type="fsa", class_token="none", pool="mean"), _VIVIT_CFG,
        "ViViT-B/16x2 Model 3: factorised self-attention (space then time in every block).")  # fmt: skip
    reg("vivit_b16x2_fdp", _vivit("b", attn_type="fdp", class_token="none", pool="mean"), _VIVIT_CFG,
        "ViViT-B/16x2 Model 4: factorised dot-product attention (half the heads on space, half on time).")  # fmt: skip
    reg("vivit_b16x2_tl8", _vivit("b", token_reducer="tokenlearner", token_reducer_layer=4,
                                  token_reducer_kwargs={"num_tokens": 8, "version": "1.1"}), _VIVIT_CFG,
        "ViViT-B/16x2 Model 1 with TokenLearner v1.1: 8 tokens per temporal slice after block 4 of 12.")  # fmt: skip
    # The HF architectures `vidtok convert` imports (vidtok/convert/hf.py passes every argument explicitly).
    reg("videomae_b16x2", dict(_vivit("b"), num_frames=16, class_token="none", pos_embed="sincos", pool="mean",
                               fc_norm=True, fc_norm_eps=1e-5, qkv_bias="qv", norm_eps=1e-12),
        dict(_VIVIT_CFG, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), frame_stride=4, short_side=224,
             test_clips=5, test_crops=3),
        "VideoMAE-B/16x2 (HF VideoMAEForVideoClassification): sincos positions, q/v bias, mean pool.")  # fmt: skip
    reg("timesformer_b16", dict(_vivit("b"), num_frames=8, tubelet_size=(1, 16, 16), attn_type="fsa",
                                attn_order="time_space", temporal_proj=True, pos_embed="separable"),
        dict(_VIVIT_CFG, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), frame_stride=32, short_side=224,
             test_clips=1, test_crops=3),
        "TimeSformer-B/16 divided space-time attention, 8×224² (HF TimesformerForVideoClassification).")  # fmt: skip
    for s, label in (("ti", "Ti"), ("s", "S"), ("b", "B")):
        reg(f"tokshift_{s}16", _tokshift(s), _TOKSHIFT_CFG,
            f"TokShift-{label}/16: frame-wise ViT over 8 frames, CLS-token shift in every block.")  # fmt: skip
        reg(f"vidtok_{s}", _vidtok(s), _VIDTOK_CFG,
            f"vidtok-{label}: 2×16×16 tubelets, per-slice attention + TokShift, TokenLearner (8/slice) after "
            "block 4, then joint attention over the 128 learned tokens, mean pooling.")  # fmt: skip


_register_all()
