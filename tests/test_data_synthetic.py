"""The synthetic motion dataset: real files in Kinetics layout; classes share their mean frame but differ in motion.

The motion oracle is an independent Lucas–Kanade optical-flow estimate on the decoded pixels (mean horizontal and
vertical flow, curl and divergence over moving pixels), not the generator's parameters.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from vidtok.cli import cli
from vidtok.data.synthetic import MOTIONS, make_synthetic_dataset, render_video
from vidtok.io import open_video

PER_CLASS, SIZE, FRAMES = 16, 48, 16


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> tuple[Path, dict[str, list[torch.Tensor]]]:
    """All 8 classes x 16 videos, written as H.264 and decoded back: {class: [uint8 (T, H, W, 3)]}."""
    root = tmp_path_factory.mktemp("synth8")
    make_synthetic_dataset(root, num_classes=8, per_class=PER_CLASS, val_per_class=1, seed=1, size=SIZE, frames=FRAMES)
    out: dict[str, list[torch.Tensor]] = {m: [] for m in MOTIONS}
    for p in sorted((root / "train").rglob("*.mp4")):
        with open_video(p, "pyav") as v:
            out[p.parent.name].append(v.get_frames(list(range(v.metadata.num_frames))))
    return root, out


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra intra-op threads only add overhead on a busy machine
    yield
    torch.set_num_threads(n)


def motion_stats(frames: torch.Tensor, win: int = 7) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> median over frame pairs of [mean u, mean v, curl, divergence] of Lucas–Kanade flow.

    Image coordinates: x right, y down; clockwise rotation on screen has positive curl.
    """
    f = frames.float().mean(-1) / 255  # (T, H, W) gray
    f = F.avg_pool2d(f[:, None], 3, 1, 1, count_include_pad=False)[:, 0]
    a, b = f[:-1], f[1:]
    i = (a + b) / 2
    ix = (i[:, 1:-1, 2:] - i[:, 1:-1, :-2]) / 2  # central differences, interior pixels
    iy = (i[:, 2:, 1:-1] - i[:, :-2, 1:-1]) / 2
    it = (b - a)[:, 1:-1, 1:-1]

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, None], win, 1, win // 2, count_include_pad=False)[:, 0]

    sxx, sxy, syy, sxt, syt = box(ix * ix), box(ix * iy), box(iy * iy), box(ix * it), box(iy * it)
    det = sxx * syy - sxy**2
    ok = det > 1e-3 * det.amax(dim=(1, 2), keepdim=True)
    u = torch.where(ok, -(syy * sxt - sxy * syt) / det.clamp_min(1e-12), 0.0)
    v = torch.where(ok, -(sxx * syt - sxy * sxt) / det.clamp_min(1e-12), 0.0)
    m = (ok & (box(it.abs()) > 0.02))[:, 1:-1, 1:-1].float()  # moving, well-conditioned pixels
    dvdx = (v[:, 1:-1, 2:] - v[:, 1:-1, :-2]) / 2
    dudy = (u[:, 2:, 1:-1] - u[:, :-2, 1:-1]) / 2
    dudx = (u[:, 1:-1, 2:] - u[:, 1:-1, :-2]) / 2
    dvdy = (v[:, 2:, 1:-1] - v[:, :-2, 1:-1]) / 2
    n = m.sum(dim=(1, 2)).clamp_min(1)
    quantities = (u[:, 1:-1, 1:-1], v[:, 1:-1, 1:-1], dvdx - dudy, dudx + dvdy)
    per_pair = torch.stack([(q * m).sum(dim=(1, 2)) / n for q in quantities], 1)  # (T-1, 4)
    return per_pair.median(0).values


