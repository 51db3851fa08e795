"""Throughput of the full training input pipeline: decode + transforms + collate, in clips/s.

Runs the real ``build_dataset`` / ``build_loader`` path for 0, 1 and 2 DataLoader workers (and repeated sampling)
on two generated datasets, side by side in one process, and prints a markdown table:

* synthetic: ``vidtok synth`` videos (64x64, 32 frames), 16-frame clips at stride 2, crop 56 from short side 64-72;
* Kinetics-like: 452x340, 10 s, 25 fps H.264 with a 60-frame GOP and textured, moving content,
  16-frame clips at stride 2, crop 224 from short side 256-320 (the Kinetics training recipe).

Usage::

    .venv/bin/python tools/bench_loader.py                 # writes videos under /tmp/vidtok_bench_loader once
    .venv/bin/python tools/bench_loader.py --batches 10 --workers 0 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores (load average at start: {load})"


def kinetics_like(root: Path, n: int, seed: int = 0) -> None:
    """n videos 452x340, 250 frames at 25 fps, H.264 (GOP 60): smooth noise texture panning + a moving blob + noise."""
    import av

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w, t = 340, 452, 250
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lines = []
    for i in range(n):
        path = root / f"clip{i:03d}.mp4"
        lines.append(f"{path.name} {i % 2}")
        if path.exists():
            continue
        base = rng.random((h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
        base = np.kron(base, np.ones((8, 8, 1), np.float32))
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=25, options={"crf": "23", "preset": "veryfast", "g": "60"})
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for k in range(t):
                dy, dx = k % 8, (2 * k) % 8
                img = base[dy : dy + h, dx : dx + w].copy()
                cy, cx = h / 2 + 100 * np.sin(k / 20), w / 2 + 150 * np.cos(k / 25)
                img += (np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 800.0) * 0.8)[..., None]
                img += rng.normal(0, 0.04, img.shape).astype(np.float32)
                frame = np.clip(img * 200, 0, 255).astype(np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    (root / "list.txt").write_text("\n".join(lines) + "\n")


def measure(ds, cfg, workers: int, batches: int, seed: int = 0) -> float:
    from vidtok.data import build_loader

    loader = build_loader(ds, cfg, train=True, seed=seed, num_workers=workers, drop_last=False)
    clips, t0, done = 0, None, 0
    epoch = 0
    while done < batches + 1:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if t0 is None:  # the first batch pays for worker start-up: not counted
                t0 = time.perf_counter()
            else:
                clips += batch["video"].shape[0]
            done += 1
            if done >= batches + 1:
                break
        epoch += 1
    dt = time.perf_counter() - t0
    del loader
    return clips / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache-dir", default="/tmp/vidtok_bench_loader")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batches", type=int, default=12, help="timed batches per configuration")
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()

    from vidtok.config import DataConfig
    from vidtok.data import build_dataset
    from vidtok.data.synthetic import make_synthetic_dataset
    from vidtok.io import resolve_backend

    torch.set_num_threads(1)  # the main process only collates when workers decode; 0 workers: one core, like a worker
    info = machine()
    cache = Path(args.cache_dir)
    synth = cache / "synth"
    if not (synth / "train.csv").exists():
        make_synthetic_dataset(synth, num_classes=4, per_class=16, val_per_class=1, seed=0)
    kin = cache / "kinetics_like"
    kinetics_like(kin, n=6)

    common = dict(num_frames=16, frame_stride=2, hflip=True, backend=args.backend, persistent_workers=False)
    setups = [
        (
            "synthetic 64x64, 32 frames",
            DataConfig(format="kinetics", root=str(synth), crop_size=56, scale_range=(64, 72), batch_size=16, **common),
        ),
        (
            "Kinetics-like 452x340, 10 s",
            DataConfig(format="list", root=str(kin), train=str(kin / "list.txt"), batch_size=4, **common),
        ),
    ]
    rows = []
    for name, cfg in setups:
        base = None  # 0 workers, one clip per decode
        for repeats in (1, 2):
            c = replace(cfg, repeated_aug=repeats)
            ds = build_dataset(c, "train", seed=0)
            for w in args.workers:
                rate = measure(ds, c, w, args.batches)
                base = base or rate
                rows.append((name, repeats, w, rate, rate / base))
                print(f"  {name}  repeated_aug={repeats}  workers={w}: {rate:.1f} clips/s", flush=True)
    print()
    print(f"Machine: {info}; decoder backend: {resolve_backend(args.backend)}; torch {torch.__version__}")
    print()
    print("| videos | clips per decode | workers | clips/s | vs 0 workers, 1 clip/decode |")
    print("|---|---:|---:|---:|---:|")
    for name, repeats, w, rate, ratio in rows:
        print(f"| {name} | {repeats} | {w} | {rate:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
