"""Helpers for the kernel tests: an independent float64 oracle, input layouts, and a runner that executes the
Triton kernels under the interpreter in a *separate process* (triton fixes interpreter mode at import, so setting
``TRITON_INTERPRET=1`` here would leak into every other test in the worker).

Run as a script (``python tests/_kernels_util.py < cases.json``) it evaluates the cases and prints JSON results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def oracle(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, axis: str, scale: float | None = None) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v along ``axis`` in float64, written with einsum per axis (no folding / reshapes shared
    with the library)."""
    q, k, v = q.double(), k.double(), v.double()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if axis == "time":
        a = torch.einsum("btshd,bushd->bshtu", q, k) * scale
        return torch.einsum("bshtu,bushd->btshd", a.softmax(-1), v)
    if axis == "space":
        a = torch.einsum("btshd,btuhd->bthsu", q, k) * scale
        return torch.einsum("bthsu,btuhd->btshd", a.softmax(-1), v)
    a = torch.einsum("btshd,buwhd->bhtsuw", q, k) * scale  # joint: every (t, s) with every (u, w)
    B, H, T, S = a.shape[:4]
    p = a.reshape(B, H, T, S, T * S).softmax(-1).reshape(a.shape)
    return torch.einsum("bhtsuw,buwhd->btshd", p, v)


def make_inputs(shape, dtype: torch.dtype, layout: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """q, k, v of ``shape`` (B, T, S, H, Dh) as leaf-backed views: ``contig`` (separate tensors), ``qkv`` (slices of
    one fused (B, T, S, 3, H, Dh) projection), ``perm`` (stored as (B, S, T, H, Dh), so T·S is not one stride)."""
    g = torch.Generator().manual_seed(seed)
    B, T, S, H, D = shape
    if layout == "contig":
        return tuple(torch.randn(shape, generator=g).to(dtype).requires_grad_() for _ in range(3))
    if layout == "qkv":
        base = torch.randn(B, T, S, 3, H, D, generator=g).to(dtype).requires_grad_()
        return base[:, :, :, 0], base[:, :, :, 1], base[:, :, :, 2], base
    if layout == "perm":
        leaves = [torch.randn(B, S, T, H, D, generator=g).to(dtype).requires_grad_() for _ in range(3)]
        return (*(x.transpose(1, 2) for x in leaves), *leaves)
    raise ValueError(layout)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, max |b|) in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


def _kernel_case(case: dict) -> dict:
    from vidtok.kernels import spacetime_attention

    dtype = DTYPES[case["dtype"]]
    q, k, v = make_inputs(case["shape"], dtype, case["layout"], seed=case.get("seed", 0))[:3]
    g = torch.Generator().manual_seed(1)
    out = spacetime_attention(q, k, v, axis=case["axis"], backend="triton")
    do = torch.randn(out.shape, generator=g).to(dtype)
    if case.get("grad_layout") == "transposed":  # a non-contiguous incoming gradient
        do = torch.randn(out.shape[:1] + out.shape[1:3][::-1] + out.shape[3:], generator=g).to(dtype).transpose(1, 2)
    if case.get("grad_layout") == "expanded":  # what out.sum().backward() sends: all strides 0
        do = torch.ones((), dtype=dtype).expand(out.shape)
    grads = torch.autograd.grad(out, (q, k, v), do)
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = oracle(qd, kd, vd, case["axis"])
    ref_grads = torch.autograd.grad(ref, (qd, kd, vd), do.double())
    res = {"out": rel_err(out, ref), "contiguous_out": out.is_contiguous(), "dtype_ok": out.dtype == dtype}
    for name, a, b in zip(("dq", "dk", "dv"), grads, ref_grads, strict=True):
        res[name] = rel_err(a, b)
    return res


def _model_case(case: dict) -> dict:
    import copy

    from vidtok.models import create_model

    torch.manual_seed(0)
    m = create_model(case["name"], attn_backend="math", **case["kwargs"])
    m2 = copy.deepcopy(m)
    m2.set_attn_backend("triton")
    m.train(), m2.train()  # no dropout configured; train mode exercises the autograd path as in training
    x = torch.randn(2, 3, case["kwargs"]["num_frames"], case["kwargs"]["img_size"], case["kwargs"]["img_size"],
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    y1, y2 = m(x), m2(x)
    y1.square().sum().backward()
    y2.square().sum().backward()
    gerr = max(rel_err(p2.grad, p1.grad) for p1, p2 in zip(m.parameters(), m2.parameters(), strict=True)
               if p1.grad is not None)  # fmt: skip
    calls = _count_triton_calls(m2, x)
    return {"logits": rel_err(y2, y1), "grads": gerr, "triton_calls": calls}


def _count_triton_calls(model, x) -> int:
    """How many times the triton forward launcher ran for one forward pass (proves the backend was used)."""
    from vidtok.kernels.triton import ops

    n = 0
    orig = ops.attention_forward

    def counting(*a, **kw):
        nonlocal n
        n += 1
        return orig(*a, **kw)

    ops.attention_forward = counting
    try:
        with torch.no_grad():
            model(x)
    finally:
        ops.attention_forward = orig
    return n


def main() -> None:
    import triton

    assert triton.knobs.runtime.interpret, "run with TRITON_INTERPRET=1"
    cases = json.load(sys.stdin)
    out = []
    for case in cases:
        try:
            out.append(_model_case(case) if case["kind"] == "model" else _kernel_case(case))
        except Exception as e:  # report per case; the test names the failing one
            out.append({"error": f"{type(e).__name__}: {e}"})
    print("RESULTS " + json.dumps(out))


def run_interpreted(cases: list[dict], timeout: float = 900) -> list[dict]:
    """Evaluate ``cases`` in a fresh ``TRITON_INTERPRET=1`` Python process; one result dict per case."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"interpreter subprocess failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULTS ") :])


if __name__ == "__main__":
    main()
