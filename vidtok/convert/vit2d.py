"""Inflate a 2D ViT (ImageNet) state dict into a video model: ViViT variants, TokShift, the vidtok family.

Dataflow::

    2D state dict (torchvision vit_b_16 | timm vit_base_patch16_224 layout)
      ─► canonical_from_2d   timm-like names; torchvision's in_proj / mlp.0 / mlp.3 / encoder.ln renamed
      ─► create_model(name, embed_dim=D, depth=L, num_heads=H, mlp_hidden=, num_frames=, img_size=, ...)
      ─► inflate             patch kernel (D, C, p, p) → tubelet (D, C, t, p, p): "central" (kernel at ⌊t/2⌋, zeros
                             elsewhere; ViViT, scenic) or "average" (kernel / t at every index, I3D)
                             positional table: CLS row kept; spatial grid resized (bicubic) to the new crop and
                             tiled over T' for a joint table, or put in the spatial table (temporal table = 0)
                             blocks: norm1 / attn / norm2 / mlp copied into every block's (spatial) attention path;
                             parts a 2D ViT has no counterpart for (temporal attention of factorised blocks,
                             the temporal encoder of Model 2, TokenLearner) keep their own initialisation
                             head: copied when the class count matches, else freshly initialised

On a clip of identical frames the inflated model reproduces the 2D ViT wherever the architecture allows it exactly:
frame-wise models (TokShift with nothing shifted, ViViT Model 2's spatial encoder) and Model 1 with one temporal
token. (A joint space-time model with T' > 1 sees each spatial token T' times next to one CLS token, which changes
the attention weights of the CLS key, so it is close but not equal.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidtok.convert._io import read_state_dict
from vidtok.errors import CheckpointError

__all__ = ["detect_layout", "canonical_from_2d", "inflate_vit2d", "LAYOUTS"]

LAYOUTS = ("torchvision", "timm")


def detect_layout(state: dict[str, torch.Tensor], where: str | os.PathLike = "state dict") -> str:
    """``torchvision`` (``conv_proj``, ``encoder.layers.encoder_layer_i``) or ``timm`` (``patch_embed.proj``)."""
    if "conv_proj.weight" in state and "class_token" in state:
        return "torchvision"
    if "patch_embed.proj.weight" in state and "cls_token" in state:
        return "timm"
    sample = ", ".join(list(state)[:4])
    raise CheckpointError(
        f"{where}: not a 2D ViT state dict in torchvision (conv_proj, class_token) or timm (patch_embed.proj, "
        f"cls_token) layout; first keys: {sample}"
    )


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a common ``module.`` / ``model.`` / ``backbone.`` prefix (DDP or wrapper saves)."""
    for pre in ("module.", "model.", "backbone."):
        if state and all(k.startswith(pre) for k in state):
            state = {k[len(pre) :]: v for k, v in state.items()}
    return state


