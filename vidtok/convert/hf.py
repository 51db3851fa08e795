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
from vidtok.errors import CheckpointError, VidtokError, one_line

__all__ = [
    "HFSource",
    "ARCHS",
    "LAYOUTS",
    "read_hf_source",
    "detect_arch",
    "convert_hf",
    "hf_pretrained_cfg",
    "name_rules",
    "hf_arch_of",
    "export_hf",
]

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


# One name table per architecture, read in both directions: ``import`` (HF -> vidtok, :func:`convert_hf`) and
# ``export`` (vidtok -> HF, :func:`export_hf`). A rule is ``(vidtok name, HF names, op)``:
#   "copy"  one tensor as it is;
#   "qkv"   HF's query / key / value rows, concatenated into vidtok's fused qkv (export splits them again);
#   "t1"    TimeSformer's Conv2d patch kernel (D, C, p, p) <-> vidtok's Conv3d kernel with t = 1 (D, C, 1, p, p).
# HF names are the on-disk layout ``save_pretrained`` writes and the Hub holds; vidtok names are
# vidtok.models.vivit.ViViT's: patch_embed.proj.* (Conv3d), cls_token, pos_embed.table (joint, CLS row first) or
# pos_embed.{spatial,temporal} (separable), blocks.i.{norm1,attn.qkv,attn.q_bias,attn.v_bias,attn.proj,norm2,mlp.fc1,
# mlp.fc2}, blocks.i.{norm_t,attn_t.*,proj_t} (TimeSformer), norm, fc_norm, head.
Rule = tuple[str, tuple[str, ...], str]

# The vidtok architecture each HF model is (create_model keyword arguments; sizes come from the config).
LAYOUTS: dict[str, dict[str, Any]] = {
    "vivit": dict(attn_type="joint", class_token="global", pos_embed="joint", pool="cls"),
    # HF builds VideoMAE's fc_norm with nn.LayerNorm's default eps, not layer_norm_eps
    "videomae": dict(attn_type="joint", class_token="none", pos_embed="sincos", pool="mean", fc_norm=True,
                     fc_norm_eps=1e-5),
    # divided space-time: temporal attention (+ temporal_dense), then spatial, then MLP
    "timesformer": dict(attn_type="fsa", attn_order="time_space", temporal_proj=True, class_token="global",
                        pos_embed="separable", pool="cls"),
}  # fmt: skip
_HF_CLASSES = {
    "vivit": "VivitForVideoClassification",
    "videomae": "VideoMAEForVideoClassification",
    "timesformer": "TimesformerForVideoClassification",
}


def _pair_rules(c: str, h: str) -> list[Rule]:
    return [(f"{c}.weight", (f"{h}.weight",), "copy"), (f"{c}.bias", (f"{h}.bias",), "copy")]


