"""Training curves from metrics.jsonl and the confusion matrix (matplotlib, the optional viz extra)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vidtok.cli import cli
from vidtok.errors import VidtokError
from vidtok.viz.plots import plot_confusion_matrix, plot_training_curves, read_metrics

pytest.importorskip("matplotlib")


def _write_run(tmp_path, rows, tail: str = ""):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return run


def _rows():
    """Rows as vidtok.engine.train writes them: "step" rows every few steps, "epoch" rows with validation."""
    rows = []
    for s in range(5, 101, 5):
        rows.append({"kind": "step", "step": s, "epoch": (s - 1) // 25, "loss": 2.0 - s / 60,
                     "lr": 1e-3 * min(1, s / 20), "clips_per_sec": 9.5})  # fmt: skip
        if s % 25 == 0:
            rows.append({"kind": "epoch", "step": s, "epoch": s // 25 - 1, "loss": 2.1 - s / 60, "lr": 1e-3,
                         "val_top1": 30 + s / 2, "val_top5": 70 + s / 4, "val_loss": 1.8 - s / 80})  # fmt: skip
    rows.insert(3, {"kind": "error", "step": 12, "epoch": 0, "error": "loss=nan"})
    return rows


def test_read_metrics_tolerates_partial_last_line_but_not_garbage(tmp_path):
    run = _write_run(tmp_path, _rows(), tail='{"kind": "step", "step": 105, "lo')
    assert len(read_metrics(run)) == len(_rows())
    (run / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(VidtokError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(run)
    with pytest.raises(VidtokError, match="no such metrics file"):
        read_metrics(tmp_path / "nowhere")


def test_curves_png_has_three_panels(tmp_path):
    run = _write_run(tmp_path, _rows())
    out = plot_training_curves(run, tmp_path / "c.png", dpi=50)
    with Image.open(out) as im:
        w, h = im.size
        arr = np.asarray(im.convert("RGB")).astype(int)
    assert w > 2.5 * h  # three side-by-side panels
    assert arr.std() > 10  # something drawn
    run2 = tmp_path / "only_loss"
    run2.mkdir()
    # Only loss, rows without "kind": one panel, narrower figure.
    (run2 / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / (s + 1)}) + "\n" for s in range(9)))
    with Image.open(plot_training_curves(run2, tmp_path / "c2.png", dpi=50)) as im:
        assert im.size[0] < w / 2


def test_curves_change_with_the_data(tmp_path):
    a = plot_training_curves(_rows(), tmp_path / "a.png", title="x", dpi=50)
    rows = _rows()
    for r in rows:
        if r["kind"] == "step":
            r["loss"] = 5.0 - r["loss"]  # rising instead of falling
    b = plot_training_curves(rows, tmp_path / "b.png", title="x", dpi=50)
    with Image.open(a) as ia, Image.open(b) as ib:
        assert ia.size == ib.size
        diff = np.asarray(ia.convert("L")).astype(int) != np.asarray(ib.convert("L")).astype(int)
    cols = np.nonzero(diff.any(0))[0]
    assert cols.size and cols.max() < ia.size[0] / 2  # only the loss panel (left third) changed


def test_curves_errors(tmp_path):
    run = _write_run(tmp_path, [{"step": 1, "throughput": 3.0}])
    with pytest.raises(VidtokError, match="none of loss, lr, train_top1, val_top1 found.*throughput"):
        plot_training_curves(run, tmp_path / "c.png")
    with pytest.raises(VidtokError, match="unsupported output extension"):
        plot_training_curves(_rows(), tmp_path / "c.gif")


def test_plot_cli(tmp_path):
    run = _write_run(tmp_path, _rows())
    r = CliRunner().invoke(cli, ["plot", str(run)])
    assert r.exit_code == 0, r.output
    assert (run / "curves.png").is_file() and "curves.png" in r.output
    r = CliRunner().invoke(cli, ["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and r.output.startswith("error:") and r.output.strip().count("\n") == 0


def test_confusion_matrix(tmp_path):
    m = np.array([[5, 1, 0], [0, 6, 0], [2, 0, 4]])
    out = plot_confusion_matrix(m, ["a", "b", "c"], tmp_path / "cm.png", dpi=50)
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100
        a = np.asarray(im.convert("L")).astype(int)
    b_path = plot_confusion_matrix(np.eye(3, dtype=int) * 6, ["a", "b", "c"], tmp_path / "cm2.png", dpi=50)
    with Image.open(b_path) as im:
        b = np.asarray(im.convert("L")).astype(int)
    assert a.shape == b.shape and (a != b).mean() > 0.001
    # Many classes: no tick labels, still renders (K400-sized); torch tensors are accepted.
    import torch

    big = torch.randint(0, 5, (120, 120))
    plot_confusion_matrix(big, [f"class {i}" for i in range(120)], tmp_path / "big.png", dpi=30)
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(m, ["a"], tmp_path / "x.png")


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if matplotlib were absent
    with pytest.raises(VidtokError, match=r"pip install 'vidtok\[viz\]'"):
        plot_training_curves(_rows(), tmp_path / "c.png")
    with pytest.raises(VidtokError, match=r"pip install 'vidtok\[viz\]'"):
        plot_confusion_matrix(np.eye(2), None, tmp_path / "cm.png")
