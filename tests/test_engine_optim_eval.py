"""Optimizer parameter groups and the lr schedule; evaluation (multi-view averaging, per-class, report files, CLI)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidtok.engine.evaluate import evaluate, format_report, write_report
from vidtok.engine.optim import build_optimizer, cosine_lr, param_groups, set_lr

sys.path.insert(0, str(Path(__file__).parent))
from _engine_util import TinyVideoNet, ViewDataset  # noqa: E402


def test_no_weight_decay_on_norms_biases_pos_embed():
    m = TinyVideoNet()
    groups = param_groups(m, weight_decay=0.05)
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert decay == {"embed.weight", "block.1.weight", "head.weight"}
    assert {"pos_embed", "embed.bias", "block.0.weight", "block.0.bias", "norm.weight", "head.bias"} <= no_decay
    assert decay.isdisjoint(no_decay) and len(decay | no_decay) == len(list(m.parameters()))


def test_layer_decay_scales():
    m = TinyVideoNet()  # num_layers = 1: ids 0 (embeddings), 1 (block), 2 (head)
    opt = build_optimizer(m, lr=1.0, weight_decay=0.1, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in opt.param_groups for n in g["names"]}
    assert scale["head.weight"] == 1.0 and scale["block.1.weight"] == 0.5 and scale["embed.weight"] == 0.25
    set_lr(opt, 2e-3)
    lrs = {n: g["lr"] for g in opt.param_groups for n in g["names"]}
    assert lrs["pos_embed"] == pytest.approx(5e-4) and lrs["head.bias"] == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="get_layer_id"):
        param_groups(nn.Linear(2, 2), weight_decay=0.1, layer_decay=0.9)


def test_cosine_schedule():
    kw = dict(base_lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)
    lrs = [cosine_lr(s, **kw) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup, peak at its end
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55)  # half-way down the cosine
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # monotone after warmup
    assert lrs[110] == lrs[119] == 0.1
    assert cosine_lr(35, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.25)))


class _Fixed(nn.Module):
    """Returns fixed logits per clip: the logits are stored in the clip's first pixel of each class channel."""

    def forward(self, x):  # x: (B, C, T, H, W) with C = num classes
        return x[:, :, 0, 0, 0]


def test_multiview_averages_probabilities_not_logits():
    # clip 0 (label 0): view A strongly says class 1, views B, C mildly say class 0.
    # logit averaging -> class 1; probability averaging -> class 0 (the documented behaviour).
    k, v = 3, 3
    videos = torch.zeros(2, v, k, 2, 2, 2)
    videos[0, 0, :, 0, 0, 0] = torch.tensor([0.0, 10.0, 0.0])
    videos[0, 1, :, 0, 0, 0] = torch.tensor([2.0, 0.0, 0.0])
    videos[0, 2, :, 0, 0, 0] = torch.tensor([2.0, 0.0, 0.0])
    videos[1, :, :, 0, 0, 0] = torch.tensor([0.0, 0.0, 3.0])
    ds = ViewDataset(videos, [0, 1], ["a", "b", "c"])
    res = evaluate(_Fixed(), ds, batch_size=2)
    probs0 = torch.softmax(videos[0, :, :, 0, 0, 0], -1).mean(0)
    assert probs0.argmax() == 0 and videos[0, :, :, 0, 0, 0].mean(0).argmax() == 1  # the two rules disagree
    assert res["predictions"] == [{"index": 0, "label": 0, "pred": 0}, {"index": 1, "label": 1, "pred": 2}]
    assert res["top1"] == 50.0 and res["num_views"] == 3
    assert res["top5"] == 100.0  # k = 3 < 5: every label is in the top-k
    np.testing.assert_array_equal(res["confusion"], [[1, 0, 0], [0, 0, 1], [0, 0, 0]])
    assert [r["accuracy"] for r in res["per_class"]][:2] == [100.0, 0.0]
    expected_nll = -(math.log(probs0[0]) + math.log(torch.softmax(torch.tensor([0.0, 0.0, 3.0]), -1)[1])) / 2
    assert res["loss"] == pytest.approx(expected_nll, rel=1e-5)


def test_top5_against_sklearn_free_oracle(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, k = 40, 8
    logits = torch.randn(n, k, generator=g)
    labels = torch.randint(0, k, (n,), generator=g).tolist()
    videos = torch.zeros(n, k, 1, 1, 1)
    videos[:, :, 0, 0, 0] = logits
    ds = ViewDataset(videos, labels, [f"c{i}" for i in range(k)])
    res = evaluate(_Fixed(), ds, batch_size=7, num_workers=2)
    rank = [(logits[i] > logits[i, labels[i]]).sum().item() for i in range(n)]  # 0 = the label is the arg-max
    assert res["top1"] == pytest.approx(100.0 * sum(r == 0 for r in rank) / n)
    assert res["top5"] == pytest.approx(100.0 * sum(r < 5 for r in rank) / n)
    files = write_report(res, tmp_path / "eval")
    png = files["confusion"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    saved = json.loads(files["metrics"].read_text())
    assert saved["top1"] == res["top1"] and len(saved["per_class"]) == k
    assert (tmp_path / "eval" / "per_class.csv").read_text().count("\n") == k + 1
    text = format_report(res)
    assert "top-1" in text and "top-5" in text and "c7" in text


def test_optimizer_state_in_another_parameter_order_is_refused():
    """AdamW's state is restored by position: a state saved for parameters in another order is one line, not moments
    silently given to the wrong tensors (or a shape error at the first step)."""
    from vidtok.engine.train_step import _check_optimizer_state
    from vidtok.errors import CheckpointError

    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(2, 3))
    opt = torch.optim.AdamW([a, b])
    (a.sum() + b.sum()).backward()
    opt.step()
    saved = opt.state_dict()
    same = torch.optim.AdamW([a, b])
    same.load_state_dict(saved)
    _check_optimizer_state(same)  # the same order loads
    swapped = torch.optim.AdamW([b, a])
    swapped.load_state_dict(saved)
    with pytest.raises(CheckpointError, match=r"does not fit .*\(4,\) for a \(2, 3\) parameter"):
        _check_optimizer_state(swapped)
