"""Ahead-of-time lowering of every attention kernel variant to cubin, without a GPU.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", cap, 32))`` runs the full pipeline (TTIR -> TTGIR ->
LLVM -> PTX -> cubin with the ptxas bundled in the triton wheel). Register count and spills are not in the
compile metadata without a driver, so we re-run the same ptxas with ``-v`` on the PTX and parse its report.

The variants mirror how the JIT specialises real launches: pointers 16-byte aligned, the head-dim strides equal
to 1 (contiguous last dim) and the other q/k/v/o strides divisible by 16 (true for every supported head dim).
"""

from __future__ import annotations

import inspect
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidtok.kernels.triton import _kernels, ops

CAPABILITIES = (80, 90)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_POINTERS_F32 = {"LSE", "DELTA"}
_UNIT_STRIDES = {"sqd", "skd", "svd", "sod", "sdd", "slh"}
_INT_SCALARS = {"H", "G2", "L", "L_LO", "T", "S", "G"}
_FLOAT_SCALARS = {"qk_scale", "sm_scale"}


@dataclass
class Variant:
    """One kernel specialisation: which body, dtype, head dim, constexprs and launch shape."""

    kernel: str
    dtype: str
    head_dim: int
    constexprs: dict[str, object]
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        return f"{self.kernel}[{self.dtype},d{self.head_dim}]"


@dataclass
class Report:
    """What ptxas says about one compiled variant on one architecture."""

    variant: Variant
    capability: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int
    ptxas_log: str = field(repr=False, default="")

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads


def variants(head_dims=ops.SUPPORTED_HEAD_DIMS, dtypes=tuple(DTYPES), kernels=None) -> list[Variant]:
    """Every (kernel, dtype, head dim) the launchers can issue, with the tile sizes they would use.

    The short-T "time" kernels are listed with ``T_P = 16`` (ViViT's T'); other T change the index arithmetic
    only, not the tile (rows per program stay ``BLOCK_G * T_P``).
    """
    out = []
    for dt in dtypes:
        tdt = DTYPES[dt]
        prec = "tf32" if dt != "fp32" else "ieee"
        for hd in head_dims:
            bd = ops.block_d(hd)
            f, b, dl = ops.fwd_config(tdt, hd), ops.bwd_config(tdt, hd), ops.delta_config(hd)
            tf, tb = ops.time_config(tdt, hd, backward=False), ops.time_config(tdt, hd, backward=True)
            common = dict(BLOCK_D=bd, HEAD_DIM=hd)
            long_fwd = dict(BLOCK_M=f.block_m, BLOCK_N=f.block_n, FLAT=True, DOT_PREC=prec, **common)
            long_bwd = dict(BLOCK_M=b.block_m, BLOCK_N=b.block_n, FLAT=True, DOT_PREC=prec, **common)
            cands = [
                Variant("attn_fwd", dt, hd, long_fwd, f.num_warps, f.num_stages),
                Variant("attn_bwd_delta", dt, hd, dict(BLOCK_M=dl.block_m, FLAT=True, **common), dl.num_warps, 1),
                Variant("attn_bwd_dkdv", dt, hd, long_bwd, b.num_warps, b.num_stages),
                Variant("attn_bwd_dq", dt, hd, long_bwd, b.num_warps, b.num_stages),
                Variant(
                    "attn_time_fwd",
                    dt,
                    hd,
                    dict(BLOCK_G=tf.block_m // 16, T_P=16, DOT_PREC=prec, **common),
                    tf.num_warps,
                    tf.num_stages,
                ),  # fmt: skip
                Variant(
                    "attn_time_bwd",
                    dt,
                    hd,
                    dict(BLOCK_G=tb.block_m // 16, T_P=16, DOT_PREC=prec, **common),
                    tb.num_warps,
                    tb.num_stages,
                ),  # fmt: skip
            ]
            out += [v for v in cands if kernels is None or v.kernel in kernels]
    return out


def _signature(fn, dtype: str) -> tuple[dict[str, str], dict[tuple[int, ...], object], dict]:
    params = list(inspect.signature(fn).parameters)
    sig: dict[str, str] = {}
    consts: dict[tuple[int, ...], object] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, p in enumerate(params):
        if p.isupper() and not any(p == c for c in _INT_SCALARS) and p not in ("BLOCK_M",):
            pass
        if p in _INT_SCALARS:
            sig[p] = "i32"
        elif p in _FLOAT_SCALARS:
            sig[p] = "fp32"
        elif p in _UNIT_STRIDES:
            sig[p] = "constexpr"
            consts[(i,)] = 1
        elif p.startswith("s") and p.islower():
            sig[p] = "i32"
            if not p.startswith("sl"):  # q/k/v/o strides: multiples of 16 for every supported head dim
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif p.isupper() and p.isalpha() and len(p) <= 5 and not p.startswith(("BLOCK", "HEAD", "FLAT", "DOT")):
            sig[p] = "*fp32" if p in _POINTERS_F32 else f"*{dtype}"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[p] = "constexpr"
    return sig, consts, attrs


def _jit(name: str):
    from triton.runtime.jit import JITFunction

    return JITFunction(getattr(_kernels, name))


def compile_variant(v: Variant, capability: int):
    """Lower one variant to cubin for ``sm_<capability>``; returns triton's CompiledKernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _jit(v.kernel)
    sig, consts, attrs = _signature(fn.fn, v.dtype)
    for k, val in v.constexprs.items():
        consts[(fn.arg_names.index(k),)] = val
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(
        src, target=GPUTarget("cuda", capability, 32), options=dict(num_warps=v.num_warps, num_stages=v.num_stages)
    )


_USED = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_report(ptx: str, capability: int) -> tuple[int, int, int, str]:
    """(registers, spill store bytes, spill load bytes, log) from the bundled ptxas run with ``-v``."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    arch = sm_arch_from_capability(capability)
    ptxas = get_ptxas(capability).path
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        res = subprocess.run(
            [ptxas, "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}", str(src), "-o", str(Path(d) / "k.cubin")],
            capture_output=True,
            text=True,
            check=True,
        )
    log = res.stdout + res.stderr
    regs, spills = _USED.search(log), _SPILL.search(log)
    if regs is None or spills is None:
        raise RuntimeError(f"could not parse ptxas -v output:\n{log}")
    return int(regs.group(1)), int(spills.group(1)), int(spills.group(2)), log


def lower(v: Variant, capability: int) -> Report:
    """Compile ``v`` for ``sm_<capability>`` and report registers, spills and shared memory."""
    ck = compile_variant(v, capability)
    regs, st, ld, log = ptxas_report(ck.asm["ptx"], capability)
    return Report(v, capability, regs, st, ld, int(ck.metadata.shared), log)
