"""Ahead-of-time lowering of the attention kernels to sm_80 / sm_90 cubin (no GPU needed): they compile, use no
more shared memory than the GPU has, and ptxas reports no register spills.

A representative subset compiles here (every kernel body, each dtype and head dim at least once, both
architectures); ``python tools/bench_attention.py --static`` compiles and reports all of them.
"""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("triton")

from vidtok.kernels.triton import _kernels, aot, ops  # noqa: E402

SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # A100 / H100 max dynamic shared memory per block

SUBSET = [
    *aot.variants(dtypes=("fp16",), head_dims=(64,)),  # every kernel
    *aot.variants(
        dtypes=("bf16",), head_dims=(128,), kernels={"attn_fwd", "attn_bwd_dkdv", "attn_bwd_dq", "attn_time_bwd"}
    ),  # fmt: skip
    *aot.variants(
        dtypes=("fp32",), head_dims=(96,), kernels={"attn_fwd", "attn_bwd_dkdv", "attn_time_fwd", "attn_time_bwd"}
    ),  # fmt: skip
    *aot.variants(dtypes=("bf16",), head_dims=(32,), kernels={"attn_bwd_dq", "attn_time_fwd"}),
]
# The joint axis on storage where T·S is not one stride (FLAT=False) adds div/mod index arithmetic.
_fwd = aot.variants(dtypes=("fp16",), head_dims=(64,), kernels={"attn_fwd"})[0]
SUBSET.append(dataclasses.replace(_fwd, constexprs={**_fwd.constexprs, "FLAT": False}))


def test_variant_list_covers_every_kernel_dtype_and_head_dim():
    names = {(v.kernel, v.dtype, v.head_dim) for v in aot.variants()}
    expected = {(fn.__name__, dt, hd) for fn in _kernels.KERNELS for dt in aot.DTYPES for hd in ops.SUPPORTED_HEAD_DIMS}
    assert names == expected
    assert {v.kernel for v in SUBSET} == {fn.__name__ for fn in _kernels.KERNELS}


def test_not_in_interpreter_mode():
    assert not ops.interpreting(), "AOT lowering needs the compiler: run without TRITON_INTERPRET=1"


@pytest.mark.slow
@pytest.mark.parametrize("capability", aot.CAPABILITIES)
@pytest.mark.parametrize("variant", SUBSET, ids=lambda v: v.name + ("-nonflat" if v.constexprs.get("FLAT") is False
                                                                      else ""))  # fmt: skip
def test_lowers_without_spills(variant, capability):
    rep = aot.lower(variant, capability)
    assert rep.spills == 0, f"{variant.name} sm_{capability}: {rep.spill_stores} B spill stores, {rep.ptxas_log}"
    assert 0 < rep.registers <= 255
    assert rep.shared_bytes <= SHARED_LIMIT[capability]
