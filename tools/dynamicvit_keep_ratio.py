"""Does ``vidtok train`` hold DynamicViT to its keep ratio? Train twice on ``vidtok synth`` data, with the ratio loss
(``loss_weight`` 2.0, the paper's) and without it (``loss_weight`` 0), and report the fraction of tokens each pruning
stage keeps in training mode at the end (the Gumbel decisions the ratio loss acts on; inference always keeps the
top-k, so the ratio there is fixed by construction).

::

    vidtok synth OUT/data ──► vidtok train (demo_vidtok_ti + dynamicvit at blocks 4, 7, 10) ──► OUT/{with,without}_loss
      ──► model.train(), held-out clips ──► kept fraction per stage vs target keep_ratio ** (stage + 1)

Usage::

    python tools/dynamicvit_keep_ratio.py --out /tmp/dvit
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

REDUCER = {"kind": "dynamicvit", "at_block": [4, 7, 10], "keep_ratio": 0.7}


def _train(out: Path, data: Path, loss_weight: float, epochs: int, reuse: bool) -> Path:
    run = out / f"loss_weight_{loss_weight:g}"
    if reuse and (run / "model.safetensors").is_file():
        return run
    spec = json.dumps({**REDUCER, "loss_weight": loss_weight}, separators=(",", ":"))
    cmd = [
        sys.executable, "-m", "vidtok.cli", "train", "--config", "demo_vidtok_ti", "--out", str(run),
        "--set", f"data.root={data}", "--set", f"model.extra.token_reducer={spec}",
        "--set", f"train.epochs={epochs}", "--overwrite", "--no-progress",
    ]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return run


@torch.no_grad()
def kept_fractions(run: Path, data: Path, batches: int = 8) -> list[float]:
    """Mean fraction of each clip's tokens kept after each pruning stage, training-mode decisions, held-out clips."""
    from vidtok.config import load_config
    from vidtok.data import build_dataset
    from vidtok.models import load_model

    torch.manual_seed(0)  # the Gumbel noise of the training-mode decisions
    model = load_model(run / "model.safetensors").train()
    cfg = load_config(run / "config.yaml")
    ds = build_dataset(cfg.data, "val", train=True, class_names=model.pretrained_cfg["class_names"], seed=1)
    stages: list[list[float]] = [[] for _ in model.reducer.at_blocks]
    seen = []
    hook = model.reducer.register_forward_hook(
        lambda m, a, kw, out: seen.append(out.keep.mean().item()), with_kwargs=True
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
    for i, batch in enumerate(loader):
        if i == batches:
            break
        seen.clear()
        model(batch["video"])
        for s, v in enumerate(seen):
            stages[s].append(v)
    hook.remove()
    return [sum(v) / len(v) for v in stages]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--reuse", action="store_true", help="measure the runs OUT already holds instead of training")
    args = ap.parse_args()
    data = args.out / "data"
    if not (data / "val.csv").is_file():
        cmd = [sys.executable, "-m", "vidtok.cli", "synth", str(data), "--per-class", str(args.per_class)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run([*cmd, "--overwrite"], check=True)
    ratio = REDUCER["keep_ratio"]
    targets = [ratio ** (s + 1) for s in range(len(REDUCER["at_block"]))]
    rows = []
    for weight in (2.0, 0.0):
        run = _train(args.out, data, weight, args.epochs, args.reuse)
        kept = kept_fractions(run, data)
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        val = [m for m in metrics if "val_top1" in m]
        rows.append((weight, kept, val[-1]["val_top1"] if val else float("nan")))
    print("\n| loss_weight | kept per stage (target " + ", ".join(f"{t:.3f}" for t in targets) + ") | val top-1 |")
    print("|---|---|---|")
    for weight, kept, top1 in rows:
        print(f"| {weight:g} | " + ", ".join(f"{k:.3f}" for k in kept) + f" | {top1:.1f} |")


if __name__ == "__main__":
    main()
