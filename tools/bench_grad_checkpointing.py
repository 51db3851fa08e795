"""Peak memory and time of one training step with and without gradient checkpointing (``set_grad_checkpointing``).

Each variant runs in a fresh subprocess (so the peak is its own): build the model, one forward + backward on a random
batch, report ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident memory of the process, which holds every
CPU tensor torch allocates; tracemalloc would not see them) before and after the step, and the step's wall time.

    python tools/bench_grad_checkpointing.py                       # vivit_b16x2, 16x224², batch 2, CPU
    python tools/bench_grad_checkpointing.py --model vidtok_s --frames 16 --size 224 --batch 2
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys


def _child(args: argparse.Namespace) -> None:
    import resource
    import time

    import torch
    import torch.nn.functional as F

    from vidtok.models import create_model

    torch.manual_seed(0)
    model = create_model(args.model, num_frames=args.frames, img_size=args.size, num_classes=400).train()
    model.set_grad_checkpointing(args.ckpt)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    y = torch.zeros(args.batch, dtype=torch.long)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    F.cross_entropy(model(x), y).backward()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024, "seconds": dt}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vivit_b16x2")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        _child(args)
        return
    res = {}
    for ckpt in (False, True):
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--frames", str(args.frames)]
        cmd += ["--size", str(args.size), "--batch", str(args.batch), "--threads", str(args.threads)]
        out = subprocess.run(cmd + (["--ckpt"] if ckpt else []), capture_output=True, text=True, check=True)
        res[ckpt] = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{args.model}, {args.frames}x{args.size}², batch {args.batch}, one training step on CPU ({cpu}, "
          f"{args.threads} threads), each variant in a fresh process\n")  # fmt: skip
    print("| grad checkpointing | peak RSS (MiB) | of which the step (MiB) | step time (s) |")
    print("|---|---:|---:|---:|")
    for ckpt, r in res.items():
        print(f"| {'on' if ckpt else 'off'} | {r['peak_mib']:.0f} | {r['peak_mib'] - r['base_mib']:.0f} | "
              f"{r['seconds']:.1f} |")  # fmt: skip
    off, on = res[False], res[True]
    d_off, d_on = off["peak_mib"] - off["base_mib"], on["peak_mib"] - on["base_mib"]
    print(f"\npeak RSS: {on['peak_mib'] / off['peak_mib']:.2f}x ({off['peak_mib'] - on['peak_mib']:.0f} MiB less); "
          f"step memory: {d_on / max(d_off, 1e-9):.2f}x; step time: {on['seconds'] / off['seconds']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
