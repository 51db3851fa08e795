"""Training options for the field's tools: ``train.log_to: [jsonl, tensorboard]`` (scalars read back with
tensorboard's EventAccumulator, `vidtok plot` still works from metrics.jsonl) and ``train.grad_checkpointing``
(the same training trajectory, with checkpointing really on)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests._engine_util import MotionDataset, tiny_config
from vidtok.config import load_config, validate_config
from vidtok.engine.train import train
from vidtok.errors import ConfigError
from vidtok.models import create_model, load_model
from vidtok.models.hub import read_checkpoint

pytest.importorskip("tensorboard")


_TINY = {"embed_dim": 16, "depth": 2, "num_heads": 2, "tubelet_size": [2, 4, 4]}


def _cfg(**train_kw):
    cfg = tiny_config(0, **{"epochs": 2, "eval_every": 1, "label_smoothing": 0.0, **train_kw})
    cfg.model.name = "vivit_ti16x2"  # a real backbone on the 4x8x8 motion clips: 2x4x4 tubelets
    cfg.model.extra = dict(_TINY)
    cfg.model.attn_backend = "math"
    return cfg


def _run(cfg, out):
    torch.manual_seed(0)
    return train(
        cfg, out, train_dataset=MotionDataset(16), val_dataset=MotionDataset(8, seed=9), progress=False,
        log=lambda m: None,
    )  # fmt: skip


def test_tensorboard_scalars_match_metrics_jsonl_and_plot_still_works(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    _run(_cfg(log_to=["jsonl", "tensorboard"]), run)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/clips_per_sec", "val/top1", "val/top5", "epoch/loss"} <= tags
    steps = [r for r in rows if r["kind"] == "step"]
    tb_loss = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert sorted(tb_loss) == [r["step"] for r in steps]
    for r in steps:
        assert tb_loss[r["step"]] == pytest.approx(r["loss"], rel=1e-6)
    tb_lr = {e.step: e.value for e in acc.Scalars("train/lr")}
    assert tb_lr[steps[-1]["step"]] == pytest.approx(steps[-1]["lr"], rel=1e-6)
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [e.value for e in acc.Scalars("val/top1")] == pytest.approx([r["val_top1"] for r in epochs])
    images = acc.Images("val/confusion")  # 3 classes, 16 px a cell, one per evaluation
    assert [e.step for e in images] == [r["step"] for r in epochs] and images[0].width == images[0].height == 48

    from vidtok.viz.plots import plot_training_curves

    png = plot_training_curves(run, tmp_path / "curves.png")
    assert png.stat().st_size > 1000


def test_tensorboard_shows_the_tokenlearner_maps_at_each_evaluation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vidtok.viz.attention import token_map_image

    run = tmp_path / "run"
    cfg = _cfg(log_to=["jsonl", "tensorboard"])
    cfg.model.name = "vivit_b16x2_tl8"  # TokenLearner after block 1: 2 tokens per temporal slice of 2x2 tubelets
    cfg.model.extra = {**cfg.model.extra, "token_reducer_layer": 1, "token_reducer_kwargs": {"num_tokens": 2}}
    torch.manual_seed(0)
    val = MotionDataset(8, seed=9, noise=0.0)  # the same clip at every call
    res = train(cfg, run, train_dataset=MotionDataset(16), val_dataset=val, progress=False, log=lambda m: None)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    images = acc.Images("val/tokenlearner")
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in images] == [r["step"] for r in epochs if r["kind"] == "epoch"]
    # the last image is the final model's maps on the first validation clip, drawn by `vidtok viz`'s renderer
    model = load_model(res["model_path"]).eval()
    want = token_map_image(model, val[0]["video"], mean=cfg.data.mean, std=cfg.data.std)
    got = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
    assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1
    # a model without TokenLearner has no such image
    plain = create_model("vivit_ti16x2", num_frames=4, img_size=8, num_classes=3, **_TINY)
    assert token_map_image(plain.eval(), torch.zeros(3, 4, 8, 8), mean=[0] * 3, std=[1] * 3) is None


def test_the_tokenlearner_image_leaves_training_unchanged(tmp_path):
    """Drawing val/tokenlearner reads a validation item; with a dataset that draws its noise from the global RNG
    (MotionDataset) and stochastic depth drawing from it too, the training losses are still those of a run without
    TensorBoard."""
    losses = {}
    for sinks in (["jsonl"], ["jsonl", "tensorboard"]):
        cfg = _cfg(log_to=sinks, epochs=3)
        cfg.model.name = "vivit_b16x2_tl8"
        cfg.model.extra = {**cfg.model.extra, "token_reducer_layer": 1, "token_reducer_kwargs": {"num_tokens": 2}}
        cfg.model.drop_path_rate = 0.3
        run = tmp_path / "-".join(sinks)
        _run(cfg, run)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        losses[len(sinks)] = [r["loss"] for r in rows if r["kind"] == "step"]
    assert (tmp_path / "jsonl-tensorboard" / "tb").is_dir() and len(losses[1]) > 4
    assert losses[1] == losses[2]


def test_jsonl_only_by_default(tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(epochs=1, eval_every=0)
    assert cfg.train.log_to == ["jsonl"]
    _run(cfg, run)
    assert (run / "metrics.jsonl").is_file() and not (run / "tb").exists()


def test_grad_checkpointing_trains_the_same_weights(tmp_path, monkeypatch):
    import torch.utils.checkpoint as tuc

    ref = _run(_cfg(epochs=1, eval_every=0), tmp_path / "a")
    calls = []
    real = tuc.checkpoint
    monkeypatch.setattr(tuc, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = _run(_cfg(epochs=1, eval_every=0, grad_checkpointing=True), tmp_path / "b")
    assert len(calls) == 2 * got["step"] * 1  # 2 blocks per forward, one micro-batch per step
    wa, _ = read_checkpoint(ref["model_path"])
    wb, meta = read_checkpoint(got["model_path"])
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-5, msg=k)
    assert meta["config"]["train"]["grad_checkpointing"] is True


def test_log_to_is_validated(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  log_to: [jsonl, wandb]\n")
    with pytest.raises(ConfigError, match="train.log_to: unknown value 'wandb'"):
        validate_config(load_config(p))
    p.write_text("train:\n  log_to: [tensorboard]\n")
    with pytest.raises(ConfigError, match="must include jsonl"):
        validate_config(load_config(p))
