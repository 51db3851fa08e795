"""Multi-head self-attention over a ``(B, T, S, D)`` token grid, through :func:`vidtok.kernels.spacetime_attention`.

One fused QKV projection; q, k and v are strided *views* ``(B, T, S, H, Dh)`` of its output (no layout copies),
and the attended axis is a parameter:

    x (B, T, S, D) ─qkv─► (B, T, S, 3, H, Dh) ─views─► q, k, v (B, T, S, H, Dh)
        ─spacetime_attention(axis)─► (B, T, S, H, Dh) ─reshape─► (B, T, S, D) ─proj─► out

``axis="joint"`` attends over all ``T·S`` tokens (a class token joins by passing ``T=1, S=N+1``), ``"time"`` over T
per spatial position, ``"space"`` over S per frame, and ``"fdp"`` is ViViT Model 4's factorised dot product: the
first half of the heads attends over space, the second half over time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidtok.kernels import spacetime_attention

__all__ = ["Attention", "QKV_BIAS_MODES", "ATTN_AXES", "weighted_attention"]

QKV_BIAS_MODES = ("all", "qv", "none")
ATTN_AXES = ("joint", "time", "space", "fdp")


def weighted_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Softmax attention with multiplicative key weights (DynamicViT's masked softmax), math path in float32.

    ``q, k, v`` ``(M, H, L, Dh)``, ``w`` ``(M, L)``: ``a_ij = exp(s_ij) G_ij / Σ_k exp(s_ik) G_ik`` with
    ``G_ij = w_j`` for ``i ≠ j`` and 1 on the diagonal (a masked token still attends to itself, so every row is
    defined). ``w`` may carry straight-through gradients; all ones equals plain attention.

    The softmax is stabilised by the row maximum over *kept* keys (``G > 0.5``) and masked keys' terms are capped at
    that maximum: values are unchanged (their weight is 0), but the straight-through gradient to a masked key's weight
    stays bounded (a masked key scoring far above every kept one would otherwise give ~1/Z ≫ 1 and blow up training).
    """
    s = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5  # (M, H, L, L)
    eye = torch.eye(s.shape[-1], device=s.device, dtype=s.dtype)
    g = w.float()[:, None, None, :] * (1 - eye) + eye  # (M, 1, L, L)
    m = s.masked_fill(g <= 0.5, float("-inf")).amax(-1, keepdim=True).detach()  # finite: the diagonal is kept
    e = (s - m).clamp(max=0).exp()
    a = e * g
    a = a / a.sum(-1, keepdim=True)
    return (a @ v.float()).to(v.dtype)


class Attention(nn.Module):
    """Fused-QKV multi-head attention along a space-time axis.

    Args:
        dim: token width D.
        num_heads: heads H (D must be divisible by H; for ``axis="fdp"`` H must be even).
        axis: ``"joint"``, ``"time"``, ``"space"`` or ``"fdp"``.
        qkv_bias: ``"all"`` (one bias on the fused projection), ``"qv"`` (separate ``q_bias`` and ``v_bias``, no key
            bias: VideoMAE / BEiT) or ``"none"``.
        proj_drop: dropout after the output projection.
        backend: :func:`~vidtok.kernels.spacetime_attention` backend.

    Parameters: ``qkv.weight`` ``(3D, D)`` (rows q, k, v; heads contiguous within each), ``qkv.bias`` or
    ``q_bias``/``v_bias``, ``proj.weight``, ``proj.bias``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        axis: str = "joint",
        qkv_bias: str | bool = "all",
        proj_drop: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if qkv_bias is True:
            qkv_bias = "all"
        elif qkv_bias is False:
            qkv_bias = "none"
        if qkv_bias not in QKV_BIAS_MODES:
            raise ValueError(f"qkv_bias must be one of {QKV_BIAS_MODES}, got {qkv_bias!r}")
        if axis not in ATTN_AXES:
            raise ValueError(f"axis must be one of {ATTN_AXES}, got {axis!r}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if axis == "fdp" and num_heads % 2:
            raise ValueError(f"factorised dot-product attention splits heads in two; num_heads={num_heads} is odd")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.axis = axis
        self.qkv_bias_mode = qkv_bias
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias == "all")
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        if self.qkv_bias_mode == "qv":
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])  # no key bias
            return F.linear(x, self.qkv.weight, bias)
        return self.qkv(x)

    def forward(
        self, x: torch.Tensor, *, return_attn: bool = False, key_weight: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, S, D)`` → ``(B, T, S, D)``.

        With ``return_attn`` (joint axis only), also the head-averaged attention weights ``(B, T·S, T·S)`` computed
        by the math path (for visualisation; slow and memory-hungry on long sequences).

        ``key_weight`` ``(B, T, S)`` in [0, 1] (token reducers: 0 = padding / pruned token) masks keys (joint and
        space axes): :func:`weighted_attention`, a math path (spacetime_attention has no mask argument).
        """
        B, T, S, D = x.shape
        H, Dh = self.num_heads, self.head_dim
        qkv = self._qkv(x).view(B, T, S, 3, H, Dh)  # (B, T, S, 3, H, Dh)
        q, k, v = qkv.unbind(3)  # each (B, T, S, H, Dh), strided views
        if key_weight is not None:
            if self.axis not in ("joint", "space"):
                raise ValueError(f"masked attention supports the joint and space axes, not {self.axis!r}")
            M, L = (B, T * S) if self.axis == "joint" else (B * T, S)
            qm, km, vm = (t.reshape(M, L, H, Dh).transpose(1, 2) for t in (q, k, v))  # (M, H, L, Dh)
            out = weighted_attention(qm, km, vm, key_weight.reshape(M, L)).transpose(1, 2)  # (M, L, H, Dh)
        elif self.axis == "fdp":
            h = H // 2
            o_s = spacetime_attention(q[..., :h, :], k[..., :h, :], v[..., :h, :], axis="space", backend=self.backend)
            o_t = spacetime_attention(q[..., h:, :], k[..., h:, :], v[..., h:, :], axis="time", backend=self.backend)
            out = torch.cat([o_s, o_t], dim=3)  # (B, T, S, H, Dh)
        else:
            out = spacetime_attention(q, k, v, axis=self.axis, backend=self.backend)  # (B, T, S, H, Dh)
        out = self.proj_drop(self.proj(out.reshape(B, T, S, D)))
        if not return_attn:
            return out
        if self.axis != "joint":
            raise ValueError(f"attention weights are only returned for joint attention, not axis={self.axis!r}")
        qf = q.reshape(B, T * S, H, Dh).transpose(1, 2).float()  # (B, H, N, Dh)
        kf = k.reshape(B, T * S, H, Dh).transpose(1, 2).float()
        attn = (qf @ kf.transpose(-2, -1) * Dh**-0.5).softmax(-1)  # (B, H, N, N)
        return out, attn.mean(1)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, axis={self.axis}, qkv_bias={self.qkv_bias_mode}, backend={self.backend}"
