"""Temporal clip samplers: window shapes, ranges, coverage, short videos, timestamps, determinism; and each named
peer convention against the peer's own code (pytorchvideo's samplers and EncodedVideo) or its arithmetic re-derived
from the peer's source with a citation (mmaction2, PySlowFast)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from vidtok.data.clip_sampling import random_clip, sample_clips, segment_clip, sliding_clips, uniform_clips


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_clip_window_and_range():
    g = gen()
    starts = set()
    for _ in range(400):
        c = random_clip(40, 25.0, clip_len=8, frame_stride=3, generator=g)
        idx = c.indices.tolist()
        assert len(idx) == 8 and c.indices.dtype == torch.int64
        assert all(b - a == 3 for a, b in zip(idx, idx[1:], strict=False))
        assert idx[0] >= 0 and idx[-1] <= 39
        assert c.start_sec == pytest.approx(idx[0] / 25.0) and c.end_sec == pytest.approx((idx[-1] + 1) / 25.0)
        starts.add(idx[0])
    assert starts == set(range(40 - 22 + 1))  # span 22 frames: every start 0..18 reachable, nothing else


def test_random_clip_deterministic_under_generator():
    a = [random_clip(300, 30.0, clip_len=16, frame_stride=2, generator=gen(5)).indices for _ in range(3)]
    b = [random_clip(300, 30.0, clip_len=16, frame_stride=2, generator=gen(5)).indices for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = {int(random_clip(300, 30.0, clip_len=16, generator=gen(s)).indices[0]) for s in range(20)}
    assert len(c) > 10


def test_short_video_repeats_last_frame():
    c = random_clip(5, 25.0, clip_len=8, frame_stride=2, generator=gen())
    assert c.indices.tolist() == [0, 2, 4, 4, 4, 4, 4, 4]  # mmaction2 out_of_bound_opt="repeat_last"
    assert c.end_sec == pytest.approx(5 / 25.0)
    views = uniform_clips(3, 25.0, clip_len=4, num_clips=3)
    assert [v.indices.tolist() for v in views] == [[0, 1, 2, 2]] * 3


def test_uniform_clips_even_spacing_and_ends():
    views = uniform_clips(100, 25.0, clip_len=16, frame_stride=2, num_clips=4)
    starts = [int(v.indices[0]) for v in views]
    assert starts[0] == 0 and int(views[-1].indices[-1]) == 99  # first at the start, last ends at the last frame
    assert starts == [0, 23, 46, 69]
    one = uniform_clips(100, 25.0, clip_len=16, frame_stride=2, num_clips=1)[0]
    assert int(one.indices[0]) == (100 - 31) // 2  # centred


def test_segment_clip_one_frame_per_segment():
    n, k = 103, 8
    mid = segment_clip(n, 25.0, num_segments=k)
    for g_seed in range(10):
        rnd = segment_clip(n, 25.0, num_segments=k, generator=gen(g_seed))
        for j in range(k):
            lo, hi = j * n / k, (j + 1) * n / k
            assert lo - 1 < int(rnd.indices[j]) < hi and lo - 1 < int(mid.indices[j]) < hi
    assert mid.indices.tolist() == [int((j + 0.5) * n / k) for j in range(k)]
    assert segment_clip(3, 25.0, num_segments=6).indices.tolist() == [0, 0, 1, 1, 2, 2]


def test_sliding_windows_frames_and_seconds():
    w = sliding_clips(100, 25.0, window=32, hop=32)
    assert [int(c.indices[0]) for c in w] == [0, 32, 64, 68]  # tail covered by a window ending at frame 99
    assert int(w[-1].indices[-1]) == 99 and all(len(c) == 32 for c in w)
    s = sliding_clips(250, 25.0, window=2.0, hop=1.0, unit="seconds", clip_len=8)
    assert [c.start_sec for c in s] == pytest.approx([0, 1, 2, 3, 4, 5, 6, 7, 8])
    assert all(len(c) == 8 for c in s)
    assert s[0].indices.tolist() == [0, 6, 12, 18, 25, 31, 37, 43]
    short = sliding_clips(10, 25.0, window=16, hop=8)
    assert len(short) == 1 and short[0].indices.tolist() == list(range(10)) + [9] * 6


def test_dispatch_and_validation():
    assert len(sample_clips("uniform", 50, 25.0, clip_len=4, num_clips=3)) == 3
    assert len(sample_clips("random", 50, 25.0, clip_len=4, generator=gen())) == 1
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        sample_clips("nope", 50, 25.0)
    with pytest.raises(ValueError, match="num_frames must be a positive int, got 0"):
        random_clip(0, 25.0, clip_len=4)
    with pytest.raises(ValueError, match="frame_stride must be > 0, got 0"):
        random_clip(10, 25.0, clip_len=4, frame_stride=0)
    with pytest.raises(ValueError, match="unit must be"):
        sliding_clips(10, 25.0, window=4, hop=2, unit="minutes")


# ---------------------------------------------------------------------------------------------------- peer conventions
def test_out_of_bound_conventions_past_the_end():
    """10 frames, clip 8, stride 2: vidtok clamps to the last frame; mmaction2's repeat_last repeats the last sampled
    in-range index; mmaction2's loop wraps around."""
    got = {
        oob: random_clip(10, 25.0, clip_len=8, frame_stride=2, generator=gen(), out_of_bound=oob).indices.tolist()
        for oob in ("clamp", "repeat_last", "loop")
    }
    assert got == {
        "clamp": [0, 2, 4, 6, 8, 9, 9, 9],
        "repeat_last": [0, 2, 4, 6, 8, 8, 8, 8],
        "loop": [0, 2, 4, 6, 8, 0, 2, 4],
    }
    with pytest.raises(ValueError, match="out_of_bound must be one of"):
        uniform_clips(10, 25.0, clip_len=4, out_of_bound="wrap")


