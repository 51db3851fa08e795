"""Throughput of exported models: onnxruntime (CPU) and the torch.export program (.pt2) beside torch eager, in one
process, same inputs, same thread count, runs interleaved so machine load hits every runtime alike.

Each model is built with random weights, exported with :func:`vidtok.export.export_model` (ONNX and .pt2, dynamic
batch), checked for logit parity, then timed: ``--repeats`` rounds of (eager, onnxruntime, .pt2) on one batch; the
median per runtime is reported as clips/s, and the ratio to eager as the median of the per-round ratios (the
runtimes of one round see the same machine load).

    python tools/bench_export.py                                   # vivit_ti16x2, tokshift_ti16, vidtok_ti; 8x160²
    python tools/bench_export.py --models vidtok_s --frames 16 --size 224 --batch 4 --threads 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vivit_ti16x2", "tokshift_ti16", "vidtok_ti"])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import os

    import torch

    from vidtok.export import export_model, load_exported
    from vidtok.models import create_model

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = create_model(name, num_frames=args.frames, img_size=args.size, attn_backend="sdpa").eval()
            t0 = time.perf_counter()
            onnx = export_model(model, Path(tmp) / f"{name}.onnx", verify=False)
            t_onnx = time.perf_counter() - t0
            t0 = time.perf_counter()
            pt2 = export_model(model, Path(tmp) / f"{name}.pt2", verify=False)
            t_pt2 = time.perf_counter() - t0
            runs = {
                "eager": lambda x, m=model: m(x),
                "onnxruntime": load_exported(onnx["path"], threads=args.threads),
                "pt2": load_exported(pt2["path"]),
            }
            x = torch.randn(
                args.batch, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(1)
            )
            times: dict[str, list[float]] = {k: [] for k in runs}
            outs = {}
            with torch.no_grad():
                for k, fn in runs.items():  # warm-up (and parity)
                    outs[k] = fn(x)
                for _ in range(args.repeats):
                    for k, fn in runs.items():
                        t0 = time.perf_counter()
                        fn(x)
                        times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            # ratios per round (the runtimes of one round saw the same machine load), then their median
            ratio = {
                k: statistics.median(e / t for e, t in zip(times["eager"], v, strict=True)) for k, v in times.items()
            }
            diff = max(float((outs[k] - outs["eager"]).abs().max()) for k in ("onnxruntime", "pt2"))
            rows.append((name, med, ratio, diff, t_onnx, t_pt2, os.path.getsize(onnx["path"]) / 2**20))
    print(
        f"{args.frames}x{args.size}², batch {args.batch}, random weights, {args.threads} threads "
        f"(torch.set_num_threads / onnxruntime intra_op_num_threads), median of {args.repeats} interleaved rounds; "
        f"CPU: {_cpu()}, {os.cpu_count()} logical cores\n"
    )
    print("| model | eager clips/s | onnxruntime clips/s | onnxruntime / eager | .pt2 clips/s | .pt2 / eager "
          "| max \\|Δlogits\\| | export s (onnx / pt2) | .onnx MiB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, med, ratio, diff, t_onnx, t_pt2, mib in rows:
        cps = {k: args.batch / v for k, v in med.items()}
        print(
            f"| {name} | {cps['eager']:.2f} | {cps['onnxruntime']:.2f} | {ratio['onnxruntime']:.2f}x | "
            f"{cps['pt2']:.2f} | {ratio['pt2']:.2f}x | {diff:.1e} | {t_onnx:.0f} / {t_pt2:.0f} | "
            f"{mib:.0f} |"
        )


if __name__ == "__main__":
    main()
