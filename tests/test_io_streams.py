"""Real-world stream classes: several video streams, open-GOP HEVC / H.264 random access, pixel-format families,
Matroska rotation, MPEG transport streams, Matroska without an index. Every backend is compared with the full
sequential PyAV decode of the same stream, with zero tolerance, at single-index random access in shuffled order,
sorted batches and backward reads with duplicates; the raw libraries are checked too, so that each fixture is known
to exercise the class it stands for (the raw read is wrong or fails where vidtok routes the stream to PyAV)."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch

from tests.videos import FIXTURES, STREAM_CLASS_FIXTURES, backend_params, decode_all
from vidtok.data.clip_sampling import uniform_clips
from vidtok.errors import VideoDecodeError
from vidtok.io import available_backends, open_video
from vidtok.io.video import route_reason

pytestmark = pytest.mark.xdist_group("io_streams")

BACKENDS = backend_params()
OTHER_BACKENDS = [p for p in BACKENDS if p.values[0] != "pyav"]

STREAM_FIXTURES = list(STREAM_CLASS_FIXTURES)
# (fixture, backend) pairs served by the backend itself; every other pair is read with PyAV (routed at open).
NATIVE = {
    ("two_streams", "torchcodec"),  # told the stream index
    ("hevc_closed_gop", "torchcodec"),
    ("hevc_closed_gop", "decord"),
    ("h264_yuv422p", "torchcodec"),
    ("h264_yuv422p", "decord"),
    ("h264_yuv444p", "torchcodec"),
    ("h264_yuv444p", "decord"),
    ("h264_yuvj420p", "torchcodec"),
    ("h264_yuvj420p", "decord"),
    ("rotated_mkv", "torchcodec"),  # rotates by the display matrix; vidtok undoes it
    ("mkv_no_index", "torchcodec"),
}
# (fixture, backend) pairs where the library on its own (default stream, its own index) returns wrong frames or
# fails: what vidtok did before routing these classes.
RAW_INEXACT = {
    ("two_streams", "torchcodec"),  # opens FFmpeg's "best" stream: 30 frames of 96x64 at 29.97 fps
    ("two_streams", "decord"),
    ("hevc_gop2", "decord"),  # returns other frames after seeks
    ("hevc_open_gop", "decord"),
    ("h264_open_gop", "decord"),
    ("h264_open_gop", "torchcodec"),  # runs out of frames
    ("mpeg2_open_gop_ts", "decord"),
    ("mpeg2_open_gop_ts", "torchcodec"),
    ("h264_ts", "decord"),
    ("h264_ts", "torchcodec"),
    ("mkv_no_index", "decord"),  # cannot open it
    ("rotated_mkv", "decord"),  # 4-channel garbage / crash
} | {(n, b) for n in STREAM_FIXTURES if n.endswith(("p10", "p12")) for b in ("torchcodec", "decord")}

_ORACLE: dict[tuple[str, int], np.ndarray] = {}


def oracle(path, stream: int = 0) -> np.ndarray:
    key = (str(path), stream)
    if key not in _ORACLE:
        _ORACLE[key] = decode_all(path, stream)
    return _ORACLE[key]


def check_exact(v, full: np.ndarray, seed: int) -> None:
    n = len(full)
    assert v.metadata.num_frames == n and (v.metadata.height, v.metadata.width) == full.shape[1:3]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    for i in order:  # random access, one frame at a time
        assert np.array_equal(v.get_frames([i]).numpy()[0], full[i]), f"{v.backend}: frame {i} differs"
    for idx in (list(range(n)), list(range(1, n, 3)), [n - 1, 0, n - 1, n // 2, n // 2, 1]):
        assert np.array_equal(v.get_frames(idx).numpy(), full[idx]), f"{v.backend}: {idx} differ"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_stream_class_exact(video_fixture, name, backend):
    path, frames = video_fixture(name)
    full = oracle(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # routing notices
        with open_video(path, backend=backend) as v:
            assert v.backend == (backend if backend == "pyav" or (name, backend) in NATIVE else "pyav")
            check_exact(v, full, seed=len(name))
            if FIXTURES[name].lossless:
                assert np.array_equal(v.get_frames(range(len(frames))).numpy(), frames)
            assert v.backend == (backend if backend == "pyav" or (name, backend) in NATIVE else "pyav")  # no fallback


def _raw_read_is_exact(path, backend: str) -> bool:
    """The library alone, as a user would call it (default stream, own index): every frame at random access equal
    to the sequential PyAV decode of the first video stream? False also when it fails."""
    full = oracle(path)
    order = list(range(len(full)))
    random.Random(0).shuffle(order)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if backend == "decord":
                import decord

                vr = decord.VideoReader(str(path))
                if len(vr) != len(full):
                    return False
                return all(np.array_equal(vr.get_batch([i]).asnumpy()[0], full[i]) for i in order)
            from torchcodec.decoders import VideoDecoder

            dec = VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC")
            if dec.metadata.num_frames != len(full):
                return False
            return all(np.array_equal(dec.get_frames_at([i]).data[0].numpy(), full[i]) for i in order)
    except Exception:
        return False


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("name", [n for n in STREAM_FIXTURES if n != "rotated_mkv"])
def test_fixture_exercises_its_class(video_fixture, name, backend):
    """Each routed fixture really trips the raw library (else the fixture proves nothing), and the classes vidtok
    leaves to the library are read exactly by it."""
    path, _ = video_fixture(name)
    assert _raw_read_is_exact(path, backend) == ((name, backend) not in RAW_INEXACT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_streams_every_backend_reads_the_chosen_stream(video_fixture, backend):
    path, _ = video_fixture("two_streams")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for stream, (n, w, h, fps) in enumerate([(20, 64, 48, 25.0), (30, 96, 64, 30000 / 1001)]):
            full = oracle(path, stream)
            with open_video(path, backend=backend, stream=stream) as v:
                m = v.metadata
                assert (m.num_frames, m.width, m.height, m.stream) == (n, w, h, stream) == (len(full), w, h, stream)
                assert m.fps == pytest.approx(fps, rel=1e-4)
                assert v.backend == ("pyav" if backend == "decord" else backend)  # decord cannot choose a stream
                check_exact(v, full, seed=stream)
                # the failure: clips planned from the metadata, then read
                clips = uniform_clips(m.num_frames, m.fps, clip_len=8, frame_stride=2, num_clips=3)
                got = v.get_clips([c.indices for c in clips])
                for c, x in zip(clips, got, strict=True):
                    assert np.array_equal(x.numpy(), full[c.indices.numpy()])
        with pytest.raises(VideoDecodeError, match=r"no video stream 2 \(the file has 2 video streams\)"):
            open_video(path, backend=backend, stream=2)
    for bad in (-1, True, 1.0, "1"):
        with pytest.raises(ValueError, match="stream must be an int >= 0"):
            open_video(path, backend=backend, stream=bad)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_metadata_mismatch_falls_back_at_open(video_fixture, backend, monkeypatch):
    """A backend whose own count differs from the stream's is dropped at open, before any clip is planned."""
    import dataclasses

    import vidtok.io.video as video_mod

    path, _ = video_fixture("hevc_closed_gop")
    real = video_mod._make_reader

    def lying(*args, **kw):
        r = real(*args, **kw)
        r.metadata = dataclasses.replace(r.metadata, num_frames=r.metadata.num_frames + 9)
        return r

    monkeypatch.setattr(video_mod, "_make_reader", lying)
    with pytest.warns(RuntimeWarning, match=f"{backend} sees 25 frames of 64x64, video stream 0 has 16"):
        v = open_video(path, backend=backend)
    with v, warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing more happens at read time
        assert v.backend == "pyav" and v.metadata.num_frames == 16
        check_exact(v, oracle(path), seed=1)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_fallback_while_reading_keeps_the_metadata(video_fixture, backend):
    """If the backend fails mid-way, PyAV continues from the same index: the count planned from never changes."""
    path, _ = video_fixture("hevc_closed_gop")
    with open_video(path, backend=backend) as v:
        assert v.backend == backend
        before = v.metadata
        clips = uniform_clips(before.num_frames, before.fps, clip_len=4, frame_stride=3, num_clips=2)
        v._reader.read = lambda idx: (_ for _ in ()).throw(RuntimeError("simulated decoder crash"))
        with pytest.warns(RuntimeWarning, match="simulated decoder crash"):
            got = v.get_clips([c.indices for c in clips])
        assert v.backend == "pyav"
        assert (v.metadata.num_frames, v.metadata.fps) == (before.num_frames, before.fps)
        for c, x in zip(clips, got, strict=True):
            assert np.array_equal(x.numpy(), oracle(path)[c.indices.numpy()])


