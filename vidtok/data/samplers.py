"""Temporal clip samplers: which frame indices of a video make a clip.

Every sampler is a pure function of ``(num_frames, fps)`` plus, where it is random, an explicit
``torch.Generator``; it returns :class:`Clip` objects (frame indices + start/end timestamps) and never opens a file.

=========  ==========================================================================================================
``random``   training: one window of ``clip_len`` frames every ``frame_stride`` frames, start uniform over the video
``uniform``  testing: ``num_clips`` windows whose starts are evenly spaced from the first to the last possible start
             (ViViT's 4 views, TokShift's 10); a single clip is centred
``segment``  TSN: the video cut into ``num_segments`` equal segments, one frame from each (random inside the segment
             with a generator, the segment middle without one)
``sliding``  embedding long videos: windows of a given length and hop, in frames or seconds, from the start; a last
             window aligned with the end of the video covers the tail if the hop does not reach it
=========  ==========================================================================================================

Short videos: a window that runs past the last frame repeats the last frame (index ``num_frames - 1``). This is
mmaction2's ``SampleFrames(out_of_bound_opt="repeat_last")``; mmaction2's default (``"loop"``) wraps around to the
start instead, and pytorchvideo (which samples in seconds and then ``UniformTemporalSubsample``\\ s the decoded
frames with ``linspace``) stretches the clip by repeating frames spread over it. Repeating the last frame keeps the
frame rate of the visible motion unchanged, which matters for motion-only classes.

Example::

    g = torch.Generator().manual_seed(0)
    clip = random_clip(300, 25.0, clip_len=16, frame_stride=2, generator=g)
    clip.indices          # tensor of 16 frame indices, step 2
    clip.start_sec, clip.end_sec
    views = uniform_clips(300, 25.0, clip_len=16, frame_stride=2, num_clips=4)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Clip", "random_clip", "uniform_clips", "segment_clip", "sliding_clips", "sample_clips", "SAMPLERS"]


@dataclass(frozen=True)
class Clip:
    """A clip: frame indices into the video and the time span they cover.

    Attributes:
        indices: int64 frame indices, in clip order (may repeat the last frame for short videos).
        start_sec: presentation time of the first frame.
        end_sec: end of the last frame actually shown (its index + 1, divided by fps): the span is [start, end).
    """

    indices: torch.Tensor
    start_sec: float
    end_sec: float

    def __len__(self) -> int:
        return int(self.indices.numel())


def _check(num_frames: int, fps: float, **positive: int | float) -> None:
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def _make(indices: torch.Tensor, num_frames: int, fps: float) -> Clip:
    indices = indices.clamp(max=num_frames - 1).to(torch.int64)  # repeat the last frame past the end
    return Clip(indices, float(indices[0]) / fps, (float(indices.max()) + 1) / fps)


def _window(start: int, clip_len: int, frame_stride: int) -> torch.Tensor:
    return start + torch.arange(clip_len, dtype=torch.int64) * frame_stride


def random_clip(
    num_frames: int, fps: float, *, clip_len: int, frame_stride: int = 1, generator: torch.Generator | None = None
) -> Clip:
    """One window of ``clip_len`` frames, ``frame_stride`` apart, starting uniformly at random.

    The window spans ``(clip_len - 1) * frame_stride + 1`` frames; a shorter video starts at 0 and repeats its last
    frame.
    """
    _check(num_frames, fps, clip_len=clip_len, frame_stride=frame_stride)
    span = (clip_len - 1) * frame_stride + 1
    max_start = max(num_frames - span, 0)
    start = int(torch.randint(max_start + 1, (1,), generator=generator))
    return _make(_window(start, clip_len, frame_stride), num_frames, fps)


def uniform_clips(
    num_frames: int, fps: float, *, clip_len: int, frame_stride: int = 1, num_clips: int = 1
) -> list[Clip]:
    """``num_clips`` windows with evenly spaced starts: ``round(linspace(0, max_start, num_clips))``.

    The first window starts at frame 0 and the last one ends at the last frame (pytorchvideo's
    ``ConstantClipsPerVideoSampler`` layout); one clip is centred. Windows overlap when the video is short.
    """
    _check(num_frames, fps, clip_len=clip_len, frame_stride=frame_stride, num_clips=num_clips)
    span = (clip_len - 1) * frame_stride + 1
    max_start = max(num_frames - span, 0)
    if num_clips == 1:
        starts = [max_start // 2]
    else:
        starts = [int(round(max_start * i / (num_clips - 1))) for i in range(num_clips)]
    return [_make(_window(s, clip_len, frame_stride), num_frames, fps) for s in starts]


def segment_clip(num_frames: int, fps: float, *, num_segments: int, generator: torch.Generator | None = None) -> Clip:
    """TSN sampling: one frame from each of ``num_segments`` equal segments of the video.

    With a generator the frame is uniform inside its segment (training), without one it is the segment's middle
    frame (testing). A video with fewer frames than segments repeats frames (segments shorter than one frame).
    """
    _check(num_frames, fps, num_segments=num_segments)
    seg = num_frames / num_segments
    lo = torch.arange(num_segments, dtype=torch.float64) * seg
    if generator is None:
        pos = lo + seg / 2
    else:
        pos = lo + torch.rand(num_segments, generator=generator, dtype=torch.float64) * seg
    return _make(pos.floor().to(torch.int64), num_frames, fps)


def sliding_clips(
    num_frames: int,
    fps: float,
    *,
    window: float,
    hop: float,
    unit: str = "frames",
    clip_len: int | None = None,
) -> list[Clip]:
    """Windows of ``window`` length every ``hop``, for covering a long video (embedding, dense inference).

    Args:
        num_frames: frames in the video.
        fps: frame rate, used to convert seconds to frames and indices to timestamps.
        window: window length, in ``unit``.
        hop: distance between window starts, in ``unit``.
        unit: ``"frames"`` or ``"seconds"``.
        clip_len: frames taken from each window, evenly spaced (``linspace`` over the window, rounded down); None
            takes every frame of the window.

    Windows start at 0, hop, 2·hop, … while they fit; if the tail of the video is not covered, one more window ends
    exactly at the last frame. A video shorter than a window gives one window that repeats the last frame.
    """
    if unit not in ("frames", "seconds"):
        raise ValueError(f"unit must be 'frames' or 'seconds', got {unit!r}")
    _check(num_frames, fps, window=window, hop=hop)
    scale = fps if unit == "seconds" else 1.0
    win = max(int(round(window * scale)), 1)
    step = max(int(round(hop * scale)), 1)
    if clip_len is not None and clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len!r}")
    n = clip_len if clip_len is not None else win
    offsets = torch.linspace(0, win, n + 1, dtype=torch.float64)[:-1].floor().to(torch.int64)  # (n,) in [0, win)
    starts = list(range(0, max(num_frames - win, 0) + 1, step))
    if num_frames > win and starts[-1] + win < num_frames:
        starts.append(num_frames - win)
    return [_make(s + offsets, num_frames, fps) for s in starts]


SAMPLERS = ("random", "uniform", "segment", "sliding")


def sample_clips(
    name: str, num_frames: int, fps: float, *, generator: torch.Generator | None = None, **kwargs
) -> list[Clip]:
    """Dispatch by sampler name; always returns a list of clips (one for ``random`` and ``segment``)."""
    if name == "random":
        return [random_clip(num_frames, fps, generator=generator, **kwargs)]
    if name == "uniform":
        return uniform_clips(num_frames, fps, **kwargs)
    if name == "segment":
        return [segment_clip(num_frames, fps, generator=generator, **kwargs)]
    if name == "sliding":
        return sliding_clips(num_frames, fps, **kwargs)
    raise ValueError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
