"""Where a job runs and in which precision: the one device resolver and the one autocast helper of vidtok.

::

    "auto" | "cpu" | "cuda[:N]" | "mps"  ──resolve_device──►  torch.device   (auto: cuda:LOCAL_RANK if CUDA, else cpu)
    "none" | "bf16" | "fp16" | "auto"    ──amp_dtype──────►  torch.dtype | None   (checked against the device)
    device, amp                          ──autocast───────►  context manager around the forward pass

Training, evaluation, ``classify`` / ``embed``, ``viz`` and the CLI all call these, so a device string means the same
thing everywhere and a bad one gives the same one-line :class:`~vidtok.errors.ConfigError` naming the option.
"""

from __future__ import annotations

import contextlib
import os

import torch

from vidtok.errors import ConfigError

__all__ = ["resolve_device", "amp_dtype", "autocast", "AMP_CHOICES"]

AMP_CHOICES = ("auto", "none", "bf16", "fp16")


def resolve_device(
    device: str | torch.device, local_rank: int | None = None, *, key: str = "train.device"
) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; otherwise the given device, checked.

    Args:
        device: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (a ``torch.device`` passes through the same checks).
        local_rank: the process's GPU slot for ``auto`` / bare ``cuda`` (default: ``$LOCAL_RANK`` as torchrun sets it,
            else 0).
        key: the option or config key named in errors.

    Raises:
        ConfigError: unknown device, or one this machine does not have.
    """
    from vidtok.config import check_device

    if local_rank is None:
        try:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            local_rank = 0
    device = str(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
        return torch.device("cpu")
    d = torch.device(check_device(device, key))
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: '{device}' requested but this machine has no CUDA device (use cpu or auto)", key=key)
    if d.type == "cuda" and d.index is None:
        d = torch.device(f"cuda:{local_rank}")
    if d.type == "cuda" and d.index >= torch.cuda.device_count():
        raise ConfigError(
            f"{key}: '{device}' requested but there are {torch.cuda.device_count()} CUDA devices", key=key
        )
    if d.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{key}: '{device}' requested but MPS is not available", key=key)
    return d


def amp_dtype(amp: str, device: torch.device, *, key: str = "amp") -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (None = full precision).

    ``auto`` picks bf16 on GPUs that support it and full precision elsewhere (on most CPUs bf16 is slower than fp32);
    ``fp16`` needs CUDA.

    Raises:
        ConfigError: unknown setting, or fp16 off CUDA.
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"{key}: unknown value {amp!r} (choose one of: {', '.join(AMP_CHOICES)})", key=key)
    if amp == "none":
        return None
    if amp == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}: fp16 needs a CUDA device (use bf16 on CPU)", key=key)
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, amp: str | torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` (a setting or a dtype from :func:`amp_dtype`); a no-op for full precision."""
    dtype = amp_dtype(amp, device) if isinstance(amp, str) else amp
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
