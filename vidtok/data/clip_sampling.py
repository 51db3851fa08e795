"""Clip sampling: which frame indices of a video make a clip (the torch ``Sampler`` of the loader is
:class:`vidtok.data.loader.EpochSampler`).

Every sampler is a pure function of ``(num_frames, fps)`` plus, where it is random, an explicit
``torch.Generator``; it returns :class:`Clip` objects (frame indices + start/end timestamps) and never opens a file.

Data flow::

    (num_frames, fps) ──► sampler (+ generator) ──► [Clip(indices, start_sec, end_sec), ...] ──► Video.get_clips

vidtok's own samplers:

=========  ==========================================================================================================
``random``   training: one window of ``clip_len`` frames every ``frame_stride`` frames, start uniform over the video
``uniform``  testing: ``num_clips`` windows whose starts are evenly spaced from the first to the last possible start
             (ViViT's 4 views, TokShift's 10); a single clip is centred. The starts are mmaction2's
             ``SampleFrames(test_mode=True)`` clip offsets, computed the same way
``segment``  TSN: the video cut into ``num_segments`` equal segments, one frame from each (random inside the segment
             with a generator, the segment middle without one)
``sliding``  embedding long videos: windows of a given length and hop, in frames or seconds, from the start; a last
             window aligned with the end of the video covers the tail if the hop does not reach it
=========  ==========================================================================================================

Peers' conventions, to reproduce a published evaluation protocol (each tested against the peer's own code):

================  ===================================================================================================
``mmaction2``     :func:`mmaction2_clips`: ``SampleFrames`` (train and test mode, ``out_of_bound_opt`` ``"loop"`` or
                  ``"repeat_last"``)
``pytorchvideo``  :func:`pytorchvideo_clips`: ``ConstantClipsPerVideoSampler``, ``RandomClipSampler`` or
                  ``UniformClipSampler`` time windows, the frames ``EncodedVideo.get_clip`` returns for them, then
                  ``UniformTemporalSubsample``
``pyslowfast``    :func:`pyslowfast_clips`: PySlowFast's ``get_start_end_idx`` + ``temporal_sampling`` over the
                  whole decoded video (``target_fps`` resampling included)
================  ===================================================================================================

Past the end (videos shorter than a window): ``out_of_bound="clamp"`` (vidtok's default) repeats the video's last frame
(index ``num_frames - 1``) in every out-of-range place; ``"repeat_last"`` is mmaction2's option of that name, which
repeats the clip's last in-range *sampled* index (with ``frame_stride`` 2 on 10 frames, clip 8: clamp gives
``[0,2,4,6,8,9,9,9]``, repeat_last ``[0,2,4,6,8,8,8,8]``); ``"loop"`` is mmaction2's default, ``index % num_frames``.
Clamping keeps the speed of the visible motion and shows the last frame; pytorchvideo instead stretches the clip
(``UniformTemporalSubsample`` repeats frames spread over it).

Example::

    g = torch.Generator().manual_seed(0)
    clip = random_clip(300, 25.0, clip_len=16, frame_stride=2, generator=g)
    clip.indices          # tensor of 16 frame indices, step 2
    clip.start_sec, clip.end_sec
    views = uniform_clips(300, 25.0, clip_len=16, frame_stride=2, num_clips=4)
    mm = mmaction2_clips(300, 25.0, clip_len=16, frame_interval=2, num_clips=4, test_mode=True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from vidtok.config import TEST_SAMPLERS

__all__ = [
    "Clip",
    "random_clip",
    "uniform_clips",
    "segment_clip",
    "sliding_clips",
    "mmaction2_clips",
    "pytorchvideo_clips",
    "pyslowfast_clips",
    "sample_clips",
    "SAMPLERS",
    "eval_clips",
    "OUT_OF_BOUND",
    "shuffle_time",
]

OUT_OF_BOUND = ("clamp", "repeat_last", "loop")


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


def _bound(indices: torch.Tensor, num_frames: int, out_of_bound: str) -> torch.Tensor:
    """Map indices past the end into the video (see the module docstring for the three conventions)."""
    indices = indices.to(torch.int64)
    if out_of_bound == "clamp":
        return indices.clamp(max=num_frames - 1)
    if out_of_bound == "loop":  # mmaction2: np.mod(frame_inds, total_frames)
        return indices.remainder(num_frames)
    if out_of_bound == "repeat_last":  # mmaction2: the largest in-range index of the clip fills the rest
        safe = indices < num_frames
        last = (indices * safe).max()
        return torch.where(safe, indices, last)
    raise ValueError(f"out_of_bound must be one of {', '.join(map(repr, OUT_OF_BOUND))}, got {out_of_bound!r}")


def _make(indices: torch.Tensor, num_frames: int, fps: float, out_of_bound: str = "clamp") -> Clip:
    indices = _bound(indices, num_frames, out_of_bound)
    return Clip(indices, float(indices[0]) / fps, (float(indices.max()) + 1) / fps)


def _window(start: int, clip_len: int, frame_stride: int) -> torch.Tensor:
    return start + torch.arange(clip_len, dtype=torch.int64) * frame_stride


def random_clip(
    num_frames: int,
    fps: float,
    *,
    clip_len: int,
    frame_stride: int = 1,
    generator: torch.Generator | None = None,
    out_of_bound: str = "clamp",
) -> Clip:
    """One window of ``clip_len`` frames, ``frame_stride`` apart, starting uniformly at random.

    The window spans ``(clip_len - 1) * frame_stride + 1`` frames; a shorter video starts at 0 and fills the places
    past its end by ``out_of_bound`` (default: its last frame).
    """
    _check(num_frames, fps, clip_len=clip_len, frame_stride=frame_stride)
    span = (clip_len - 1) * frame_stride + 1
    max_start = max(num_frames - span, 0)
    start = int(torch.randint(max_start + 1, (1,), generator=generator))
    return _make(_window(start, clip_len, frame_stride), num_frames, fps, out_of_bound)


def uniform_clips(
    num_frames: int,
    fps: float,
    *,
    clip_len: int,
    frame_stride: int = 1,
    num_clips: int = 1,
    out_of_bound: str = "clamp",
) -> list[Clip]:
    """``num_clips`` windows with evenly spaced starts: ``round(arange(num_clips) * (max_start / (num_clips - 1)))``
    (round half to even), ``max_start = num_frames - ((clip_len - 1) * frame_stride + 1)``.

    The first window starts at frame 0 and the last one ends at the last frame; one clip starts at
    ``max_start // 2``. These are exactly mmaction2's ``SampleFrames(test_mode=True)`` clip offsets (with
    ``out_of_bound="loop"`` or ``"repeat_last"`` the indices are too). Windows overlap when the video is short.
    """
    _check(num_frames, fps, clip_len=clip_len, frame_stride=frame_stride, num_clips=num_clips)
    span = (clip_len - 1) * frame_stride + 1
    max_start = max(num_frames - span, 0)
    if num_clips == 1:
        starts = [max_start // 2]
    else:
        step = max_start / float(num_clips - 1)  # float64, multiplied then rounded half-to-even, as NumPy does
        starts = [round(i * step) for i in range(num_clips)]
    return [_make(_window(s, clip_len, frame_stride), num_frames, fps, out_of_bound) for s in starts]


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


def mmaction2_clips(
    num_frames: int,
    fps: float,
    *,
    clip_len: int,
    frame_interval: int = 1,
    num_clips: int = 1,
    test_mode: bool = False,
    out_of_bound: str = "loop",
    generator: torch.Generator | None = None,
) -> list[Clip]:
    """mmaction2's ``SampleFrames(clip_len, frame_interval, num_clips, test_mode, out_of_bound_opt)``, index for
    index (mmaction/datasets/transforms/loading.py; ``temporal_jitter``, ``twice_sample`` and ``keep_tail_frames``
    are not offered).

    Test mode: clip offsets ``round(arange(num_clips) * max_offset / (num_clips - 1))``, ``max_offset = num_frames -
    ((clip_len - 1) * frame_interval + 1)`` (the starts of :func:`uniform_clips`), one clip at ``max_offset // 2``.
    Train mode: the video cut into ``num_clips`` parts of ``(num_frames - clip_len * frame_interval + 1) //
    num_clips`` frames with one random offset in each (note ``clip_len * frame_interval``, not the window's span);
    shorter videos fall through mmaction2's three fallbacks (sorted random offsets, evenly spread offsets, zeros).
    The random draws (``np.random.randint``) come from ``generator``. ``out_of_bound``: ``"loop"`` (mmaction2's
    default) or ``"repeat_last"``.
    """
    _check(num_frames, fps, clip_len=clip_len, frame_interval=frame_interval, num_clips=num_clips)
    if out_of_bound not in ("loop", "repeat_last"):
        raise ValueError(f"mmaction2's out_of_bound is 'loop' or 'repeat_last', got {out_of_bound!r}")
    n, k = num_frames, num_clips
    if test_mode:
        max_offset = max(n - ((clip_len - 1) * frame_interval + 1), 0)
        if k > 1:
            step = max_offset / float(k - 1)
            offsets = [round(i * step) for i in range(k)]
        else:
            offsets = [max_offset // 2]
    else:
        ori_clip_len = clip_len * frame_interval
        avg_interval = (n - ori_clip_len + 1) // k
        if avg_interval > 0:
            jitter = torch.randint(avg_interval, (k,), generator=generator).tolist()
            offsets = [i * avg_interval + j for i, j in enumerate(jitter)]
        elif n > max(k, ori_clip_len):
            offsets = sorted(torch.randint(n - ori_clip_len + 1, (k,), generator=generator).tolist())
        elif avg_interval == 0:
            ratio = (n - ori_clip_len + 1.0) / k
            offsets = [round(i * ratio) for i in range(k)]
        else:
            offsets = [0] * k
    return [_make(_window(o, clip_len, frame_interval), n, fps, out_of_bound) for o in offsets]


def _frac(x: float | Fraction) -> Fraction:
    return x if isinstance(x, Fraction) else Fraction(x).limit_denominator(1_000_000)


def pytorchvideo_clips(
    num_frames: int,
    fps: float,
    *,
    clip_duration: float | Fraction,
    num_samples: int,
    sampler: str = "constant_clips_per_video",
    clips_per_video: int = 1,
    stride: float | Fraction | None = None,
    backpad_last: bool = False,
    duration: float | Fraction | None = None,
    generator: torch.Generator | None = None,
) -> list[Clip]:
    """pytorchvideo's clip sampling (pytorchvideo.data.clip_sampling, 0.1.5) in frame indices.

    ``sampler`` picks the time windows ``[start, start + clip_duration)`` in seconds:
    ``"constant_clips_per_video"`` (``ConstantClipsPerVideoSampler(clip_duration, clips_per_video)``: starts
    ``i * max_start / clips_per_video``, so the last window does not reach the end), ``"random"``
    (``RandomClipSampler``: start ``random.uniform(0, max_start)``, drawn from ``generator``) or ``"uniform"``
    (``UniformClipSampler(clip_duration, stride, backpad_last)``: consecutive windows as ``LabeledVideoDataset`` walks
    them). Each window holds the frames ``EncodedVideo.get_clip`` returns (presentation time ``i / fps`` in
    ``[start, end)``), of which ``UniformTemporalSubsample(num_samples)`` keeps ``linspace(0, t - 1, num_samples)``
    (truncated). ``duration`` is the video's (``EncodedVideo.duration``; default ``num_frames / fps``).
    """
    _check(num_frames, fps, clip_duration=clip_duration, num_samples=num_samples, clips_per_video=clips_per_video)
    clip_dur = Fraction(clip_duration)
    video_duration = _frac(duration) if duration is not None else Fraction(num_frames) / _frac(fps)
    if sampler == "constant_clips_per_video":
        max_start = Fraction(max(video_duration - clip_dur, 0))
        part = Fraction(max_start, clips_per_video)
        windows = [(part * i, part * i + clip_dur) for i in range(clips_per_video)]
    elif sampler == "random":
        max_start = max(video_duration - clip_dur, 0)
        u = float(torch.rand((), dtype=torch.float64, generator=generator))
        start = Fraction(0 + (max_start - 0) * u)  # random.uniform(0, max_start)
        windows = [(start, start + clip_dur)]
    elif sampler == "uniform":
        step = stride if stride is not None else clip_dur
        if not 0 < step <= clip_dur:
            raise ValueError(f"stride must be > 0 and <= clip_duration ({clip_duration}), got {stride!r}")

        def start_end(last: Fraction) -> tuple[Fraction, Fraction]:
            a = Fraction(max(last - max(0, clip_dur - step), 0))
            b = Fraction(a + clip_dur)
            if backpad_last:
                a -= max(0, b - video_duration)
                a = Fraction(max(0, a))
                b = Fraction(a + clip_dur)
            return a, b

        windows, last = [], Fraction(0)
        while True:
            a, b = start_end(last)
            windows.append((a, b))
            nb = start_end(b)[1]
            if (abs(nb - b) < 1e-6) if backpad_last else (nb > video_duration):
                break
            last = b
    else:
        raise ValueError(f"sampler must be 'constant_clips_per_video', 'random' or 'uniform', got {sampler!r}")
    f = _frac(fps)
    out = []
    for a, b in windows:
        first = max(math.ceil(Fraction(a) * f), 0)  # i / fps >= a
        stop = min(math.ceil(Fraction(b) * f), num_frames)  # i / fps < b
        t = stop - first
        if t <= 0:
            raise ValueError(
                f"the window [{float(a):.3f}, {float(b):.3f}) s holds no frame of a {num_frames}-frame video"
            )
        sub = torch.linspace(0, t - 1, num_samples).clamp(0, t - 1).long()
        idx = first + sub
        out.append(Clip(idx, float(a), float(b)))
    return out


def pyslowfast_clips(
    num_frames: int,
    fps: float,
    *,
    num_samples: int,
    sampling_rate: int,
    target_fps: float = 30,
    num_clips: int = 10,
    test_mode: bool = True,
    generator: torch.Generator | None = None,
) -> list[Clip]:
    """PySlowFast's temporal sampling (slowfast/datasets/decoder.py) over the whole decoded video.

    ``clip_size = num_samples * sampling_rate * fps / target_fps`` frames; ``delta = max(num_frames - clip_size, 0)``;
    test mode: ``num_clips`` clips starting at ``delta * i / num_clips`` (``get_start_end_idx`` with ``clip_idx = i``;
    like pytorchvideo, the last clip does not reach the end), train mode: one clip starting at ``random.uniform(0,
    delta)`` (``clip_idx = -1``; drawn from ``generator``). Each clip is ``temporal_sampling``: ``torch.linspace(start,
    start + clip_size - 1, num_samples)`` (float32), clamped to the video, truncated.
    """
    _check(num_frames, fps, num_samples=num_samples, sampling_rate=sampling_rate, target_fps=target_fps)
    clip_size = num_samples * sampling_rate * fps / target_fps
    delta = max(num_frames - clip_size, 0)
    if test_mode:
        starts = [delta * i / num_clips for i in range(num_clips)]
    else:
        u = float(torch.rand((), dtype=torch.float64, generator=generator))
        starts = [0 + (delta - 0) * u]  # random.uniform(0, delta)
    out = []
    for start in starts:
        idx = torch.linspace(start, start + clip_size - 1, num_samples).clamp(0, num_frames - 1).long()
        out.append(_make(idx, num_frames, fps))
    return out


SAMPLERS = ("random", "uniform", "segment", "sliding", "mmaction2", "pytorchvideo", "pyslowfast")

# PySlowFast's and pytorchvideo's Kinetics recipes define a clip at a nominal 30 fps: num_frames x frame_stride frames
# of a 30 fps video, whatever the file's rate
PEER_NOMINAL_FPS = 30


def eval_clips(
    sampler: str, num_frames: int, fps: float, *, clip_len: int, frame_stride: int, num_clips: int
) -> list[Clip]:
    """The ``num_clips`` test views of a video, each ``clip_len`` frames, by ``data.test_sampler``.

    ``uniform``: :func:`uniform_clips` (vidtok, ViViT); ``mmaction2``: :func:`mmaction2_clips` in test mode
    (``SampleFrames(clip_len, frame_interval=frame_stride, num_clips, test_mode=True)``, out-of-bound ``loop``);
    ``pyslowfast``: :func:`pyslowfast_clips` in test mode (``NUM_FRAMES=clip_len``, ``SAMPLING_RATE=frame_stride``,
    ``TARGET_FPS=30``, ``NUM_ENSEMBLE_VIEWS=num_clips``); ``pytorchvideo``: :func:`pytorchvideo_clips` with
    ``ConstantClipsPerVideoSampler(clip_duration=clip_len * frame_stride / 30, clips_per_video=num_clips)`` and
    ``UniformTemporalSubsample(clip_len)``, as its Kinetics recipes.
    """
    if sampler == "uniform":
        return uniform_clips(num_frames, fps, clip_len=clip_len, frame_stride=frame_stride, num_clips=num_clips)
    if sampler == "mmaction2":
        kw = {"frame_interval": frame_stride, "num_clips": num_clips, "test_mode": True}
        return mmaction2_clips(num_frames, fps, clip_len=clip_len, **kw)
    if sampler == "pyslowfast":
        kw = {"sampling_rate": frame_stride, "target_fps": PEER_NOMINAL_FPS, "num_clips": num_clips, "test_mode": True}
        return pyslowfast_clips(num_frames, fps, num_samples=clip_len, **kw)
    if sampler == "pytorchvideo":
        duration = Fraction(clip_len * frame_stride, PEER_NOMINAL_FPS)
        return pytorchvideo_clips(
            num_frames, fps, clip_duration=duration, num_samples=clip_len, clips_per_video=num_clips
        )
    raise ValueError(f"unknown test sampler {sampler!r} (choose from {', '.join(TEST_SAMPLERS)})")


def sample_clips(
    name: str, num_frames: int, fps: float, *, generator: torch.Generator | None = None, **kwargs
) -> list[Clip]:
    """Dispatch by sampler name (:data:`SAMPLERS`); always returns a list of clips (one for ``random`` and
    ``segment``)."""
    if name == "random":
        return [random_clip(num_frames, fps, generator=generator, **kwargs)]
    if name == "uniform":
        return uniform_clips(num_frames, fps, **kwargs)
    if name == "segment":
        return [segment_clip(num_frames, fps, generator=generator, **kwargs)]
    if name == "sliding":
        return sliding_clips(num_frames, fps, **kwargs)
    if name == "mmaction2":
        return mmaction2_clips(num_frames, fps, generator=generator, **kwargs)
    if name == "pytorchvideo":
        return pytorchvideo_clips(num_frames, fps, generator=generator, **kwargs)
    if name == "pyslowfast":
        return pyslowfast_clips(num_frames, fps, generator=generator, **kwargs)
    raise ValueError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")


def shuffle_time(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Randomly permute the frames of every clip of a batch (the control experiment: destroys motion, keeps
    appearance; ``train.shuffle_frames`` in training and evaluation).

    Args:
        x: ``(B, C, T, H, W)`` or multi-view ``(B, V, C, T, H, W)``.
        generator: CPU generator deciding the permutations.
    """
    t_dim = x.ndim - 3
    lead = x.shape[: t_dim - 1]  # (B,) or (B, V)
    t = x.shape[t_dim]
    perm = torch.argsort(torch.rand(*lead, t, generator=generator), dim=-1).to(x.device)  # (*lead, T)
    idx = perm.view(*lead, 1, t, 1, 1).expand_as(x)  # (*lead, C, T, H, W)
    return torch.gather(x, t_dim, idx)
