"""Video backbones: ViViT (Models 1-4), TimeSformer-style divided attention, TokShift and the vidtok family.

``create_model(name, **overrides)`` builds a registered model, ``list_models()`` names them, ``load_model(path)``
opens a vidtok checkpoint (:mod:`vidtok.models.hub`) and ``describe_model(name)`` reports parameters and FLOPs.
"""

from __future__ import annotations

from typing import Any

from vidtok.models.registry import create_model, is_model, list_models, register_model

__all__ = [
    "create_model",
    "list_models",
    "register_model",
    "is_model",
    "load_model",
    "describe_model",
    "count_params",
    "count_macs",
]


def load_model(path: Any, **kwargs: Any) -> Any:
    """Open a vidtok checkpoint file or run folder (see :func:`vidtok.models.hub.load_model`)."""
    from vidtok.models.hub import load_model as _load

    return _load(path, **kwargs)


def count_params(model: Any) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: Any, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on an input of ``input_shape`` (``torch.utils.flop_counter`` / 2).

    Runs on the model's device; a model built on the ``meta`` device is counted without allocating memory.
    Attention is counted through the math backend (two matmuls per head), the papers' and fvcore's convention.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vidtok.models.layers.attention import Attention

    dev = next(model.parameters()).device
    saved = [(m, m.backend) for m in model.modules() if isinstance(m, Attention)]
    was_training = model.training
    try:
        for m, _ in saved:
            m.backend = "math"
        model.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(input_shape, device=dev))
    finally:
        for m, b in saved:
            m.backend = b
        model.train(was_training)
    return counter.get_total_flops() // 2


def describe_model(name: str, model_cfg: Any = None) -> dict[str, str]:
    """Parameters, FLOPs (multiply-adds) and input shape of a registered model, as printable strings.

    Args:
        name: registry name.
        model_cfg: optional :class:`~vidtok.config.ModelConfig`; its ``num_classes``, ``num_frames``, ``img_size``
            and ``extra`` override the model's defaults (as in a training run).
    """
    import torch

    kwargs: dict[str, Any] = {}
    if model_cfg is not None:
        kwargs = dict(
            num_classes=model_cfg.num_classes, num_frames=model_cfg.num_frames, img_size=model_cfg.img_size,
            **dict(model_cfg.extra or {}),
        )  # fmt: skip
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    T = model.num_frames
    H, W = model.img_size
    shape = (1, model.patch_embed.in_chans, T, H, W)
    macs = count_macs(model, shape)
    n = count_params(model)
    grid = model.grid
    prefix = {"global": " + 1 class token", "frame": f" + {grid[0]} per-slice class tokens", "none": ""}
    tokens = f"{grid[0]}×{grid[1]}×{grid[2]} = {grid[0] * grid[1] * grid[2]}{prefix[model.class_token]}"
    red = model.reducer  # a vidtok.models.reducers kind (TokenLearner, ATS, DynamicViT, ...) or None
    if red is not None:
        where = "on the embedding" if red.at_embed else "before block " + ", ".join(map(str, red.at_blocks))
        tokens += f"; {red.kind} ({red.extra_repr()}) {where}"
    return {
        "model": name,
        "params": f"{n / 1e6:.2f} M ({n:,})",
        "flops": f"{macs / 1e9:.1f} G multiply-adds",
        "input": "×".join(str(d) for d in shape) + " (B, C, T, H, W)",
        "tokens": tokens,
        "attention": f"{model.attn_type}" + (f" → {model.reduced_attn_type}" if model.token_reducer else ""),
        "preprocessing": f"mean={model.pretrained_cfg.get('mean')} std={model.pretrained_cfg.get('std')}",
    }
