"""Space-time attention on ``(B, T, S, H, Dh)`` tensors with interchangeable backends.

``spacetime_attention(q, k, v, axis=..., backend=...)`` is the one entry point models use:

* ``axis="joint"``: every token attends to all ``T·S`` tokens (ViViT Model 1);
* ``axis="time"``: each spatial position attends over ``T`` (factorised temporal attention);
* ``axis="space"``: each frame's ``S`` tokens attend among themselves.

Backends: ``math`` (float32 reference, the oracle), ``sdpa`` (PyTorch's fused
``scaled_dot_product_attention`` after folding the non-attended axis into the batch; FlashAttention /
memory-efficient kernels on CUDA), ``triton`` (our fused kernels that read the strided layout directly, see
``vidtok.kernels.triton``) and ``auto`` (triton on CUDA when available and the shape is supported, else sdpa).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidtok.kernels.reference import attention_math

__all__ = ["spacetime_attention", "available_backends", "resolve_backend", "AXES", "BACKENDS"]

AXES = ("joint", "time", "space")
BACKENDS = ("auto", "triton", "sdpa", "math")


def _fold(x: torch.Tensor, axis: str) -> torch.Tensor:
    """(B, T, S, H, Dh) -> (batch', H, N, Dh) with the attended axis as N."""
    B, T, S, H, Dh = x.shape
    if axis == "joint":
        return x.reshape(B, T * S, H, Dh).transpose(1, 2)  # (B, H, T·S, Dh)
    if axis == "time":
        return x.permute(0, 2, 3, 1, 4).reshape(B * S, H, T, Dh)  # (B·S, H, T, Dh)
    return x.permute(0, 1, 3, 2, 4).reshape(B * T, H, S, Dh)  # (B·T, H, S, Dh)


def _unfold(y: torch.Tensor, axis: str, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`_fold`: (batch', H, N, Dh) -> (B, T, S, H, Dh)."""
    B, T, S, H, Dh = shape
    if axis == "joint":
        return y.transpose(1, 2).reshape(B, T, S, H, Dh)
    if axis == "time":
        return y.reshape(B, S, H, T, Dh).permute(0, 3, 1, 2, 4)  # (B, T, S, H, Dh)
    return y.reshape(B, T, H, S, Dh).permute(0, 1, 3, 2, 4)  # (B, T, S, H, Dh)


def _triton_status() -> tuple[bool, str]:
    """Whether our Triton kernels can run here, and why not. Never probes the driver at import time."""
    try:
        from vidtok.kernels import triton as _tk  # noqa: F401
    except ImportError as e:
        return False, f"triton kernels unavailable ({e})"
    return _tk.is_available()


def available_backends() -> list[str]:
    """Backends that can run on this machine (``math`` and ``sdpa`` always; ``triton`` if importable)."""
    out = ["sdpa", "math"]
    if _triton_status()[0]:
        out.insert(0, "triton")
    return out


def resolve_backend(backend: str, q: torch.Tensor | None = None) -> str:
    """The concrete backend ``backend`` stands for, given the input (``auto`` -> triton on CUDA, else sdpa)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if q is not None and q.is_cuda and _triton_status()[0]:
        from vidtok.kernels import triton as _tk

        if _tk.supports(q):
            return "triton"
    return "sdpa"


def spacetime_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    axis: str = "joint",
    backend: str = "auto",
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention along ``axis`` of ``(B, T, S, H, Dh)`` tensors.

    Args:
        q, k, v: ``(B, T, S, H, Dh)``; may be non-contiguous views (e.g. slices of a fused QKV projection).
        axis: ``"joint"`` (all T·S tokens), ``"time"`` (over T per spatial position) or ``"space"`` (over S per
            frame).
        backend: ``"auto"``, ``"triton"``, ``"sdpa"`` or ``"math"``.
        scale: softmax scale; defaults to ``Dh ** -0.5``.

    Returns:
        ``(B, T, S, H, Dh)`` in q's dtype.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    if q.dim() != 5 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must share a (B, T, S, H, Dh) shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    name = resolve_backend(backend, q)
    if name == "triton":
        from vidtok.kernels import triton as _tk

        return _tk.spacetime_attention_triton(q, k, v, axis=axis, scale=scale)
    qf, kf, vf = _fold(q, axis), _fold(k, axis), _fold(v, axis)
    if name == "sdpa":
        out = F.scaled_dot_product_attention(qf, kf, vf, scale=scale)
    else:
        out = attention_math(qf, kf, vf, scale=scale)
    return _unfold(out, axis, q.shape)
