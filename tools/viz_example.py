"""Train a tiny TokenLearner model on `vidtok synth` data (CPU, a few minutes) and draw what it looks at.

Writes into OUT: the run folder (run/), the TokenLearner overlay of one held-out video as PNG / GIF, the argmax
map, and the training curves. This is how docs/tokenlearner_overlay.png was made::

    python tools/viz_example.py --out /tmp/viz_example
    cp /tmp/viz_example/tokenlearner_overlay.png docs/

Model: vidtok_ti's layout (per-slice attention + TokShift, TokenLearner v1.1, then joint attention, mean pooling)
shrunk to 64² inputs, 8×8 tubelets in space (an 8×8 grid per slice, so the maps have some detail), 4 blocks of
width 96, TokenLearner with 4 tokens after block 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="viz_example", help="output folder")
    ap.add_argument("--data", default=None, help="existing `vidtok synth` folder (default: OUT/synth, generated)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--per-class", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/run")
    args = ap.parse_args(argv)

    import torch

    from vidtok.config import Config
    from vidtok.data.synthetic import make_synthetic_dataset
    from vidtok.engine.train import train
    from vidtok.viz import plot_training_curves

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "synth"
    if not (data / "train.csv").is_file():
        t0 = time.time()
        make_synthetic_dataset(data, num_classes=4, per_class=args.per_class, val_per_class=8, seed=args.seed, size=64)
        print(f"synth data: {time.time() - t0:.1f} s", file=sys.stderr)

    cfg = Config()
    cfg.model.name = "vidtok_ti"
    cfg.model.extra = {
        "embed_dim": 96,
        "depth": 4,
        "num_heads": 3,
        "tubelet_size": [2, 8, 8],
        "token_reducer_layer": 2,
        "token_reducer_kwargs": {"num_tokens": 4, "version": "1.1"},
    }
    d = cfg.data
    d.root, d.train, d.val = str(data), str(data / "train.csv"), str(data / "val.csv")
    d.num_frames, d.frame_stride, d.crop_size = 8, 4, 64
    d.scale_range, d.test_short_side = (64, 72), 64
    d.hflip = False  # left / right is the label
    d.test_clips, d.batch_size, d.num_workers = 1, 8, 1
    d.persistent_workers = False
    t = cfg.train
    t.epochs, t.lr, t.warmup_epochs, t.weight_decay, t.label_smoothing = args.epochs, 1e-3, 1.0, 0.05, 0.0
    t.log_every, t.seed = 4, args.seed
    run = out / "run"
    if not args.skip_train:
        res = train(cfg, run, progress=False)
        print(f"trained: {res['step']} steps, val {res['val']}, {res['seconds']:.0f} s", file=sys.stderr)

    plot_training_curves(run, out / "curves.png", title="vidtok_ti (tiny) on vidtok synth")
    # Show a held-out video the model gets right, most confidently (say so in any caption).
    from vidtok.models.hub import load_model
    from vidtok.viz.attention import draw, explain

    model = load_model(run)
    best = None
    for video in sorted((data / "val").rglob("*.mp4")):
        view = explain(model, video, mode="tokens")
        name, p = view.topk[0]
        if name == video.parent.name and (best is None or p > best[1].topk[0][1]):
            best = (video, view)
    if best is None:
        video = sorted((data / "val").rglob("*.mp4"))[0]
        best = (video, explain(model, video, mode="tokens"))
        print("no held-out video is classified correctly; showing the first one", file=sys.stderr)
    video, view = best
    draw(view, out / "tokenlearner_overlay.png", cell=96)
    draw(view, out / "tokenlearner_overlay.gif", cell=96)
    draw(explain(model, video, mode="argmax"), out / "tokenlearner_argmax.png", cell=96)
    print(f"{video} (true class {video.parent.name}): {view.title}", file=sys.stderr)


if __name__ == "__main__":
    main()
