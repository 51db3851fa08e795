"""Checkpoint import: HuggingFace video classifiers and 2D ViT inflation → vidtok checkpoints.

``convert(src, out)`` picks the path from what ``src`` is (``arch="auto"``): a folder (or a file) with a
``config.json`` of model_type vivit / videomae / timesformer goes through :mod:`vidtok.convert.hf`; a bare 2D ViT
state dict (torchvision ``vit_b_16`` or timm ``vit_base_patch16_224`` layout) through :mod:`vidtok.convert.vit2d`.
The result is one ``.safetensors`` file that :func:`vidtok.load_model` opens.

``convert_to_hf(ckpt, out)`` is the reverse direction: a vidtok checkpoint → a Hugging Face folder, through the
same name table (:func:`vidtok.convert.hf.name_rules`) read right to left.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["convert", "convert_to_hf", "CONVERT_ARCHS"]

CONVERT_ARCHS = ("auto", "vivit", "videomae", "timesformer", "vit2d")


def _looks_hf(src: Path) -> bool:
    """A transformers checkpoint: config.json with a ``model_type`` (timm folders have config.json without one)."""
    from vidtok.convert._io import read_json

    cfg = (src if src.is_dir() else src.parent) / "config.json"
    return cfg.is_file() and "model_type" in read_json(cfg)


def _refuse_vidtok_checkpoint(src: Path) -> None:
    """A vidtok checkpoint (or run folder) needs no conversion: say so instead of guessing it is a 2D ViT."""
    from vidtok.errors import CheckpointError
    from vidtok.models.hub import read_header_metadata

    files = [src] if src.is_file() else [src / "model.safetensors"]
    for f in files:
        meta = read_header_metadata(f)
        if meta.get("format") == "vidtok":
            try:
                name = json.loads(meta.get("model", "{}")).get("name", "")
            except (ValueError, AttributeError):
                name = ""
            raise CheckpointError(
                f"{f}: already a vidtok checkpoint{f' ({name})' if name else ''}; use it as it is "
                "(--checkpoint / vidtok.load_model), there is nothing to convert"
            )


def convert(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    arch: str = "auto",
    model_name: str | None = None,
    num_frames: int | None = None,
    img_size: int | None = None,
    num_classes: int | None = None,
    tubelet_init: str = "central",
    num_heads: int | None = None,
    pretrained_cfg: dict[str, Any] | None = None,
) -> Path:
    """Convert ``src`` and write a vidtok checkpoint to ``out``.

    Args:
        src: HF model folder / weight file (with config.json beside it), or a 2D ViT state dict file.
        out: the ``.safetensors`` file to write.
        arch: one of :data:`CONVERT_ARCHS`.
        model_name: vidtok registry name to build on (required for ``vit2d``; HF defaults per architecture).
        num_frames, img_size, num_classes, tubelet_init, num_heads: ``vit2d`` only (see
            :func:`vidtok.convert.vit2d.inflate_vit2d`).
        pretrained_cfg: preprocessing / class-name overrides stored in the checkpoint.

    Returns:
        The written path.
    """
    from vidtok.errors import CheckpointError
    from vidtok.models.hub import save_model

    if arch not in CONVERT_ARCHS:
        raise CheckpointError(f"arch must be one of {CONVERT_ARCHS}, got {arch!r}")
    src = Path(src)
    if not src.exists():
        raise CheckpointError(f"{src}: no such file or directory")
    _refuse_vidtok_checkpoint(src)
    if arch == "vit2d" or (arch == "auto" and not _looks_hf(src)):
        from vidtok.convert._io import find_weight_files, read_state_dict
        from vidtok.convert.vit2d import inflate_vit2d

        files = find_weight_files(src) if src.is_dir() else [src]  # a timm Hub folder holds model.safetensors
        model = inflate_vit2d(
            read_state_dict(files),
            model_name=model_name,
            num_frames=num_frames,
            img_size=img_size,
            num_classes=num_classes,
            tubelet_init=tubelet_init,
            num_heads=num_heads,
            where=src,
        )
    else:
        from vidtok.convert.hf import convert_hf

        ignored = {"num_frames": num_frames, "img_size": img_size, "num_classes": num_classes, "num_heads": num_heads}
        bad = [k for k, v in ignored.items() if v is not None]
        if bad:
            raise CheckpointError(f"{src}: {', '.join(bad)} only apply to --arch vit2d (HF configs fix them)")
        model, _ = convert_hf(src, arch=arch, model_name=model_name)
    return save_model(model, out, pretrained_cfg=pretrained_cfg)


def convert_to_hf(
    src: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False, class_names: list[str] | None = None
) -> Path:
    """The reverse direction: a vidtok checkpoint (ViViT Model 1, VideoMAE or TimeSformer) → a Hugging Face folder
    (config.json, model.safetensors, preprocessor_config.json) that transformers' ``from_pretrained`` loads.

    TokenLearner, TokShift, other token reducers and factorised models have no transformers counterpart and are
    refused with one line (:func:`vidtok.convert.hf.hf_arch_of`).
    """
    from vidtok.convert.hf import export_hf
    from vidtok.models.hub import load_model

    model = load_model(src)
    if class_names:
        model.pretrained_cfg["class_names"] = list(class_names)
    return export_hf(model, out, overwrite=overwrite)