def test_layout_csv_and_files(decoded):
    root, videos = decoded
    assert (root / "classes.txt").read_text().split("\n")[:-1] == list(MOTIONS)
    for split, n in (("train", PER_CLASS), ("val", 1)):
        with open(root / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 8 * n and {r["split"] for r in rows} == {split}
        for r in rows:
            name = f"{r['youtube_id']}_{int(r['time_start']):06d}_{int(r['time_end']):06d}.mp4"
            assert (root / split / r["label"] / name).is_file()
    with open_video(next((root / "val").rglob("*.mp4"))) as v:
        m = v.metadata
        assert (m.num_frames, m.width, m.height, m.codec) == (FRAMES, SIZE, SIZE, "h264")
        assert m.fps == pytest.approx(25.0)
    assert all(len(v) == PER_CLASS and v[0].shape == (FRAMES, SIZE, SIZE, 3) for v in videos.values())


@pytest.fixture(scope="module")
def rendered() -> dict[str, torch.Tensor]:
    """48 rendered videos per class (32 px, 12 frames): the frames the generator hands to the encoder."""
    return {
        m: torch.from_numpy(
            np.stack([render_video(m, np.random.default_rng([5, i, k]), size=32, frames=12) for k in range(48)])
        )
        for i, m in enumerate(MOTIONS)
    }


def _max_class_z(videos: dict[str, torch.Tensor], which: str, leak=None) -> tuple[float, float]:
    """Largest |z| of a class mean against the grand mean: of 8x8-pixel block maps (each video's brightness removed,
    which is tested on its own as the second value)."""
    maps, bright = {}, {}
    for m, v in videos.items():
        x = (v.float().mean(1) if which == "all frames" else v[:, 0].float()).permute(0, 3, 1, 2)  # (n, 3, H, W)
        if leak is not None and m == "right":
            x = leak(x)
        bright[m] = x.mean(dim=(1, 2, 3))  # (n,)
        maps[m] = F.avg_pool2d(x - bright[m].view(-1, 1, 1, 1), 8)  # (n, 3, H/8, W/8)

    def zmax(d: dict[str, torch.Tensor]) -> float:
        grand = torch.cat(list(d.values())).mean(0)
        sd = torch.cat([x - x.mean(0) for x in d.values()]).std(0).clamp_min(1e-3)
        return max(float(((x.mean(0) - grand) / (sd / len(x) ** 0.5)).abs().max()) for x in d.values())

    return zmax(maps), zmax(bright)


def test_classes_share_their_mean_frame(rendered):
    """Per-class mean frames (and mean first frames) agree within sampling error (z-tests, |z| < 4.5)."""

    def spot(x: torch.Tensor) -> torch.Tensor:  # a class-specific bright corner: a single frame would tell the class
        x = x.clone()
        x[..., :8, :8] += 30
        return x

    for which in ("all frames", "first frame"):
        z_map, z_bright = _max_class_z(rendered, which)
        assert z_map < 4.5 and z_bright < 4.5, f"{which}: a class's mean frame differs (z {z_map:.1f}, {z_bright:.1f})"
        assert _max_class_z(rendered, which, leak=spot)[0] > 6.0  # the test would catch a 12% local leak


def test_classes_differ_in_motion(decoded, one_thread):
    _, videos = decoded
    stats = {m: torch.stack([motion_stats(v) for v in vids]) for m, vids in videos.items()}  # (n, 4) each
    expected = {  # (statistic index, sign)
        "right": (0, 1),
        "left": (0, -1),
        "down": (1, 1),
        "up": (1, -1),
        "rotate_cw": (2, 1),
        "rotate_ccw": (2, -1),
        "grow": (3, 1),
        "shrink": (3, -1),
    }
    for m, (k, sign) in expected.items():
        s = stats[m][:, k] * sign
        t = s.mean() / (s.std() / len(s) ** 0.5)
        assert t > 3.0, f"{m}: flow statistic {k} not clearly {'+' if sign > 0 else '-'} (t={t:.1f})"
        assert (s > 0).float().mean() >= 0.6, f"{m}: too few videos move the expected way"
        # the class's own statistic stands out from every other class's value of it
        others = torch.cat([stats[o][:, k] * sign for o in MOTIONS if o != m and expected[o][0] != k])
        assert s.mean() > others.mean() + 3 * others.std() / len(others) ** 0.5
    for a, b in (("right", "left"), ("down", "up")):
        speed = stats[a][:, expected[a][0]].mean() - stats[b][:, expected[b][0]].mean()
        assert 1.5 < speed < 3.5  # 0.75-1.5 px/frame each way at 48 px


def test_render_is_deterministic_and_motion_only():
    a = render_video("left", np.random.default_rng(3), size=32, frames=5)
    b = render_video("left", np.random.default_rng(3), size=32, frames=5)
    assert a.dtype == np.uint8 and a.shape == (5, 32, 32, 3) and np.array_equal(a, b)
    # same random draws, different motion: the first frame is identical, later frames are not
    r = render_video("right", np.random.default_rng(3), size=32, frames=5)
    assert np.array_equal(a[0], r[0]) and not np.array_equal(a[4], r[4])
    with pytest.raises(ValueError, match="unknown motion 'sideways'"):
        render_video("sideways", np.random.default_rng(0))


def test_cli_synth(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["synth", str(tmp_path / "s"), "--classes", "2", "--per-class", "2", "--size", "32"])
    assert res.exit_code == 0, res.output
    assert "wrote 4 train + 2 val videos of 2 classes (right, left)" in res.output
    assert len(list((tmp_path / "s").rglob("*.mp4"))) == 6
    res = runner.invoke(cli, ["synth", str(tmp_path / "t"), "--classes", "9"])
    assert res.exit_code == 2 and res.output.startswith("error: Invalid value for '--classes'") and "9" in res.output
