"""Space-time attention backends against an independent float64 oracle.

math and sdpa run in this process. The Triton kernels run under Triton's interpreter in a separate process
(``TRITON_INTERPRET=1`` is read by triton at import, so it must not be set in the pytest worker): one subprocess
evaluates all kernel cases, another the whole-model comparisons; the parametrised tests below check each result.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests._kernels_util import DTYPES, ROOT, make_inputs, oracle, rel_err, run_interpreted
from vidtok.kernels import available_backends, resolve_backend, spacetime_attention

AXES = ("joint", "time", "space")


# ----------------------------------------------------------------------------------------- math / sdpa (in process)
def test_oracle_matches_a_loop():
    """The einsum oracle itself against per-sequence softmax attention written as loops."""
    q, k, v = make_inputs((1, 3, 4, 2, 8), torch.float64, "contig")[:3]
    for axis in AXES:
        ref = oracle(q, k, v, axis)
        out = torch.empty_like(ref)
        for b in range(1):
            for h in range(2):
                if axis == "joint":
                    seqs = [[(t, s) for t in range(3) for s in range(4)]]
                elif axis == "time":
                    seqs = [[(t, s) for t in range(3)] for s in range(4)]
                else:
                    seqs = [[(t, s) for s in range(4)] for t in range(3)]
                for seq in seqs:
                    qs = torch.stack([q[b, t, s, h] for t, s in seq])
                    ks = torch.stack([k[b, t, s, h] for t, s in seq])
                    vs = torch.stack([v[b, t, s, h] for t, s in seq])
                    o = torch.softmax(qs @ ks.T / 8**0.5, -1) @ vs
                    for i, (t, s) in enumerate(seq):
                        out[b, t, s, h] = o[i]
        torch.testing.assert_close(out, ref.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("layout", ["contig", "qkv", "perm"])
def test_torch_backends_match_oracle(backend, axis, layout):
    q, k, v = make_inputs((2, 3, 49, 2, 32), torch.float32, layout)[:3]
    out = spacetime_attention(q, k, v, axis=axis, backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, (q, k, v), do)
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = oracle(qd, kd, vd, axis)
    ref_grads = torch.autograd.grad(ref, (qd, kd, vd), do.double())
    assert rel_err(out, ref) < 1e-5
    for g, rg in zip(grads, ref_grads, strict=True):
        assert rel_err(g, rg) < 1e-4


@pytest.mark.parametrize("axis", AXES)
def test_sdpa_low_precision_and_custom_scale(axis):
    q, k, v = make_inputs((1, 3, 7, 2, 64), torch.bfloat16, "contig")[:3]
    out = spacetime_attention(q, k, v, axis=axis, backend="sdpa", scale=0.2)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, oracle(q, k, v, axis, scale=0.2)) < 2e-2


def test_dispatch_and_validation():
    q = torch.randn(1, 2, 3, 1, 32)
    assert resolve_backend("auto", q) == "sdpa"  # CPU tensors never pick triton
    assert resolve_backend("math") == "math"
    assert {"sdpa", "math"} <= set(available_backends())
    with pytest.raises(ValueError, match="backend must be one of"):
        spacetime_attention(q, q, q, backend="cuda")
    with pytest.raises(ValueError, match="axis must be one of"):
        spacetime_attention(q, q, q, axis="diagonal")
    with pytest.raises(ValueError, match=r"\(B, T, S, H, Dh\)"):
        spacetime_attention(q, q[:, :1], q)


def test_triton_on_cpu_without_interpreter_is_a_clear_error():
    """Outside interpreter mode the kernels only take CUDA tensors; asking for them on CPU says how to proceed."""
    pytest.importorskip("triton")
    from vidtok.kernels import triton as tk

    ok, why = tk.is_available()
    assert ok == torch.cuda.is_available() and why.startswith("triton")
    q = torch.randn(1, 2, 3, 1, 32)
    assert not tk.supports(q)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        spacetime_attention(q, q, q, backend="triton")
    assert not tk.supports(torch.randn(1, 2, 3, 1, 48))  # head dim outside 32/64/96/128


def test_import_probes_no_driver():
    """Importing the kernels (and listing backends) must work on a GPU-less machine: no driver calls at import."""
    code = (
        "import vidtok.kernels as K, vidtok.kernels.triton as T, vidtok.kernels.triton.aot;"
        "print(K.available_backends(), T.is_available())"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert any(w in res.stdout for w in ("no CUDA device", "on CUDA", "interpreter mode")), res.stdout


# ---------------------------------------------------------------------------------- triton under the interpreter
def _k(axis, shape, dtype, layout="contig", **kw):
    return dict(kind="kernel", axis=axis, shape=list(shape), dtype=dtype, layout=layout, **kw)


# Odd T and S everywhere (masked tails); each head dim; fp32 and fp16 (the interpreter cannot do bf16: see the AOT
# tests); contiguous, fused-QKV and permuted storage; both time paths (packed short-T and long); T=1.
KERNEL_CASES = {
    "joint-fp32-d32-T3S49": _k("joint", (1, 3, 49, 2, 32), "fp32"),
    "space-fp32-d32-T3S49-qkv": _k("space", (1, 3, 49, 2, 32), "fp32", "qkv"),
    "time-fp32-d32-T3S49-qkv": _k("time", (1, 3, 49, 2, 32), "fp32", "qkv"),
    "joint-fp16-d64-perm": _k("joint", (1, 3, 7, 2, 64), "fp16", "perm"),
    "space-fp16-d64-perm": _k("space", (2, 3, 7, 1, 64), "fp16", "perm"),
    "time-fp16-d64": _k("time", (2, 3, 7, 1, 64), "fp16"),
    "joint-fp32-d96-qkv": _k("joint", (1, 2, 9, 1, 96), "fp32", "qkv"),
    "space-fp32-d128": _k("space", (1, 2, 17, 1, 128), "fp32"),
    "time-fp16-d128-qkv": _k("time", (1, 5, 3, 2, 128), "fp16", "qkv"),
    "time-fp32-d96-T40-longpath": _k("time", (1, 40, 2, 1, 96), "fp32", "qkv"),
    "time-fp16-d64-T17-strided-grad": _k("time", (1, 17, 3, 1, 64), "fp16", grad_layout="transposed"),
    "joint-fp16-d32-strided-grad": _k("joint", (1, 3, 5, 1, 32), "fp16", grad_layout="transposed"),
    "time-fp16-d32-T1": _k("time", (1, 1, 5, 2, 32), "fp16"),
    "space-fp32-d64-expanded-grad": _k("space", (1, 2, 5, 1, 64), "fp32", grad_layout="expanded"),
}
TOL = {"fp32": dict(out=1e-5, grad=1e-4), "fp16": dict(out=2e-3, grad=5e-3)}


@pytest.fixture(scope="module")
def kernel_results() -> dict[str, dict]:
    pytest.importorskip("triton")
    names = list(KERNEL_CASES)
    return dict(zip(names, run_interpreted([KERNEL_CASES[n] for n in names]), strict=True))


@pytest.mark.slow
@pytest.mark.xdist_group("kernels_interp")
@pytest.mark.parametrize("case", list(KERNEL_CASES))
def test_triton_matches_oracle(kernel_results, case):
    res = kernel_results[case]
    assert "error" not in res, res.get("error")
    tol = TOL[KERNEL_CASES[case]["dtype"]]
    assert res["dtype_ok"] and res["contiguous_out"]
    assert res["out"] < tol["out"], res
    for g in ("dq", "dk", "dv"):
        assert res[g] < tol["grad"], (g, res)


def _m(name, **kw):
    base = dict(img_size=32, num_frames=4, depth=2, embed_dim=64, num_heads=2, num_classes=5)  # Dh = 32
    return dict(kind="model", name=name, kwargs={**base, **kw})


# ViViT Model 1 (joint, with a class token), Model 3 (space + time per block), Model 4 (half heads each),
# TokShift (space with frame class tokens) and the vidtok family (space, TokenLearner, joint over learned tokens).
MODEL_CASES = {
    "vivit_ti16x2": _m("vivit_ti16x2"),
    "vivit_b16x2_fsa": _m("vivit_b16x2_fsa"),
    "vivit_b16x2_fdp": _m("vivit_b16x2_fdp", depth=1, num_heads=4, embed_dim=128),
    "tokshift_ti16": _m("tokshift_ti16", depth=1),
    "vidtok_ti": _m("vidtok_ti", token_reducer_layer=1),
}


@pytest.fixture(scope="module")
def model_results() -> dict[str, dict]:
    pytest.importorskip("triton")
    names = list(MODEL_CASES)
    return dict(zip(names, run_interpreted([MODEL_CASES[n] for n in names]), strict=True))


@pytest.mark.slow
@pytest.mark.xdist_group("kernels_model")
@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_model_triton_matches_math(model_results, name):
    """Same weights, backend triton vs math: same logits and parameter gradients (fp32)."""
    res = model_results[name]
    assert "error" not in res, res.get("error")
    assert res["triton_calls"] >= 1, "the model never reached the triton kernels"
    assert res["logits"] < 1e-5, res
    assert res["grads"] < 1e-4, res


def test_dtype_table_is_complete():
    assert set(TOL) <= set(DTYPES)