def canonical_from_2d(state: dict[str, torch.Tensor], where: str | os.PathLike = "state dict") -> dict[str, Any]:
    """2D ViT tensors in canonical timm names plus what they imply: embed_dim, depth, mlp_hidden, patch, grid.

    Returns:
        ``{"tensors": {...}, "embed_dim", "depth", "mlp_hidden", "patch", "grid" (Hp, Wp), "num_classes"}``;
        tensors: ``cls_token`` (1, 1, D), ``pos_embed`` (1, 1 + Hp·Wp, D), ``patch_embed.proj.{weight,bias}``
        (2D kernel), ``blocks.i.*``, ``norm.*``, ``head.*`` (if any), ``fc_norm.*`` (timm global-pool models).
    """
    state = _strip_prefix(dict(state))
    layout = detect_layout(state, where)
    out: dict[str, torch.Tensor] = {}
    if layout == "timm":
        for k, v in state.items():
            if k.startswith(("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.", "fc_norm.", "head.")):
                out[k] = v
            elif k.startswith(("pre_logits", "dist_token", "head_dist")):
                raise CheckpointError(f"{where}: {k!r}: distilled / pre-logits ViTs are not supported")
    else:
        out["cls_token"] = state["class_token"]
        out["patch_embed.proj.weight"] = state["conv_proj.weight"]
        if "conv_proj.bias" in state:
            out["patch_embed.proj.bias"] = state["conv_proj.bias"]
        out["pos_embed"] = state["encoder.pos_embedding"]
        out["norm.weight"] = state["encoder.ln.weight"]
        out["norm.bias"] = state["encoder.ln.bias"]
        if "heads.pre_logits.weight" in state:
            raise CheckpointError(f"{where}: torchvision ViT with representation_size (pre_logits) is not supported")
        if "heads.head.weight" in state:
            out["head.weight"] = state["heads.head.weight"]
            out["head.bias"] = state["heads.head.bias"]
        names = {
            "ln_1": "norm1",
            "ln_2": "norm2",
            "self_attention.in_proj_weight": "attn.qkv.weight",
            "self_attention.in_proj_bias": "attn.qkv.bias",
            "self_attention.out_proj": "attn.proj",
            "mlp.0": "mlp.fc1",  # torchvision MLPBlock: Linear, GELU, Dropout, Linear, Dropout
            "mlp.3": "mlp.fc2",
            "mlp.linear_1": "mlp.fc1",  # older torchvision naming
            "mlp.linear_2": "mlp.fc2",
        }
        for k, v in state.items():
            m = re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)$", k)
            if not m:
                continue
            rest = m.group(2)
            for src, dst in names.items():
                if rest == src or rest.startswith(src + "."):
                    out[f"blocks.{m.group(1)}.{dst}{rest[len(src) :]}"] = v
                    break
            else:
                raise CheckpointError(f"{where}: unexpected tensor {k!r} in a torchvision ViT")
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if key not in out:
            raise CheckpointError(f"{where}: missing {key!r}")
    w = out["patch_embed.proj.weight"]
    if w.dim() != 4 or w.shape[2] != w.shape[3]:
        raise CheckpointError(f"{where}: patch embedding must be a square Conv2d kernel, got {tuple(w.shape)}")
    D, p = int(w.shape[0]), int(w.shape[2])
    depth = len({int(m.group(1)) for k in out if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth == 0:
        raise CheckpointError(f"{where}: no transformer blocks found")
    n_pos = out["pos_embed"].shape[1] - 1
    side = int(round(n_pos**0.5))
    if side * side != n_pos:
        raise CheckpointError(f"{where}: positional table of {n_pos} patches is not a square grid")
    return {
        "tensors": out,
        "layout": layout,
        "embed_dim": D,
        "depth": depth,
        "mlp_hidden": int(out["blocks.0.mlp.fc1.weight"].shape[0]),
        "patch": p,
        "grid": (side, side),
        "num_classes": int(out["head.weight"].shape[0]) if "head.weight" in out else None,
    }


def inflate_vit2d(
    src: str | os.PathLike | dict[str, torch.Tensor],
    *,
    model_name: str | None,
    num_frames: int | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    tubelet_init: str = "central",
    num_heads: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build ``model_name`` with the 2D ViT's width / depth and initialise it from the 2D weights.

    Args:
        src: a state-dict file (safetensors, or .pth/.bin read with ``weights_only=True``) or the dict itself.
        model_name: vidtok registry model (a ViViT variant, ``tokshift_*`` or ``vidtok_*``); its ``embed_dim`` and
            ``depth`` are taken from the 2D weights.
        num_frames: input frames (default: the model's).
        img_size: crop size (default: the 2D ViT's; the spatial positional grid is resized bicubically if different).
        num_classes: classes of the new head (default: the 2D head's, copied; a different count gets a fresh head).
        tubelet_init: ``"central"`` or ``"average"`` (see :func:`vidtok.models.layers.inflate_2d_kernel`).
        num_heads: attention heads (not stored in a state dict; default: the registry model's if its width matches,
            else ``D // 64`` as in every standard ViT).
        overrides: further create_model keyword arguments.

    Returns:
        The model in eval mode, with ``pretrained_cfg`` (ImageNet-style mean/std 0.5 for inflated ViViT defaults are
        left to the caller's data config; see docs).
    """
    from vidtok.convert._target import inflate_into

    where = src if not isinstance(src, dict) else "state dict"
    if not model_name:
        raise CheckpointError(f"{where}: inflating a 2D ViT needs --model NAME (e.g. vivit_b16x2, tokshift_b16)")
    state = src if isinstance(src, dict) else read_state_dict(Path(src))
    info = canonical_from_2d(state, where)
    return inflate_into(
        info,
        model_name=model_name,
        num_frames=num_frames,
        img_size=img_size,
        num_classes=num_classes,
        tubelet_init=tubelet_init,
        num_heads=num_heads,
        where=where,
        **overrides,
    )
