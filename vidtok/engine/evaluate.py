"""Evaluation: top-1 / top-5 with multi-view testing, per-class accuracy, confusion matrix.

Multi-view testing (ViViT: 4 temporal clips x 1 crop; TokShift: 10 x 3): the dataset yields ``video`` as
``(V, C, T, H, W)`` with V = clips x crops; every view goes through the model and the softmax probabilities are
averaged over the views before the arg-max. A single-view dataset yields ``(C, T, H, W)``.

Example::

    res = evaluate(model, val_set, batch_size=8, device="cpu")
    print(format_report(res))
    write_report(res, "runs/demo/eval")   # metrics.json, per_class.csv, confusion_matrix.png
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidtok.logs import Progress

__all__ = ["evaluate", "evaluate_checkpoint", "format_report", "write_report"]


def evaluate(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    amp: str = "none",
    shuffle_frames: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    class_names: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` (items: dicts with ``video`` and ``label``).

    Args:
        model: returns logits ``(B, K)`` for ``(B, C, T, H, W)``.
        dataset: map-style dataset; ``video`` is ``(C, T, H, W)`` or multi-view ``(V, C, T, H, W)``.
        batch_size: clips (videos) per forward; a multi-view batch runs ``batch_size * V`` views at once.
        num_workers: DataLoader workers.
        device: where the model runs.
        amp: ``none`` | ``bf16`` | ``fp16`` autocast.
        shuffle_frames: permute the frames of every view (the motion control experiment).
        seed: seed of the per-sample seeds (as in training) and of the frame permutation.
        rank, world_size: shard the dataset over processes (``rank::world_size``); the results are gathered so
            every rank returns the full metrics.
        class_names: names for the report; default ``dataset.class_names`` or ``model.pretrained_cfg``.
        progress: show a progress bar.

    Returns:
        Dict with ``top1``, ``top5`` (percent), ``loss`` (mean NLL of the averaged probabilities),
        ``num_samples``, ``num_views``, ``per_class`` (list of dicts name / support / correct / accuracy),
        ``confusion`` (K x K int ndarray, rows = true class), ``class_names``, ``predictions`` (index, label, pred).
    """
    from vidtok.data.loader import build_loader

    device = torch.device(device)
    loader = build_loader(
        dataset, train=False, seed=seed, rank=rank, world_size=world_size, device=device,
        batch_size=batch_size, num_workers=num_workers,
    )  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        probs, labels, views = _predict(model, loader, device, amp, shuffle_frames, seed, progress)
    finally:
        model.train(was_training)
    indices = loader.sampler.indices()
    if world_size > 1:
        from vidtok.engine.distributed import all_gather_objects

        parts = all_gather_objects((indices, probs, labels))
        order = torch.from_numpy(np.argsort(np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])))
        probs, labels = torch.cat([p[1] for p in parts])[order], torch.cat([p[2] for p in parts])[order]
        indices = list(range(len(dataset)))
    if class_names is None:
        class_names = list(getattr(dataset, "class_names", None) or [])
        if not class_names:
            class_names = list((getattr(model, "pretrained_cfg", None) or {}).get("class_names", []))
    return {**_metrics(probs, labels, class_names, indices), "num_views": int(views)}


