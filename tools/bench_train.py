"""Training throughput: the real loader (decode + transforms in DataLoader workers) vs. the same clips already in
memory, for vidtok_ti and vidtok_s on this machine, through the same training loop (`vidtok.engine.train.train`).

The ratio real / in-memory shows whether decoding starves the model (target >= 0.9). Peak memory is the maximum
resident set of the training process (and, separately, of its loader workers). Every case runs in a fresh
subprocess so peaks do not mix. Prints a markdown table with the machine.

    .venv/bin/python tools/bench_train.py                      # defaults: 64 px crops, 8 frames, batch 8, 12 steps
    .venv/bin/python tools/bench_train.py --models vidtok_ti --steps 20 --crop 96
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _machine() -> str:
    name = platform.processor() or "cpu"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _config(args, data_root: str, model: str):
    from vidtok.config import Config

    cfg = Config()
    cfg.model.name = model
    d = cfg.data
    d.root, d.format = data_root, "kinetics"
    d.num_frames, d.frame_stride, d.crop_size = args.frames, 2, args.crop
    d.scale_range = (args.crop, args.crop + 8)
    d.test_short_side = args.crop
    d.hflip = False
    d.batch_size, d.num_workers = args.batch, args.workers
    d.backend = args.backend
    t = cfg.train
    t.epochs, t.max_steps, t.device = 100, args.steps, "cpu"
    t.warmup_steps, t.eval_every, t.ckpt_every, t.log_every = 2, 0, 10**9, 10**9
    return cfg


def _case(args) -> dict:
    """One measurement in this process: prints a JSON line."""
    import torch

    from vidtok.data import build_dataset
    from vidtok.engine.train import train

    cfg = _config(args, args.data, args.model)
    out = tempfile.mkdtemp(prefix="bench_train_")
    ds = build_dataset(cfg.data, "train", seed=0)
    if args.mode == "memory":
        # the exact clips the loader would produce, decoded and transformed up front (not timed)
        from vidtok.data.loader import SeededDataset

        seeded = SeededDataset(ds, seed=0)
        items = [seeded[(i, 0)] for i in range(len(ds))]

        class InMemory(torch.utils.data.Dataset):
            class_names = ds.class_names

            def __len__(self):
                return len(items)

            def __getitem__(self, i):
                return items[i]

        ds = InMemory()
        cfg.data.num_workers = 0
    torch.manual_seed(0)
    t0 = time.time()
    res = train(cfg, out, train_dataset=ds, progress=False, log=lambda m: None)
    wall = time.time() - t0
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "model": args.model,
        "mode": args.mode,
        "clips_per_sec": res["clips_per_sec"],
        "steps": res["step"],
        "wall": wall,
        "peak_rss_mib": self_rss,
        "worker_peak_rss_mib": child_rss if args.mode == "real" else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vidtok_ti,vidtok_s")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--videos-per-class", type=int, default=8)
    p.add_argument("--backend", default="auto", help="video decoder of the real loader (data.backend)")
    p.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["real", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(_case(args)), flush=True)
        return

    from vidtok.data.synthetic import make_synthetic_dataset

    tmp = tempfile.mkdtemp(prefix="bench_train_data_")
    size = max(64, args.crop + 16)
    make_synthetic_dataset(tmp, num_classes=4, per_class=args.videos_per_class, val_per_class=1, size=size, frames=32)
    rows = []
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for model in args.models.split(","):
        for mode in ("real", "memory"):
            cmd = [sys.executable, __file__, "--case", "--model", model, "--mode", mode, "--data", tmp]
            cmd += ["--steps", str(args.steps), "--batch", str(args.batch), "--frames", str(args.frames)]
            cmd += ["--crop", str(args.crop), "--workers", str(args.workers), "--backend", args.backend]
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"case {model}/{mode} failed")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"# {model:10s} {mode:6s} {rows[-1]['clips_per_sec']:.2f} clips/s", file=sys.stderr, flush=True)

    from vidtok.io import resolve_backend

    print(f"\nMachine: {_machine()}; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}; ")
    print(
        f"input {args.frames} frames x {args.crop}^2, batch {args.batch}, {args.steps} optimizer steps, "
        f"real loader = {args.workers} workers decoding H.264 synthetic videos "
        f"(backend {resolve_backend(args.backend)})\n"
    )
    print("| model | real loader clips/s | in-memory clips/s | ratio | peak RSS train (MiB) | peak RSS worker (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        real = next(r for r in rows if r["model"] == model and r["mode"] == "real")
        mem = next(r for r in rows if r["model"] == model and r["mode"] == "memory")
        ratio = real["clips_per_sec"] / max(mem["clips_per_sec"], 1e-9)
        print(
            f"| {model} | {real['clips_per_sec']:.2f} | {mem['clips_per_sec']:.2f} | {ratio:.2f} | "
            f"{real['peak_rss_mib']:.0f} | {real['worker_peak_rss_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
