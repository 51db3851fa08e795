"""The backend-independent video interface: :func:`open_video`, :class:`Video`, :class:`VideoMetadata`.

Dataflow::

    open_video(path, backend, stream) ──► PyAV index of the stream (demux only: frame count, pts, keyframes,
                                          │   pixel format, open GOP, rotation) = VideoMetadata, fixed here
                                          ├─► route_reason(backend, index): a stream class the backend reads
                                          │   inexactly ──► PyAV serves it
                                          └─► backend Reader (decord | torchcodec) on the same stream; its count
                                              and size checked against the index, else PyAV serves it
    Video.get_frames(indices) ── validate, dedupe + sort ──► Reader.read(sorted unique indices) -> uint8 (N, H, W, 3)
                                                         ──► scatter back to the requested order

A Reader only ever sees sorted, unique, in-range indices; everything else (duplicates, any order, range checks,
error wrapping, routing, the fallback to PyAV when torchcodec or decord fails) lives here, once. The metadata is
PyAV's from the moment of opening, whichever backend serves the pixels, so clips planned from it stay valid if a
later read falls back to PyAV.

Frame index ``i`` is the ``i``-th frame in presentation order, i.e. the ``i``-th frame a full sequential PyAV decode
(``[f.to_ndarray(format="rgb24") for f in container.decode(video=0)]``) yields. Frames are returned exactly as the
decoder produces them: the container's rotation tag is reported in :attr:`VideoMetadata.rotation` but not applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import stat
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vidtok.errors import VideoDecodeError, exception_line, exception_reason, safe_text
from vidtok.io.metadata import Reader, VideoMetadata

# Order of preference for backend="auto": fastest first, measured by tools/bench_decode.py (docs/benchmarks.md).
# vidtok's PyAV reader decodes the fewest frames (it skips unwanted non-reference frames) and was the fastest on 4
# of the 5 benchmark files, for random clips and for multi-view; torchcodec is ahead on 720p without B-frames.
AUTO_ORDER = ("pyav", "torchcodec", "decord")
BACKENDS = ("pyav", "decord", "torchcodec")
_INSTALL = {
    "pyav": "pip install av",
    "decord": "pip install decord",
    "torchcodec": "pip install torchcodec (and the FFmpeg shared libraries, e.g. apt-get install ffmpeg)",
}
_MODULE = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec"}

# Codecs that torchcodec and decord do not decode exactly, so vidtok reads them with PyAV whichever backend is asked
# for. These decoders (FFmpeg's mpegvideo family) switch motion compensation between rounding modes per picture; the
# FFmpeg builds torchcodec and decord load here (the system's 5.1, decord's bundled one) then use approximate x86
# SIMD routines unless AV_CODEC_FLAG_BITEXACT is set, which neither library lets a caller set. Their frames differ
# from a plain PyAV decode by 1-2 on some pixels (measured: MPEG-4 Part 2, H.263+, MS-MPEG-4 v3, WMV1, WMV2;
# ``ffmpeg -flags bitexact`` or ``-cpuflags 0`` with the same 5.1 build matches PyAV exactly). The names are FFmpeg
# codec names as the backends report them (torchcodec says "msmpeg4v3" where PyAV and decord say "msmpeg4").
PYAV_ONLY_CODECS = frozenset({"mpeg4", "h263", "h263p", "h263i", "msmpeg4", "msmpeg4v3", "wmv1", "wmv2"})
# Pixel formats torchcodec and decord convert to RGB exactly as PyAV does: 8-bit YUV 4:2:0 / 4:2:2 / 4:4:4 (limited
# or full range) and planar RGB. Deeper formats (yuv420p10le, yuv422p10le, yuv420p12le, ...) go through another
# 10-to-8-bit path in their FFmpeg builds (every frame differs by up to ~20): PyAV reads them.
EXACT_PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gbrp"})
# Containers whose streams torchcodec and decord index inexactly: MPEG transport and program streams (decord returns
# other frames, torchcodec runs out of frames before the last ones).
PYAV_ONLY_FORMATS = frozenset({"mpegts", "mpeg"})
_ROUTED: set[tuple[str, str]] = set()  # (backend, reason) pairs already announced in this process


_INSTALLED: dict[str, bool] = {}


def _backend_installed(name: str) -> bool:
    if name not in _INSTALLED:  # cached: open_video runs once per clip in data loaders
        _INSTALLED[name] = importlib.util.find_spec(_MODULE[name]) is not None
    return _INSTALLED[name]


def available_backends() -> list[str]:
    """Backends whose Python package is importable here, in ``auto`` preference order.

    torchcodec counts as available only if its FFmpeg libraries load (it is probed by importing its decoder).
    """
    out = []
    for name in AUTO_ORDER:
        if not _backend_installed(name):
            continue
        if name == "torchcodec" and not _torchcodec_loads():
            continue
        out.append(name)
    return out


_TORCHCODEC_OK: bool | None = None


def _torchcodec_loads() -> bool:
    global _TORCHCODEC_OK
    if _TORCHCODEC_OK is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torchcodec.decoders import VideoDecoder  # noqa: F401
            _TORCHCODEC_OK = True
        except Exception:  # missing/incompatible FFmpeg libraries raise RuntimeError/OSError
            _TORCHCODEC_OK = False
    return _TORCHCODEC_OK


def resolve_backend(backend: str = "auto") -> str:
    """Turn ``"auto"`` into the fastest available backend; check that a named one is installed.

    Args:
        backend: ``"auto"``, ``"pyav"``, ``"decord"`` or ``"torchcodec"``.

    Returns:
        The backend name that :func:`open_video` will use.

    Raises:
        ValueError: unknown backend name.
        ImportError: the named backend is not installed (the message has the install command).
    """
    if backend == "auto":
        # the first available in AUTO_ORDER, probing no further (probing torchcodec imports it: seconds)
        for name in AUTO_ORDER:
            if _backend_installed(name) and (name != "torchcodec" or _torchcodec_loads()):
                return name
        raise ImportError(f"no video backend installed; install one: {_INSTALL['pyav']}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of 'auto', {', '.join(map(repr, BACKENDS))}")
    if not _backend_installed(backend) or (backend == "torchcodec" and not _torchcodec_loads()):
        raise ImportError(f"video backend {backend!r} is not available; install it: {_INSTALL[backend]}")
    return backend


def _make_reader(backend: str, path: str, num_threads: int, short_side: int | None, ref: Any) -> Reader:
    """A reader of the stream PyAV's ``ref`` reader indexed."""
    if backend == "decord":
        from vidtok.io.backends.decord import DecordReader

        return DecordReader(path, ref=ref.metadata, num_threads=num_threads, short_side=short_side)
    if backend == "torchcodec":
        from vidtok.io.backends.torchcodec import TorchCodecReader

        return TorchCodecReader(
            path,
            num_threads=num_threads,
            short_side=short_side,
            stream_index=ref.stream_index,
            expected_pts=ref.pts_seconds,
        )
    raise ValueError(f"unknown video backend {backend!r}")


