"""Small helpers shared by the backends."""

from __future__ import annotations


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output ``(height, width)`` with the shorter side equal to ``short_side``, aspect ratio kept (rounded)."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


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
