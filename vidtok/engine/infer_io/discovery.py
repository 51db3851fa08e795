"""Which files a job takes: folders searched recursively by extension, files named directly, ``@list.txt``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from vidtok.errors import ConfigError, VidtokError


def video_extensions(extensions: Iterable[str] | None = None) -> tuple[str, ...]:
    """``extensions`` as lower-case ``.ext`` (``"MP4"`` -> ``".mp4"``); None: :data:`vidtok.io.VIDEO_EXTENSIONS`."""
    if extensions is None:
        from vidtok.io.metadata import VIDEO_EXTENSIONS  # imported here: vidtok.io loads torch

        return VIDEO_EXTENSIONS
    exts = []
    for e in extensions:
        e = e.strip().lower()
        if e:
            exts.append(e if e.startswith(".") else "." + e)
    if not exts:
        raise ConfigError("extensions: the list of video file extensions is empty", key="extensions")
    return tuple(exts)


def find_videos(
    paths: str | os.PathLike | Sequence[str | os.PathLike], extensions: Iterable[str] | None = None
) -> list[str]:
    """Video files under ``paths``, in a deterministic order.

    A folder is searched recursively for files whose extension (case-insensitive) is in ``extensions`` (None:
    :data:`vidtok.io.VIDEO_EXTENSIONS`), sorted by name at every level. A file named directly is taken whatever its
    extension (a bad one becomes an error row), and ``@list.txt`` reads one path per line. The same file named twice
    (``x.mp4``, ``./x.mp4``, ``A/../A/x.mp4``, a symlink) is taken once, under the spelling met first.

    Raises:
        VidtokError: a path does not exist.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    exts = video_extensions(extensions)
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(p)

    for raw in paths:
        raw = os.fspath(raw)
        if raw.startswith("@") and not os.path.exists(raw):
            listing = Path(raw[1:])
            if not listing.is_file():
                raise VidtokError(f"{listing}: list file not found")
            for line in os.fsdecode(listing.read_bytes()).splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    add(line.strip())
            continue
        if os.path.isdir(raw):
            for root, dirs, files in os.walk(raw, followlinks=True):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in exts:
                        add(os.path.join(root, name))
        elif os.path.lexists(raw):
            add(raw)
        else:
            raise VidtokError(f"{raw}: no such file or directory")
    return out