@torch.no_grad()
def _predict(
    model: nn.Module, loader, device: torch.device, amp: str, shuffle_frames: bool, seed: int, progress: bool
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """View-averaged class probabilities ``(N, K)``, labels ``(N,)`` and views per clip over ``loader``."""
    from vidtok.data.clip_sampling import shuffle_time
    from vidtok.engine.device import autocast

    gen = torch.Generator().manual_seed(seed + 12345)
    probs_all, labels_all, views = [], [], 1
    it = Progress(len(loader), "eval", "batch").iterate(loader) if progress else loader
    for batch in it:
        x = batch["video"]
        if shuffle_frames:
            x = shuffle_time(x, gen)
        x = x.to(device, non_blocking=True)
        b, views = (x.shape[0], x.shape[1]) if x.ndim == 6 else (x.shape[0], 1)  # (B, V, C, T, H, W) multi-view
        with autocast(device, amp):
            logits = model(x.flatten(0, 1) if x.ndim == 6 else x)  # (B*V, K)
        probs_all.append(F.softmax(logits.float(), dim=-1).view(b, views, -1).mean(1).cpu())  # (B, K): view mean
        labels_all.append(torch.as_tensor(batch["label"]).cpu())
    probs = torch.cat(probs_all) if probs_all else torch.zeros(0, 0)
    labels = torch.cat(labels_all) if labels_all else torch.zeros(0, dtype=torch.long)
    return probs, labels, views


def _metrics(probs: torch.Tensor, labels: torch.Tensor, class_names: list[str], indices: list[int]) -> dict[str, Any]:
    """Top-1 / top-5, NLL, the confusion matrix and per-class accuracy of probabilities ``(N, K)``."""
    n, k = probs.shape if probs.numel() else (0, len(class_names))
    class_names = list(class_names) or [str(i) for i in range(k)]
    if n:
        top = probs.topk(min(5, k), dim=-1).indices  # (N, 5)
        pred = top[:, 0]
        correct1 = (pred == labels).sum().item()
        correct5 = (top == labels[:, None]).any(dim=-1).sum().item()
        nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).mean().item()
    else:
        pred = torch.zeros(0, dtype=torch.long)
        correct1 = correct5 = 0
        nll = float("nan")
    kc = max(k, len(class_names))
    confusion = np.zeros((kc, kc), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), pred.numpy()), 1)
    per_class = [
        {
            "class": c,
            "name": class_names[c] if c < len(class_names) else str(c),
            "support": int(confusion[c].sum()),
            "correct": int(confusion[c, c]),
            "accuracy": 100.0 * confusion[c, c] / confusion[c].sum() if confusion[c].sum() else float("nan"),
        }
        for c in range(kc)
    ]
    return {
        "top1": 100.0 * correct1 / max(n, 1),
        "top5": 100.0 * correct5 / max(n, 1),
        "loss": nll,
        "num_samples": int(n),
        "per_class": per_class,
        "confusion": confusion,
        "class_names": class_names,
        "predictions": [
            {"index": int(i), "label": int(lab), "pred": int(p)}
            for i, lab, p in zip(indices, labels.tolist(), pred.tolist(), strict=False)
        ],
    }


def format_report(res: dict[str, Any], *, max_classes: int = 50) -> str:
    """A plain-text table: overall top-1 / top-5, then per-class accuracy (worst first when there are many)."""
    lines = [
        f"samples {res['num_samples']}   views/clip {res['num_views']}"
        + (f"   sampler {res['test_sampler']}" if "test_sampler" in res else ""),
        f"top-1  {res['top1']:6.2f} %",
        f"top-5  {res['top5']:6.2f} %",
        "",
    ]
    rows = [r for r in res["per_class"] if r["support"] > 0]
    if len(rows) > max_classes:
        rows = sorted(rows, key=lambda r: r["accuracy"])[:max_classes]
        lines.append(f"per-class accuracy ({max_classes} worst of {len(res['per_class'])}):")
    else:
        lines.append("per-class accuracy:")
    width = max([len(r["name"]) for r in rows] + [5])
    lines.append(f"  {'class':<{width}}  {'n':>5}  {'acc %':>6}")
    for r in rows:
        lines.append(f"  {r['name']:<{width}}  {r['support']:>5}  {r['accuracy']:6.2f}")
    return "\n".join(lines)


