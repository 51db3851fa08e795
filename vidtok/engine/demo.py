"""The end-to-end demo behind ``vidtok demo`` / ``make demo``: synthetic motion data -> train vidtok_ti on the CPU ->
evaluate on held-out videos -> classify and embed the held-out folder -> draw the TokenLearner overlay and the
training curves -> write the review page of the held-out predictions and embeddings (vidtok.report) -> print where
the outputs are.

The recipe is the bundled ``demo_vidtok_ti`` (``vidtok/configs/demo_vidtok_ti.yaml``, package data). The
synthetic classes differ only in motion, so the frame-shuffled control (``shuffle_frames``)
must stay near chance while the normal run reaches >= 90 % top-1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidtok.config import Config, apply_overrides, load_config, validate_config

__all__ = ["DEMO_RECIPE", "demo_config", "run_demo"]

DEMO_RECIPE = "demo_vidtok_ti"

# The synthetic dataset the demo writes: 4 motion classes (right, left, up, down), 64 px, 32 frames.
DEMO_DATA = {"num_classes": 4, "per_class": 100, "val_per_class": 25, "size": 64, "frames": 32}


def demo_config(data_root: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The demo recipe with ``data.root`` set (``overrides`` on top)."""
    cfg = load_config(DEMO_RECIPE)
    cfg.data.root = str(data_root)
    return validate_config(apply_overrides(cfg, list(overrides)) if overrides else cfg)


