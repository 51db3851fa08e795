"""PyAV backend: the reference decoder and the fallback for every other backend.

How a clip is read::

    open:  demux every packet of the chosen video stream once (cheap: no decoding) -> presentation timestamps
           sorted = frame index, keyframe table, open-GOP check; rotation from the container header
    read:  for each wanted frame (ascending): if a keyframe lies between the decoder's position and the frame
           (or the frame is behind us), seek to the last keyframe at or before it; then decode forward and keep
           the frames whose pts is wanted. The decoder position survives between calls, so consecutive clips of
           one video (multi-view, sliding windows) continue forward instead of re-seeking.

The frame count comes from the demuxed packets, not from the header (``stream.frames``), which can be wrong or
missing (WebM). If packets carry no timestamps (some raw streams), frames are counted in decode output order and
reads restart from the beginning when they have to go backwards.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from vidtok.errors import VideoDecodeError, exception_reason
from vidtok.io.backends.common import average_fps, container_rotation, resize_short_side
from vidtok.io.metadata import VideoMetadata

# Decoders whose non-reference frames may be skipped when not wanted (checked for exactness in tests/test_io_*).
SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "mpeg4", "vp9"})


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a hard dependency
        raise ImportError("the pyav video backend needs PyAV: pip install av") from e
    return av


def _pyav_major() -> int:
    try:
        return int(_import_av().__version__.split(".")[0])
    except (ImportError, ValueError):  # pragma: no cover
        return 0


_REFORMAT_HAS_THREADS = _pyav_major() >= 17  # VideoReformatter.reformat(..., threads=) appeared in PyAV 17


def _scan_packets(container: Any, stream: Any) -> tuple[list, list, list, list, int]:
    """Demux every packet of ``stream`` once (no decoding): presentation timestamps, keyframe pts, keyframe seek
    timestamps (dts), packet durations, and the number of leading pictures.

    Leading pictures are frames that follow a keyframe in decode order but are shown before it (open GOP: HEVC
    CRA/RASL, H.264 recovery points, MPEG-2 open GOPs). Decoders that count frames from a keyframe after a seek get
    them wrong (see vidtok.io.video.route_reason). A truncated or corrupt tail keeps the packets read before it.
    """
    pts, keys, seek_ts, durs = [], [], [], []
    leading, key_pts = 0, None
    try:
        for p in container.demux(stream):
            if p.size == 0 or p.is_discard:
                continue
            pts.append(p.pts)
            durs.append(p.duration or 0)
            if p.is_keyframe:
                keys.append(p.pts)
                seek_ts.append(p.dts if p.dts is not None else p.pts)
                key_pts = p.pts
            elif key_pts is not None and p.pts is not None and p.pts < key_pts:
                leading += 1
    except Exception:
        if not pts:
            raise
    return pts, keys, seek_ts, durs, leading


class PyAVReader:
    """Random access into one video stream with PyAV. See the module docstring for the strategy."""

    name = "pyav"

    def __init__(self, path: str, *, num_threads: int = 1, short_side: int | None = None, stream: int = 0):
        av = _import_av()
        self.path = path
        self._short_side = short_side
        self._stream_pos = stream  # position among the container's video streams
        self._container: Any = None
        self._gen: Iterator[Any] | None = None
        self._last_pts: int | None = None  # pts of the last frame the decoder produced
        self._last_frame: Any = None
        self._ordinal = -1  # decode-order count of the last frame (sequential mode)
        self.frames_decoded = 0  # total frames decoded by this reader (benchmark statistic)
        self.decode_errors = 0  # packets the decoder rejected
        self._wanted: set[int] | None = None  # pts wanted by the current read (None: all)
        self._nonref_sent: set[int] = set()  # pts sent with skip_frame=NONREF since the last seek
        self._skip_mode = "DEFAULT"
        self._skip_ok = False
        try:
            self._container = av.open(path, metadata_errors="ignore")
        except Exception as e:  # av.FFmpegError subclasses, UnicodeDecodeError, OSError
            raise VideoDecodeError(path, f"cannot open as a video: {exception_reason(e)}") from e
        try:
            self._init_stream(num_threads)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- open
    def _init_stream(self, num_threads: int) -> None:
        c = self._container
        if not c.streams.video:
            kinds = sorted({s.type for s in c.streams})
            raise VideoDecodeError(self.path, f"no video stream (streams: {', '.join(kinds) or 'none'})")
        nv = len(c.streams.video)
        if not 0 <= self._stream_pos < nv:
            raise VideoDecodeError(
                self.path, f"no video stream {self._stream_pos} (the file has {nv} video stream{'s' * (nv != 1)})"
            )
        st = c.streams.video[self._stream_pos]
        self._stream = st
        self.stream_index = st.index  # the container's stream index (what FFmpeg-based backends are told)
        self.num_video_streams = nv
        self.format_name = c.format.name if c.format is not None else ""
        if st.codec_context is None:
            raise VideoDecodeError(self.path, "no decoder for its video codec (unknown or unsupported codec)")
        cc = st.codec_context
        self._num_threads = num_threads
        cc.thread_count = num_threads
        if num_threads != 1:
            cc.thread_type = "AUTO"

        pts, keys, seek_ts, durs, self.leading_pictures = _scan_packets(c, st)
        if not pts:
            raise VideoDecodeError(self.path, "video stream has no packets")
        self._sequential = any(p is None for p in pts) or len(set(pts)) != len(pts)
        if self._sequential:
            self._pts: list[int] = []
            self._key_pts: list[int] = []
            self._seek_ts: list[int] = []
        else:
            self._pts = sorted(pts)
            order = sorted(range(len(keys)), key=lambda k: keys[k])
            self._key_pts = [keys[k] for k in order]
            self._seek_ts = [seek_ts[k] for k in order]
        n = len(pts)

        # Nothing is decoded at open (a keyframe decode costs as much as the rest of a typical open). The rotation
        # comes from the container header (MP4/MOV track matrix, Matroska projection); decodability shows at the
        # first read.
        rotation = container_rotation(self.path, self._stream_pos)
        self.pix_fmt = cc.pix_fmt or ""
        # FFmpeg's native decoders for these honour skip_frame=NONREF per packet (see _decode_packets).
        self._skip_ok = not self._sequential and cc.name in SKIP_NONREF_CODECS
        self._reformatter = _import_av().video.reformatter.VideoReformatter()  # one swscale context, reused
        # PyAV >= 17 converts with sws_scale_frame on an automatic number of threads unless told otherwise: in a
        # data-loader worker those threads compete with the other workers and the model, and they cost CPU even
        # alone (1 thread, same pixels: 0.032 vs 0.075 ms per 176x144 frame, 0.40 vs 0.51 ms at 452x340).
        self._reformat_kw = {"threads": num_threads} if _REFORMAT_HAS_THREADS else {}

        duration = self._duration(durs[pts.index(self._pts[-1])] if self._pts else 0, n)
        rate = st.average_rate or st.guessed_rate
        fps = average_fps(n, duration, float(rate) if rate else 0.0)
        if duration <= 0 and fps > 0:
            duration = n / fps
        self.metadata = VideoMetadata(
            num_frames=n,
            fps=fps,
            duration=duration,
            width=int(cc.width or st.width),
            height=int(cc.height or st.height),
            codec=cc.name,
            rotation=rotation,
            backend=self.name,
            stream=self._stream_pos,
        )

    def _duration(self, last_packet_duration: int, n: int) -> float:
        """Seconds from the first presentation timestamp to the end of the last frame (header values without
        timestamps; 0 if none)."""
        st, c = self._stream, self._container
        tb = st.time_base or Fraction(1, 1)
        if not self._sequential:  # span of the presentation timestamps + one frame
            step = last_packet_duration or (self._pts[-1] - self._pts[0]) / max(n - 1, 1)
            return float((self._pts[-1] - self._pts[0] + step) * tb)
        if st.duration:
            return float(st.duration * tb)
        if c.duration:
            return c.duration / 1_000_000
        return 0.0

    def pts_seconds(self, indices: list[int]) -> list[float] | None:
        """Presentation times (seconds) of frames ``indices``, from the packet index; None without timestamps."""
        if self._sequential:
            return None
        tb = self._stream.time_base or Fraction(1, 1)
        return [float(self._pts[i] * tb) for i in indices]

    # ---------------------------------------------------------------- decoding primitives
    def _decode_packets(self, packets: Iterator[Any]) -> Iterator[Any]:
        av = _import_av()
        cc = self._stream.codec_context
        while True:
            try:
                p = next(packets, None)
            except av.FFmpegError:  # unreadable tail (truncated file): end of stream
                p = None
            if p is None:
                return
            if self._skip_ok:
                # Frames nobody asked for that no other frame references need not be decoded at all (exact: a
                # non-reference frame cannot change any other frame's pixels). The decoder still decodes them if
                # they turn out to be references.
                skip = self._wanted is not None and p.pts is not None and p.pts not in self._wanted
                mode = "NONREF" if skip else "DEFAULT"
                if mode != self._skip_mode:
                    cc.skip_frame = mode
                    self._skip_mode = mode
                if skip:
                    self._nonref_sent.add(p.pts)
            try:
                frames = p.decode()
            except av.FFmpegError:
                # A corrupt or partial packet: skip it. Its frame is then missing and asking for it is a clean
                # VideoDecodeError, while the other frames stay readable.
                self.decode_errors += 1
                continue
            for f in frames:
                self.frames_decoded += 1
                yield f

    def _next_frame(self) -> Any:
        assert self._gen is not None
        f = next(self._gen, None)
        if f is not None:
            self._last_frame = f
            self._last_pts = f.pts
            self._ordinal += 1
        return f

    def _restart(self) -> None:
        """Decode from the start of the stream."""
        av = _import_av()
        st = self._stream
        start = self._seek_ts[0] if self._seek_ts else (st.start_time or 0)
        try:
            if self._sequential:
                raise av.FFmpegError(1, "no timestamps to seek by")
            self._container.seek(start, stream=st, backward=True, any_frame=False)
        except av.FFmpegError:
            # Raw streams without timestamps (e.g. .h264) cannot seek: reopen the file instead.
            self._container.close()
            self._container = av.open(self.path, metadata_errors="ignore")
            st = self._stream = self._container.streams.video[self._stream_pos]
            st.codec_context.thread_count = self._num_threads
            if self._num_threads != 1:
                st.codec_context.thread_type = "AUTO"
        self._gen = self._decode_packets(iter(self._container.demux(st)))
        self._last_pts, self._last_frame, self._ordinal = None, None, -1
        self._nonref_sent.clear()

    def _seek_to_key(self, k: int) -> None:
        """Position the decoder on keyframe ``k`` (index into the sorted keyframe table) or an earlier one."""
        st = self._stream
        av = _import_av()
        # Seek by the keyframe's pts (FFmpeg's mov/mkv indexes land exactly on it); if a demuxer lands past it,
        # try its dts, then the previous keyframe, then the start.
        tries = [self._key_pts[k], self._seek_ts[k]] + ([self._key_pts[k - 1]] if k > 0 else [])
        for ts in dict.fromkeys(tries):
            self._container.seek(ts, stream=st, backward=True, any_frame=False)
            demux = iter(self._container.demux(st))
            first = None
            try:
                for p in demux:
                    if p.size > 0 and not p.is_discard:
                        first = p
                        break
            except av.FFmpegError:
                first = None
            # The demuxer lands on a keyframe; accept it if it is at or before the one we asked for.
            if first is not None and first.is_keyframe and first.pts is not None and first.pts <= self._key_pts[k]:
                self._gen = self._decode_packets(iter(_chain(first, demux)))
                self._last_pts, self._last_frame = None, None
                self._nonref_sent.clear()
                return
        self._restart()

    def _to_array(self, frame: Any) -> np.ndarray:
        # Same swscale conversion as frame.to_ndarray(format="rgb24") (bit-identical), but with one cached context
        # instead of a new one per frame. to_ndarray is a view of the converted frame's buffer (no copy).
        return self._reformatter.reformat(frame, format="rgb24", **self._reformat_kw).to_ndarray()

    # ---------------------------------------------------------------- read
    def read(self, indices: list[int]) -> torch.Tensor:
        if self._container is None:
            raise VideoDecodeError(self.path, "video is closed")
        out = _FrameSink(len(indices))
        if self._sequential:
            self._read_sequential(indices, out)
        else:
            self._read_by_pts(indices, out)
        frames = torch.from_numpy(out.array())
        if self._short_side is not None:
            # one batched resize: torchvision's uint8 kernel computes its filter weights once per call
            frames = resize_short_side(frames, self._short_side)
        return frames

    def _read_by_pts(self, indices: list[int], out: _FrameSink) -> None:
        self._wanted = {self._pts[i] for i in indices}
        for idx in indices:
            t = self._pts[idx]
            if self._last_frame is not None and self._last_pts == t:
                out.add(self._to_array(self._last_frame))
                continue
            k = bisect.bisect_right(self._key_pts, t) - 1  # last keyframe at or before t
            if k < 0:
                k = 0
            here = self._last_pts
            if self._gen is None or here is None or t < here or self._key_pts[k] > here or t in self._nonref_sent:
                self._seek_to_key(k)
            while True:
                f = self._next_frame()
                if f is None:
                    raise VideoDecodeError(
                        self.path, f"frame {idx} could not be decoded (stream ended after {self.frames_decoded} frames)"
                    )
                if f.pts == t:
                    out.add(self._to_array(f))
                    break
                if f.pts is not None and f.pts > t:
                    # Output is in presentation order, so a later frame means the decoder dropped this one.
                    raise VideoDecodeError(self.path, f"frame {idx} is missing from the decoded stream (corrupt data)")

    def _read_sequential(self, indices: list[int], out: _FrameSink) -> None:
        for idx in indices:
            if self._last_frame is not None and self._ordinal == idx:
                out.add(self._to_array(self._last_frame))
                continue
            if self._gen is None or self._ordinal >= idx:
                self._restart()
            while self._ordinal < idx:
                if self._next_frame() is None:
                    raise VideoDecodeError(self.path, f"frame {idx} could not be decoded (stream has fewer frames)")
            out.add(self._to_array(self._last_frame))

    def close(self) -> None:
        self._gen = None
        self._last_frame = None
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None


class _FrameSink:
    """Converted frames copied straight into one uint8 ``(N, H, W, 3)`` array, allocated at the first frame (one copy
    per frame, instead of a list of frames plus ``np.stack``)."""

    def __init__(self, n: int):
        self.n = n
        self.buf: np.ndarray | None = None
        self.i = 0

    def add(self, frame: np.ndarray) -> None:
        if self.buf is None:
            self.buf = np.empty((self.n, *frame.shape), np.uint8)
        elif frame.shape != self.buf.shape[1:]:
            raise RuntimeError(f"frame size changed mid-stream: {frame.shape} after {self.buf.shape[1:]}")
        self.buf[self.i] = frame
        self.i += 1

    def array(self) -> np.ndarray:
        assert self.buf is not None and self.i == self.n, (self.i, self.n)
        return self.buf


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
