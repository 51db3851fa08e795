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
from vidtok.errors import CheckpointError, one_line

__all__ = ["detect_layout", "canonical_from_2d", "inflate_vit2d", "inflate_into", "LAYOUTS"]

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
    where: str | os.PathLike | None = None,
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
        where: how errors name the source (default: the file, or "state dict").
        overrides: further create_model keyword arguments.

    Returns:
        The model in eval mode; ``pretrained_cfg`` has the 2D weights' normalisation (torchvision: ImageNet mean/std,
        timm: [-1, 1]) and ``inflation`` lists the tensors copied from 2D and those that kept their own init.
    """
    where = where or (src if not isinstance(src, dict) else "state dict")
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


# Normalisation the 2D weights were trained with: torchvision's ImageNet-1k ViTs use ImageNet statistics; timm's
# vit_base_patch16_224 (augreg, ImageNet-21k) scales to [-1, 1].
_LAYOUT_NORM = {
    "torchvision": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "timm": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}
_BLOCK_PARTS = ("norm1.weight", "norm1.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "attn.qkv.weight")  # fmt: skip


def _arch_overrides(info: dict[str, Any], probe: nn.Module, *, num_frames, img_size, num_classes, num_heads, where):
    """create_model overrides that make the registry model match the 2D ViT (only where it differs)."""
    D, L, p = info["embed_dim"], info["depth"], info["patch"]
    kw: dict[str, Any] = {}
    if probe.embed_dim != D:
        kw["embed_dim"] = D
    if probe.depth != L:
        kw["depth"] = L
    probe_heads = probe.blocks[0].attn.num_heads
    heads = num_heads or (probe_heads if probe.embed_dim == D else D // 64)
    if heads < 1 or D % heads:
        raise CheckpointError(f"{where}: cannot infer attention heads for width {D}; pass --num-heads")
    if heads != probe_heads:
        kw["num_heads"] = heads
    hidden = info["mlp_hidden"]
    if int(D * (probe.blocks[0].mlp.fc1.out_features / probe.embed_dim)) != hidden:
        if int(D * (hidden / D)) != hidden:
            raise CheckpointError(f"{where}: MLP width {hidden} is not D * mlp_ratio (D={D})")
        kw["mlp_ratio"] = hidden / D
    t, ph, pw = probe.patch_embed.tubelet_size
    if (ph, pw) != (p, p):
        kw["tubelet_size"] = [t, p, p]
    img = img_size or info["grid"][0] * p
    if tuple(probe.img_size) != (img, img):
        kw["img_size"] = img
    if num_frames is not None and num_frames != probe.num_frames:
        kw["num_frames"] = num_frames
    n_cls = num_classes if num_classes is not None else info["num_classes"]
    if n_cls is not None and n_cls != probe.num_classes:
        kw["num_classes"] = n_cls
    return kw


def inflate_into(
    info: dict[str, Any],
    *,
    model_name: str,
    num_frames: int | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    tubelet_init: str = "central",
    num_heads: int | None = None,
    where: Any = "state dict",
    **overrides: Any,
) -> nn.Module:
    """Build ``model_name`` to the 2D ViT's size and copy / inflate the 2D weights into it (see module docstring).

    Sets ``model.inflation = {"copied": [...], "kept_init": [...]}`` listing which parameters came from the 2D ViT.
    """
    from vidtok.models.layers import INFLATE_MODES

    if tubelet_init not in INFLATE_MODES:
        raise CheckpointError(f"tubelet_init must be one of {INFLATE_MODES}, got {tubelet_init!r}")
    sizes = dict(num_frames=num_frames, img_size=img_size, num_classes=num_classes, num_heads=num_heads)
    model = _build_target(info, model_name, sizes, overrides, where)
    new, copied = _place_2d(info, model, tubelet_init, where)
    model.load_state_dict(new, strict=True)
    mean, std = _LAYOUT_NORM[info["layout"]]
    model.pretrained_cfg = {**dict(getattr(model, "pretrained_cfg", {}) or {}), "mean": mean, "std": std}
    if "head.weight" not in copied:
        model.pretrained_cfg["class_names"] = []
    model.inflation = {"copied": sorted(copied), "kept_init": sorted(set(new) - copied)}
    return model.eval()


def _build_target(
    info: dict[str, Any], model_name: str, sizes: dict[str, Any], overrides: dict[str, Any], where: Any
) -> nn.Module:
    """``model_name`` built to the 2D ViT's size (``sizes``: the caller's num_frames / img_size / ... or None)."""
    from vidtok.errors import VidtokError
    from vidtok.models import create_model

    def build(**kw: Any) -> nn.Module:
        try:
            return create_model(model_name, **kw)
        except (VidtokError, ValueError) as e:  # unknown name or an invalid override
            raise CheckpointError(f"{where}: cannot build {model_name!r}: {one_line(str(e))}") from None

    with torch.device("meta"):  # registry defaults, without allocating weights
        probe = build()
    if not hasattr(probe, "patch_embed") or not hasattr(probe, "blocks"):
        raise CheckpointError(f"{where}: {model_name!r} is not a ViViT-family model")
    kw = _arch_overrides(info, probe, **sizes, where=where)
    kw.update(overrides)
    return build(**kw)


def _place_2d(
    info: dict[str, Any], model: nn.Module, tubelet_init: str, where: Any
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The model's state dict with the 2D ViT's tensors copied / inflated in, and the names that came from it."""
    from vidtok.models.layers import inflate_2d_kernel, resize_grid_table

    src = info["tensors"]
    new = {k: v.clone() for k, v in model.state_dict().items()}
    copied: set[str] = set()

    def put(key: str, value: torch.Tensor) -> None:
        if key not in new:
            return
        if tuple(value.shape) != tuple(new[key].shape):
            raise CheckpointError(
                f"{where}: cannot place 2D tensor into {key}: shape {tuple(value.shape)} vs {tuple(new[key].shape)}"
            )
        new[key] = value.to(new[key].dtype)
        copied.add(key)

    # patch embedding: (D, C, p, p) -> (D, C, t, p, p)
    t = model.patch_embed.tubelet_size[0]
    put("patch_embed.proj.weight", inflate_2d_kernel(src["patch_embed.proj.weight"], t, tubelet_init))
    if "patch_embed.proj.bias" in src:
        put("patch_embed.proj.bias", src["patch_embed.proj.bias"])

    # class token and positional tables
    pe = model.pos_embed
    T, Hp, Wp = model.grid
    pos = src["pos_embed"][0]  # (1 + g·g, D)
    cls_pos, spatial = pos[:1], pos[1:]
    g = info["grid"]
    spatial = resize_grid_table(spatial, (1, *g), (1, Hp, Wp))  # (Hp·Wp, D), bicubic when the crop changes
    if model.cls_token is not None:
        # without a class-token row in the table, fold its positional embedding into the token itself
        put("cls_token", src["cls_token"] if pe.num_prefix else src["cls_token"] + cls_pos)
    prefix = [cls_pos] if pe.num_prefix else []
    if pe.kind == "joint":
        put("pos_embed.table", torch.cat([*prefix, spatial.repeat(T, 1)])[None])  # tiled over T' (scenic "tile")
    elif pe.kind in ("separable", "spatial"):
        put("pos_embed.spatial", torch.cat([*prefix, spatial])[None])
        if pe.kind == "separable":
            put("pos_embed.temporal", torch.zeros_like(new["pos_embed.temporal"]))

    # blocks: the (spatial) attention path of every block; temporal parts keep their (zero) init
    for i in range(info["depth"]):
        for part in _BLOCK_PARTS:
            put(f"blocks.{i}.{part}", src[f"blocks.{i}.{part}"])
        bias = src.get(f"blocks.{i}.attn.qkv.bias")
        if bias is not None:
            D = bias.shape[0] // 3
            put(f"blocks.{i}.attn.qkv.bias", bias)
            put(f"blocks.{i}.attn.q_bias", bias[:D])  # qkv_bias="qv": a key bias is dropped (softmax-invariant)
            put(f"blocks.{i}.attn.v_bias", bias[2 * D :])

    # final norms and head
    norm = ("norm.weight", "norm.bias")
    fc = ("fc_norm.weight", "fc_norm.bias") if "fc_norm.weight" in src else norm
    if "norm.weight" in src:
        for a in norm:
            put(a, src[a])
            put(a.replace("norm", "temporal.norm_in"), src[a])  # Model 2: the spatial encoder's final norm
    if fc[0] in src:
        for a, b in zip(("fc_norm.weight", "fc_norm.bias"), fc, strict=True):
            put(a, src[b])
    if "head.weight" in src and "head.weight" in new and new["head.weight"].shape == src["head.weight"].shape:
        put("head.weight", src["head.weight"])
        put("head.bias", src["head.bias"])
    return new, copied
