"""Video reading: ``open_video(path) -> Video`` with exact, fast random access over torchcodec, decord and PyAV.

Example::

    from vidtok.io import open_video

    with open_video("clip.mp4") as v:
        print(v.metadata.num_frames, v.metadata.fps)
        frames = v.get_frames(range(0, 32, 2))  # uint8 (16, H, W, 3) RGB

    open_video("renditions.mp4", stream=1)  # the file's second video stream, on every backend

The metadata is PyAV's index of the chosen stream whichever backend serves the frames; stream classes a backend reads
inexactly are read with PyAV (:func:`route_reason`).
"""

from vidtok.io.metadata import VIDEO_EXTENSIONS
from vidtok.io.video import (
    AUTO_ORDER,
    BACKENDS,
    Video,
    VideoMetadata,
    available_backends,
    open_video,
    resolve_backend,
    route_reason,
)

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "VIDEO_EXTENSIONS",
    "Video",
    "VideoMetadata",
    "available_backends",
    "open_video",
    "resolve_backend",
    "route_reason",
]
