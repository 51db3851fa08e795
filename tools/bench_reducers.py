"""Token reducers side by side: FLOPs, CPU clips/s and held-out top-1 at an equal (small) training budget.

The clips come from the synthetic motion dataset's renderer (:func:`vidtok.data.synthetic.render_video`, what
``vidtok synth`` encodes to files), rendered straight into memory so the benchmark measures the models, not
decoding: 4 classes (right, left, up, down), ``--size`` px, ``--frames`` frames (every 2nd of twice as many
rendered). Every variant is the same tiny joint-attention ViViT (no class token, mean pooling: it learns this data
much faster; ``--dim``, ``--depth``, tubelet 2×4×4) trained from the same initial weights on the same batches for
``--steps`` steps of AdamW with a compact loop (cross-entropy plus the reducer's auxiliary loss: DynamicViT's ratio
loss, mixed-scale's batch shaping), then evaluated on held-out clips. FLOPs are multiply-adds of one clip
(``torch.utils.flop_counter``, averaged over held-out clips because ATS and mixed-scale are data dependent);
clips/s is eval forward throughput at batch ``--batch`` on this CPU (best of ``--repeats``); "tokens" is the mean
number of patch tokens per temporal slice after the reducer (kept tokens for ATS / mixed-scale).

Usage::

    .venv/bin/python tools/bench_reducers.py                    # the table in docs/benchmarks.md
    .venv/bin/python tools/bench_reducers.py --steps 60 --only none,ats   # quicker, a subset
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidtok.data.synthetic import render_video  # noqa: E402
from vidtok.models import create_model  # noqa: E402

MOTIONS = ("right", "left", "up", "down")


def variants(grid_tokens: int) -> dict[str, dict | None]:
    """Reducer configs at comparable budgets (``grid_tokens`` = tokens per slice without reduction)."""
    return {
        "none": None,
        "tokenlearner_8": {"kind": "tokenlearner", "at_block": 1, "num_tokens": 8},
        "tokenlearner_16": {"kind": "tokenlearner", "at_block": 1, "num_tokens": 16},
        "token_pooling_16": {"kind": "token_pooling", "at_block": 1, "num_tokens": 16, "iters": 3},
        "ats_16": {"kind": "ats", "at_block": 1, "num_tokens": 16},
        "dynamicvit_0.5": {"kind": "dynamicvit", "at_block": [1, 2, 3], "keep_ratio": 0.5},
        "mixed_scale_0.25": {"kind": "mixed_scale", "fine_ratio": 0.25},
    }


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except Exception:  # noqa: BLE001 - lscpu missing: fall back to platform
        name = platform.processor() or platform.machine()
    load = ", ".join(f"{v:.1f}" for v in __import__("os").getloadavg())
    return f"{name}, {torch.get_num_threads()} threads, load average {load}, torch {torch.__version__}"


def make_split(n_per_class: int, seed: int, size: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    clips, labels = [], []
    for c, motion in enumerate(MOTIONS):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, c, i])
            v = render_video(motion, rng, size=size, frames=2 * frames)[::2]  # (T, H, W, 3) uint8
            clips.append(torch.from_numpy(v).permute(3, 0, 1, 2))  # (C, T, H, W)
            labels.append(c)
    x = (torch.stack(clips).float() / 255 - 0.5) / 0.5  # (N, C, T, H, W), the vidtok family's mean/std
    return x, torch.tensor(labels)


def build(spec: dict | None, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(args.seed)  # same initial backbone weights for every variant
    kw = dict(
        num_classes=len(MOTIONS), num_frames=args.frames, img_size=args.size, tubelet_size=(2, 4, 4),
        embed_dim=args.dim, depth=args.depth, num_heads=args.heads, attn_backend="sdpa", class_token="none",
        pool="mean",
    )  # fmt: skip
    return (
        create_model("vivit_ti16x2", **kw) if spec is None else create_model("vivit_ti16x2", token_reducer=spec, **kw)
    )


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    g = torch.Generator().manual_seed(1 + 1000 * args.seed)  # same batches for every variant
    red = getattr(model, "reducer", None)
    if red is not None and hasattr(red, "generator"):
        red.generator = torch.Generator().manual_seed(2 + 1000 * args.seed)
    model.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(x), (args.batch,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if red is not None:
            loss = loss + red.aux_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - t0


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    """(top-1 %, mean patch tokens per slice after the reducer)."""
    model.eval()
    correct, tokens = 0, []
    for i in range(0, len(x), batch):
        feats, aux = model.forward_features(x[i : i + batch], return_aux=True)
        correct += int((model.forward_head(feats).argmax(-1) == y[i : i + batch]).sum())
        keep = aux.get("token_keep")
        if keep is not None:
            tokens.append(float(keep.sum(-1).mean()))
        elif aux.get("token_index") is not None:
            tokens.append(float(aux["token_index"].shape[-1]))
        elif "learned_tokens" in aux:
            tokens.append(float(aux["learned_tokens"].shape[2]))
        else:
            tokens.append(float(aux["grid"][1] * aux["grid"][2]))
    return 100.0 * correct / len(x), statistics.mean(tokens)


def macs_per_clip(model: torch.nn.Module, x: torch.Tensor, n: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    backends = [(m, m.backend) for m in model.modules() if hasattr(m, "backend") and isinstance(m.backend, str)]
    for m, _ in backends:
        m.backend = "math"
    grads = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in grads:  # instead of no_grad, which FlopCounterMode's module tracker trips over
        p.requires_grad_(False)
    total = 0
    try:
        for i in range(n):
            counter = FlopCounterMode(display=False)
            with counter:
                model(x[i : i + 1])
            total += counter.get_total_flops() // 2
    finally:
        for m, b in backends:
            m.backend = b
        for p, r in grads:
            p.requires_grad_(r)
    return total / n


@torch.no_grad()
def throughput(model: torch.nn.Module, x: torch.Tensor, batch: int, repeats: int) -> float:
    model.eval()
    xb = x[:batch]
    model(xb)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(xb)
        times.append(time.perf_counter() - t0)
    return batch / min(times)  # the least disturbed run: the machine is shared and heavily loaded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--train-per-class", type=int, default=64)
    ap.add_argument("--val-per-class", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--flop-clips", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="initial weights, batch order and reducer noise")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    xtr, ytr = make_split(args.train_per_class, 0, args.size, args.frames)
    xva, yva = make_split(args.val_per_class, 1, args.size, args.frames)
    grid = (args.size // 4) ** 2
    specs = variants(grid)
    if args.only:
        specs = {k: v for k, v in specs.items() if k in args.only.split(",")}
    rows = {}
    for name, spec in specs.items():
        model = build(spec, args)
        t_train = train(model, xtr, ytr, args)
        top1, tokens = evaluate(model, xva, yva, args.batch)
        macs = macs_per_clip(model, xva, args.flop_clips)
        cps = throughput(model, xva, args.batch, args.repeats)
        rows[name] = (tokens, macs, cps, top1, t_train)
        print(f"{name}: tokens/slice {tokens:.1f}, {macs / 1e6:.1f} M MACs, {cps:.1f} clips/s, top-1 {top1:.1f} %, "
              f"train {t_train:.0f} s", file=sys.stderr, flush=True)  # fmt: skip

    base = rows.get("none")
    print(f"\nMachine: {machine()}")
    print(
        f"Model: vivit_ti16x2 shrunk to D={args.dim}, depth {args.depth}, {args.heads} heads, tubelet 2×4×4, "
        f"{args.frames}×{args.size}² clips → {args.frames // 2} slices × {grid} tokens; reducers before block 1. "
        f"Training: {args.steps} steps × batch {args.batch} (AdamW, lr {args.lr}, cosine), "
        f"{len(xtr)} train / {len(xva)} held-out clips, 4 classes, seed {args.seed}. "
        f"Total {time.perf_counter() - t_start:.0f} s.\n"
    )
    print(
        "| reducer | tokens / slice | M MACs / clip | FLOPs vs none | clips/s (CPU) | speed vs none | held-out top-1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (tokens, macs, cps, top1, _) in rows.items():
        fr = f"{macs / base[1]:.2f}×" if base else "–"
        sr = f"{cps / base[2]:.2f}×" if base else "–"
        print(f"| {name} | {tokens:.1f} | {macs / 1e6:.1f} | {fr} | {cps:.1f} | {sr} | {top1:.1f} % |")


if __name__ == "__main__":
    main()
