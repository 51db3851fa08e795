"""A synthetic action dataset whose classes differ only in motion: real H.264 files in Kinetics layout.

Each video shows one light shape on a static, darker textured background. Appearance is drawn from the same
distribution for every class: background texture and colours, shape (bar, triangle, L, T: none rotation-symmetric),
colour, size, orientation and position. The class decides only how the shape moves:

========== ======================================================================
right/left translate horizontally, 1–2 px per frame (at 64 px), wrapping around
up/down    translate vertically, same speeds
rotate_cw  rotate in place clockwise, 6–10° per frame
rotate_ccw rotate in place counter-clockwise
grow       scale up by ×3 over 40 frames, then restart small (sawtooth, random phase)
shrink     the same backwards
========== ======================================================================

Motion wraps around the frame (positions live on a torus) and the sawtooth has a random phase, so at every time the
position, orientation and size of the shape have the same distribution (uniform / uniform / log-uniform) in every
class: no single frame tells the class. An unordered set of frames shows the path without its direction, so it
separates only the time-reversal pairs (right/left, up/down, cw/ccw, grow/shrink) from each other: a frame-shuffled
model can reach 2/K (K = 2, right vs left: chance), an ordered one 100 %.

``--classes K`` takes the first K motions of :data:`MOTIONS` (default 4: the four directions, which a tiny tubelet
transformer learns within minutes on a CPU). Left/right and rotation sense are mirror images: train with
``data.hflip=false``.

Layout written under ``OUT`` (the Kinetics layout :mod:`vidtok.data.datasets` reads)::

    OUT/classes.txt                       one class name per line, index = line number
    OUT/train.csv, OUT/val.csv            label,youtube_id,time_start,time_end,split
    OUT/train/<label>/<id>_000000_000002.mp4

The defaults (4 classes, 100 training + 25 held-out videos per class, 64 px, 32 frames, 25 fps, seed 0) are the
demo's dataset, so the ``demo_vidtok_ti`` recipe trained on a default ``vidtok synth OUT`` reproduces the demo.

Example::

    make_synthetic_dataset("data/synth")   # = the demo's data
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["MOTIONS", "SHAPES", "render_video", "write_video", "make_synthetic_dataset"]

MOTIONS = ("right", "left", "up", "down", "rotate_cw", "rotate_ccw", "grow", "shrink")
SHAPES = ("bar", "triangle", "ell", "tee")

# Size range (half-extent, as a fraction of the frame side) shared by every class; grow/shrink sweep it.
_R_MIN, _R_MAX = 0.09, 0.27
_GROW_PERIOD = 40  # frames per sawtooth period of grow / shrink


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership in a canonical shape on [-1, 1]^2 (u right, v down in the shape's own frame)."""
    if shape == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.35)
    if shape == "triangle":  # isosceles, apex at v = -1
        return (v >= -1.0) & (v <= 1.0) & (np.abs(u) <= 0.75 * (v + 1.0) / 2.0)
    if shape == "ell":
        return ((u >= -1.0) & (u <= -0.3) & (np.abs(v) <= 1.0)) | ((np.abs(u) <= 1.0) & (v >= 0.4) & (v <= 1.0))
    if shape == "tee":
        return ((np.abs(u) <= 1.0) & (v >= -1.0) & (v <= -0.4)) | ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Static dark texture (size, size, 3) float in [0, 0.45]: smooth noise or stripes blended between two colours."""
    lo, hi = 0.0, 0.45
    c1, c2 = rng.uniform(lo, hi, 3), rng.uniform(lo, hi, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if rng.random() < 0.5:  # smooth noise: a coarse random grid, bilinearly upsampled (periodic, like the motion)
        g = int(rng.integers(3, 8))
        grid = rng.random((g, g)).astype(np.float32)
        gy, gx = yy * g, xx * g
        y0, x0 = np.floor(gy).astype(int) % g, np.floor(gx).astype(int) % g
        y1, x1 = (y0 + 1) % g, (x0 + 1) % g
        fy, fx = gy - np.floor(gy), gx - np.floor(gx)
        w = (
            grid[y0, x0] * (1 - fy) * (1 - fx)
            + grid[y0, x1] * (1 - fy) * fx
            + grid[y1, x0] * fy * (1 - fx)
            + grid[y1, x1] * fy * fx
        )
    else:  # stripes at a random angle and frequency
        ang = rng.uniform(0, math.pi)
        freq = rng.uniform(2, 6)
        w = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx * math.cos(ang) + yy * math.sin(ang)) + rng.uniform(0, 6.3))
    return c1 * w[..., None] + c2 * (1 - w[..., None])


def render_video(motion: str, rng: np.random.Generator, *, size: int = 64, frames: int = 32) -> np.ndarray:
    """Render one clip of the given motion class.

    Args:
        motion: one of :data:`MOTIONS`.
        rng: numpy generator; everything random about the video comes from it.
        size: frame side in pixels (square frames).
        frames: number of frames.

    Returns:
        uint8 array (frames, size, size, 3), RGB.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")
    # Appearance: the same draws, in the same order, for every class.
    # The shape is always lighter than the background: with both polarities, the sign of the brightness change at a
    # moving edge would depend on polarity XOR direction, which tiny models learn much more slowly.
    bg = _background(rng, size)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    color = rng.uniform(0.6, 1.0, 3)  # lighter than any background pixel
    cx0, cy0 = rng.uniform(0, size, 2)
    theta0 = rng.uniform(0, 2 * math.pi)
    phase = rng.random()  # position in the size range (log-uniform size for every class)
    speed = rng.uniform(1.0, 2.0) * size / 64  # px / frame
    omega = math.radians(rng.uniform(6.0, 10.0))  # rad / frame

    t = np.arange(frames, dtype=np.float64)
    cx, cy = np.full(frames, cx0), np.full(frames, cy0)
    theta = np.full(frames, theta0)
    size_phase = np.full(frames, phase)
    if motion == "right":
        cx = cx0 + speed * t
    elif motion == "left":
        cx = cx0 - speed * t
    elif motion == "down":
        cy = cy0 + speed * t
    elif motion == "up":
        cy = cy0 - speed * t
    elif motion == "rotate_cw":  # image y points down: increasing angle turns clockwise on screen
        theta = theta0 + omega * t
    elif motion == "rotate_ccw":
        theta = theta0 - omega * t
    elif motion == "grow":
        size_phase = (phase + t / _GROW_PERIOD) % 1.0
    elif motion == "shrink":
        size_phase = (phase - t / _GROW_PERIOD) % 1.0
    radius = size * _R_MIN * (_R_MAX / _R_MIN) ** size_phase  # (frames,)

    # 2x2 supersampling for anti-aliased edges (sub-pixel motion stays smooth); coordinates on the torus.
    ss = 2
    coords = (np.arange(size * ss, dtype=np.float64) + 0.5) / ss  # (S*ss,)
    dx = (coords[None, None, :] - cx[:, None, None] + size / 2) % size - size / 2  # (F, 1, S*ss)
    dy = (coords[None, :, None] - cy[:, None, None] + size / 2) % size - size / 2  # (F, S*ss, 1)
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    r = radius[:, None, None]
    u = (dx * c + dy * s) / r  # (F, S*ss, S*ss) shape coordinates
    v = (-dx * s + dy * c) / r
    mask = _shape_mask(shape, u, v).astype(np.float32)
    mask = mask.reshape(frames, size, ss, size, ss).mean(axis=(2, 4))[..., None]  # (F, S, S, 1)
    video = bg[None] * (1 - mask) + color[None, None, None, :] * mask
    return np.clip(np.rint(video * 255), 0, 255).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: int = 25, crf: int = 18) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as H.264 (yuv420p) with PyAV."""
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {w}x{h}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _job(args: tuple) -> None:
    path, motion, seed_seq, size, frames, fps = args
    rng = np.random.default_rng(seed_seq)
    write_video(path, render_video(motion, rng, size=size, frames=frames), fps=fps)


def make_synthetic_dataset(
    out: str | os.PathLike,
    *,
    num_classes: int | None = 4,
    motions: list[str] | tuple[str, ...] | None = None,
    per_class: int = 100,
    val_per_class: int | None = None,
    seed: int = 0,
    size: int = 64,
    frames: int = 32,
    fps: int = 25,
    workers: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write the synthetic motion dataset (train + val, Kinetics layout, CSVs, classes.txt) under ``out``.

    Args:
        out: output folder (created). A folder that is not empty is refused (a mix of two datasets would follow)
            unless ``overwrite``, which deletes its contents first.
        num_classes: take the first ``num_classes`` of :data:`MOTIONS` (ignored if ``motions`` is given).
        motions: explicit list of motion class names.
        per_class: training videos per class.
        val_per_class: held-out videos per class; default ``max(per_class // 4, 1)``.
        seed: everything is a function of the seed (and the split, class and video number).
        size: frame side in pixels (even).
        frames: frames per video.
        fps: frame rate written into the files.
        workers: encoding processes (0 = in this process).
        overwrite: clear a non-empty ``out`` first.

    Returns:
        Summary dict: ``root``, ``classes``, ``train_csv``, ``val_csv``, ``counts`` per split.
    """
    if motions is None:
        if num_classes is None or not 1 <= num_classes <= len(MOTIONS):
            raise ValueError(f"num_classes must be in 1..{len(MOTIONS)}, got {num_classes!r}")
        motions = MOTIONS[:num_classes]
    motions = list(motions)
    bad = [m for m in motions if m not in MOTIONS]
    if bad or len(set(motions)) != len(motions) or not motions:
        raise ValueError(f"motions must be distinct names from {', '.join(MOTIONS)}; got {motions}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    val_per_class = max(per_class // 4, 1) if val_per_class is None else val_per_class
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0, got {val_per_class}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: is a file, expected a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise ValueError(f"{root} is not empty; pass --overwrite to delete its contents and write a new dataset")
        for p in root.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(m + "\n" for m in motions))
    time_end = max(math.ceil(frames / fps), 1)
    jobs, summary = [], {"root": str(root), "classes": motions, "counts": {}}
    for split_id, (split, n) in enumerate((("train", per_class), ("val", val_per_class))):
        rows = []
        for ci, motion in enumerate(motions):
            for k in range(n):
                vid = f"{split}{ci:02d}{k:05d}"
                path = root / split / motion / f"{vid}_{0:06d}_{time_end:06d}.mp4"
                seq = np.random.SeedSequence([seed, split_id, MOTIONS.index(motion), k])
                jobs.append((str(path), motion, seq, size, frames, fps))
                rows.append((motion, vid, 0, time_end, split))
        csv_path = root / f"{split}.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            w.writerows(rows)
        summary[f"{split}_csv"] = str(csv_path)
        summary["counts"][split] = len(rows)
    if workers > 0:
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(_job, jobs, chunksize=8))
    else:
        for job in jobs:
            _job(job)
    return summary
