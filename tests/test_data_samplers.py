"""Temporal clip samplers: window shapes, ranges, coverage, short videos, timestamps, determinism."""

from __future__ import annotations

import pytest
import torch

from vidtok.data.samplers import random_clip, sample_clips, segment_clip, sliding_clips, uniform_clips


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
