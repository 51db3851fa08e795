"""Poster frames, animated previews and clip thumbnails of the videos a report shows.

Every picture is decoded with vidtok's own exact reader (:func:`vidtok.open_video`), one ``get_frames`` call per
video, and written with Pillow. Each file gets a key (a hash of its real path), so a video shared by a classify and
an embed output, or reached through several links, is decoded once::

    path ─► key = sha1(realpath)[:16]
         ─► open_video ─► get_frames(poster ∪ preview frames ∪ clip middles) uint8 (T, H, W, 3)
         ─► Pillow: thumbs/KEY.jpg (poster), thumbs/KEY.webp (animated preview; .gif without WebP support),
                    thumbs/KEY_MS.jpg (the frame in the middle of each embedded clip, MS = its time in ms)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["POSTER_SIZE", "CLIP_SIZE", "PREVIEW_FRAMES", "VideoThumbs", "preview_ext", "thumb_key", "make_thumbnails"]

POSTER_SIZE = 160  # longest side of posters and previews: a card is ~200 CSS px wide
CLIP_SIZE = 112  # longest side of the embed map's hover thumbnails
PREVIEW_FRAMES = 8  # frames of the animated preview, evenly spread over the video
PREVIEW_MS = 250  # display time of each preview frame


def thumb_key(path: str | os.PathLike) -> str:
    """The file-name stem of a video's pictures: one per file (links to a file share its key)."""
    return hashlib.sha1(os.path.realpath(os.fspath(path)).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def preview_ext() -> str:
    """``.webp`` (animated WebP, small) when Pillow can write WebP, else ``.gif``."""
    from PIL import features

    return ".webp" if features.check("webp") else ".gif"


@dataclass
class VideoThumbs:
    """What was written for one video: ``poster`` / ``preview`` file names (None if not asked or failed), a file
    name per clip middle time (ms), and the one-line reason if the video could not be read."""

    key: str
    poster: str | None = None
    preview: str | None = None
    clips: dict[int, str] = field(default_factory=dict)
    error: str = ""


def _frame_index(t_ms: int, fps: float, n: int) -> int:
    return min(max(int(round(t_ms / 1000.0 * fps)), 0), n - 1)


def _image(frame: np.ndarray, size: int, rotation: int):
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(frame))
    if rotation % 360:
        img = img.rotate(rotation % 360, expand=True)  # the container's display rotation (counter-clockwise)
    img.thumbnail((size, size), Image.Resampling.BILINEAR)
    return img


def _one(path: str, clip_ms: Sequence[int], folder: Path, cards: bool, ext: str) -> VideoThumbs:
    from vidtok.errors import VidtokError, one_line
    from vidtok.io import open_video

    key = thumb_key(path)
    res = VideoThumbs(key)
    try:
        with open_video(path) as video:
            meta = video.metadata
            n, fps = int(meta.num_frames), float(meta.fps or 25.0)
            if n <= 0:
                res.error = f"{path}: no frames"
                return res
            poster = n // 2
            preview = [int(i) for i in np.linspace(0, n - 1, PREVIEW_FRAMES + 2)[1:-1].round()] if cards else []
            clip_idx = [_frame_index(ms, fps, n) for ms in clip_ms]
            wanted = sorted({*([poster] if cards else []), *preview, *clip_idx})
            frames = video.get_frames(wanted).numpy()  # (len(wanted), H, W, 3) uint8
            rot = int(getattr(meta, "rotation", 0) or 0)
    except (VidtokError, OSError) as e:
        res.error = one_line(str(e))
        return res
    at = {i: k for k, i in enumerate(wanted)}
    if cards:
        res.poster = f"{key}.jpg"
        _image(frames[at[poster]], POSTER_SIZE, rot).save(folder / res.poster, quality=82)
        res.preview = f"{key}{ext}"
        imgs = [_image(frames[at[i]], POSTER_SIZE, rot) for i in preview]
        if ext == ".webp":
            imgs[0].save(
                folder / res.preview, save_all=True, append_images=imgs[1:], duration=PREVIEW_MS, loop=0, quality=60
            )
        else:
            from vidtok.viz.render import save_gif

            save_gif(imgs, folder / res.preview, fps=1000.0 / PREVIEW_MS)
    for ms, i in zip(clip_ms, clip_idx, strict=True):
        name = f"{key}_{ms}.jpg"
        _image(frames[at[i]], CLIP_SIZE, rot).save(folder / name, quality=80)
        res.clips[ms] = name
    return res


def make_thumbnails(
    cards: Iterable[str],
    clips: dict[str, Iterable[int]],
    folder: str | os.PathLike,
    *,
    workers: int | None = None,
) -> dict[str, VideoThumbs]:
    """Write the pictures of every video into ``folder``.

    Args:
        cards: videos that get a poster and an animated preview (the classify cards).
        clips: video -> clip middle times in ms that get a thumbnail (the embed map).
        folder: where the pictures go (created).
        workers: decoding threads (default: the CPU count, at most 8); PyAV and Pillow release the GIL.

    Returns:
        path -> :class:`VideoThumbs` (shared by paths of one file); a video that cannot be read has ``error`` set.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key_of: dict[str, str] = {}
    first: dict[str, str] = {}  # key -> the path it is decoded through
    want_card: set[str] = set()
    want_ms: dict[str, set[int]] = {}
    for p in cards:
        k = key_of.setdefault(p, thumb_key(p))
        first.setdefault(k, p)
        want_card.add(k)
    for p, ms in clips.items():
        k = key_of.setdefault(p, thumb_key(p))
        first.setdefault(k, p)
        want_ms.setdefault(k, set()).update(int(m) for m in ms)
    ext = preview_ext()
    jobs = [(p, sorted(want_ms.get(k, ())), folder, k in want_card, ext) for k, p in first.items()]
    n = workers if workers is not None else min(8, os.cpu_count() or 1)
    if n <= 1 or len(jobs) <= 1:
        done = [_one(*j) for j in jobs]
    else:
        with ThreadPoolExecutor(n) as pool:
            done = list(pool.map(lambda j: _one(*j), jobs))
    by_key = {res.key: res for res in done}
    return {p: by_key[k] for p, k in key_of.items()}