def run_demo(
    out: str | os.PathLike,
    *,
    shuffle_frames: bool = False,
    overrides: list[str] | tuple[str, ...] = (),
    data: dict | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo into ``out``: ``out/data`` (synthetic videos), ``out/run`` (training run), ``out/eval``.

    Args:
        out: output folder.
        shuffle_frames: the control experiment (frames of every clip permuted in training and evaluation); writes
            ``out/run_shuffled`` and ``out/eval_shuffled`` instead.
        overrides: ``key=value`` config overrides on top of the recipe.
        data: overrides of :data:`DEMO_DATA` (e.g. fewer videos in tests).
        progress: progress bars.
        echo: line printer.

    Returns:
        Dict with ``top1``, ``top5``, ``seconds`` (total and per phase) and the output paths.
    """
    from vidtok.engine.evaluate import format_report
    from vidtok.engine.train import train

    t0 = time.time()
    out = Path(out)
    data_root = _synthetic_data(out / "data", dict(DEMO_DATA, **(data or {})), echo)
    times: dict[str, float] = {"data": time.time() - t0}

    suffix = "_shuffled" if shuffle_frames else ""
    cfg = demo_config(data_root, [*overrides, *(["train.shuffle_frames=true"] if shuffle_frames else [])])
    run_dir = out / f"run{suffix}"
    what = "frames shuffled in time (control)" if shuffle_frames else "on CPU"
    echo(f"[2/3] training {cfg.model.name} {what} -> {run_dir}")
    t1 = time.time()
    result = train(cfg, run_dir, progress=progress, overwrite=True)  # the demo owns OUT/run
    times["train"] = time.time() - t1

    echo(f"[3/3] evaluating on the held-out videos -> {out / ('eval' + suffix)}")
    t2 = time.time()
    model, res, files = _evaluate_run(cfg, run_dir, out / f"eval{suffix}", shuffle_frames)
    times["eval"] = time.time() - t2

    extra: dict[str, Path] = {}
    if not shuffle_frames:  # the control only needs its accuracy
        extra = _classify_embed_draw(run_dir, model, data_root / "val", out, echo)
        times["infer"] = time.time() - t2 - times["eval"]
    times["total"] = time.time() - t0
    echo("")
    echo(format_report(res))
    echo("")
    chance = 100.0 / max(1, len(res["class_names"]))
    echo(
        f"held-out top-1 {res['top1']:.1f} % (chance {chance:.0f} %) in {times['total']:.0f} s "
        f"(data {times['data']:.0f} s, training {times['train']:.0f} s, eval {times['eval']:.0f} s)"
    )
    _echo_outputs(echo, data_root, run_dir, files, extra)
    return {
        "top1": res["top1"],
        "top5": res["top5"],
        "chance": chance,
        "seconds": times,
        "data": str(data_root),
        "run": str(run_dir),
        "eval": str(out / f"eval{suffix}"),
        "train": result,
        **{k: str(v) for k, v in extra.items()},
    }


def _synthetic_data(data_root: Path, spec: dict, echo: Callable[[str], None]) -> Path:
    """Write the synthetic motion dataset of ``spec`` to ``data_root``, or reuse the one a previous demo wrote."""
    from vidtok.data.synthetic import make_synthetic_dataset

    stamp = data_root / ".demo_spec"
    if stamp.is_file() and stamp.read_text() == repr(sorted(spec.items())) and (data_root / "val.csv").is_file():
        echo(f"[1/3] synthetic data: reusing {data_root}")
        return data_root
    echo(f"[1/3] synthetic data: writing {spec['num_classes']} motion classes to {data_root}")
    info = make_synthetic_dataset(
        data_root,
        **{k: spec[k] for k in ("num_classes", "per_class", "val_per_class", "size", "frames")},
        seed=0,
        workers=min(2, os.cpu_count() or 1),
        overwrite=True,  # the demo owns OUT/data; a stale or partial one is written again
    )
    stamp.write_text(repr(sorted(spec.items())))
    echo(f"      {info['counts']['train']} train + {info['counts']['val']} held-out videos")
    return data_root


def _evaluate_run(cfg: Config, run_dir: Path, eval_dir: Path, shuffle_frames: bool) -> tuple[Any, dict, dict]:
    """Load the run's model and evaluate it on the held-out split (the report files go to ``eval_dir``)."""
    from vidtok.data import build_dataset
    from vidtok.engine.device import resolve_device
    from vidtok.engine.evaluate import evaluate, write_report
    from vidtok.models import load_model

    model = load_model(run_dir / "model.safetensors")
    val = build_dataset(cfg.data, "val", class_names=model.pretrained_cfg["class_names"], seed=cfg.train.seed)
    res = evaluate(
        model,
        val,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        device=resolve_device("auto"),
        shuffle_frames=shuffle_frames,
        seed=cfg.train.seed,
    )
    return model, res, write_report(res, eval_dir)


def _echo_outputs(echo: Callable[[str], None], data_root: Path, run_dir: Path, files: dict, extra: dict) -> None:
    echo("outputs:")
    echo(f"  videos             {data_root}")
    echo(f"  model              {run_dir / 'model.safetensors'}")
    echo(f"  training metrics   {run_dir / 'metrics.jsonl'}")
    echo(f"  confusion matrix   {files['confusion']}")
    echo(f"  per-class accuracy {files['per_class']}")
    for label, key in (
        ("predictions", "predictions"),
        ("embeddings", "embeddings"),
        ("curves", "curves"),
        ("overlay", "overlay"),
        ("overlay (gif)", "overlay_gif"),
        ("report", "report"),
    ):
        if key in extra:
            echo(f"  {label:<18} {extra[key]}")


def _classify_embed_draw(run_dir: Path, model: Any, val_dir: Path, out: Path, echo: Callable[[str], None]) -> dict:
    """The other two user jobs on the held-out folder, plus the pictures: what a user does after training."""
    from vidtok.engine.infer import classify, embed
    from vidtok.viz import write_run_pictures

    echo(f"[+] classifying and embedding {val_dir}")
    preds, emb = out / "predictions.csv", out / "embeddings.parquet"
    rows = classify(val_dir, model, topk=2, out=preds, overwrite=True, num_workers=1)
    ok = sum(r["status"] == "ok" for r in rows)
    hits = sum(r["status"] == "ok" and Path(r["path"]).parent.name == r["labels"][0] for r in rows)
    echo(f"    classify: {ok}/{len(rows)} videos, folder label == top-1 for {hits}")
    res = embed(val_dir, model, out=emb, per_video=True, normalize=True, overwrite=True, num_workers=1)
    echo(f"    embed: {len(res['index'])} vectors of size {res['embeddings'].shape[-1]}")
    first = sorted(val_dir.rglob("*.mp4"))[0]
    pictures = write_run_pictures(run_dir, first, out / "pictures", echo=lambda m: echo(f"    {m}"))
    from vidtok.report import write_report

    echo(f"[+] review page of the held-out predictions and embeddings -> {out / 'report'}")
    page = write_report([preds, emb], out / "report", overwrite=True, checkpoint=model, echo=lambda m: echo(f"    {m}"))
    return {"predictions": preds, "embeddings": emb, **pictures, "report": page["index"]}