def write_report(res: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_class.csv``, ``predictions.csv`` and ``confusion_matrix.png`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: res[k] for k in ("top1", "top5", "loss", "num_samples", "num_views", "test_sampler") if k in res}
    summary["per_class"] = res["per_class"]
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    with open(out / "per_class.csv", "w") as f:
        f.write("class,name,support,correct,accuracy\n")
        for r in res["per_class"]:
            name = r["name"].replace('"', "'")
            f.write(f'{r["class"]},"{name}",{r["support"]},{r["correct"]},{r["accuracy"]:.4f}\n')
    with open(out / "predictions.csv", "w") as f:
        f.write("index,label,pred\n")
        for p in res["predictions"]:
            f.write(f"{p['index']},{p['label']},{p['pred']}\n")
    from vidtok.viz import plot_confusion_matrix

    png = plot_confusion_matrix(res["confusion"], res["class_names"], out / "confusion_matrix.png")
    return {"metrics": out / "metrics.json", "per_class": out / "per_class.csv", "confusion": png}


def _guess_format(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        return "folder"
    if p.suffix.lower() == ".csv":
        from vidtok.config import read_text

        head = read_text(p, key="data", what="annotation file").split("\n", 1)[0].lower()
        if "youtube_id" in head:
            return "kinetics"
    return "list"


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    data: str | None = None,
    root: str | None = None,
    config_path: str | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    clips: int | None = None,
    crops: int | None = None,
    sampler: str | None = None,
    batch_size: int = 8,
    num_workers: int = 2,
    device: str = "auto",
    amp: str = "none",
    shuffle_frames: bool = False,
    out_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Load a checkpoint, build its evaluation data (preprocessing from ``model.pretrained_cfg``), evaluate, and
    write the report (``out_dir`` default: ``<checkpoint folder>/eval``). Used by ``vidtok eval``.

    ``clips`` / ``crops`` / ``sampler`` replace the checkpoint's ``test_clips`` / ``test_crops`` and the config's
    ``data.test_sampler`` (where the views sit: ``uniform``, ``mmaction2``, ``pytorchvideo``, ``pyslowfast``)."""
    from vidtok.config import Config, apply_overrides, config_from_dict, load_config, validate_config
    from vidtok.data import build_dataset
    from vidtok.engine.device import resolve_device
    from vidtok.errors import ConfigError
    from vidtok.models import load_model
    from vidtok.models.hub import resolve_checkpoint_path
    from vidtok.preprocessing import Preprocessing

    ckpt_path = resolve_checkpoint_path(checkpoint)
    dev = resolve_device(device, key="--device")
    model = load_model(ckpt_path, device=dev)
    pc = model.pretrained_cfg
    if config_path is not None:
        cfg = load_config(config_path)
    elif getattr(model, "checkpoint_config", None):
        cfg = config_from_dict(model.checkpoint_config, source=str(ckpt_path))
    else:
        cfg = Config()
    prep = Preprocessing.from_pretrained_cfg(pc)
    prep = prep.replace(
        test_clips=clips if clips is not None else prep.test_clips,
        test_crops=crops if crops is not None else prep.test_crops,
    )
    cfg.data = d = dataclasses.replace(cfg.data, **prep.data_config_fields())
    cfg.model.num_frames = cfg.model.img_size = None  # the checkpoint's model is evaluated, not cfg.model
    if d.scale_range[0] < d.crop_size:  # training-only jitter, kept consistent with the checkpoint's crop
        d.scale_range = (d.crop_size, max(d.scale_range[1], d.crop_size))
    d.batch_size, d.num_workers = batch_size, num_workers
    if sampler is not None:
        d.test_sampler = sampler
    if data is not None:
        d.val = str(data)
        d.format = _guess_format(data)
        d.root = root if root is not None else ("" if d.format == "folder" else str(Path(data).parent))
    elif root is not None:
        d.root = root
    cfg = validate_config(apply_overrides(cfg, list(overrides)) if overrides else cfg)
    if not (cfg.data.val or cfg.data.root):
        raise ConfigError("no evaluation data: pass --data (CSV, list file or class folder)", key="data.val")
    names = list(pc.get("class_names") or [])
    ds = build_dataset(cfg.data, "val", train=False, class_names=names or None)
    res = evaluate(
        model,
        ds,
        batch_size=batch_size,
        num_workers=num_workers,
        device=dev,
        amp=amp,
        shuffle_frames=shuffle_frames,
        class_names=names or None,
        progress=True,
    )
    res["test_sampler"] = cfg.data.test_sampler
    out = out_dir if out_dir is not None else ckpt_path.parent / "eval"
    return res, write_report(res, out)
