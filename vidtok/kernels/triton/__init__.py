"""Fused space-time attention in Triton (FlashAttention-2 style), forward and backward.

Importing this package imports ``triton`` (and nothing else happens: no driver probe, no compilation). Kernels are
compiled on first use for CUDA tensors; CPU tensors run them under Triton's interpreter (slow, testing only).
"""

from __future__ import annotations

__all__ = ["is_available", "supports", "spacetime_attention_triton", "SUPPORTED_HEAD_DIMS"]

try:  # the dispatcher treats ImportError as "backend unavailable"
    import triton as _triton  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without triton installed
    raise ImportError(f"{e}; install with: pip install 'vidtok[triton]'") from e

from vidtok.kernels.triton.ops import SUPPORTED_HEAD_DIMS, spacetime_attention_triton, supports  # noqa: E402


def is_available() -> tuple[bool, str]:
    """(True, description) when triton imports; the kernels then run on CUDA tensors (and CPU via the interpreter)."""
    return True, f"triton {_triton.__version__}"
