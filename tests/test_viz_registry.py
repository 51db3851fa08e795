"""`vidtok viz` on real registry models saved as checkpoints: TokenLearner (per-slice and joint), plain ViViT,
and the models that have no map to show (clear errors)."""

from __future__ import annotations

import re

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests._viz_util import make_frames, write_video
from vidtok.cli import cli
from vidtok.errors import VidtokError
from vidtok.viz.attention import explain

TINY = dict(embed_dim=32, depth=3, num_heads=2, num_classes=4, num_frames=8, img_size=32)
CLASSES = ["left", "right", "up", "down"]


def _save(tmp_path_factory, name: str, **extra) -> str:
    import torch

    from vidtok.models import create_model
    from vidtok.models.hub import save_model

    torch.manual_seed(0)
    model = create_model(name, **{**TINY, **extra})
    path = tmp_path_factory.mktemp("ckpt") / f"{name}.safetensors"
    cfg = {"short_side": 32, "frame_stride": 2, "class_names": CLASSES}
    return str(save_model(model, path, pretrained_cfg=cfg))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("viz_reg") / "square.mp4", make_frames())


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    tl = {"token_reducer_layer": 1, "token_reducer_kwargs": {"num_tokens": 4, "version": "1.1"}}
    return {
        "vidtok": _save(tmp_path_factory, "vidtok_ti", **tl),
        "vivit": _save(tmp_path_factory, "vivit_ti16x2"),
        "joint": _save(
            tmp_path_factory,
            "vivit_ti16x2",
            token_reducer="tokenlearner",
            token_reducer_layer=1,
            token_reducer_kwargs={"num_tokens": 3, "joint": True},
        ),
        "tokshift": _save(tmp_path_factory, "tokshift_ti16"),
    }


