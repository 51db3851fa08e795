"""The compiled Triton kernels on a real GPU (skipped without CUDA): parity with the float64 oracle for every axis,
dtype (bf16 included) and head dim, ``auto`` dispatch, and memory that grows as O(T·S), not O((T·S)²)."""

from __future__ import annotations

import pytest
import torch

from tests._kernels_util import make_inputs, oracle, rel_err
from vidtok.kernels import resolve_backend, spacetime_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TOL = {torch.float32: (1e-5, 1e-4), torch.float16: (2e-3, 5e-3), torch.bfloat16: (1.6e-2, 4e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("head_dim", [32, 64, 96, 128])
@pytest.mark.parametrize("axis", ["joint", "time", "space"])
@pytest.mark.parametrize("shape", [(2, 3, 49), (1, 16, 197), (1, 40, 5)], ids=lambda s: f"B{s[0]}T{s[1]}S{s[2]}")
def test_compiled_kernels_match_oracle(shape, axis, head_dim, dtype):
    pytest.importorskip("triton")
    base = make_inputs((*shape, 2, head_dim), dtype, "qkv")[3]  # (B, T, S, 3, H, Dh)
    base = base.detach().cuda().requires_grad_()
    q, k, v = base.unbind(3)
    assert resolve_backend("auto", q) == "triton"
    out = spacetime_attention(q, k, v, axis=axis, backend="triton")
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    grads = torch.autograd.grad(out, (q, k, v), do)
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = oracle(qd, kd, vd, axis)
    ref_grads = torch.autograd.grad(ref, (qd, kd, vd), do.double())
    tol_out, tol_grad = TOL[dtype]
    assert rel_err(out, ref) < tol_out
    for g, rg in zip(grads, ref_grads, strict=True):
        assert rel_err(g, rg) < tol_grad


def test_joint_memory_is_linear_in_tokens():
    """fwd+bwd on 3136 tokens must not allocate anything like the (T·S)² score matrix (151 MiB per head here)."""
    pytest.importorskip("triton")
    B, T, S, H, D = 1, 16, 196, 12, 64
    qkv = torch.randn(B, T, S, 3, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = spacetime_attention(*qkv.unbind(3), axis="joint", backend="triton")
    out.sum().backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 8 * qkv.numel() * qkv.element_size(), extra  # a few copies of the inputs, no N² buffer
