"""AdamW parameter groups (no weight decay on norms / biases / embeddings / tokens, layer-wise lr decay) and the
per-step warmup + cosine learning-rate schedule.

The schedule is a plain function of the optimizer step (nanoGPT's ``get_lr``), so resuming needs only the step
number; :func:`set_lr` writes ``lr * group["lr_scale"]`` into every group (MAE / BEiT layer decay).

Example::

    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    for step in range(total):
        set_lr(opt, cosine_lr(step, base_lr=1e-3, min_lr=1e-6, warmup_steps=100, total_steps=total))
        ...
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer", "cosine_lr", "set_lr"]


def _no_decay_names(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    names = set(fn()) if callable(fn) else set()
    return names


def param_groups(
    model: nn.Module, *, weight_decay: float, layer_decay: float = 1.0, skip: set[str] | None = None
) -> list[dict]:
    """Split trainable parameters into AdamW groups.

    No weight decay for every parameter with ``ndim <= 1`` (norm weights, biases, 1-D tokens) and for the names in
    ``model.no_weight_decay()`` (positional embeddings, CLS / learned tokens) or ``skip``. A name in the no-decay
    set also matches its sub-parameters (``"pos_embed"`` covers ``"pos_embed.weight"``).

    With ``layer_decay < 1`` the groups are further split by ``model.get_layer_id(name)`` (0 = embeddings,
    i + 1 = block i, ``num_layers + 1`` = head) and get ``lr_scale = layer_decay ** (num_layers + 1 - layer_id)``,
    so the head learns at the full rate and the embeddings at the smallest (BEiT / MAE fine-tuning).

    Args:
        model: the module (unwrapped, not DDP).
        weight_decay: decoupled weight decay for the decayed groups.
        layer_decay: per-layer lr multiplier; 1.0 turns it off.
        skip: extra parameter names to exclude from weight decay.

    Returns:
        List of dicts with ``params``, ``weight_decay``, ``lr_scale`` and ``names`` (for inspection).
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    no_decay = _no_decay_names(model) | set(skip or ())
    use_layers = layer_decay < 1.0
    if use_layers:
        if not (hasattr(model, "get_layer_id") and hasattr(model, "num_layers")):
            raise ValueError(
                f"layer_decay={layer_decay} needs model.get_layer_id() and model.num_layers "
                f"({type(model).__name__} has neither)"
            )
        num_layers = int(model.num_layers)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        excluded = p.ndim <= 1 or any(name == n or name.startswith(n + ".") for n in no_decay)
        layer_id = int(model.get_layer_id(name)) if use_layers else 0
        key = (layer_id, not excluded)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - layer_id) if use_layers else 1.0
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if not excluded else 0.0,
                "lr_scale": scale,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    layer_decay: float = 1.0,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. ``lr`` is the peak rate; :func:`set_lr` applies the schedule per step."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    groups = param_groups(model, weight_decay=weight_decay, layer_decay=layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    kwargs: dict = {}
    if fused is None:
        # fused AdamW is faster on CUDA; on CPU the foreach path is the tested default.
        fused = all(p.is_cuda for g in groups for p in g["params"]) and bool(groups)
    if fused:
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, **kwargs)


def cosine_lr(step: int, *, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at optimizer ``step`` (0-based): linear warmup from ~0 to ``base_lr`` over ``warmup_steps``,
    then half a cosine down to ``min_lr`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    span = max(1, total_steps - warmup_steps)
    ratio = (step - warmup_steps) / span
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (base_lr - min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr * group["lr_scale"]`` (lr_scale defaults to 1)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
