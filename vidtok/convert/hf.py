"""Import HuggingFace ViViT, VideoMAE and TimeSformer video classifiers as vidtok models.

Dataflow::

    SRC (HF folder: config.json + model.safetensors | pytorch_model.bin [+ preprocessor_config.json]; or one weight
         file with config.json beside it)
      ─► read_hf_source      config, tensors (safetensors, or torch.load(weights_only=True)), preprocessing
      ─► detect_arch         config.model_type / architectures -> vivit | videomae | timesformer
      ─► _map_{vivit,videomae,timesformer}
                             HF config -> create_model kwargs (width, depth, heads, MLP ratio, tubelet, eps,
                             activation, bias mode, attention type, pooling); HF tensor names -> vidtok names (q/k/v
                             fused into one qkv; VideoMAE q_bias/v_bias kept as such; TimeSformer Conv2d -> Conv3d
                             with t = 1 and temporal_dense -> proj_t)
      ─► build_model         create_model(name, **kwargs) without random init, load_state_dict(strict=True)
      ─► hf_pretrained_cfg   class names from id2label, mean/std ([-1, 1] for ViViT), frames, stride, crop

The resulting model reproduces HF's logits (tested to 1e-4 in float32 on random tiny configs). Note that HF takes
``(B, T, C, H, W)`` and vidtok ``(B, C, T, H, W)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidtok.convert._io import find_weight_files, read_json, read_state_dict
from vidtok.errors import CheckpointError

__all__ = ["HFSource", "ARCHS", "read_hf_source", "detect_arch", "convert_hf", "hf_pretrained_cfg"]

ARCHS = ("vivit", "videomae", "timesformer")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Sampling the original papers/recipes use (HF configs do not store it): frames x stride, test views.
_RECIPES: dict[str, dict[str, int]] = {
    "vivit": {"frame_stride": 2, "test_clips": 4, "test_crops": 1},  # ViViT-B/16x2 K400: 32x2, 4 views
    "videomae": {"frame_stride": 4, "test_clips": 5, "test_crops": 3},  # VideoMAE K400: 16x4, 5x3 views
    "timesformer": {"frame_stride": 32, "test_clips": 1, "test_crops": 3},  # TimeSformer K400: 8x32, 1x3 views
}

# HF activation names -> vidtok mlp act names. gelu_fast / gelu_new / gelu_pytorch_tanh are all the tanh form.
_ACTS = {
    "gelu": "gelu",
    "gelu_fast": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "quick_gelu": "quick_gelu",
}


@dataclass
class HFSource:
    """What a HF checkpoint folder (or file) holds."""

    path: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    preprocessor: dict[str, Any] = field(default_factory=dict)


def read_hf_source(src: str | os.PathLike) -> HFSource:
    """Read a HF model folder (or one weight file with ``config.json`` beside it) without unpickling objects."""
    src = Path(src)
    if not src.exists():
        raise CheckpointError(f"{src}: no such file or directory")
    folder = src if src.is_dir() else src.parent
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder}: no config.json (a HF checkpoint needs it beside the weights)")
    config = read_json(cfg_path)
    files = find_weight_files(folder) if src.is_dir() else [src]
    state = read_state_dict(files)
    pre: dict[str, Any] = {}
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        if (folder / name).is_file():
            pre = read_json(folder / name)
            break
    return HFSource(path=src, config=config, state=state, preprocessor=pre)


def detect_arch(config: dict[str, Any], where: str | os.PathLike = "config.json") -> str:
    """``vivit`` | ``videomae`` | ``timesformer`` from ``model_type`` (or ``architectures``)."""
    mt = str(config.get("model_type", "")).lower()
    if mt in ARCHS:
        return mt
    for a in config.get("architectures") or []:
        for arch in ARCHS:
            if str(a).lower().startswith(arch):
                return arch
    raise CheckpointError(
        f"{where}: unsupported HF model_type {config.get('model_type')!r} "
        f"(architectures={config.get('architectures')}); supported: {', '.join(ARCHS)}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


def _act(config: dict[str, Any], where: Path) -> str:
    name = config.get("hidden_act", "gelu")
    if name not in _ACTS:
        raise CheckpointError(f"{where}: unsupported hidden_act {name!r} (supported: {', '.join(_ACTS)})")
    return _ACTS[name]


def _square(config: dict[str, Any], where: Path) -> int:
    h, w = _pair(config.get("image_size", 224))
    if h != w:
        raise CheckpointError(f"{where}: non-square image_size {h}x{w} is not supported")
    return h


def _class_names(config: dict[str, Any], num_classes: int) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label.get(str(i), id2label.get(i, f"class_{i}"))) for i in range(num_classes)]


def _modern_to_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 in-memory ViT-style names (``layers.N.attention.q_proj``) -> the on-disk layout
    (``encoder.layer.N.attention.attention.query``) that ``save_pretrained`` writes and the Hub holds."""
    rules = [
        (r"\.layers\.(\d+)\.", r".encoder.layer.\1."),
        (r"\.attention\.q_proj\.", ".attention.attention.query."),
        (r"\.attention\.k_proj\.", ".attention.attention.key."),
        (r"\.attention\.v_proj\.", ".attention.attention.value."),
        (r"\.attention\.o_proj\.", ".attention.output.dense."),
        (r"\.mlp\.fc1\.", ".intermediate.dense."),
        (r"\.mlp\.fc2\.", ".output.dense."),
    ]
    out = {}
    for k, v in state.items():
        for pat, rep in rules:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def _with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Base-model saves (``VideoMAEModel``...) lack the ``videomae.`` prefix of the classifier's backbone."""
    if any(k.startswith(prefix + ".") for k in state):
        return state
    return {
        (f"{prefix}.{k}" if k.startswith(("embeddings.", "encoder.", "layernorm.", "layers.")) else k): v
        for k, v in state.items()
    }


