"""Overlay rendering on synthetic frames and maps: colours, layout, and files that decode (PNG, GIF, MP4)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from vidtok.errors import VidtokError
from vidtok.viz import render

T, H, W = 8, 32, 40


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(40, 200, size=(T, H, W, 3), dtype=np.uint8)


def _maps(num_slices: int = 4, k: int = 3) -> np.ndarray:
    """k maps per slice on a 4x5 grid: map i peaks at column i, so each token looks somewhere else."""
    maps = np.zeros((num_slices, k, 4, 5), np.float32)
    for i in range(k):
        maps[:, i, :, i] = 1.0
    return maps


def test_turbo_matches_matplotlib_table():
    mpl = pytest.importorskip("matplotlib")
    x = np.linspace(0, 1, 257)
    ref = mpl.colormaps["turbo"](x)[:, :3] * 255
    ours = render.turbo(x).astype(np.float64)
    assert ours.shape == (257, 3) and render.turbo(np.zeros((2, 3))).shape == (2, 3, 3)
    assert np.abs(ours - ref).max() <= 8.0
    assert np.array_equal(render.turbo(np.array([-1.0, 2.0])), render.turbo(np.array([0.0, 1.0])))  # clipped


def test_palette_is_distinct():
    cols = render.palette(40)
    assert cols.shape == (40, 3) and cols.dtype == np.uint8
    assert len({tuple(c) for c in cols}) == 40


def test_heat_overlay_follows_the_map():
    frame = np.full((H, W, 3), 128, np.uint8)
    heat = np.zeros((H, W), np.float32)
    heat[:, : W // 2] = 1.0
    out = render.heat_overlay(frame, heat, alpha=0.5)
    left, right = out[:, : W // 2].reshape(-1, 3), out[:, W // 2 :].reshape(-1, 3)
    # Each half is uniform (the frame is), the halves differ, and match the blend formula exactly.
    assert (left == left[0]).all() and (right == right[0]).all() and not np.array_equal(left[0], right[0])
    want = np.round(0.5 * 128 + 0.5 * render.turbo(np.array(1.0)).astype(np.float64))
    assert np.abs(left[0] - want).max() <= 1


def test_argmax_overlay_colours_by_strongest_map():
    frame = np.zeros((H, W, 3), np.uint8)
    maps = np.zeros((3, H, W), np.float32)
    maps[0, :, :10] = 1
    maps[1, :, 10:20] = 1
    maps[2, :, 20:] = 1
    cols = render.palette(3)
    out = render.argmax_overlay(frame, maps, cols, alpha=1.0)
    assert np.array_equal(out[5, 5], cols[0]) and np.array_equal(out[5, 15], cols[1])
    assert np.array_equal(out[5, 30], cols[2])


def test_normalize_maps_per_map_and_constant_maps():
    m = np.stack([np.linspace(2, 4, 20).reshape(4, 5), np.full((4, 5), 7.0)])
    n = render.normalize_maps(m)
    assert n[0].min() == 0 and n[0].max() == pytest.approx(1) and (n[1] == 0).all()


def test_grid_layout_and_only_changed_token_changes():
    frames, maps = _frames(), _maps()
    img = render.render_grid(frames, maps, title="top-3: a 50%", cell=64)
    arr = np.asarray(img)
    # 4 slices -> 4 rows of 64-px-high cells (frames are 32x40 -> cells 64x51); 1 frame column + 3 token columns.
    assert img.size[0] == 4 + 4 * (64 + 4)
    assert img.size[1] > 4 * (51 + 4)
    # Change only token 1's maps: pixels change, and only inside one column's span.
    maps2 = maps.copy()
    maps2[:, 1] = maps2[:, 1, ::-1, ::-1]  # peak moves to the other side
    maps2[:, 1, :, 1] = 0
    maps2[:, 1, :, 3] = 1
    arr2 = np.asarray(render.render_grid(frames, maps2, title="top-3: a 50%", cell=64))
    diff = np.nonzero((arr != arr2).any(-1))
    assert diff[1].size > 0
    x0, x1 = diff[1].min(), diff[1].max()
    assert x0 >= 4 + 2 * 68 and x1 < 4 + 3 * 68  # third column = token 1


def test_overlay_not_constant_and_differs_where_maps_differ():
    frames = np.full((T, H, W, 3), 100, np.uint8)  # flat frames: any structure comes from the maps
    maps = _maps(k=2)
    imgs = render.render_animation(frames, maps, cell=40)
    arr = np.asarray(imgs[0]).astype(int)
    assert len(imgs) == T and all(im.size == imgs[0].size for im in imgs)
    # token 0 panel (column 1) and token 1 panel (column 2): same frame, different maps -> different pixels.
    top = arr.shape[0] - 4 - 32  # the single row of cells ends 4 px above the bottom (cells are 40x32)
    p0 = arr[top : top + 32, 4 + 44 : 4 + 44 + 40]
    p1 = arr[top : top + 32, 4 + 88 : 4 + 88 + 40]
    assert p0.std() > 10 and p1.std() > 10  # not blank
    assert np.abs(p0 - p1).mean() > 10
    # the hot column of token 0 is the 1st of 5 grid columns, of token 1 the 2nd
    hot = render.turbo(np.array(1.0)).astype(int) // 2 + 50
    assert np.abs(p0[16, 2] - hot).max() <= 3 and np.abs(p1[16, 2] - hot).max() > 20


def test_argmax_grid_has_legend_and_two_columns():
    img = render.render_grid(_frames(), _maps(k=5), mode="argmax", cell=64, title="")
    assert img.size[0] == 4 + 2 * 68
    with pytest.raises(ValueError, match="mode"):
        render.render_grid(_frames(), _maps(), mode="nope")
    with pytest.raises(ValueError, match="maps"):
        render.render_grid(_frames(), np.zeros((4, 4, 4)))


def test_files_decode(tmp_path):
    frames, maps = _frames(), _maps()
    png = render.save_output(frames, maps, tmp_path / "o.png", title="t", cell=48)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] == 4 + 4 * 52
    gif = render.save_output(frames, maps, tmp_path / "o.gif", title="t", cell=48, fps=5)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == T and im.info["duration"] == 200
        size = im.size
    mp4 = render.save_output(frames, maps, tmp_path / "o.mp4", title="t", cell=48, fps=5)
    with av.open(str(mp4)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == T
    assert decoded[0].shape[1] == size[0] + size[0] % 2 and decoded[0].shape[0] == size[1] + size[1] % 2
    # the first and the last MP4 frames show different input frames
    assert np.abs(decoded[0].astype(int) - decoded[-1].astype(int)).mean() > 1


def test_unsupported_extension_is_one_line_error(tmp_path):
    with pytest.raises(VidtokError, match=r"unsupported output extension '\.avi'") as e:
        render.save_output(_frames(), _maps(), tmp_path / "o.avi")
    assert "\n" not in str(e.value)
    with pytest.raises(VidtokError, match="no extension"):
        render.check_output_path(tmp_path / "noext")


def test_clip_normalisation_keeps_a_token_dark_where_it_looks_away():
    maps = np.zeros((2, 1, 4, 4), np.float32)
    maps[0, 0, 0, 0] = 1.0  # strong in slice 0
    maps[1, 0, 3, 3] = 0.01  # barely anything in slice 1
    clip = render.normalize_maps(maps, "clip")
    panel = render.normalize_maps(maps, "panel")
    assert clip[0, 0, 0, 0] == 1 and clip[1, 0].max() == pytest.approx(0.01)
    assert panel[1, 0].max() == pytest.approx(1.0)  # per panel the faint slice looks as strong
    assert np.array_equal(render.normalize_maps(np.full((2, 1, 4, 4), 3.0), "none"), np.ones((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="normalize"):
        render.normalize_maps(maps, "tokens")
    a = np.asarray(render.render_grid(_frames(), maps, normalize="clip", cell=40))
    b = np.asarray(render.render_grid(_frames(), maps, normalize="panel", cell=40))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_frame_numbers_in_tags():
    frames, maps = _frames(), _maps()
    plain = np.asarray(render.render_grid(frames, maps, cell=128))
    numbered = np.asarray(render.render_grid(frames, maps, cell=128, frame_numbers=list(range(100, 116, 2))))
    diff = np.nonzero((plain != numbered).any(-1))
    assert diff[1].size and diff[1].max() < 4 + 128  # only the tags in the frame column changed
    with pytest.raises(ValueError, match="frame numbers"):
        render.render_grid(frames, maps, frame_numbers=[1, 2])
