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
    """Whether the kernels can run in this process, and a one-line description or reason.

    True on a machine with a CUDA device, or in Triton interpreter mode (``TRITON_INTERPRET=1`` set before triton
    was imported: CPU tensors, slow, for testing). Calls ``torch.cuda.is_available()``, never the Triton driver.
    """
    import torch

    from vidtok.kernels.triton.ops import interpreting

    version = f"triton {_triton.__version__}"
    if interpreting():
        return True, f"{version} in interpreter mode (CPU tensors; slow, for testing)"
    if torch.cuda.is_available():
        return True, f"{version} on CUDA"
    return False, f"{version} installed but no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU, slowly)"