def _pyav_reader(path: str, num_threads: int, short_side: int | None, stream: int) -> Any:
    from vidtok.io.backends.pyav import PyAVReader

    return PyAVReader(path, num_threads=num_threads, short_side=short_side, stream=stream)


def route_reason(backend: str, ref: Any) -> str | None:
    """Why ``backend`` (torchcodec or decord) must not serve the stream PyAV's reader ``ref`` indexed, or None.

    Each rule is a class of streams on which that backend's frames were measured to differ from the sequential PyAV
    decode (tests/test_io_streams.py holds a fixture for each): vidtok then reads the stream with PyAV.
    """
    m = ref.metadata
    if m.codec in PYAV_ONLY_CODECS:
        return f"does not decode {m.codec} bit-exactly (approximate SIMD in its FFmpeg build)"
    if ref.pix_fmt not in EXACT_PIX_FMTS:
        return f"converts {ref.pix_fmt or 'this pixel format'} to RGB differently from pyav"
    fmt = ref.format_name.split(",")[0]
    if fmt in PYAV_ONLY_FORMATS:
        return f"misplaces frames in MPEG {'transport' if fmt == 'mpegts' else 'program'} streams"
    if ref.leading_pictures:
        return "misplaces frames after a seek in open-GOP streams (frames shown before their keyframe)"
    if backend == "decord":
        if ref.num_video_streams > 1:
            return "cannot choose among several video streams"
        if m.rotation:
            # decord handles display rotation inconsistently (crashes on 90, rotates on 270, garbage in Matroska)
            return "does not read rotated videos correctly"
    return None


