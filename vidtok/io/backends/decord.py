"""decord backend: ``decord.VideoReader.get_batch`` (indexes every frame at open, seeks to keyframes).

No global bridge is set (``decord.bridge.set_bridge`` is process-wide state); batches come back as decord
NDArrays and go through NumPy. decord reports neither codec nor rotation and cannot choose a stream: vidtok gives it
only files it reads exactly (see ``vidtok.io.video.route_reason``) and takes codec, size and rotation from the PyAV
index of the same file.
"""

from __future__ import annotations

from typing import Any

import torch

from vidtok.errors import VideoDecodeError, exception_reason
from vidtok.io.backends.common import average_fps, resize_short_side
from vidtok.io.metadata import VideoMetadata


def _import_decord():
    try:
        import decord
    except ImportError as e:
        raise ImportError("the decord video backend needs decord: pip install decord") from e
    return decord


class DecordReader:
    """Frames via ``decord.VideoReader.get_batch``."""

    name = "decord"

    def __init__(self, path: str, *, ref: VideoMetadata, num_threads: int = 1, short_side: int | None = None):
        decord = _import_decord()
        self.path = path
        codec, w, h, rot = ref.codec, ref.width, ref.height, ref.rotation
        # decord's own decode-time resize (width/height) differs from the other backends: resize after decoding.
        self._short_side = short_side
        try:
            self._vr: Any = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        except Exception as e:
            raise VideoDecodeError(path, f"decord cannot open it: {exception_reason(e)}") from e
        n = len(self._vr)
        if n <= 0:
            raise VideoDecodeError(path, "decord found no frames")
        rate = float(self._vr.get_avg_fps() or 0.0)
        try:
            duration = float(self._vr.get_frame_timestamp(n - 1)[1] - self._vr.get_frame_timestamp(0)[0])
        except Exception:
            duration = n / rate if rate else 0.0
        fps = average_fps(n, duration, rate)
        self.metadata = VideoMetadata(
            num_frames=n, fps=fps, duration=duration, width=w, height=h, codec=codec, rotation=rot, backend=self.name
        )

    def read(self, indices: list[int]) -> torch.Tensor:
        batch = self._vr.get_batch(indices)  # (N, H, W, 3) uint8
        if not isinstance(batch, torch.Tensor):  # a tensor if someone (e.g. pytorchvideo) set decord's bridge to torch
            batch = torch.from_numpy(batch.asnumpy())
        if self._short_side is not None:
            batch = resize_short_side(batch, self._short_side)
        return batch

    def close(self) -> None:
        self._vr = None
