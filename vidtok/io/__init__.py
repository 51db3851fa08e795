"""Video reading: ``open_video(path) -> Video`` with exact, fast random access over torchcodec, decord and PyAV.

Example::

    from vidtok.io import open_video

    with open_video("clip.mp4") as v:
        print(v.metadata.num_frames, v.metadata.fps)
        frames = v.get_frames(range(0, 32, 2))  # uint8 (16, H, W, 3) RGB
"""

from vidtok.io.video import (
    AUTO_ORDER,
    BACKENDS,
    Video,
    VideoMetadata,
    available_backends,
    open_video,
    resolve_backend,
)

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "Video",
    "VideoMetadata",
    "available_backends",
    "open_video",
    "resolve_backend",
]
