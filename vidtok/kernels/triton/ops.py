"""Launchers and the autograd wrapper for the space-time attention Triton kernels.

GPU tensors run the compiled kernels; CPU tensors run the very same kernel source under Triton's interpreter
(NumPy, one program at a time: slow, for tests and correctness checks only; no bf16 there).
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from vidtok.kernels.triton import _kernels

SUPPORTED_HEAD_DIMS = (32, 64, 96, 128)
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_LOG2E = 1.4426950408889634
_MAX_SPAN = 2**31 - 1  # kernels index with int32 offsets


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and launch shape for one kernel (fixed per dtype / head dim; chosen to avoid register spills)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def block_d(head_dim: int) -> int:
    """Head dim padded to a power of two (96 -> 128; the pad lanes are masked)."""
    return max(16, 1 << (head_dim - 1).bit_length())


def fwd_config(dtype: torch.dtype, head_dim: int) -> LaunchConfig:
    # fp32 products run on FMA units (no tensor cores in "ieee" mode): small tiles, more warps for wide heads.
    if dtype == torch.float32:
        return LaunchConfig(32, 32, 4 if head_dim <= 32 else 8, 2)
    if head_dim <= 32:
        return LaunchConfig(128, 64, 4, 3)
    return LaunchConfig(128, 64, 8, 3 if head_dim <= 64 else 2)


def bwd_config(dtype: torch.dtype, head_dim: int) -> LaunchConfig:
    """Shared by the dK/dV and the dQ kernels (block_m = queries, block_n = keys)."""
    if dtype == torch.float32:
        return LaunchConfig(32, 32, 4 if head_dim <= 64 else 8, 1)
    if head_dim <= 32:
        return LaunchConfig(64, 64, 4, 2)
    return LaunchConfig(64, 64, 8, 2 if head_dim <= 64 else 1)


def delta_config(head_dim: int) -> LaunchConfig:
    return LaunchConfig(64, 0, 4, 1)


def time_config(dtype: torch.dtype, head_dim: int, backward: bool) -> LaunchConfig:
    """Packed short-T kernels: block_m = rows per program (BLOCK_G * T_P); longer T go to the long kernels."""
    if dtype == torch.float32:
        if backward and head_dim > 64:
            return LaunchConfig(16, 0, 8, 1)
        return LaunchConfig(32, 0, 4 if head_dim <= 64 else 8, 1)
    return LaunchConfig(64, 0, 8 if (backward and head_dim > 32) else 4, 1)


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs use exact fp32 products unless PyTorch's TF32 matmul switch is on (as torch.matmul does)."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def interpreting() -> bool:
    """Whether this process runs Triton in interpreter mode (``TRITON_INTERPRET=1`` before triton was imported).

    Triton decides this per process: ``triton.language``'s own helpers (``tl.zeros``, ``tl.sum``, ...) are wrapped
    for the interpreter or the compiler when triton is imported, so the mode cannot be switched per call.
    """
    import triton

    return bool(triton.knobs.runtime.interpret)


@functools.cache
def _kernels_for(interpret: bool) -> SimpleNamespace:
    import triton

    if bool(triton.knobs.runtime.interpret) != interpret:
        raise RuntimeError(f"Triton interpreter mode is {not interpret}, asked for kernels with interpret={interpret}")
    return SimpleNamespace(**{fn.__name__: triton.jit(fn) for fn in _kernels.KERNELS})


def kernels() -> SimpleNamespace:
    """The kernel bodies wrapped by ``triton.jit`` (compiled, or interpreted under ``TRITON_INTERPRET=1``)."""
    return _kernels_for(interpreting())


def _span(x: torch.Tensor) -> int:
    return 1 + sum((n - 1) * abs(s) for n, s in zip(x.shape, x.stride(), strict=True) if n > 0)


def supports(q: torch.Tensor) -> bool:
    """Whether the kernels take this input: dtype, head dim, device (CUDA sm80+, or CPU under
    ``TRITON_INTERPRET=1`` except bf16) and int32-addressable size."""
    if q.dim() != 5 or q.dtype not in SUPPORTED_DTYPES or q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return False
    if q.is_cuda:
        if torch.cuda.get_device_capability(q.device) < (8, 0):
            return False
    elif q.device.type != "cpu" or q.dtype == torch.bfloat16 or not interpreting():
        return False
    return _span(q) <= _MAX_SPAN


def why_unsupported(q: torch.Tensor) -> str:
    if q.dim() != 5:
        return f"expected a 5-d (B, T, S, H, Dh) tensor, got {q.dim()}-d"
    if q.dtype not in SUPPORTED_DTYPES:
        return f"dtype {q.dtype} not in {SUPPORTED_DTYPES}"
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return f"head dim {q.shape[-1]} not in {SUPPORTED_HEAD_DIMS}"
    if q.is_cuda and torch.cuda.get_device_capability(q.device) < (8, 0):
        return f"GPU capability {torch.cuda.get_device_capability(q.device)} < (8, 0)"
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        return "bf16 is not supported by the Triton interpreter on CPU (it silently computes garbage)"
    if q.device.type == "cpu" and not interpreting():
        return "CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before triton is imported"
    if q.device.type not in ("cpu", "cuda"):
        return f"device {q.device} is neither CUDA nor CPU (interpreter)"
    return f"tensor spans more than {_MAX_SPAN} elements (int32 offsets)"


def seq_strides(stride: tuple[int, ...], axis: str) -> tuple[int, ...]:
    """(B, T, S, H[, Dh]) strides -> (b, g2, h, hi, lo[, d]) as the long kernels index them (see _kernels)."""
    sb, st, ss, sh = stride[:4]
    rest = tuple(stride[4:])
    if axis == "joint":
        return (sb, 0, sh, st, ss, *rest)
    if axis == "space":
        return (sb, st, sh, 0, ss, *rest)
    return (sb, ss, sh, 0, st, *rest)  # time


def _flat(axis: str, S: int, T: int, *xs: torch.Tensor) -> bool:
    """Joint axis: can the T·S sequence be walked with the S stride alone (t stride == S * s stride)?"""
    if axis != "joint":
        return True
    return T == 1 or all(x.stride(1) == S * x.stride(2) for x in xs)


def _problem(q: torch.Tensor, axis: str) -> tuple[int, int, int]:
    """(G2, L, L_LO) for the long kernels."""
    B, T, S, H, Dh = q.shape
    if axis == "joint":
        return 1, T * S, S
    if axis == "space":
        return T, S, S
    return S, T, T


def _lse_buffer(q: torch.Tensor) -> torch.Tensor:
    return torch.empty(q.shape[:4], device=q.device, dtype=torch.float32)  # (B, T, S, H)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _use_short_time(axis: str, T: int, cfg: LaunchConfig) -> bool:
    """Short "time" sequences whose padded length fits one packed tile (the shapes that are AOT-verified)."""
    return axis == "time" and _pow2(T) <= cfg.block_m


def _short_time_launch(q: torch.Tensor, axis: str, *, backward: bool) -> tuple[LaunchConfig, int, int, int] | None:
    """Launch geometry of the packed ``*_time_*`` kernels, ``(cfg, T_P, BLOCK_G, problems G)``, when they apply."""
    B, T, S, H, Dh = q.shape
    cfg = time_config(q.dtype, Dh, backward=backward)
    if not _use_short_time(axis, T, cfg):
        return None
    t_p = _pow2(T)
    return cfg, t_p, max(1, cfg.block_m // t_p), B * S * H


def attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, axis: str, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the forward kernel; returns ``o`` (B, T, S, H, Dh) contiguous and the base-2 ``lse`` (B, T, S, H)."""
    B, T, S, H, Dh = q.shape
    o = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    lse = _lse_buffer(q)
    kn = kernels()
    prec = dot_precision(q.dtype)
    bd = block_d(Dh)
    packed = _short_time_launch(q, axis, backward=False)
    if packed is not None:
        cfg, t_p, block_g, G = packed
        kn.attn_time_fwd[(triton_cdiv(G, block_g),)](
            q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(), *lse.stride(),
            T, S, H, G, scale * _LOG2E,
            BLOCK_G=block_g, T_P=t_p, BLOCK_D=bd, HEAD_DIM=Dh, DOT_PREC=prec,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )  # fmt: skip
        return o, lse
    cfg = fwd_config(q.dtype, Dh)
    G2, L, L_LO = _problem(q, axis)
    grid = (B * G2 * H, triton_cdiv(L, cfg.block_m))
    kn.attn_fwd[grid](
        q, k, v, o, lse,
        *seq_strides(q.stride(), axis), *seq_strides(k.stride(), axis), *seq_strides(v.stride(), axis),
        *seq_strides(o.stride(), axis), *seq_strides(lse.stride(), axis),
        H, G2, L, L_LO, scale * _LOG2E,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=bd, HEAD_DIM=Dh, FLAT=_flat(axis, S, T, q, k, v),
        DOT_PREC=prec, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return o, lse


def attention_backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    axis: str,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv), each (B, T, S, H, Dh) contiguous in q's dtype."""
    B, T, S, H, Dh = q.shape
    dq = torch.empty_like(o)
    dk = torch.empty_like(o)
    dv = torch.empty_like(o)
    kn = kernels()
    prec = dot_precision(q.dtype)
    bd = block_d(Dh)
    packed = _short_time_launch(q, axis, backward=True)
    if packed is not None:
        cfg, t_p, block_g, G = packed
        kn.attn_time_bwd[(triton_cdiv(G, block_g),)](
            q, k, v, o, do, dq, dk, dv, lse,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *o.stride(), *lse.stride(),
            T, S, H, G, scale * _LOG2E, scale,
            BLOCK_G=block_g, T_P=t_p, BLOCK_D=bd, HEAD_DIM=Dh, DOT_PREC=prec,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )  # fmt: skip
        return dq, dk, dv
    G2, L, L_LO = _problem(q, axis)
    P = B * G2 * H
    so = seq_strides(o.stride(), axis)
    sl = seq_strides(lse.stride(), axis)
    sdo = seq_strides(do.stride(), axis)
    flat = _flat(axis, S, T, q, k, v, do)
    delta = torch.empty_like(lse)
    dcfg = delta_config(Dh)
    kn.attn_bwd_delta[(P, triton_cdiv(L, dcfg.block_m))](
        o, do, delta, *so, *sdo, *sl, H, G2, L, L_LO,
        BLOCK_M=dcfg.block_m, BLOCK_D=bd, HEAD_DIM=Dh, FLAT=_flat(axis, S, T, do),
        num_warps=dcfg.num_warps, num_stages=dcfg.num_stages,
    )  # fmt: skip
    cfg = bwd_config(q.dtype, Dh)
    common = (
        *seq_strides(q.stride(), axis), *seq_strides(k.stride(), axis), *seq_strides(v.stride(), axis),
        *sdo, *so, *sl, H, G2, L, L_LO, scale * _LOG2E, scale,
    )  # fmt: skip
    meta = dict(
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=bd, HEAD_DIM=Dh, FLAT=flat, DOT_PREC=prec,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    kn.attn_bwd_dkdv[(P, triton_cdiv(L, cfg.block_n))](q, k, v, do, dk, dv, lse, delta, *common, **meta)
    kn.attn_bwd_dq[(P, triton_cdiv(L, cfg.block_m))](q, k, v, do, dq, lse, delta, *common, **meta)
    return dq, dk, dv


def _device_of(x: torch.Tensor):
    """Launch on x's GPU (triton launches on the *current* device), a no-op for CPU tensors."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class SpacetimeAttentionFn(torch.autograd.Function):
    """Fused attention along one axis of (B, T, S, H, Dh); saves q, k, v, o and the logsumexp for backward."""

    @staticmethod
    def forward(ctx, q, k, v, axis: str, scale: float):  # noqa: D102
        with _device_of(q):
            o, lse = attention_forward(q, k, v, axis, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.axis = axis
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, do):  # noqa: D102
        q, k, v, o, lse = ctx.saved_tensors
        with _device_of(q):
            dq, dk, dv = attention_backward(do, q, k, v, o, lse, ctx.axis, ctx.scale)
        return dq, dk, dv, None, None


def spacetime_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, axis: str, scale: float | None = None
) -> torch.Tensor:
    """Fused attention along ``axis`` of ``(B, T, S, H, Dh)`` q, k, v (any strides); output contiguous.

    Raises:
        ValueError: the input is not supported (message says why); see :func:`supports`.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not supports(x):
            raise ValueError(f"triton attention: {name} not supported: {why_unsupported(x)}")
    if k.dtype != q.dtype or v.dtype != q.dtype or k.device != q.device or v.device != q.device:
        raise ValueError(f"triton attention: q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"triton attention: scale must be finite, got {scale}")
    if q.numel() == 0:
        return torch.empty(q.shape, device=q.device, dtype=q.dtype).requires_grad_(q.requires_grad)
    return SpacetimeAttentionFn.apply(q, k, v, axis, scale)
