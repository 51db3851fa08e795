"""Small helpers shared by the backends."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output ``(height, width)`` with the shorter side equal to ``short_side``, aspect ratio kept (rounded)."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


@functools.cache
def _native_uint8_bilinear() -> bool:
    """Whether torchvision resizes uint8 bilinear natively here (its ``_do_native_uint8_resize_on_cpu``)."""
    import platform

    import torch

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def resize_short_side(frames: torch.Tensor, short_side: int) -> torch.Tensor:
    """Resize uint8 RGB frames ``(..., H, W, 3)`` so that the shorter side is ``short_side`` pixels.

    torchvision's antialiased bilinear resize (``transforms.v2.functional.resize(..., antialias=True)``) on uint8, i.e.
    exactly what :class:`vidtok.data.transforms.EvalTransform` does to full-resolution frames, so a decode-time resize
    gives the same pixels on every backend and the same views as resizing after decoding. Returns a contiguous tensor.
    """
    import torch
    from torch.nn import functional as tnf

    h, w = int(frames.shape[-3]), int(frames.shape[-2])
    oh, ow = short_side_size(h, w, short_side)
    if (oh, ow) == (h, w):
        return frames.contiguous()
    # The call torchvision's resize makes for uint8 bilinear on CPU (torch's native uint8 antialiased kernel), made
    # directly so that decoding does not import torchvision (seconds, via torch._dynamo); the pixels are the same
    # (tests compare with F.resize). Channels-last memory in (a view, no copy) keeps the fast uint8 path and gives
    # channels-last out, so moving the channels back is already contiguous (contiguous() is then free).
    if frames.numel() == 0:
        return frames.new_empty((*frames.shape[:-3], oh, ow, frames.shape[-1]))
    x = frames.reshape(-1, h, w, frames.shape[-1]).movedim(-1, -3)
    if _native_uint8_bilinear():
        y = tnf.interpolate(x, size=[oh, ow], mode="bilinear", align_corners=False, antialias=True)
    else:  # torchvision's path on CPUs without the vectorised uint8 kernel: float32, rounded back
        y = tnf.interpolate(x.float(), size=[oh, ow], mode="bilinear", align_corners=False, antialias=True)
        y = y.round_().to(torch.uint8)
    return y.movedim(-3, -1).reshape(*frames.shape[:-3], oh, ow, frames.shape[-1]).contiguous()


def rotation_degrees(value: float | int | None) -> int:
    """Normalise a display rotation to one of 0, 90, 180, 270 (counter-clockwise); None -> 0."""
    if value is None:
        return 0
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0
    if v != v:  # NaN
        return 0
    return int(round(v / 90.0)) * 90 % 360


def average_fps(num_frames: int, duration: float, header_rate: float) -> float:
    """Frames per second: the header's average rate if it agrees with ``num_frames / duration`` within 1.5 frames
    (constant frame rate), else ``num_frames / duration`` (variable frame rate or a header that lies)."""
    if duration <= 0:
        return header_rate
    if header_rate > 0 and abs(num_frames / header_rate - duration) <= 1.5 / header_rate:
        return header_rate
    return num_frames / duration


_ISO_EXT = (".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".mj2", ".qt")


def _boxes(data: bytes, start: int, end: int):
    """(type, payload_start, box_end) of the ISO-BMFF boxes in data[start:end]."""
    i = start
    while i + 8 <= end:
        size = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        hdr = 8
        if size == 1:
            if i + 16 > end:
                return
            size, hdr = int.from_bytes(data[i + 8 : i + 16], "big"), 16
        elif size == 0:
            size = end - i
        if size < hdr or i + size > end:
            return
        yield kind, i + hdr, i + size
        i += size


def iso_bmff_rotation(path: str) -> int | None:
    """Counter-clockwise display rotation of the first video track of an MP4/MOV file, read from its ``tkhd``
    matrix without decoding (PyAV exposes the display matrix only on decoded frames). None if not ISO-BMFF or
    not found; the caller then assumes 0."""
    import math
    import os
    import struct

    if not path.lower().endswith(_ISO_EXT):
        return None
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos, moov = 0, None
            while pos + 8 <= size:  # walk the top-level boxes (skipping mdat) to find moov
                f.seek(pos)
                hdr = f.read(16)
                if len(hdr) < 8:
                    break
                n = int.from_bytes(hdr[:4], "big")
                h = 8
                if n == 1:
                    n, h = int.from_bytes(hdr[8:16], "big"), 16
                elif n == 0:
                    n = size - pos
                if n < h:
                    break
                if hdr[4:8] == b"moov":
                    f.seek(pos + h)
                    moov = f.read(n - h)
                    break
                pos += n
    except OSError:
        return None
    if moov is None:
        return None
    for kind, a, b in _boxes(moov, 0, len(moov)):
        if kind != b"trak":
            continue
        tkhd, handler = None, None
        for k2, a2, b2 in _boxes(moov, a, b):
            if k2 == b"tkhd":
                tkhd = moov[a2:b2]
            elif k2 == b"mdia":
                for k3, a3, _ in _boxes(moov, a2, b2):
                    if k3 == b"hdlr":
                        handler = moov[a3 + 8 : a3 + 12]
        if handler != b"vide" or tkhd is None or len(tkhd) < 4:
            continue
        off = 4 + (32 if tkhd[0] == 1 else 20) + 8 + 8  # version/flags, times+ids, reserved, layer..volume
        if len(tkhd) < off + 36:
            return None
        m = struct.unpack(">9i", tkhd[off : off + 36])
        a_, b_ = m[0] / 65536.0, m[1] / 65536.0
        return rotation_degrees(-math.degrees(math.atan2(b_, a_)))
    return None