@pytest.mark.skipif("torchcodec" not in available_backends(), reason="torchcodec not installed")
def test_torchcodec_frames_are_checked_against_the_pts_index(video_fixture):
    """torchcodec's returned timestamps are compared with PyAV's index: a frame from elsewhere is never returned."""
    path, _ = video_fixture("hevc_closed_gop")
    with open_video(path, backend="torchcodec") as v:
        assert v.backend == "torchcodec"
        check_exact(v, oracle(path), seed=2)  # the check passes on exact reads
        honest = v._reader._expected_pts
        v._reader._expected_pts = lambda idx: [t + 0.1 for t in honest(idx)]  # as if it had landed one frame early
        with pytest.warns(RuntimeWarning, match=r"torchcodec returned the frame at 0\.\d+ s, not"):
            x = v.get_frames([5, 3])
        assert v.backend == "pyav" and np.array_equal(x.numpy(), oracle(path)[[5, 3]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_display_matrix_rotation_in_matroska(video_fixture, backend):
    path, frames = video_fixture("rotated_mkv")  # 48x32 coded, display rotation 270
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with open_video(path, backend=backend) as v:
            assert (v.metadata.rotation, v.metadata.width, v.metadata.height) == (270, 48, 32)
            assert np.array_equal(v.get_frames([7, 0, 3]).numpy(), frames[[7, 0, 3]])  # as coded, not rotated


def test_route_reasons_name_the_class(video_fixture):
    from vidtok.io.backends.pyav import PyAVReader

    expect = {
        "hevc_gop2": "open-GOP",
        "h264_open_gop": "open-GOP",
        "hevc_yuv420p10": "converts yuv420p10le to RGB differently",
        "hevc_yuv420p12": "converts yuv420p12le",
        "mpeg2_open_gop_ts": "MPEG transport streams",
        "hevc_closed_gop": None,
        "h264_yuv444p": None,
    }
    for name, words in expect.items():
        r = PyAVReader(str(video_fixture(name)[0]))
        try:
            for backend in ("torchcodec", "decord"):
                got = route_reason(backend, r)
                assert (got is None) if words is None else (words in got), (name, backend, got)
        finally:
            r.close()
    r = PyAVReader(str(video_fixture("two_streams")[0]), stream=1)
    try:
        assert route_reason("torchcodec", r) is None
        assert route_reason("decord", r) == "cannot choose among several video streams"
    finally:
        r.close()


def test_leading_picture_count_from_the_packets(video_fixture):
    """The open-GOP check is exact on the packet table: closed-GOP streams with B-frames have no leading pictures."""
    from vidtok.io.backends.pyav import PyAVReader

    for name, leading in (("hevc_open_gop", True), ("h264_open_gop", True), ("hevc_closed_gop", False)):
        r = PyAVReader(str(video_fixture(name)[0]))
        try:
            assert bool(r.leading_pictures) == leading, name
        finally:
            r.close()
    for name in ("lossless_bframes", "ntsc_bframes"):
        r = PyAVReader(str(video_fixture(name)[0]))
        try:
            assert r.leading_pictures == 0
        finally:
            r.close()


def test_stream_choice_reaches_datasets_and_inference(video_fixture):
    """``data.stream`` (config) -> VideoClipDataset, and ``--video-stream`` (classify / embed) -> ViewSpec: both
    read the chosen stream."""
    from vidtok.config import load_config, validate_config
    from vidtok.data.datasets import VideoClipDataset
    from vidtok.engine.infer_workers import ViewSpec, prepare_views
    from vidtok.preprocessing import Preprocessing

    path, _ = video_fixture("two_streams")
    from vidtok.errors import ConfigError

    cfg = load_config("vidtok_ti", ["data.stream=1"])
    assert cfg.data.stream == 1
    cfg.data.stream = -1
    with pytest.raises(ConfigError, match="data.stream"):
        validate_config(cfg)
    for stream, (n, h, w) in enumerate([(20, 48, 64), (30, 64, 96)]):
        ds = VideoClipDataset(
            samples=[(str(path), 0)],
            class_names=["a"],
            train=False,
            transform=None,
            num_frames=4,
            test_clips=2,
            stream=stream,
        )
        item = ds.load(0, torch.Generator().manual_seed(0))
        clips = uniform_clips(n, 1.0, clip_len=4, frame_stride=2, num_clips=2)
        want = oracle(path, stream)[torch.cat([c.indices for c in clips]).numpy()].reshape(2, 4, h, w, 3)
        assert np.array_equal(item["video"].numpy(), want)
        prep = Preprocessing(num_frames=4, frame_stride=2, crop_size=32, short_side=40)
        spec = ViewSpec(mode="uniform", prep=prep, clips=2, stream=stream)
        info, views = prepare_views(str(path), spec)
        assert info["num_frames"] == n and views.shape == (2, 3, 4, 32, 32)
    with pytest.raises(ValueError, match="stream >= 0"):
        VideoClipDataset(samples=[], class_names=["a"], train=False, transform=None, stream=-1)
