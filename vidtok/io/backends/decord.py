"""decord backend: ``decord.VideoReader.get_batch`` (indexes every frame at open, seeks to keyframes).

No global bridge is set (``decord.bridge.set_bridge`` is process-wide state); batches come back as decord
NDArrays and go through NumPy. decord reports neither codec nor rotation, so those come from a header-only PyAV
probe (no decoding).
"""

from __future__ import annotations

from typing import Any

import torch

from vidtok.errors import VideoDecodeError
from vidtok.io.backends.common import average_fps, iso_bmff_rotation, resize_short_side
from vidtok.io.video import VideoMetadata


def _import_decord():
    try:
        import decord
    except ImportError as e:
        raise ImportError("the decord video backend needs decord: pip install decord") from e
    return decord


def _msg(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return s[:300] if s else type(e).__name__


def _probe(path: str) -> tuple[str, int, int, int]:
    """(codec, width, height, rotation) from the container header via PyAV, without decoding."""
    import av

    with av.open(path, metadata_errors="ignore") as c:
        if not c.streams.video:
            raise VideoDecodeError(path, "no video stream")
        st = c.streams.video[0]
        cc = st.codec_context
        rot = iso_bmff_rotation(path) or 0
        return (cc.name if cc is not None else "", int(st.width or 0), int(st.height or 0), rot)


class DecordReader:
    """Frames via ``decord.VideoReader.get_batch``."""

    name = "decord"

    def __init__(self, path: str, *, num_threads: int = 1, short_side: int | None = None):
        decord = _import_decord()
        self.path = path
        codec, w, h, rot = _probe(path)
        if rot:
            # decord handles display rotation inconsistently (crashes on 90, rotates on 270): let PyAV read it.
            raise VideoDecodeError(path, f"decord does not read rotated videos correctly (rotation {rot})")
        # decord's own decode-time resize (width/height) differs from the other backends: resize after decoding.
        self._short_side = short_side
        try:
            self._vr: Any = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        except Exception as e:
            raise VideoDecodeError(path, f"decord cannot open it: {_msg(e)}") from e
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