def name_rules(arch: str, num_layers: int, *, qkv_bias: str) -> list[Rule]:
    """The tensor-name table of ``arch`` with ``num_layers`` blocks; ``qkv_bias`` as vidtok's Attention names it
    ("all", "qv" or "none")."""
    P = arch
    rules: list[Rule] = []
    emb = f"{P}.embeddings"
    if arch == "vivit":
        rules += [
            ("cls_token", (f"{emb}.cls_token",), "copy"),
            ("pos_embed.table", (f"{emb}.position_embeddings",), "copy"),
        ]
    elif arch == "timesformer":
        rules += [
            ("cls_token", (f"{emb}.cls_token",), "copy"),
            ("pos_embed.spatial", (f"{emb}.position_embeddings",), "copy"),  # (1, 1 + H'·W', D), CLS row first
            ("pos_embed.temporal", (f"{emb}.time_embeddings",), "copy"),  # added to patch tokens only
        ]
    proj = f"{emb}.patch_embeddings.projection"
    rules += [
        ("patch_embed.proj.weight", (f"{proj}.weight",), "t1" if arch == "timesformer" else "copy"),
        ("patch_embed.proj.bias", (f"{proj}.bias",), "copy"),
    ]
    for i in range(num_layers):
        L, c = f"{P}.encoder.layer.{i}", f"blocks.{i}"
        a = f"{L}.attention.attention"
        rules += _pair_rules(f"{c}.norm1", f"{L}.layernorm_before")
        if arch == "timesformer":  # one qkv linear already
            rules.append((f"{c}.attn.qkv.weight", (f"{a}.qkv.weight",), "copy"))
            if qkv_bias == "all":
                rules.append((f"{c}.attn.qkv.bias", (f"{a}.qkv.bias",), "copy"))
        else:
            rules.append((f"{c}.attn.qkv.weight", (f"{a}.query.weight", f"{a}.key.weight", f"{a}.value.weight"), "qkv"))
            if qkv_bias == "all":
                rules.append((f"{c}.attn.qkv.bias", (f"{a}.query.bias", f"{a}.key.bias", f"{a}.value.bias"), "qkv"))
            elif qkv_bias == "qv":  # VideoMAE: separate q and v biases, no k bias
                rules += [
                    (f"{c}.attn.q_bias", (f"{a}.q_bias",), "copy"),
                    (f"{c}.attn.v_bias", (f"{a}.v_bias",), "copy"),
                ]
        rules += _pair_rules(f"{c}.attn.proj", f"{L}.attention.output.dense")
        rules += _pair_rules(f"{c}.norm2", f"{L}.layernorm_after")
        rules += _pair_rules(f"{c}.mlp.fc1", f"{L}.intermediate.dense")
        rules += _pair_rules(f"{c}.mlp.fc2", f"{L}.output.dense")
        if arch == "timesformer":
            t = f"{L}.temporal_attention"
            rules += _pair_rules(f"{c}.norm_t", f"{L}.temporal_layernorm")
            rules.append((f"{c}.attn_t.qkv.weight", (f"{t}.attention.qkv.weight",), "copy"))
            if qkv_bias == "all":
                rules.append((f"{c}.attn_t.qkv.bias", (f"{t}.attention.qkv.bias",), "copy"))
            rules += _pair_rules(f"{c}.attn_t.proj", f"{t}.output.dense")
            rules += _pair_rules(f"{c}.proj_t", f"{L}.temporal_dense")
    rules += _pair_rules("fc_norm", "fc_norm") if arch == "videomae" else _pair_rules("norm", f"{P}.layernorm")
    rules += _pair_rules("head", "classifier")
    return rules


def _apply_import(rules: list[Rule], take: _Taker) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for ours, theirs, op in rules:
        ts = [take(n, base=False) for n in theirs]
        if op == "qkv":
            out[ours] = torch.cat(ts, 0)  # (3·D, ...) in q, k, v order
        elif op == "t1":
            out[ours] = ts[0].unsqueeze(2)  # Conv2d -> Conv3d with t = 1
        else:
            out[ours] = ts[0]
    return out