def test_cli_viz_png_gif_mp4_from_a_tokenlearner_checkpoint(video, ckpts, tmp_path):
    runner = CliRunner()
    png, gif, mp4 = tmp_path / "o.png", tmp_path / "o.gif", tmp_path / "o.mp4"
    r = runner.invoke(cli, ["viz", str(video), "--checkpoint", ckpts["vidtok"], "--out", str(png), "--cell", "48"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("top-3: ") and all(any(c in line for c in CLASSES) for line in r.output.splitlines()[:1])
    with Image.open(png) as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    assert arr.shape[1] == 4 + 5 * 52  # frame + 4 token columns of 48 px
    r = runner.invoke(cli, ["viz", str(video), "-c", ckpts["vidtok"], "-o", str(gif), "--mode", "argmax"])
    assert r.exit_code == 0, r.output
    with Image.open(gif) as im:
        assert im.n_frames == 8
    r = runner.invoke(cli, ["viz", str(video), "-c", ckpts["vidtok"], "-o", str(mp4), "--mode", "cls", "--fps", "6"])
    assert r.exit_code == 0, r.output
    with av.open(str(mp4)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 8


def test_tokenlearner_maps_are_per_token_and_not_constant(video, ckpts):
    from vidtok.models.hub import load_model

    model = load_model(ckpts["vidtok"])
    view = explain(model, video)
    assert view.mode == "tokens" and view.maps.shape == (4, 4, 2, 2)  # T'=4 slices, 4 tokens, 2x2 grid of 16 px
    assert np.allclose(view.maps.sum((-2, -1)), 1, atol=1e-4)  # v1.1 maps: softmax over positions
    assert view.maps.std(axis=(-2, -1)).min() > 1e-4  # no token has a flat map
    assert np.abs(view.maps[:, 0] - view.maps[:, 1]).max() > 1e-3  # tokens look at different places
    assert view.topk[0][0] in CLASSES and sum(p for _, p in view.topk) <= 1 + 1e-6
    cls = explain(model, video, mode="cls")  # mean attention over learned tokens, spread back on the grid
    assert cls.maps.shape == (4, 1, 2, 2) and cls.map_labels == ["mean attention"]


def test_plain_vivit_cls_attention(video, ckpts):
    from vidtok.models.hub import load_model

    view = explain(load_model(ckpts["vivit"]), video)
    assert view.mode == "cls" and view.map_labels == ["CLS attention"]
    assert view.maps.shape == (4, 1, 2, 2)
    assert np.all(view.maps >= 0) and view.maps.sum() <= 1 + 1e-5  # a softmax row minus the CLS column


def test_joint_tokenlearner_maps_split_by_slice(video, ckpts):
    from vidtok.models.hub import load_model

    model = load_model(ckpts["joint"])
    view = explain(model, video)
    assert view.maps.shape == (4, 3, 2, 2)
    assert np.allclose(view.maps.sum((0, -2, -1)), 1, atol=1e-4)  # each joint map sums to 1 over the whole clip
    assert explain(model, video, mode="cls").maps.shape == (4, 1, 2, 2)


def test_errors_are_one_line(video, ckpts, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["viz", str(video), "-c", ckpts["vivit"], "-o", str(tmp_path / "o.png"), "--mode", "tokens"])
    assert r.exit_code == 1 and r.output.startswith("error: ") and r.output.count("\n") == 1
    assert "vivit_ti16x2.safetensors" in r.output and "has no TokenLearner" in r.output
    r = runner.invoke(cli, ["viz", str(video), "-c", ckpts["tokshift"], "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 1 and "no last-block attention" in r.output and "'space'" in r.output
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 2000)
    r = runner.invoke(cli, ["viz", str(bad), "-c", ckpts["vidtok"], "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 1 and r.output.startswith("error: ") and "bad.mp4" in r.output
    assert r.output.count("\n") == 1
    r = runner.invoke(cli, ["viz", str(video), "-c", ckpts["vidtok"], "-o", str(tmp_path / "o.webm")])
    assert r.exit_code == 1 and "unsupported output extension '.webm'" in r.output
    with pytest.raises(VidtokError, match="unknown viz mode"):
        explain(None, video, mode="heat")


def test_write_run_pictures(video, ckpts, tmp_path):
    import json
    import shutil

    from vidtok.viz import write_run_pictures

    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpts["vidtok"], run / "model.safetensors")
    rows = [{"kind": "step", "step": s, "loss": 1.5 - s / 100, "lr": 1e-3} for s in range(1, 40, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = write_run_pictures(run, video, tmp_path / "pics", cell=48)
    assert sorted(files) == ["curves", "overlay", "overlay_gif"]
    assert files["overlay"].name == "tokenlearner_overlay.png" and files["overlay_gif"].is_file()
    with Image.open(files["overlay_gif"]) as im:
        assert im.n_frames == 8
    # a plain ViViT run without metrics: CLS overlay, the missing curves are a note, not a failure
    run2 = tmp_path / "run2"
    run2.mkdir()
    shutil.copy(ckpts["vivit"], run2 / "model.safetensors")
    notes: list[str] = []
    files = write_run_pictures(run2, video, tmp_path / "pics2", gif=False, cell=48, echo=notes.append)
    assert sorted(files) == ["overlay"] and files["overlay"].name == "attention_overlay.png"
    assert len(notes) == 1 and notes[0].startswith("curves skipped:")


@pytest.mark.parametrize(
    "name, expect",
    [
        ("videomae_b16x2", "mean attention"),  # the HF VideoMAE architecture: joint attention, mean pooling
        ("timesformer_b16", "'fsa' attention, not joint"),
        ("vivit_b16x2_fe", "temporal slices only (factorised encoder)"),
    ],
)
def test_converted_architectures(video, name, expect):
    from vidtok.models import create_model

    model = create_model(name, **{**TINY, "depth": 2}).eval()
    model.pretrained_cfg.update(short_side=32, class_names=CLASSES)
    if expect == "mean attention":
        view = explain(model, video)
        assert view.mode == "cls" and view.map_labels == [expect] and view.maps.shape == (4, 1, 2, 2)
    else:
        with pytest.raises(VidtokError, match=re.escape(expect)):
            explain(model, video)
