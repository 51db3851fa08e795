"""Benchmark space-time attention backends (triton vs sdpa vs math), plus a static report of the Triton kernels.

    python tools/bench_attention.py             # CUDA: time + peak memory of triton/sdpa/math, fwd and fwd+bwd
                                                # CPU:  sdpa vs math (time, peak memory); triton via the interpreter,
                                                #       for correctness only (never timed)
    python tools/bench_attention.py --static    # compile every kernel for sm_80/sm_90: registers, smem, spills

Inputs are views of one fused QKV projection ``(B, T, S, 3, H, Dh)``, as the models produce them, so "time" and
"space" cost sdpa/math a permute+contiguous copy that the Triton kernels avoid. Prints markdown tables with the
machine they ran on.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AXES = ("joint", "time", "space")
# (label, (B, T, S, H, Dh)) — ViViT-B/16x2 on 32x224² (T'=16, 14x14 patches) and a long clip.
CUDA_SHAPES = [("vivit-b", (8, 16, 196, 12, 64)), ("long-clip", (2, 32, 256, 12, 64))]
# CPU: the math backend materialises (T·S)² scores, so the CPU run uses one clip of half the frames.
CPU_SHAPES = [("vivit-b/cpu", (1, 8, 196, 12, 64))]
INTERP_SHAPE = (1, 4, 49, 2, 64)  # small: the interpreter runs one program at a time in NumPy


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def make_qkv(shape, dtype, device, requires_grad):
    import torch

    B, T, S, H, D = shape
    g = torch.Generator(device="cpu").manual_seed(0)
    qkv = torch.randn(B, T, S, 3, H, D, generator=g).to(device=device, dtype=dtype)  # (B, T, S, 3, H, Dh)
    qkv.requires_grad_(requires_grad)
    return qkv


def run_once(qkv, axis, backend, backward):
    from vidtok.kernels import spacetime_attention

    q, k, v = qkv.unbind(3)  # views (B, T, S, H, Dh), no copies
    out = spacetime_attention(q, k, v, axis=axis, backend=backend)
    if backward:
        out.backward(torch_ones_like(out))
    return out


def torch_ones_like(x):
    import torch

    return torch.ones_like(x)


def time_cuda(fn, warmup=3, iters=10) -> float:
    """Median milliseconds of ``fn`` with CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def time_cpu(fn, warmup=1, iters=3) -> float:
    fn()
    for _ in range(warmup - 1):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _ratio(ms: dict[str, float], other: str) -> float:
    """other backend's time / triton's time (nan when either was not run)."""
    if "triton" not in ms or other not in ms:
        return float("nan")
    return ms[other] / ms["triton"]


def bench_cuda(dtype_name: str, backends: list[str]) -> None:
    import torch

    dtype = getattr(torch, dtype_name)
    dev = torch.device("cuda")
    print(f"## attention on {torch.cuda.get_device_name(dev)} ({dtype_name}, median of 10, CUDA events)\n")
    print("| shape | axis | pass | " + " | ".join(f"{b} ms" for b in backends) + " | "
          + " | ".join(f"{b} peak MiB" for b in backends) + " | triton vs sdpa | triton vs math |")  # fmt: skip
    print("|" + "---|" * (3 + 2 * len(backends) + 2))
    for label, shape in CUDA_SHAPES:
        for axis in AXES:
            for backward in (False, True):
                ms, mem = {}, {}
                for be in backends:
                    qkv = make_qkv(shape, dtype, dev, backward)
                    fn = functools.partial(run_once, qkv, axis, be, backward)
                    try:
                        fn()
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats(dev)
                        base = torch.cuda.memory_allocated(dev)
                        fn()
                        torch.cuda.synchronize()
                        mem[be] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
                        ms[be] = time_cuda(fn)
                    except (torch.OutOfMemoryError, RuntimeError, ValueError) as e:
                        ms[be] = mem[be] = float("nan")
                        print(f"<!-- {be} {label} {axis}: {type(e).__name__}: {str(e)[:120]} -->")
                    del qkv
                    torch.cuda.empty_cache()
                print(f"| {label} {shape} | {axis} | {'fwd+bwd' if backward else 'fwd'} | "
                      + " | ".join(f"{ms[b]:.3f}" for b in backends) + " | "
                      + " | ".join(f"{mem[b]:.0f}" for b in backends)
                      + f" | {_ratio(ms, 'sdpa'):.2f}x | {_ratio(ms, 'math'):.2f}x |")  # fmt: skip
    print("\nratio = other backend's time / triton's time (> 1: triton faster). Peak MiB = extra memory over inputs.")


