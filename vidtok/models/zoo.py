"""The registered family members, each written out as an entry function (``create_model(name, **overrides)``)::

create_model("vivit_b16x2", num_classes=10) ─► vivit_b16x2(num_classes=10)
  ─► ViViT(**{**family defaults, **overrides}) + pretrained_cfg (the family's preprocessing)
"""

from __future__ import annotations

from typing import Any

from vidtok.models.registry import register_model
from vidtok.models.vivit import ViViT

__all__: list[str] = []

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


# ViViT (scenic)
@register_model(model_class=ViViT)
def vivit_ti16x2(**kwargs: Any) -> ViViT:
    """ViViT-Ti/16x2 Model 1 (joint space-time), 32×224²."""
    return _build(_vivit("ti"), kwargs, _VIVIT_CFG)


@register_model(model_class=ViViT)
def vivit_s16x2(**kwargs: Any) -> ViViT:
    """ViViT-S/16x2 Model 1 (joint space-time), 32×224²."""
    return _build(_vivit("s"), kwargs, _VIVIT_CFG)


@register_model(model_class=ViViT)
def vivit_b16x2(**kwargs: Any) -> ViViT:
    """ViViT-B/16x2 Model 1 (joint space-time), 32×224²."""
    return _build(_vivit("b"), kwargs, _VIVIT_CFG)


@register_model(model_class=ViViT)
def vivit_l16x2(**kwargs: Any) -> ViViT:
    """ViViT-L/16x2 Model 1 (joint space-time), 32×224²."""
    return _build(_vivit("l"), kwargs, _VIVIT_CFG)


@register_model(model_class=ViViT)
def vivit_b16x2_fe(**kwargs: Any) -> ViViT:
    """ViViT-B/16x2 Model 2: factorised encoder (12 spatial + 4 temporal layers)."""
    return _build(
        _vivit("b", attn_type="fe", class_token="frame", pos_embed="spatial", depth_temporal=4), kwargs, _VIVIT_CFG
    )


@register_model(model_class=ViViT)
def vivit_b16x2_fsa(**kwargs: Any) -> ViViT:
    """ViViT-B/16x2 Model 3: factorised self-attention (space then time in every block)."""
    return _build(_vivit("b", attn_type="fsa", class_token="none", pool="mean"), kwargs, _VIVIT_CFG)


@register_model(model_class=ViViT)
def vivit_b16x2_fdp(**kwargs: Any) -> ViViT:
    """ViViT-B/16x2 Model 4: factorised dot-product attention (half the heads on space, half on time)."""
    return _build(_vivit("b", attn_type="fdp", class_token="none", pool="mean"), kwargs, _VIVIT_CFG)


@register_model(model_class=ViViT)
def vivit_b16x2_tl8(**kwargs: Any) -> ViViT:
    """ViViT-B/16x2 Model 1 with TokenLearner v1.1: 8 tokens per temporal slice after block 4 of 12."""
    return _build(
        _vivit(
            "b",
            token_reducer="tokenlearner",
            token_reducer_layer=4,
            token_reducer_kwargs={"num_tokens": 8, "version": "1.1"},
        ),
        kwargs,
        _VIVIT_CFG,
    )


# The HF architectures `vidtok convert` imports (vidtok/convert/hf.py passes every argument explicitly).
@register_model(model_class=ViViT)
def videomae_b16x2(**kwargs: Any) -> ViViT:
    """VideoMAE-B/16x2 (HF VideoMAEForVideoClassification): sincos positions, q/v bias, mean pool."""
    return _build(
        dict(
            _vivit("b"),
            num_frames=16,
            class_token="none",
            pos_embed="sincos",
            pool="mean",
            fc_norm=True,
            fc_norm_eps=1e-5,
            qkv_bias="qv",
            norm_eps=1e-12,
        ),
        kwargs,
        dict(
            _VIVIT_CFG,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            frame_stride=4,
            short_side=224,
            test_clips=5,
            test_crops=3,
        ),
    )


@register_model(model_class=ViViT)
def timesformer_b16(**kwargs: Any) -> ViViT:
    """TimeSformer-B/16 divided space-time attention, 8×224² (HF TimesformerForVideoClassification)."""
    return _build(
        dict(
            _vivit("b"),
            num_frames=8,
            tubelet_size=(1, 16, 16),
            attn_type="fsa",
            attn_order="time_space",
            temporal_proj=True,
            pos_embed="separable",
        ),
        kwargs,
        dict(
            _VIVIT_CFG,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            frame_stride=32,
            short_side=224,
            test_clips=1,
            test_crops=3,
        ),
    )


# TokShift and the vidtok family
@register_model(model_class=ViViT)
def tokshift_ti16(**kwargs: Any) -> ViViT:
    """TokShift-Ti/16: frame-wise ViT over 8 frames, CLS-token shift in every block."""
    return _build(_tokshift("ti"), kwargs, _TOKSHIFT_CFG)


@register_model(model_class=ViViT)
def tokshift_s16(**kwargs: Any) -> ViViT:
    """TokShift-S/16: frame-wise ViT over 8 frames, CLS-token shift in every block."""
    return _build(_tokshift("s"), kwargs, _TOKSHIFT_CFG)


@register_model(model_class=ViViT)
def tokshift_b16(**kwargs: Any) -> ViViT:
    """TokShift-B/16: frame-wise ViT over 8 frames, CLS-token shift in every block."""
    return _build(_tokshift("b"), kwargs, _TOKSHIFT_CFG)


@register_model(model_class=ViViT)
def vidtok_ti(**kwargs: Any) -> ViViT:
    """vidtok-Ti: 2×16×16 tubelets, per-slice attention + TokShift, TokenLearner (8/slice) after block 4,
    then joint attention over the 128 learned tokens, mean pooling."""
    return _build(_vidtok("ti"), kwargs, _VIDTOK_CFG)


@register_model(model_class=ViViT)
def vidtok_s(**kwargs: Any) -> ViViT:
    """vidtok-S: 2×16×16 tubelets, per-slice attention + TokShift, TokenLearner (8/slice) after block 4,
    then joint attention over the 128 learned tokens, mean pooling."""
    return _build(_vidtok("s"), kwargs, _VIDTOK_CFG)


@register_model(model_class=ViViT)
def vidtok_b(**kwargs: Any) -> ViViT:
    """vidtok-B: 2×16×16 tubelets, per-slice attention + TokShift, TokenLearner (8/slice) after block 4,
    then joint attention over the 128 learned tokens, mean pooling."""
    return _build(_vidtok("b"), kwargs, _VIDTOK_CFG)
