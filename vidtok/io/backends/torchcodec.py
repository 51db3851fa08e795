"""torchcodec backend: ``torchcodec.decoders.VideoDecoder`` in exact seek mode (scans the file once at open).

The stream is the one vidtok's PyAV index describes (``stream_index``: torchcodec's own default is FFmpeg's "best"
stream, which need not be the first video stream). Every returned frame's presentation time is checked against that
index (``pts_seconds`` of the batch), so a frame from the wrong place raises instead of being returned.

torchcodec rotates frames by the container's display matrix; vidtok returns frames as coded (like PyAV's
``to_ndarray``), so the rotation is undone here with an exact ``rot90`` and reported in the metadata instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from vidtok.errors import VideoDecodeError, exception_reason
from vidtok.io.backends.common import resize_short_side, rotation_degrees
from vidtok.io.metadata import VideoMetadata


def _import_decoder():
    import sys

    if "torchcodec.decoders" in sys.modules:  # fast path: already imported (once per clip in data loaders)
        return sys.modules["torchcodec.decoders"].VideoDecoder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchcodec.decoders import VideoDecoder
    except ImportError as e:
        raise ImportError(
            "the torchcodec video backend needs torchcodec and FFmpeg libraries: pip install torchcodec "
            "(and e.g. apt-get install ffmpeg)"
        ) from e
    return VideoDecoder


class TorchCodecReader:
    """Frames via ``VideoDecoder.get_frames_at`` (sorted indices: decodes forward, seeks only when it helps)."""

    name = "torchcodec"

    def __init__(
        self,
        path: str,
        *,
        num_threads: int = 1,
        short_side: int | None = None,
        stream_index: int | None = None,
        expected_pts: Callable[[list[int]], list[float] | None] | None = None,
    ):
        VideoDecoder = _import_decoder()
        self.path = path
        self._short_side = short_side
        self._expected_pts = expected_pts
        try:
            self._dec: Any = VideoDecoder(
                path,
                stream_index=stream_index,
                seek_mode="exact",
                num_ffmpeg_threads=num_threads,
                dimension_order="NHWC",
                device="cpu",
            )
        except Exception as e:
            raise VideoDecodeError(path, f"torchcodec cannot open it: {exception_reason(e)}") from e
        md = self._dec.metadata
        rot = rotation_degrees(getattr(md, "rotation", None))
        self._undo_k = (-(rot // 90)) % 4  # torch.rot90 turns that undo torchcodec's display rotation
        w, h = int(md.width), int(md.height)
        if rot in (90, 270):  # torchcodec reports the displayed (rotated) size
            w, h = h, w
        n = md.num_frames
        if n is None or n <= 0:
            raise VideoDecodeError(path, "torchcodec found no frames")
        fps = float(md.average_fps or 0.0)
        duration = float(md.duration_seconds or (n / fps if fps else 0.0))
        self.metadata = VideoMetadata(
            num_frames=int(n),
            fps=fps if fps else (n / duration if duration else 0.0),
            duration=duration,
            width=w,
            height=h,
            codec=str(md.codec or ""),
            rotation=rot,
            backend=self.name,
        )

    def read(self, indices: list[int]) -> torch.Tensor:
        batch = self._dec.get_frames_at(indices)
        want = self._expected_pts(indices) if self._expected_pts is not None else None
        if want is not None:
            got = batch.pts_seconds.tolist()
            for i, g, w in zip(indices, got, want, strict=True):
                if abs(g - w) > 1e-6:
                    raise RuntimeError(f"frame {i}: torchcodec returned the frame at {g:.6f} s, not {w:.6f} s")
        x = batch.data  # (N, H', W', 3), displayed orientation
        if self._undo_k:
            x = torch.rot90(x, self._undo_k, dims=(1, 2)).contiguous()
        if self._short_side is not None:
            x = resize_short_side(x, self._short_side)
        return x

    def close(self) -> None:
        self._dec = None
