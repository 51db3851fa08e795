"""`vidtok viz` end to end: a generated video through the real decoder and transforms, a model's maps, the files.

A contract-following stand-in model (tests/_viz_util.py) computes its maps from the input, so the test knows where
they must peak; the real registry models are exercised in test_viz_registry.py.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests._viz_util import SQUARE, TinyMapModel, make_frames, square_xy, write_video
from vidtok.cli import cli
from vidtok.errors import VidtokError
from vidtok.viz.attention import explain, visualize


@pytest.fixture(scope="session")
def square_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("viz") / "square.mp4", make_frames())


def test_clip_frames_are_what_the_model_sees(square_video):
    view = explain(TinyMapModel(), square_video)
    # 24-frame video, 8 frames with stride 2, centred: frames 4, 6, ..., 18. Short side 48 -> 32, crop 32x32.
    assert view.indices == list(range4 := range(4, 20, 2)) and len(range4) == 8
    assert view.frames.shape == (8, 32, 32, 3) and view.frames.dtype == np.uint8
    # the square (brightest region) of frame 0 sits where the generator put it, scaled 32/48 and centre-cropped
    x, y = square_xy(4)
    scale = 32 / 48
    crop_x0 = (round(64 * scale) - 32) // 2
    cy, cx = int((y + SQUARE / 2) * scale), int((x + SQUARE / 2) * scale) - crop_x0
    assert view.frames[0, cy, cx].min() > 200 and view.frames[0, 2, 2].max() < 120


def test_token_maps_follow_the_square(square_video):
    view = explain(TinyMapModel(), square_video, mode="tokens")
    assert view.mode == "tokens" and view.maps.shape == (4, 3, 4, 4)
    assert view.map_labels == ["token 0", "token 1", "token 2"]
    assert [name for name, _ in view.topk][:1] and len(view.topk) == 3
    assert {name for name, _ in view.topk} <= {"left", "right", "up", "down"}
    assert view.title.startswith("top-3: ")
    # token 0's peak moves right with the square; token 1 avoids it
    peaks = [np.unravel_index(view.maps[t, 0].argmax(), (4, 4))[1] for t in range(4)]
    assert peaks == sorted(peaks) and peaks[-1] > peaks[0]
    assert all(view.maps[t, 1].argmax() != view.maps[t, 0].argmax() for t in range(4))


def test_cls_attention_with_and_without_tokenlearner(square_video):
    plain = explain(TinyMapModel(tokenlearner=False), square_video)
    assert plain.mode == "cls" and plain.maps.shape == (4, 1, 4, 4) and plain.map_labels == ["CLS attention"]
    tl = explain(TinyMapModel(), square_video, mode="cls")
    # CLS attends to token 0 only, so spread back through the maps it equals token 0's map / T'
    full = explain(TinyMapModel(), square_video, mode="tokens")
    assert np.allclose(tl.maps[:, 0], full.maps[:, 0] / 4, atol=1e-6)
    # both put the most attention on the square
    assert all(plain.maps[t, 0].argmax() == full.maps[t, 0].argmax() for t in range(4))


@pytest.mark.parametrize("mode", ["tokens", "argmax", "cls"])
def test_visualize_png(square_video, tmp_path, mode):
    out = tmp_path / f"{mode}.png"
    view = visualize(square_video, TinyMapModel(), out, mode=mode, cell=64)
    with Image.open(out) as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    cols = {"tokens": 4, "argmax": 2, "cls": 2}[mode]
    assert arr.shape[1] >= 4 + cols * 68 and arr.shape[0] > 4 * 68  # 4 temporal rows of 64 px
    assert arr.std() > 20  # not blank
    assert view.mode == mode


def test_gif_and_mp4_animate_the_clip(square_video, tmp_path):
    gif = tmp_path / "o.gif"
    visualize(square_video, TinyMapModel(), gif, cell=48, fps=8)
    with Image.open(gif) as im:
        assert im.n_frames == 8
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")).astype(int))
    assert np.abs(frames[0] - frames[-1]).mean() > 1  # the square moved, so did its overlay
    mp4 = tmp_path / "o.mp4"
    visualize(square_video, TinyMapModel(), mp4, mode="argmax", cell=48)
    with av.open(str(mp4)) as c:
        assert c.streams.video[0].codec_context.name in ("h264", "mpeg4")
        n = sum(1 for _ in c.decode(video=0))
    assert n == 8


def test_tokenlearner_view_without_tokenlearner_is_an_error(square_video, tmp_path):
    with pytest.raises(VidtokError, match="has no TokenLearner.*--mode cls"):
        visualize(square_video, TinyMapModel(tokenlearner=False), tmp_path / "o.png", mode="argmax")
    assert not (tmp_path / "o.png").exists()


def test_cli_errors_are_one_line(square_video, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video" * 10)
    runner = CliRunner()
    (tmp_path / "x").write_bytes(b"not read: the output extension is checked first")
    r = runner.invoke(cli, ["viz", str(square_video), "--checkpoint", str(tmp_path / "x"), "--out", "o.avi"])
    assert r.exit_code == 1 and "unsupported output extension '.avi'" in r.output
    assert r.output.strip().count("\n") == 0
    r = runner.invoke(cli, ["viz", str(square_video), "--checkpoint", str(tmp_path / "missing"), "--out", "o.png"])
    assert r.exit_code == 2 and r.output.startswith("error:") and "missing" in r.output  # a usage error
    assert r.output.strip().count("\n") == 0


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VidtokError, match="broken.mp4"):
        visualize(bad, TinyMapModel(), tmp_path / "o.png")