class _Taker:
    """Pops HF tensors by name so that leftovers (unmapped weights) can be reported."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str, where: Path):
        self.state = dict(state)
        self.prefix = prefix
        self.where = where

    def __call__(self, name: str, *, base: bool = True) -> torch.Tensor:
        key = f"{self.prefix}.{name}" if base else name
        if key not in self.state:
            raise CheckpointError(f"{self.where}: missing tensor {key!r} for this architecture")
        return self.state.pop(key)

    def has(self, name: str, *, base: bool = True) -> bool:
        return (f"{self.prefix}.{name}" if base else name) in self.state

    def leftovers(self) -> list[str]:
        return sorted(self.state)


def _block_common(take: _Taker, i: int, out: dict[str, torch.Tensor], *, qkv: str) -> None:
    """The pre-norm ViT block parts every HF video model shares, into canonical timm-like names."""
    L = f"encoder.layer.{i}"
    c = f"blocks.{i}"
    out[f"{c}.norm1.weight"] = take(f"{L}.layernorm_before.weight")
    out[f"{c}.norm1.bias"] = take(f"{L}.layernorm_before.bias")
    out[f"{c}.norm2.weight"] = take(f"{L}.layernorm_after.weight")
    out[f"{c}.norm2.bias"] = take(f"{L}.layernorm_after.bias")
    out[f"{c}.attn.proj.weight"] = take(f"{L}.attention.output.dense.weight")
    out[f"{c}.attn.proj.bias"] = take(f"{L}.attention.output.dense.bias")
    out[f"{c}.mlp.fc1.weight"] = take(f"{L}.intermediate.dense.weight")
    out[f"{c}.mlp.fc1.bias"] = take(f"{L}.intermediate.dense.bias")
    out[f"{c}.mlp.fc2.weight"] = take(f"{L}.output.dense.weight")
    out[f"{c}.mlp.fc2.bias"] = take(f"{L}.output.dense.bias")
    a = f"{L}.attention.attention"
    if qkv == "fused":  # TimeSformer: one qkv linear already
        out[f"{c}.attn.qkv.weight"] = take(f"{a}.qkv.weight")
        if take.has(f"{a}.qkv.bias"):
            out[f"{c}.attn.qkv.bias"] = take(f"{a}.qkv.bias")
        return
    q, k, v = take(f"{a}.query.weight"), take(f"{a}.key.weight"), take(f"{a}.value.weight")
    out[f"{c}.attn.qkv.weight"] = torch.cat([q, k, v], 0)  # (3·D, D) in q, k, v order
    if qkv == "qkv":  # ViViT: q, k, v biases (or none)
        if take.has(f"{a}.query.bias"):
            qb, kb, vb = take(f"{a}.query.bias"), take(f"{a}.key.bias"), take(f"{a}.value.bias")
            out[f"{c}.attn.qkv.bias"] = torch.cat([qb, kb, vb], 0)
    elif qkv == "qv":  # VideoMAE: separate q and v biases, no k bias (vidtok Attention qkv_bias="qv")
        if take.has(f"{a}.q_bias"):
            out[f"{c}.attn.q_bias"], out[f"{c}.attn.v_bias"] = take(f"{a}.q_bias"), take(f"{a}.v_bias")
        elif take.has(f"{a}.query.bias"):
            out[f"{c}.attn.q_bias"], out[f"{c}.attn.v_bias"] = take(f"{a}.query.bias"), take(f"{a}.value.bias")


def _num_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    ids = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.encoder\.layer\.(\d+)\.", k))}
    return max(ids) + 1 if ids else 0


def _head(take: _Taker, out: dict[str, torch.Tensor], where: Path) -> int:
    if not take.has("classifier.weight", base=False):
        raise CheckpointError(
            f"{where}: no classifier head ('classifier.weight'); convert a *ForVideoClassification checkpoint"
        )
    out["head.weight"] = take("classifier.weight", base=False)
    out["head.bias"] = take("classifier.bias", base=False)
    return int(out["head.weight"].shape[0])


# ---------------------------------------------------------------------------------------------------------------------
# Per-architecture: HF config -> canonical architecture description, HF tensors -> canonical tensors.
#
# Output names are vidtok.models.vivit.ViViT's: patch_embed.proj.* (Conv3d), cls_token, pos_embed.table (joint,
# CLS row first) or pos_embed.{spatial,temporal} (separable), blocks.i.{norm1,attn.qkv,attn.q_bias,
# attn.v_bias,attn.proj,norm2,mlp.fc1,mlp.fc2}, blocks.i.{norm_t,attn_t.*,proj_t} (TimeSformer), norm, fc_norm, head.
# The architecture description is a dict of create_model keyword arguments (see build_model).


def _common_arch(config: dict[str, Any], where: Path, num_layers: int) -> dict[str, Any]:
    D = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    if D % heads:
        raise CheckpointError(f"{where}: hidden_size {D} is not divisible by num_attention_heads {heads}")
    if int(config.get("num_hidden_layers", num_layers)) != num_layers:
        raise CheckpointError(
            f"{where}: config says {config.get('num_hidden_layers')} layers but the weights have {num_layers}"
        )
    hidden = int(config["intermediate_size"])
    if int(D * (hidden / D)) != hidden:  # ViViT builds the MLP as int(D * mlp_ratio)
        raise CheckpointError(f"{where}: intermediate_size {hidden} is not representable as D * mlp_ratio (D={D})")
    return {
        "embed_dim": D,
        "depth": num_layers,
        "num_heads": heads,
        "mlp_ratio": hidden / D,
        "norm_eps": float(config.get("layer_norm_eps", 1e-6)),
        "act": _act(config, where),
        "img_size": _square(config, where),
        "num_frames": int(config.get("num_frames", 16)),
    }


def _map_vivit(src: HFSource) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    cfg, where = src.config, src.path
    state = _modern_to_legacy(_with_prefix(src.state, "vivit"))
    take = _Taker(state, "vivit", where)
    n = _num_layers(state, "vivit")
    arch = _common_arch(cfg, where, n)
    t, ph, pw = (int(v) for v in cfg.get("tubelet_size", (2, 16, 16)))
    if ph != pw:
        raise CheckpointError(f"{where}: non-square tubelet {t}x{ph}x{pw} is not supported")
    arch.update(
        tubelet_size=[t, ph, pw],
        attn_type="joint",
        class_token="global",
        pos_embed="joint",
        pool="cls",
        qkv_bias="all" if cfg.get("qkv_bias", True) else "none",
    )
    out: dict[str, torch.Tensor] = {}
    out["cls_token"] = take("embeddings.cls_token")
    out["pos_embed.table"] = take("embeddings.position_embeddings")  # (1, 1 + T'·H'·W', D), T'-major like our tokens
    out["patch_embed.proj.weight"] = take("embeddings.patch_embeddings.projection.weight")  # (D, C, t, p, p)
    out["patch_embed.proj.bias"] = take("embeddings.patch_embeddings.projection.bias")
    for i in range(n):
        _block_common(take, i, out, qkv="qkv")
    out["norm.weight"] = take("layernorm.weight")
    out["norm.bias"] = take("layernorm.bias")
    arch["num_classes"] = _head(take, out, where)
    for k in take.leftovers():  # the unused tanh pooler of VivitModel is harmless
        if not k.startswith("vivit.pooler."):
            raise CheckpointError(f"{where}: unexpected tensor {k!r} for ViViT")
    return arch, out


def _map_videomae(src: HFSource) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    cfg, where = src.config, src.path
    if not cfg.get("use_mean_pooling", True):
        raise CheckpointError(f"{where}: VideoMAE with use_mean_pooling=false is not supported (HF takes token 0)")
    state = _modern_to_legacy(_with_prefix(src.state, "videomae"))
    take = _Taker(state, "videomae", where)
    n = _num_layers(state, "videomae")
    arch = _common_arch(cfg, where, n)
    p = _pair(cfg.get("patch_size", 16))
    if p[0] != p[1]:
        raise CheckpointError(f"{where}: non-square patch_size {p} is not supported")
    arch.update(
        tubelet_size=[int(cfg.get("tubelet_size", 2)), p[0], p[1]],
        attn_type="joint",
        class_token="none",
        pos_embed="sincos",
        pool="mean",
        fc_norm=True,
        qkv_bias="qv" if cfg.get("qv_bias", True) else "none",
        fc_norm_eps=1e-5,  # HF builds fc_norm with nn.LayerNorm's default eps, not layer_norm_eps
    )
    out: dict[str, torch.Tensor] = {}
    out["patch_embed.proj.weight"] = take("embeddings.patch_embeddings.projection.weight")
    out["patch_embed.proj.bias"] = take("embeddings.patch_embeddings.projection.bias")
    for i in range(n):
        _block_common(take, i, out, qkv="qv")
    out["fc_norm.weight"] = take("fc_norm.weight", base=False)
    out["fc_norm.bias"] = take("fc_norm.bias", base=False)
    arch["num_classes"] = _head(take, out, where)
    for k in take.leftovers():
        if not k.startswith(("videomae.embeddings.position_embeddings", "decoder.", "encoder_to_decoder")):
            raise CheckpointError(f"{where}: unexpected tensor {k!r} for VideoMAE")
    return arch, out


def _map_timesformer(src: HFSource) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    cfg, where = src.config, src.path
    if cfg.get("attention_type", "divided_space_time") != "divided_space_time":
        raise CheckpointError(
            f"{where}: TimeSformer attention_type {cfg.get('attention_type')!r} is not supported "
            "(only divided_space_time)"
        )
    state = _with_prefix(src.state, "timesformer")
    take = _Taker(state, "timesformer", where)
    n = _num_layers(state, "timesformer")
    arch = _common_arch(cfg, where, n)
    p = _pair(cfg.get("patch_size", 16))
    if p[0] != p[1]:
        raise CheckpointError(f"{where}: non-square patch_size {p} is not supported")
    arch.update(
        tubelet_size=[1, p[0], p[1]],
        attn_type="fsa",  # divided space-time: temporal attention (+ temporal_dense), then spatial, then MLP
        attn_order="time_space",
        temporal_proj=True,
        class_token="global",
        pos_embed="separable",
        pool="cls",
        qkv_bias="all" if cfg.get("qkv_bias", True) else "none",
    )
    out: dict[str, torch.Tensor] = {}
    out["cls_token"] = take("embeddings.cls_token")
    # (1, 1 + H'·W', D): the CLS row first, then space; the temporal table (1, T, D) is added to patch tokens only
    out["pos_embed.spatial"] = take("embeddings.position_embeddings")
    out["pos_embed.temporal"] = take("embeddings.time_embeddings")
    out["patch_embed.proj.weight"] = take("embeddings.patch_embeddings.projection.weight").unsqueeze(2)  # Conv3d t=1
    out["patch_embed.proj.bias"] = take("embeddings.patch_embeddings.projection.bias")
    for i in range(n):
        _block_common(take, i, out, qkv="fused")
        L, c = f"encoder.layer.{i}", f"blocks.{i}"
        out[f"{c}.norm_t.weight"] = take(f"{L}.temporal_layernorm.weight")
        out[f"{c}.norm_t.bias"] = take(f"{L}.temporal_layernorm.bias")
        out[f"{c}.attn_t.qkv.weight"] = take(f"{L}.temporal_attention.attention.qkv.weight")
        if take.has(f"{L}.temporal_attention.attention.qkv.bias"):
            out[f"{c}.attn_t.qkv.bias"] = take(f"{L}.temporal_attention.attention.qkv.bias")
        out[f"{c}.attn_t.proj.weight"] = take(f"{L}.temporal_attention.output.dense.weight")
        out[f"{c}.attn_t.proj.bias"] = take(f"{L}.temporal_attention.output.dense.bias")
        out[f"{c}.proj_t.weight"] = take(f"{L}.temporal_dense.weight")
        out[f"{c}.proj_t.bias"] = take(f"{L}.temporal_dense.bias")
    out["norm.weight"] = take("layernorm.weight")
    out["norm.bias"] = take("layernorm.bias")
    arch["num_classes"] = _head(take, out, where)
    if take.leftovers():
        raise CheckpointError(f"{where}: unexpected tensor {take.leftovers()[0]!r} for TimeSformer")
    return arch, out


_MAPPERS = {"vivit": _map_vivit, "videomae": _map_videomae, "timesformer": _map_timesformer}


def hf_pretrained_cfg(src: HFSource, arch: str, *, num_classes: int, num_frames: int, crop: int) -> dict[str, Any]:
    """Preprocessing and class names for a converted HF checkpoint.

    ViViT expects pixels in [-1, 1] (mean = std = 0.5). VideoMAE and TimeSformer use ImageNet mean/std, from
    ``preprocessor_config.json`` when present.
    """
    pre = src.preprocessor
    if arch == "vivit":
        mean, std = [0.5] * 3, [0.5] * 3
    else:
        mean = [float(v) for v in pre.get("image_mean", IMAGENET_MEAN)]
        std = [float(v) for v in pre.get("image_std", IMAGENET_STD)]
    crop_cfg = pre.get("crop_size")
    crop_size = int(crop_cfg.get("height", crop)) if isinstance(crop_cfg, dict) else int(crop_cfg or crop)
    size = pre.get("size")
    short = size.get("shortest_edge") if isinstance(size, dict) else size
    short_side = int(short) if short else round(crop_size * 256 / 224)
    return {
        "mean": mean,
        "std": std,
        "num_frames": num_frames,
        "crop_size": crop_size,
        "short_side": short_side,
        "class_names": _class_names(src.config, num_classes),
        **_RECIPES[arch],
    }


# Registry entry each architecture is built on (every architecture argument is passed explicitly, so the entry only
# names the family; `create_model(model.model_name, **model.model_kwargs)` rebuilds the exact model).
DEFAULT_MODELS = {"vivit": "vivit_b16x2", "videomae": "videomae_b16x2", "timesformer": "timesformer_b16"}


def build_model(kwargs: dict[str, Any], state: dict[str, torch.Tensor], *, model_name: str, where: Path) -> nn.Module:
    """``create_model(model_name, **kwargs)`` and load ``state`` strictly, with errors that name the file."""
    from vidtok.models import create_model
    from vidtok.models.hub import no_weight_init

    try:
        with no_weight_init():  # every tensor is loaded below (strict)
            model = create_model(model_name, **kwargs)
    except Exception as e:  # unknown registry name, or an architecture the registry entry rejects
        msg = " ".join(str(e).split())
        raise CheckpointError(f"{where}: cannot build vidtok model {model_name!r}: {msg}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: converted weights do not fit {model_name!r}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{where}: {k}: converted shape {tuple(state[k].shape)} but {model_name!r} has {tuple(v.shape)}"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model


def convert_hf(
    src: str | os.PathLike | HFSource, *, arch: str = "auto", model_name: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Convert a HF ViViT / VideoMAE / TimeSformer video classifier into a vidtok model.

    Args:
        src: HF folder (config.json + weights), a weight file with config.json beside it, or a read source.
        arch: ``auto`` (from config.json) or one of :data:`ARCHS`; a mismatch with config.json is an error.
        model_name: registry name to build on (default: the architecture's own entry).

    Returns:
        ``(model, pretrained_cfg)``; the model is in eval mode with ``pretrained_cfg`` attached; save it with
        :func:`vidtok.models.hub.save_model`.
    """
    if not isinstance(src, HFSource):
        src = read_hf_source(src)
    found = detect_arch(src.config, src.path)
    if arch not in ("auto", found):
        raise CheckpointError(f"{src.path}: --arch {arch} but config.json is a {found} model")
    if "classifier.weight" not in src.state:
        raise CheckpointError(
            f"{src.path}: no classifier head ('classifier.weight'); convert a *ForVideoClassification checkpoint"
        )
    kwargs, state = _MAPPERS[found](src)
    model = build_model(kwargs, state, model_name=model_name or DEFAULT_MODELS[found], where=src.path)
    cfg = hf_pretrained_cfg(
        src, found, num_classes=kwargs["num_classes"], num_frames=kwargs["num_frames"], crop=kwargs["img_size"]
    )
    model.pretrained_cfg = cfg
    return model.eval(), cfg