def _apply_export(rules: list[Rule], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for ours, theirs, op in rules:
        t = state[ours]
        if op == "qkv":
            out.update(zip(theirs, t.chunk(3, 0), strict=True))
        elif op == "t1":
            out[theirs[0]] = t.squeeze(2)
        else:
            out[theirs[0]] = t
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def _num_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    ids = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.encoder\.layer\.(\d+)\.", k))}
    return max(ids) + 1 if ids else 0


def _check_head(take: _Taker, where: Path) -> int:
    if not take.has("classifier.weight", base=False):
        raise CheckpointError(
            f"{where}: no classifier head ('classifier.weight'); convert a *ForVideoClassification checkpoint"
        )
    return int(take.state["classifier.weight"].shape[0])


# ---------------------------------------------------------------------------------------------------------------------
# Per-architecture import: HF config -> create_model kwargs, HF tensors -> vidtok tensors (through name_rules).


def _square_patch(config: dict[str, Any], where: Path) -> tuple[int, int]:
    """The config's ``patch_size`` as ``(p, p)``; a non-square patch is a one-line CheckpointError."""
    p = _pair(config.get("patch_size", 16))
    if p[0] != p[1]:
        raise CheckpointError(f"{where}: non-square patch_size {p} is not supported")
    return p


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
    arch.update(LAYOUTS["vivit"], tubelet_size=[t, ph, pw], qkv_bias="all" if cfg.get("qkv_bias", True) else "none")
    arch["num_classes"] = _check_head(take, where)
    out = _apply_import(name_rules("vivit", n, qkv_bias=arch["qkv_bias"]), take)
    for k in take.leftovers():  # the unused tanh pooler of VivitModel is harmless
        if not k.startswith("vivit.pooler."):
            raise CheckpointError(f"{where}: unexpected tensor {k!r} for ViViT")
    return arch, out


def _map_videomae(src: HFSource) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    cfg, where = src.config, src.path
    if not cfg.get("use_mean_pooling", True):
        raise CheckpointError(f"{where}: VideoMAE with use_mean_pooling=false is not supported (HF takes token 0)")
    state = _modern_to_legacy(_with_prefix(src.state, "videomae"))
    # separate q / v biases stored as query.bias / value.bias (in-memory layout): the on-disk names
    state = {
        re.sub(
            r"\.attention\.attention\.(query|value)\.bias$", lambda m: f".attention.attention.{m.group(1)[0]}_bias", k
        ): v
        for k, v in state.items()
    }
    take = _Taker(state, "videomae", where)
    n = _num_layers(state, "videomae")
    arch = _common_arch(cfg, where, n)
    p = _square_patch(cfg, where)
    qkv_bias = "qv" if cfg.get("qv_bias", True) and take.has("encoder.layer.0.attention.attention.q_bias") else "none"
    arch.update(LAYOUTS["videomae"], tubelet_size=[int(cfg.get("tubelet_size", 2)), p[0], p[1]], qkv_bias=qkv_bias)
    arch["num_classes"] = _check_head(take, where)
    out = _apply_import(name_rules("videomae", n, qkv_bias=qkv_bias), take)
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
    p = _square_patch(cfg, where)
    arch.update(
        LAYOUTS["timesformer"], tubelet_size=[1, p[0], p[1]], qkv_bias="all" if cfg.get("qkv_bias", True) else "none"
    )
    arch["num_classes"] = _check_head(take, where)
    out = _apply_import(name_rules("timesformer", n, qkv_bias=arch["qkv_bias"]), take)
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
    except (VidtokError, ValueError) as e:  # unknown registry name, or an architecture the registry entry rejects
        raise CheckpointError(f"{where}: cannot build vidtok model {model_name!r}: {one_line(str(e))}") from None
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


# ---------------------------------------------------------------------------------------------------------------------
# Export: a vidtok model -> a Hugging Face folder (config.json, model.safetensors, preprocessor_config.json).

_HF_ACTS = {v: k for k, v in reversed(_ACTS.items())}  # vidtok act -> the first HF name mapping to it


def _refuse(name: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"{name}: {what} has no transformers counterpart; `convert --to hf` writes ViViT Model 1, VideoMAE and "
        "TimeSformer models"
    )


def hf_arch_of(model: nn.Module) -> str:
    """The HF architecture ``model`` is (``vivit`` | ``videomae`` | ``timesformer``), or a one-line
    :class:`CheckpointError` naming what transformers cannot express."""
    from vidtok.models.layers.attention import Attention

    name = getattr(model, "model_name", None) or type(model).__name__
    if not all(hasattr(model, a) for a in ("attn_type", "class_token", "pos_embed", "blocks")):
        raise CheckpointError(f"{name}: not a vidtok ViViT model")
    if getattr(model, "reducer", None) is not None:
        raise _refuse(name, f"token reducer {model.reducer.kind!r}")
    if any(not isinstance(getattr(b, "mixer", nn.Identity()), nn.Identity) for b in model.blocks):
        raise _refuse(name, "TokShift (token_mixer='tokshift')")
    kinds = {"fe": "Model 2, factorised encoder", "fdp": "Model 4, factorised dot-product attention",
             "space": "frame-wise attention"}  # fmt: skip
    if model.attn_type in kinds:
        raise _refuse(name, f"attn_type={model.attn_type!r} ({kinds[model.attn_type]})")
    blk = model.blocks[0]
    found = {
        "attn_type": model.attn_type,
        "class_token": model.class_token,
        "pos_embed": model.pos_embed.kind,
        "pool": model.pool,
    }
    if model.use_fc_norm:
        found.update(fc_norm=True, fc_norm_eps=float(model.fc_norm.eps))
    if model.attn_type == "fsa":
        found.update(attn_order=blk.order, temporal_proj=blk.proj_t is not None)
    matches = [a for a, layout in LAYOUTS.items() if found == layout]
    if not matches:
        what = ", ".join(f"{k}={v!r}" for k, v in found.items())
        if model.attn_type == "fsa":
            raise _refuse(name, f"factorised self-attention in this form ({what}; TimeSformer is time_space with "
                                "temporal_proj and a global class token)")  # fmt: skip
        raise _refuse(name, f"this layout ({what})")
    arch = matches[0]
    prefix = model.pos_embed.num_prefix
    if arch != "videomae" and prefix != 1:
        raise _refuse(name, "a class token without a positional embedding (pos_embed_cls=False)")
    if model.num_classes < 1:
        raise CheckpointError(f"{name}: no classifier head (num_classes=0); HF video classifiers need one")
    t, ph, pw = model.patch_embed.tubelet_size
    if ph != pw or model.img_size[0] != model.img_size[1]:
        raise _refuse(name, f"a non-square input or patch (img_size={model.img_size}, tubelet={(t, ph, pw)})")
    if arch == "timesformer" and t != 1:
        raise _refuse(name, f"TimeSformer with {t}-frame tubelets (HF TimeSformer embeds single frames)")
    act = blk.mlp.act_name
    if act not in _HF_ACTS:
        raise _refuse(name, f"the MLP activation {act!r}")
    modes = {m.qkv_bias_mode for m in model.modules() if isinstance(m, Attention)}
    allowed = {"vivit": {"all", "none"}, "videomae": {"qv", "none"}, "timesformer": {"all", "none"}}[arch]
    if len(modes) != 1 or not modes <= allowed:
        raise _refuse(name, f"qkv_bias={sorted(modes)} in a {arch} model")
    return arch


def hf_config(model: nn.Module, arch: str) -> dict[str, Any]:
    """``config.json`` of the HF model ``model`` converts to (the inverse of :func:`_common_arch` and the mappers)."""
    from vidtok.models.hub import make_pretrained_cfg

    blk = model.blocks[0]
    t, p, _ = model.patch_embed.tubelet_size
    n = model.num_classes
    names = list(make_pretrained_cfg(model).get("class_names") or [])
    if len(names) != n:
        names = [f"LABEL_{i}" for i in range(n)]
    bias = blk.attn.qkv_bias_mode
    cfg: dict[str, Any] = {
        "model_type": arch,
        "architectures": [_HF_CLASSES[arch]],
        "hidden_size": model.embed_dim,
        "num_hidden_layers": model.depth,
        "num_attention_heads": blk.attn.num_heads,
        "intermediate_size": blk.mlp.fc1.out_features,
        "hidden_act": _HF_ACTS[blk.mlp.act_name],
        "layer_norm_eps": float(blk.norm1.eps),
        "image_size": int(model.img_size[0]),
        "num_frames": int(model.num_frames),
        "num_channels": int(model.patch_embed.in_chans),
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "id2label": {str(i): c for i, c in enumerate(names)},
        "label2id": {c: i for i, c in enumerate(names)},
    }
    if arch == "vivit":
        cfg.update(tubelet_size=[t, p, p], qkv_bias=bias == "all")
    elif arch == "videomae":
        cfg.update(patch_size=p, tubelet_size=t, qv_bias=bias == "qv", use_mean_pooling=True)
    else:
        cfg.update(patch_size=p, attention_type="divided_space_time", qkv_bias=bias == "all")
    return cfg


def hf_preprocessor_config(model: nn.Module, arch: str) -> dict[str, Any]:
    """``preprocessor_config.json``: vidtok's preprocessing in HF image-processor terms (x / 255, mean, std)."""
    from vidtok.models.hub import make_pretrained_cfg

    pc = make_pretrained_cfg(model)
    crop = int(pc["crop_size"])
    cfg = {
        "image_processor_type": "VivitImageProcessor" if arch == "vivit" else "VideoMAEImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": int(pc["short_side"])},
        "resample": 2,  # PIL bilinear
        "do_center_crop": True,
        "crop_size": {"height": crop, "width": crop},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pc["mean"]),
        "image_std": list(pc["std"]),
    }
    if arch == "vivit":
        cfg["offset"] = False  # vidtok's [-1, 1] comes from mean = std = 0.5 after x / 255
    return cfg


def export_hf(model: nn.Module, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a Hugging Face folder (``save_pretrained`` layout) that transformers loads with
    ``*ForVideoClassification.from_pretrained(out)``.

    Args:
        model: a vidtok ViViT Model 1, VideoMAE or TimeSformer model (anything else: a one-line CheckpointError).
        out: the folder to write (created; an existing non-empty folder needs ``overwrite``).
        overwrite: replace the files of an existing folder.

    Returns:
        The folder.
    """
    import json

    from safetensors.torch import save_file

    out = Path(out)
    arch = hf_arch_of(model)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise CheckpointError(f"{out}: exists{'' if out.is_dir() else ' and is not a folder'}; pass --overwrite")
    state = _apply_export(
        name_rules(arch, model.depth, qkv_bias=model.blocks[0].attn.qkv_bias_mode), model.state_dict()
    )
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(model, arch), indent=2) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps(hf_preprocessor_config(model, arch), indent=2) + "\n")
    return out
