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
_MKV_EXT = (".mkv", ".webm", ".mka", ".mk3d")


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


def container_rotation(path: str, which: int = 0) -> int:
    """Counter-clockwise display rotation of video track ``which`` (0 = the first video track) from the container
    header, without decoding: the ``tkhd`` matrix of MP4/MOV, ``ProjectionPoseRoll`` of Matroska/WebM (where FFmpeg
    stores a display matrix). PyAV exposes the display matrix only on decoded frames. 0 if none is found."""
    low = path.lower()
    if low.endswith(_ISO_EXT):
        return iso_bmff_rotation(path, which) or 0
    if low.endswith(_MKV_EXT):
        return matroska_rotation(path, which) or 0
    return 0


def iso_bmff_rotation(path: str, which: int = 0) -> int | None:
    """Counter-clockwise display rotation of video track ``which`` of an MP4/MOV file, read from its ``tkhd``
    matrix without decoding. None if not ISO-BMFF or not found; the caller then assumes 0."""
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
    seen = -1
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
        seen += 1
        if seen != which:
            continue
        off = 4 + (32 if tkhd[0] == 1 else 20) + 8 + 8  # version/flags, times+ids, reserved, layer..volume
        if len(tkhd) < off + 36:
            return None
        m = struct.unpack(">9i", tkhd[off : off + 36])
        a_, b_ = m[0] / 65536.0, m[1] / 65536.0
        return rotation_degrees(-math.degrees(math.atan2(b_, a_)))
    return None


def _ebml_vint(data: bytes, i: int, *, keep_marker: bool) -> tuple[int, int]:
    """(value, next offset) of the EBML variable-length integer at ``data[i]``; value -1 = unknown size."""
    if i >= len(data) or data[i] == 0:
        raise ValueError("bad EBML integer")
    n = 8 - data[i].bit_length() + 1
    if i + n > len(data):
        raise ValueError("truncated EBML integer")
    v = int.from_bytes(data[i : i + n], "big")
    if keep_marker:
        return v, i + n
    v &= (1 << (7 * n)) - 1
    return (-1 if v == (1 << (7 * n)) - 1 else v), i + n


_MKV_SEGMENT, _MKV_TRACKS, _MKV_TRACK, _MKV_TYPE, _MKV_VIDEO = 0x18538067, 0x1654AE6B, 0xAE, 0x83, 0xE0
_MKV_PROJECTION, _MKV_ROLL, _MKV_CLUSTER = 0x7670, 0x7675, 0x1F43B675


def _ebml_elements(data: bytes, start: int, end: int):
    """(id, payload_start, payload_end) of the EBML elements in data[start:end] (unknown sizes run to ``end``)."""
    i = start
    while i < end:
        try:
            eid, j = _ebml_vint(data, i, keep_marker=True)
            size, k = _ebml_vint(data, j, keep_marker=False)
        except ValueError:
            return
        stop = end if size < 0 else min(k + size, end)
        yield eid, k, stop
        if eid == _MKV_CLUSTER:  # the header (Tracks) comes before the first cluster
            return
        i = stop


def matroska_rotation(path: str, which: int = 0) -> int | None:
    """Counter-clockwise display rotation of video track ``which`` of a Matroska/WebM file: its
    ``Projection/ProjectionPoseRoll`` (how FFmpeg's muxer stores a display matrix; its demuxer reads it back as one).
    None if the file is not Matroska or has no such element."""
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)  # the track headers sit before the first cluster, in the first KiBs
    except OSError:
        return None
    seen = -1
    for eid, a, b in _ebml_elements(data, 0, len(data)):
        if eid != _MKV_SEGMENT:
            continue
        for eid2, a2, b2 in _ebml_elements(data, a, b):
            if eid2 != _MKV_TRACKS:
                continue
            for eid3, a3, b3 in _ebml_elements(data, a2, b2):
                if eid3 != _MKV_TRACK:
                    continue
                kind, roll = None, None
                for eid4, a4, b4 in _ebml_elements(data, a3, b3):
                    if eid4 == _MKV_TYPE:
                        kind = int.from_bytes(data[a4:b4], "big")
                    elif eid4 == _MKV_VIDEO:
                        for eid5, a5, b5 in _ebml_elements(data, a4, b4):
                            if eid5 == _MKV_PROJECTION:
                                for eid6, a6, b6 in _ebml_elements(data, a5, b5):
                                    if eid6 == _MKV_ROLL and b6 - a6 in (4, 8):
                                        roll = struct.unpack(">f" if b6 - a6 == 4 else ">d", data[a6:b6])[0]
                if kind != 1:
                    continue
                seen += 1
                if seen == which:
                    return rotation_degrees(roll) if roll is not None else None
            return None
    return None
