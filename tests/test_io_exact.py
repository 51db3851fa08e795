"""Exactness: every backend returns the pixels of a full sequential PyAV decode, at any indices, on real sample
videos and on generated fixtures; lossless fixtures are also compared with the source frames."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

import vidtok
from tests.videos import FIXTURES, STREAM_CLASS_FIXTURES, backend_params, decode_all, make_frames, write_video
from vidtok.io import available_backends, open_video

BACKENDS = backend_params()

# (fixture, backend) pairs the backend cannot read: vidtok falls back to PyAV (which is then checked).
FALLS_BACK = {("rotated", "decord"), ("av1", "decord"), ("raw_h264", "decord"), ("raw_h264", "torchcodec")}
# Codecs torchcodec's and decord's FFmpeg builds decode inexactly (their own plain decodes of these fixtures differ
# from PyAV's by 1-2 on some pixels): vidtok reads them with PyAV whichever backend is asked for.
PYAV_ONLY = {"mpeg4_avi", "h263p_avi", "msmpeg4_avi", "wmv1_avi", "wmv2_avi"}

_ORACLE: dict[str, np.ndarray] = {}


def oracle(path) -> np.ndarray:
    key = str(path)
    if key not in _ORACLE:
        _ORACLE[key] = decode_all(path)
    return _ORACLE[key]


def index_sets(n: int, seed: int, *, every_frame: bool = True, n_random: int = 4) -> list[list[int]]:
    """Sorted, unsorted, duplicated, strided and boundary index lists for an n-frame video."""
    g = torch.Generator().manual_seed(seed)
    sets = [[0], [n - 1], sorted({0, n - 1, n // 2})] + ([list(range(n))] if every_frame else [])
    for _ in range(n_random):
        sets.append(torch.randint(0, n, (7,), generator=g).tolist())  # unsorted, maybe duplicates
    start = int(torch.randint(0, max(n - 16, 1), (1,), generator=g))
    sets.append(list(range(start, min(start + 16, n), 2)))  # a stride-2 clip
    sets.append([n - 1, 0, n - 1, n // 3, n // 3])  # backwards + duplicates
    return sets


def check_video(
    path,
    backend: str,
    *,
    source: np.ndarray | None = None,
    seed: int = 0,
    every_frame: bool = True,
    n_random: int = 4,
):
    full = oracle(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fallback notices
        with open_video(path, backend=backend) as v:
            m = v.metadata
            assert m.num_frames == len(full), (m.num_frames, len(full))
            assert (m.height, m.width) == full.shape[1:3]
            assert m.fps > 0 and m.duration > 0
            for idx in index_sets(m.num_frames, seed, every_frame=every_frame, n_random=n_random):
                out = v.get_frames(idx)
                assert out.dtype == torch.uint8 and out.shape == (len(idx), m.height, m.width, 3)
                assert np.array_equal(out.numpy(), full[idx]), f"{backend} {path} indices {idx}: pixels differ"
                if source is not None:
                    assert np.array_equal(out.numpy(), source[idx])
            return v.backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_videos_exact(sample_videos, backend):
    for path in sample_videos:
        # bigbuckbunny has one keyframe (every read decodes from frame 0): fewer random sets keep this quick
        check_video(path, backend, seed=len(path.name), every_frame=False, n_random=2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [n for n in FIXTURES if n not in STREAM_CLASS_FIXTURES])
def test_fixture_exact(video_fixture, name, backend):
    path, frames = video_fixture(name)
    spec = FIXTURES[name]
    used = check_video(path, backend, source=frames if spec.lossless else None, seed=3)
    if (name, backend) in FALLS_BACK or name in PYAV_ONLY:
        assert used == "pyav"
    else:
        assert used == backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata(video_fixture, backend):
    with open_video(video_fixture("ntsc_bframes")[0], backend=backend) as v:
        m = v.metadata
        assert (m.num_frames, m.width, m.height, m.codec) == (45, 128, 96, "h264")
        assert m.fps == pytest.approx(30000 / 1001, rel=1e-4)
        assert m.duration == pytest.approx(45 * 1001 / 30000, rel=1e-3)
        assert m.rotation == 0
    with open_video(video_fixture("vfr")[0], backend=backend) as v:
        # 30 frames spanning 1.44 s: the average rate, not the header's nominal 25
        assert v.metadata.num_frames == 30
        assert v.metadata.fps == pytest.approx(30 / 1.44, rel=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # decord: rotated streams are read with PyAV
        with open_video(video_fixture("rotated")[0], backend=backend) as v:
            assert v.metadata.rotation == 90
            assert (v.metadata.width, v.metadata.height) == (64, 48)


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_clips_matches_get_frames(video_fixture, backend):
    path, frames = video_fixture("lossless_bframes")
    clips = [list(range(s, s + 16, 2)) for s in (0, 10, 21, 32)] + [[5, 5, 1]]
    with open_video(path, backend=backend) as v:
        got = v.get_clips(clips)
        assert len(got) == len(clips)
        for idx, x in zip(clips, got, strict=True):
            assert np.array_equal(x.numpy(), frames[idx])
        # and again, reusing the open reader, in reverse order (backward seeks)
        for idx in reversed(clips):
            assert np.array_equal(v.get_frames(idx).numpy(), frames[idx])


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_types_and_empty(lossless_video, backend):
    path, frames = lossless_video
    with open_video(path, backend=backend) as v:
        for idx in (torch.tensor([3, 1]), np.array([3, 1], dtype=np.int64), [np.int32(3), 1], range(3, 0, -2)):
            assert np.array_equal(v.get_frames(idx).numpy(), frames[[3, 1]])
        assert v.get_frames([]).shape == (0, 48, 64, 3)
        assert np.array_equal(v.get_frames(7).numpy(), frames[[7]])


def test_pyav_decodes_only_from_the_keyframe(video_fixture):
    """The PyAV reader decodes from the keyframe before the first wanted frame to the last one, not the file."""
    path, frames = video_fixture("lossless")  # 40 frames, keyframe every 8
    with open_video(path, backend="pyav") as v:
        r = v._reader
        before = r.frames_decoded
        assert np.array_equal(v.get_frames([26, 28, 30]).numpy(), frames[[26, 28, 30]])
        assert r.frames_decoded - before <= 30 - 24 + 1  # keyframe 24 .. 30
        before = r.frames_decoded
        v.get_frames([31, 33])  # continues forward: 31, 32, 33 (keyframe 32 is not worth a seek... or is)
        assert r.frames_decoded - before <= 3


def test_pyav_multiview_decodes_shared_stretch_once(video_fixture):
    path, frames = video_fixture("lossless")
    clips = [list(range(s, s + 16, 2)) for s in (0, 4, 8, 12)]  # overlapping views cover frames 0..26
    with open_video(path, backend="pyav") as v:
        r = v._reader
        before = r.frames_decoded
        got = v.get_clips(clips)
        assert r.frames_decoded - before <= 27
        for idx, x in zip(clips, got, strict=True):
            assert np.array_equal(x.numpy(), frames[idx])


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_side_resize(lossless_video, backend):
    path, _ = lossless_video
    with open_video(path, backend=backend, short_side=24) as v:
        x = v.get_frames([0, 5])
        assert x.shape == (2, 24, 32, 3) and x.dtype == torch.uint8
        assert v.get_frames([]).shape == (0, 24, 32, 3)
        # exactly torchvision's antialiased resize of the exact full-size frames (what EvalTransform does), whatever
        # the backend, and whatever other frames are read in the same call
        full = torch.from_numpy(oracle(path)[[0, 5, 9]]).permute(0, 3, 1, 2)
        ref = F.resize(full, [24, 32], antialias=True).permute(0, 2, 3, 1)
        assert torch.equal(x, ref[:2])
        assert torch.equal(v.get_frames([9, 0])[0], ref[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_side_resize_real_video(sample_videos, backend):
    """A real H.264 sample (176x144, B-frames): decode-time resize == resize of the exact frames, bit for bit."""
    path = next(p for p in sample_videos if p.name == "carphone_pristine.mp4")
    idx = [40, 3, 41, 77]
    with open_video(path, backend=backend, short_side=100) as v:
        x = v.get_frames(idx)
    full = torch.from_numpy(oracle(path)[idx]).permute(0, 3, 1, 2)
    assert torch.equal(x, F.resize(full, [100, 122], antialias=True).permute(0, 2, 3, 1))


@pytest.mark.parametrize("native", [True, False])
def test_resize_short_side_is_torchvision_resize(monkeypatch, native):
    """vidtok's decode-time resize makes torchvision's call itself (so decoding does not import torchvision): the
    same pixels for 0, 1 and several frames, channels-last in and out, on either of torchvision's CPU paths (native
    uint8 where the CPU has the vectorised kernel, else float32 rounded back)."""
    from vidtok.io.backends import common

    monkeypatch.setattr(common, "_native_uint8_bilinear", lambda: native)
    g = torch.Generator().manual_seed(0)
    for n, (h, w), s in [(3, (48, 64), 24), (1, (47, 65), 30), (2, (90, 40), 33), (0, (20, 30), 10)]:
        frames = torch.randint(0, 256, (n, h, w, 3), generator=g, dtype=torch.uint8)
        out = common.resize_short_side(frames, s)
        size = list(common.short_side_size(h, w, s))
        chw = frames.permute(0, 3, 1, 2)
        if native:
            ref = F.resize(chw, size, antialias=True) if n else chw.new_empty((0, 3, *size))
        else:
            ref = F.resize(chw.float(), size, antialias=True).round_().to(torch.uint8)
        assert out.shape == (n, *size, 3) and out.is_contiguous()
        assert torch.equal(out, ref.permute(0, 2, 3, 1)), (n, h, w, s)


def test_decoding_views_does_not_import_torchvision(sample_videos):
    """classify/embed workers cut views with vidtok.io and the samplers only: no torchvision import (seconds), and
    backend="auto" stops at PyAV without probing (importing) torchcodec (seconds too)."""
    import subprocess
    import sys

    path = next(p for p in sample_videos if p.stem == "carphone_pristine")
    code = (
        "import sys; from vidtok.preprocessing import Preprocessing; "
        "from vidtok.engine.infer_workers import ViewSpec, prepare_views; "
        "prep = Preprocessing(num_frames=4, frame_stride=2, crop_size=64, short_side=72); "
        "spec = ViewSpec(mode='uniform', prep=prep, clips=2, crops=1, "
        f"backend='auto'); info, v = prepare_views({str(path)!r}, spec); assert v.shape == (2, 3, 4, 64, 64), v.shape; "
        "print(sorted(m for m in sys.modules if m.startswith(('torchvision', 'torch._dynamo', 'torchcodec'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout[-500:]


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="no POSIX scheduling API")
def test_writing_an_av1_fixture_keeps_the_scheduling_policy(tmp_path):
    """SVT-AV1 makes the calling thread SCHED_FIFO 99 as root; processes forked later (decode pools, the Triton
    interpreter subprocesses) would inherit it. write_video undoes it."""
    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    write_video(tmp_path / "a.mkv", make_frames(8, 64, 64), 25, "libsvtav1", options={"preset": "12", "g": "8"})
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before


def test_pyav_reader_with_one_thread_starts_no_threads(sample_videos):
    """num_threads=1 means one thread for the RGB conversion too: PyAV >= 17 converts on an automatic number of
    threads unless told otherwise, which in a data-loader worker competes with the other workers and the model."""
    tasks = lambda: len(os.listdir("/proc/self/task"))  # noqa: E731
    before = tasks()
    path = next(p for p in sample_videos if p.stem == "carphone_pristine")
    with open_video(path, backend="pyav", num_threads=1) as v:
        v.get_frames([0, 5, 9])
        assert tasks() <= before  # (<=: an unrelated thread may end meanwhile)


@pytest.mark.parametrize("threads", [0, 2])
def test_threads_same_pixels(lossless_video, threads):
    path, frames = lossless_video
    for b in available_backends():
        with open_video(path, backend=b, num_threads=threads) as v:
            assert np.array_equal(v.get_frames([39, 2, 17]).numpy(), frames[[39, 2, 17]]), b


@pytest.mark.parametrize("name", ["ntsc_bframes", "vp9", "mpeg4_avi"])
def test_pyav_nonref_skipping_is_exact(video_fixture, name):
    """Unwanted non-reference frames are skipped; consecutive reads that want a frame already sent with
    skip_frame=NONREF re-seek instead of returning a wrong or missing frame."""
    path, _ = video_fixture(name)
    full = oracle(path)
    n = len(full)
    with open_video(path, backend="pyav") as v:
        for idx in ([10, 12, 14], [11], [13, 15], [16, 17, 18, 19], [1, 3, 5], [2, 4], list(range(0, n, 3)), [n - 2]):
            assert np.array_equal(v.get_frames(idx).numpy(), full[idx]), idx
        r = v._reader
        before = r.frames_decoded
        v.get_frames(list(range(0, min(n, 30), 2)))  # stride 2 from a keyframe
        if name == "ntsc_bframes":
            assert r.frames_decoded - before < 30  # some unwanted B-frames were not decoded


@pytest.mark.parametrize("rotation", [180, 270])
def test_rotation_tag_reported_not_applied(write_test_video, rotation):
    frames = make_frames(3, 32, 48, seed=rotation)
    path = write_test_video(f"rot{rotation}.mov", frames, rotation=rotation)
    for b in available_backends():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # decord falls back to PyAV on rotated files
            with vidtok.open_video(path, backend=b) as v:
                assert v.metadata.rotation == rotation, b
                assert (v.metadata.width, v.metadata.height) == (48, 32), b
                assert np.array_equal(v.get_frames([2, 0]).numpy(), frames[[2, 0]]), b


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] != "pyav"])
def test_inexact_codecs_are_read_with_pyav_announced_once(video_fixture, backend, monkeypatch):
    """torchcodec/decord are never used for the codecs their FFmpeg builds decode inexactly: the Video reports pyav,
    the pixels are PyAV's, and one warning per (backend, codec) says so however many files a process opens."""
    import vidtok.io.video as video_mod

    monkeypatch.setattr(video_mod, "_ROUTED", set())
    paths = {name: video_fixture(name)[0] for name in ("mpeg4_avi", "wmv1_avi", "ntsc_bframes")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            for name, path in paths.items():
                with open_video(path, backend=backend) as v:
                    assert v.backend == ("pyav" if name in PYAV_ONLY else backend), name
                    assert np.array_equal(v.get_frames([7, 0]).numpy(), oracle(path)[[7, 0]]), name
    notes = sorted(str(w.message) for w in caught if "bit-exactly" in str(w.message))
    assert notes == [
        f"{backend} does not decode {codec} bit-exactly (approximate SIMD in its FFmpeg build); "
        f"vidtok reads {codec} streams with pyav"
        for codec in ("mpeg4", "wmv1")
    ]
    assert not [w for w in caught if "cannot open it" in str(w.message)]  # not reported as a failure