def _check_path(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except OSError as e:
        raise VideoDecodeError(path, f"cannot access: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoDecodeError(path, "is a directory, not a video file")
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block; /dev/zero never ends
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
        )
        raise VideoDecodeError(path, f"is {kind}, not a regular video file")
    if st.st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _as_index_list(indices: Any, path: str) -> list[int]:
    if isinstance(indices, torch.Tensor):
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise VideoDecodeError(path, f"frame indices must be integers, got a {indices.dtype} tensor")
        return [int(i) for i in indices.reshape(-1).tolist()]
    if isinstance(indices, np.ndarray):
        if not np.issubdtype(indices.dtype, np.integer):
            raise VideoDecodeError(path, f"frame indices must be integers, got a {indices.dtype} array")
        return [int(i) for i in indices.reshape(-1).tolist()]
    if isinstance(indices, int | np.integer):
        return [int(indices)]
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int | np.integer | torch.Tensor):
            raise VideoDecodeError(path, f"frame indices must be integers, got {i!r}")
        out.append(int(i))
    return out


class Video:
    """An open video file. Use :func:`open_video` to create one; close it (or use ``with``) when done.

    The underlying reader stays open between calls, so several clips of one video (multi-view testing, sliding
    windows) reuse it; the PyAV backend also keeps its decoder position and only seeks when that skips work.
    """

    def __init__(
        self,
        path: str,
        reader: Reader,
        *,
        num_threads: int = 1,
        short_side: int | None = None,
        pyav: Reader | None = None,
    ):
        self.path = path
        self._reader: Reader | None = reader
        # the PyAV reader of the same stream: the metadata's source and the fallback (None: made on demand)
        self._pyav: Reader | None = reader if reader.name == "pyav" else pyav
        self._num_threads = num_threads
        self._short_side = short_side
        self._fell_back = reader.name == "pyav"  # PyAV is the last resort; never "fall back" from it
        base = self._pyav.metadata if self._pyav is not None else reader.metadata
        self._meta = dataclasses.replace(base, backend=reader.name)

    @property
    def backend(self) -> str:
        """The backend currently serving frames (``"pyav"`` after a fallback)."""
        return self._open_reader().name

    @property
    def metadata(self) -> VideoMetadata:
        self._open_reader()
        return self._meta

    def __len__(self) -> int:
        return self.metadata.num_frames

    def _open_reader(self) -> Reader:
        if self._reader is None:
            raise VideoDecodeError(self.path, "video is closed")
        return self._reader

    def _fallback(self, err: BaseException) -> None:
        """Replace a failed torchcodec/decord reader with PyAV (once per Video)."""
        old = self._open_reader()
        warnings.warn(
            safe_text(f"{self.path}: {old.name} failed ({exception_line(err)}); retrying with pyav"),
            RuntimeWarning,
            stacklevel=3,
        )
        old_meta = self._meta
        with contextlib.suppress(Exception):
            old.close()
        self._reader = None
        self._fell_back = True
        if self._pyav is not None:  # the index the metadata came from: same frames, same count
            self._reader = self._pyav
            self._meta = dataclasses.replace(self._meta, backend="pyav")
            return
        try:
            self._reader = _pyav_reader(self.path, self._num_threads, self._short_side, self._meta.stream)
        except VideoDecodeError:
            raise
        except Exception as e:
            raise VideoDecodeError(
                self.path, f"{old.name} failed ({exception_reason(err)}); pyav failed: {exception_reason(e)}"
            ) from e
        self._meta = dataclasses.replace(self._reader.metadata, backend="pyav")
        if self._reader.metadata.num_frames != old_meta.num_frames:
            warnings.warn(
                safe_text(
                    f"{self.path}: pyav counts {self._reader.metadata.num_frames} frames, {old.name} "
                    f"counted {old_meta.num_frames}"
                ),
                RuntimeWarning,
                stacklevel=3,
            )

    def get_frames(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> torch.Tensor:
        """Decode frames by index.

        Args:
            indices: frame indices in presentation order; any order, duplicates allowed.

        Returns:
            uint8 tensor ``(T, H, W, 3)`` RGB, ``T = len(indices)``, in the order asked for.

        Raises:
            VideoDecodeError: an index is out of range, or the frames cannot be decoded.
        """
        idx = _as_index_list(indices, self.path)
        n = self.metadata.num_frames
        bad = [i for i in idx if i < 0 or i >= n]
        if bad:
            raise VideoDecodeError(self.path, f"frame index {bad[0]} out of range: the video has {n} frames")
        if not idx:
            m = self.metadata
            h, w = self._out_hw(m)
            return torch.empty((0, h, w, 3), dtype=torch.uint8)
        uniq = sorted(set(idx))
        frames = self._read(uniq)
        if uniq == idx:
            return frames
        pos = {v: k for k, v in enumerate(uniq)}
        # NumPy's take, not torch indexing: ~25x faster on uint8 (T, H, W, 3) (0.34 vs 8.3 ms for 64 frames of
        # 176x144, one thread), which matters for overlapping views of short videos.
        return torch.from_numpy(frames.numpy()[np.fromiter((pos[i] for i in idx), np.intp, len(idx))])

    def get_clips(self, clips: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Decode several clips of this video in one forward pass (shared frames are decoded once).

        Args:
            clips: one index list per clip (e.g. the 4 uniform views of multi-view testing).

        Returns:
            one uint8 ``(T_i, H, W, 3)`` tensor per clip.
        """
        lists = [_as_index_list(c, self.path) for c in clips]
        flat = [i for c in lists for i in c]
        frames = self.get_frames(flat)
        out, start = [], 0
        for c in lists:
            out.append(frames[start : start + len(c)])
            start += len(c)
        return out

    def _out_hw(self, m: VideoMetadata) -> tuple[int, int]:
        if self._short_side is None:
            return m.height, m.width
        from vidtok.io.backends.common import short_side_size

        return short_side_size(m.height, m.width, self._short_side)

    def _checked(self, reader: Reader, frames: torch.Tensor, n: int) -> torch.Tensor:
        """Catch a backend returning the wrong thing (count, size, dtype) instead of raising."""
        h, w = self._out_hw(self._meta)
        if frames.dtype != torch.uint8 or tuple(frames.shape) != (n, h, w, 3):
            raise RuntimeError(
                f"returned {tuple(frames.shape)} {frames.dtype} frames, expected {(n, h, w, 3)} torch.uint8"
            )
        return frames

    def _read(self, uniq: list[int]) -> torch.Tensor:
        reader = self._open_reader()
        try:
            return self._checked(reader, reader.read(uniq), len(uniq))
        except VideoDecodeError as e:
            if self._fell_back:
                raise
            err: BaseException = e
        except Exception as e:  # backend libraries raise anything (RuntimeError, DECORDError, av.FFmpegError, ...)
            if self._fell_back:
                raise VideoDecodeError(self.path, f"{reader.name}: {exception_reason(e)}") from e
            err = e
        self._fallback(err)
        n = self.metadata.num_frames
        if uniq[-1] >= n:  # PyAV may count fewer frames than the failed backend did
            raise VideoDecodeError(self.path, f"frame index {uniq[-1]} out of range: the video has {n} frames (pyav)")
        try:
            reader = self._open_reader()
            return self._checked(reader, reader.read(uniq), len(uniq))
        except VideoDecodeError:
            raise
        except Exception as e:
            raise VideoDecodeError(self.path, f"pyav: {exception_reason(e)}") from e

    def close(self) -> None:
        """Release the decoders and file handles. Safe to call twice."""
        readers = [self._reader] + ([self._pyav] if self._pyav is not self._reader else [])
        self._reader = self._pyav = None
        for r in readers:
            if r is not None:
                with contextlib.suppress(Exception):
                    r.close()

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        if self._reader is None:
            return f"Video({self.path!r}, closed)"
        m = self._meta
        return (
            f"Video({self.path!r}, backend={self._reader.name!r}, {m.num_frames} frames, {m.width}x{m.height}, "
            f"{m.fps:.3f} fps, {m.codec})"
        )


def open_video(
    path: str | os.PathLike,
    backend: str = "auto",
    *,
    stream: int = 0,
    num_threads: int = 1,
    short_side: int | None = None,
) -> Video:
    """Open a video file for random-access frame reading.

    Args:
        path: the video file.
        backend: ``"auto"`` (fastest installed, see :data:`AUTO_ORDER`), ``"torchcodec"``, ``"decord"`` or
            ``"pyav"``. Streams a backend reads inexactly (:func:`route_reason`) are read with PyAV; if torchcodec
            or decord fails on this file, it is retried once with PyAV.
        stream: which video stream, counted among the file's video streams (0 = the first). Every backend reads
            this stream; frame ``i`` is the ``i``-th frame of its sequential PyAV decode.
        num_threads: decoder threads per reader; 1 by default because data-loader workers already run in parallel.
        short_side: if set, frames are resized at decode time so that their shorter side is this many pixels
            (aspect ratio kept) with torchvision's antialiased bilinear uint8 resize, bit-identical on every
            backend and to resizing the full-size frames afterwards.

    Returns:
        An open :class:`Video`. Its metadata is PyAV's index of the stream, whichever backend serves the frames.

    Raises:
        VideoDecodeError: the file is missing, empty, not a video, has no decodable video stream, or no video
            stream ``stream``.
        ValueError: bad ``backend``, ``stream``, ``num_threads`` or ``short_side``.
        ImportError: the named backend is not installed.
    """
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 0:
        raise ValueError(f"num_threads must be an int >= 0 (0 = library default), got {num_threads!r}")
    if short_side is not None and (not isinstance(short_side, int) or isinstance(short_side, bool) or short_side < 2):
        raise ValueError(f"short_side must be None or an int >= 2, got {short_side!r}")
    if not isinstance(stream, int | np.integer) or isinstance(stream, bool) or stream < 0:
        raise ValueError(f"stream must be an int >= 0 (0 = the first video stream), got {stream!r}")
    stream = int(stream)
    path = os.fspath(path)
    name = resolve_backend(backend)
    _check_path(path)
    try:
        # The index every backend is held to: frame count, timestamps, pixel format, stream structure (no decoding).
        ref = _pyav_reader(path, num_threads, short_side, stream)
    except VideoDecodeError:
        raise
    except Exception as e:
        raise VideoDecodeError(path, exception_reason(e)) from e
    if name == "pyav":
        return Video(path, ref, num_threads=num_threads, short_side=short_side)
    reason = route_reason(name, ref)
    if reason is not None:
        if (name, reason) not in _ROUTED:  # once per process: data loaders open a video per clip
            _ROUTED.add((name, reason))
            kind = f"{ref.metadata.codec} streams" if ref.metadata.codec in PYAV_ONLY_CODECS else "such streams"
            warnings.warn(f"{name} {reason}; vidtok reads {kind} with pyav", RuntimeWarning, stacklevel=2)
        return Video(path, ref, num_threads=num_threads, short_side=short_side)
    try:
        reader = _make_reader(name, path, num_threads, short_side, ref)
        m, r = reader.metadata, ref.metadata
        # what the backend found must be the stream PyAV indexed, before anything is planned from the metadata
        if (m.num_frames, m.width, m.height) != (r.num_frames, r.width, r.height):
            with contextlib.suppress(Exception):
                reader.close()
            raise VideoDecodeError(
                path,
                f"{name} sees {m.num_frames} frames of {m.width}x{m.height}, "
                f"video stream {stream} has {r.num_frames} of {r.width}x{r.height}",
            )
    except Exception as e:
        warnings.warn(
            safe_text(f"{path}: {name} cannot read it exactly ({exception_reason(e)}); using pyav"),
            RuntimeWarning,
            stacklevel=2,
        )
        return Video(path, ref, num_threads=num_threads, short_side=short_side)
    return Video(path, reader, num_threads=num_threads, short_side=short_side, pyav=ref)
