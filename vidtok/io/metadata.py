"""The types between :mod:`vidtok.io.video` and the backends: :class:`VideoMetadata` and the :class:`Reader` protocol.

Both sides import this module and it imports neither, so no backend imports ``vidtok.io.video``::

    vidtok.io.video ──► vidtok.io.backends.{pyav,torchcodec,decord}
           │                               │
           └──────► vidtok.io.metadata ◄───┘
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


# The file extensions taken as videos when a folder is searched (classify / embed, class-folder and Kinetics
# datasets). A file named directly is opened whatever its extension.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")


@dataclass(frozen=True)
class VideoMetadata:
    """What a backend knows about the video stream.

    Attributes:
        num_frames: number of frames in presentation order (counted from the packets / the backend's frame index,
            not taken from the header, which can be wrong).
        fps: average frame rate (frames per second).
        duration: stream duration in seconds.
        width: coded frame width in pixels (before any rotation).
        height: coded frame height in pixels (before any rotation).
        codec: decoder name, e.g. ``"h264"``.
        rotation: counter-clockwise display rotation in degrees from the container's display matrix (MP4/MOV track
            matrix, Matroska projection roll; 0 if none). Frames are NOT rotated by vidtok.
        backend: the backend serving the frames (the numbers are always PyAV's index of the stream).
        stream: position of the stream among the file's video streams (0 = the first video stream).
    """

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    rotation: int = 0
    backend: str = ""
    stream: int = 0


class Reader(Protocol):
    """What a backend implements. ``read`` gets sorted, unique, in-range indices."""

    name: str
    metadata: VideoMetadata

    def read(self, indices: list[int]) -> torch.Tensor:  # uint8 (N, H, W, 3)
        ...

    def close(self) -> None: ...