def _cpu_worker(spec: str) -> None:
    """Subprocess: run one (backend, axis, pass, shape) once after a warm-up and print the extra peak RSS (MiB)."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    backend, axis, backward, shape = json.loads(spec)
    run_once(make_qkv([1, 2, 4, *shape[3:]], torch.float32, "cpu", backward), axis, backend, backward)  # warm-up
    qkv = make_qkv(shape, torch.float32, "cpu", backward)
    base = _reset_peak_rss()
    run_once(qkv, axis, backend, backward)
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - base) / 1024}))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the resident-memory high-water mark (Linux: ``5 > /proc/self/clear_refs``); returns current RSS KiB.

    ``ru_maxrss`` cannot be used: a child started by a large parent inherits the parent's high-water mark.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def cpu_peak_mib(backend, axis, backward, shape) -> float:
    """Extra peak resident memory of one call, measured in a fresh process (ru_maxrss is a high-water mark)."""
    spec = json.dumps([backend, axis, backward, list(shape)])
    res = subprocess.run([sys.executable, __file__, "--_cpu-worker", spec], capture_output=True, text=True,
                         cwd=ROOT, check=True)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"]


def bench_cpu() -> None:
    import torch

    print(f"## attention on CPU ({machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32)\n")
    print("No CUDA device: sdpa vs math only (the Triton kernels need a GPU to be timed).\n")
    print("| shape | axis | pass | sdpa ms | math ms | sdpa peak MiB | math peak MiB | sdpa vs math (time) |"
          " math/sdpa (memory) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for label, shape in CPU_SHAPES:
        for axis in AXES:
            for backward in (False, True):
                ms, mem = {}, {}
                for be in ("sdpa", "math"):
                    qkv = make_qkv(shape, torch.float32, "cpu", backward)
                    ms[be] = time_cpu(functools.partial(run_once, qkv, axis, be, backward))
                    mem[be] = cpu_peak_mib(be, axis, backward, shape)
                print(f"| {label} {shape} | {axis} | {'fwd+bwd' if backward else 'fwd'} | {ms['sdpa']:.1f} | "
                      f"{ms['math']:.1f} | {mem['sdpa']:.0f} | {mem['math']:.0f} | {ms['math'] / ms['sdpa']:.2f}x | "
                      f"{mem['math'] / max(mem['sdpa'], 1e-9):.2f}x |")  # fmt: skip
    print("\nsdpa vs math = math time / sdpa time (> 1: sdpa faster). Peak MiB = extra resident memory of one call,")
    print("measured in a fresh process.\n")
    interpreter_check()


def interpreter_check() -> None:
    """Triton kernels under TRITON_INTERPRET=1 (subprocess) vs the math backend: correctness only, never timed."""
    code = f"""
import json, torch
from vidtok.kernels import spacetime_attention
g = torch.Generator().manual_seed(0)
out = {{}}
for axis in {AXES!r}:
    q, k, v = (torch.randn(*{INTERP_SHAPE!r}, generator=g).requires_grad_() for _ in range(3))
    o = spacetime_attention(q, k, v, axis=axis, backend="triton")
    do = torch.randn(o.shape, generator=g)
    gt = torch.autograd.grad(o, (q, k, v), do)
    om = spacetime_attention(q, k, v, axis=axis, backend="math")
    gm = torch.autograd.grad(om, (q, k, v), do)
    out[axis] = [float((o - om).abs().max())] + [float((a - b).abs().max()) for a, b in zip(gt, gm)]
print("RESULT", json.dumps(out))
"""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    print(f"### Triton kernels under the interpreter (correctness only, NOT a timing), {INTERP_SHAPE} fp32\n")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode or not line:
        print(f"interpreter run failed:\n```\n{res.stderr[-2000:]}\n```")
        return
    print("| axis | max abs err out | dq | dk | dv |\n|---|---|---|---|---|")
    for axis, errs in json.loads(line[0][7:]).items():
        print(f"| {axis} | " + " | ".join(f"{e:.1e}" for e in errs) + " |")


def static_report(capabilities: tuple[int, ...]) -> int:
    """Compile every kernel variant for each capability and print registers / shared memory / spills."""
    from vidtok.kernels.triton import aot

    print(f"## Triton kernels lowered ahead of time (triton {__import__('triton').__version__}, bundled ptxas)\n")
    head = " | ".join(f"sm_{c} regs | sm_{c} smem KiB | sm_{c} spills B" for c in capabilities)
    print(f"| kernel | dtype | Dh | tile | warps | stages | {head} |")
    print("|" + "---|" * (6 + 3 * len(capabilities)))
    bad = 0
    for v in aot.variants():
        cells = []
        for cap in capabilities:
            r = aot.lower(v, cap)
            bad += r.spills > 0
            cells += [str(r.registers), f"{r.shared_bytes / 1024:.0f}", str(r.spill_stores + r.spill_loads)]
        c = v.constexprs
        tile = (f"{c['BLOCK_G']}x{c['T_P']} rows" if "BLOCK_G" in c
                else f"{c['BLOCK_M']}x{c.get('BLOCK_N', '-')}")  # fmt: skip
        print(f"| {v.kernel} | {v.dtype} | {v.head_dim} | {tile} | {v.num_warps} | {v.num_stages} | "
              + " | ".join(cells) + " |", flush=True)  # fmt: skip
    print(f"\n{bad} variant(s) with register spills.")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--static", action="store_true", help="AOT-compile every kernel and report resources")
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="capabilities for --static")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"], help="CUDA dtype")
    ap.add_argument("--backends", nargs="+", default=["triton", "sdpa", "math"], help="CUDA backends")
    ap.add_argument("--_cpu-worker", dest="cpu_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cpu_worker:
        _cpu_worker(args.cpu_worker)
        return 0
    if args.static:
        return static_report(tuple(args.arch))
    import torch

    if torch.cuda.is_available():
        bench_cuda(args.dtype, args.backends)
    else:
        bench_cpu()
    return 0


if __name__ == "__main__":
    sys.exit(main())