class _NpRandomFromTorch:
    """``np.random.randint`` / ``random.uniform`` stand-ins drawing from a torch generator in the order vidtok does,
    so that the peers' arithmetic below and vidtok's functions see the same random numbers."""

    def __init__(self, seed: int):
        self.g = gen(seed)

    def randint(self, high, size):
        return np.asarray(torch.randint(int(high), (size,), generator=self.g).tolist(), dtype=np.int64)

    def uniform(self, a, b):
        return a + (b - a) * float(torch.rand((), dtype=torch.float64, generator=self.g))


def mmaction2_sample_frames(total_frames, clip_len, frame_interval, num_clips, test_mode, out_of_bound_opt, rnd):
    """mmaction2's ``SampleFrames._get_train_clips`` / ``_get_test_clips`` / ``transform`` (keep_tail_frames,
    twice_sample and temporal_jitter off), re-derived line by line from open-mmlab/mmaction2
    mmaction/datasets/transforms/loading.py (commit 08de5581), with ``np.random`` replaced by ``rnd``."""
    if test_mode:
        ori_clip_len = (clip_len - 1) * frame_interval + 1
        max_offset = max(total_frames - ori_clip_len, 0)
        if num_clips > 1:
            num_segments = num_clips - 1
            offset_between = max_offset / float(num_segments)
            clip_offsets = np.arange(num_clips) * offset_between
            clip_offsets = np.round(clip_offsets).astype(np.int32)
        else:
            clip_offsets = np.array([max_offset // 2])
    else:
        ori_clip_len = clip_len * frame_interval
        avg_interval = (total_frames - ori_clip_len + 1) // num_clips
        if avg_interval > 0:
            base_offsets = np.arange(num_clips) * avg_interval
            clip_offsets = base_offsets + rnd.randint(avg_interval, size=num_clips)
        elif total_frames > max(num_clips, ori_clip_len):
            clip_offsets = np.sort(rnd.randint(total_frames - ori_clip_len + 1, size=num_clips))
        elif avg_interval == 0:
            ratio = (total_frames - ori_clip_len + 1.0) / num_clips
            clip_offsets = np.around(np.arange(num_clips) * ratio)
        else:
            clip_offsets = np.zeros((num_clips,), dtype=np.int32)
    frame_inds = clip_offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval
    frame_inds = np.concatenate(frame_inds)
    frame_inds = frame_inds.reshape((-1, clip_len))
    if out_of_bound_opt == "loop":
        frame_inds = np.mod(frame_inds, total_frames)
    elif out_of_bound_opt == "repeat_last":
        safe_inds = frame_inds < total_frames
        unsafe_inds = 1 - safe_inds
        last_ind = np.max(safe_inds * frame_inds, axis=1)
        new_inds = safe_inds * frame_inds + (unsafe_inds.T * last_ind).T
        frame_inds = new_inds
    return frame_inds.astype(np.int32)


def test_mmaction2_clips_equal_sampleframes():
    from vidtok.data.clip_sampling import mmaction2_clips

    cases = 0
    for n in (1, 2, 3, 5, 7, 10, 16, 17, 31, 32, 33, 64, 100, 101, 250, 301):
        for clip_len, interval, k in ((1, 1, 1), (4, 1, 3), (8, 2, 1), (8, 2, 4), (16, 4, 10), (32, 2, 5), (5, 3, 7)):
            for test_mode in (False, True):
                for oob in ("loop", "repeat_last"):
                    seed = n * 1000 + clip_len * 10 + k
                    ref = mmaction2_sample_frames(n, clip_len, interval, k, test_mode, oob, _NpRandomFromTorch(seed))
                    got = mmaction2_clips(
                        n,
                        25.0,
                        clip_len=clip_len,
                        frame_interval=interval,
                        num_clips=k,
                        test_mode=test_mode,
                        out_of_bound=oob,
                        generator=gen(seed),
                    )
                    assert np.array_equal(np.stack([c.indices.numpy() for c in got]), ref), (n, clip_len, k, oob)
                    if test_mode:  # vidtok's uniform views are SampleFrames' test clips
                        views = uniform_clips(
                            n, 25.0, clip_len=clip_len, frame_stride=interval, num_clips=k, out_of_bound=oob
                        )
                        assert np.array_equal(np.stack([v.indices.numpy() for v in views]), ref)
                    cases += 1
    assert cases == 16 * 7 * 4


def test_uniform_clips_is_not_pytorchvideos_constant_clips_layout():
    """pytorchvideo's ConstantClipsPerVideoSampler divides by clips_per_video: its last window stops short of the end,
    where uniform_clips' (mmaction2's) last window ends at the last frame."""
    from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler

    from vidtok.data.clip_sampling import pytorchvideo_clips

    s = ConstantClipsPerVideoSampler(Fraction(32, 25), 4)
    starts = [s(0.0, Fraction(100, 25), None).clip_start_sec for _ in range(4)]
    assert starts == [Fraction(0), Fraction(17, 25), Fraction(34, 25), Fraction(51, 25)]
    pv = pytorchvideo_clips(100, 25.0, clip_duration=Fraction(32, 25), num_samples=16, clips_per_video=4)
    assert [c.start_sec for c in pv] == [float(x) for x in starts] and int(pv[-1].indices[-1]) == 82
    assert int(uniform_clips(100, 25.0, clip_len=16, frame_stride=2, num_clips=4)[-1].indices[-1]) == 99


def _pytorchvideo_reference_indices(path, sampler, source: np.ndarray, num_samples: int) -> list[list[int]]:
    """pytorchvideo's own sampler + ``EncodedVideo.get_clip`` (PyAV, full decode) on a lossless video; the frames it
    returns mapped back to indices (the fixture's frames are all distinct). ``UniformTemporalSubsample`` is
    re-derived from pytorchvideo/transforms/functional.py (``torch.linspace(0, t - 1, n).clamp(0, t - 1).long()``)
    because pytorchvideo.transforms does not import with this torchvision."""
    from pytorchvideo.data.encoded_video import EncodedVideo

    where = {f.tobytes(): i for i, f in enumerate(source)}
    video = EncodedVideo.from_path(str(path), decode_audio=False, decoder="pyav")
    out, last, is_last = [], 0.0, False
    while not is_last:
        info = sampler(last, video.duration, None)
        last, is_last = info.clip_end_sec, info.is_last_clip
        x = video.get_clip(info.clip_start_sec, info.clip_end_sec)["video"]  # (C, T, H, W) float
        t = x.shape[1]
        sub = torch.linspace(0, t - 1, num_samples).clamp(0, t - 1).long()
        frames = x[:, sub].permute(1, 2, 3, 0).to(torch.uint8).numpy()
        out.append([where[f.tobytes()] for f in frames])
    video.close()
    return out


def test_pytorchvideo_clips_equal_pytorchvideo(lossless_video, monkeypatch):
    import pytorchvideo.data.clip_sampling as cs

    from vidtok.data.clip_sampling import pytorchvideo_clips

    path, source = lossless_video  # 40 frames at 25 fps: 1.6 s
    n = len(source)
    cases = [
        ("constant_clips_per_video", cs.ConstantClipsPerVideoSampler(Fraction(12, 25), 3), {"clips_per_video": 3}),
        ("constant_clips_per_video", cs.ConstantClipsPerVideoSampler(0.5, 5), {"clips_per_video": 5}),
        ("constant_clips_per_video", cs.ConstantClipsPerVideoSampler(2.0, 2), {"clips_per_video": 2}),  # > video
        ("uniform", cs.UniformClipSampler(Fraction(8, 25)), {}),
        ("uniform", cs.UniformClipSampler(0.5, 0.3), {"stride": 0.3}),
        (
            "uniform",
            cs.UniformClipSampler(Fraction(14, 25), Fraction(7, 25), backpad_last=True),
            {"stride": Fraction(7, 25), "backpad_last": True},
        ),
        ("random", cs.RandomClipSampler(Fraction(16, 25)), {}),
        ("random", cs.RandomClipSampler(0.7), {}),
    ]
    for k, (name, sampler, kw) in enumerate(cases):
        for num_samples in (4, 8):
            rnd = _NpRandomFromTorch(k)
            monkeypatch.setattr(cs.random, "uniform", rnd.uniform)
            ref = _pytorchvideo_reference_indices(path, sampler, source, num_samples)
            got = pytorchvideo_clips(
                n,
                25.0,
                clip_duration=sampler._clip_duration,
                num_samples=num_samples,
                sampler=name,
                generator=gen(k),
                **kw,
            )
            assert [c.indices.tolist() for c in got] == ref, (name, kw, num_samples)


def pyslowfast_reference(video_size, fps, num_frames, sampling_rate, target_fps, clip_idx, num_clips, rnd):
    """PySlowFast's ``decode`` tail when the whole video is decoded: ``get_start_end_idx`` then ``temporal_sampling``,
    re-derived from facebookresearch/SlowFast slowfast/datasets/decoder.py (commit 163ad2ef), with
    ``random.uniform`` replaced by ``rnd.uniform``; returns the frame indices."""
    clip_size = num_frames * sampling_rate * fps / target_fps
    delta = max(video_size - clip_size, 0)
    if clip_idx == -1:
        start_idx = rnd.uniform(0, delta)
    else:
        start_idx = delta * clip_idx / num_clips
    end_idx = start_idx + clip_size - 1
    index = torch.linspace(start_idx, end_idx, num_frames)
    index = torch.clamp(index, 0, video_size - 1).long()
    return index.tolist()


def test_pyslowfast_clips_equal_pyslowfast():
    from vidtok.data.clip_sampling import pyslowfast_clips

    for n in (5, 30, 64, 100, 301):
        for fps in (25.0, 30.0, 29.97002997002997, 60.0):
            for num_samples, rate, k in ((8, 8, 10), (16, 4, 3), (32, 2, 1), (4, 1, 2)):
                ref = [pyslowfast_reference(n, fps, num_samples, rate, 30, i, k, None) for i in range(k)]
                got = pyslowfast_clips(n, fps, num_samples=num_samples, sampling_rate=rate, num_clips=k)
                assert [c.indices.tolist() for c in got] == ref, (n, fps, num_samples, rate, k)
                seed = n + num_samples
                ref = pyslowfast_reference(n, fps, num_samples, rate, 30, -1, k, _NpRandomFromTorch(seed))
                got = pyslowfast_clips(
                    n, fps, num_samples=num_samples, sampling_rate=rate, test_mode=False, generator=gen(seed)
                )
                assert [c.indices.tolist() for c in got] == [ref]


def test_peer_samplers_by_name():
    g = gen(3)
    assert len(sample_clips("mmaction2", 100, 25.0, clip_len=8, frame_interval=2, num_clips=3, test_mode=True)) == 3
    assert len(sample_clips("pytorchvideo", 100, 25.0, clip_duration=1.0, num_samples=8, clips_per_video=2)) == 2
    assert len(sample_clips("pyslowfast", 100, 25.0, num_samples=8, sampling_rate=4, num_clips=5)) == 5
    assert len(sample_clips("mmaction2", 100, 25.0, clip_len=8, generator=g)) == 1
    with pytest.raises(ValueError, match="mmaction2's out_of_bound is 'loop' or 'repeat_last'"):
        sample_clips("mmaction2", 100, 25.0, clip_len=8, out_of_bound="clamp")
