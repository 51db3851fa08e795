"""Exceptions raised by vidtok. The CLI prints any ``VidtokError`` as one line ``error: ...`` and exits non-zero."""

from __future__ import annotations

import os


class VidtokError(Exception):
    """Base class of every error vidtok raises on purpose (bad input, bad config, bad checkpoint)."""

    exit_code: int = 1


class VideoDecodeError(VidtokError):
    """A video could not be opened or decoded.

    Attributes:
        path: the offending file.
        reason: one line saying what is wrong.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


class ConfigError(VidtokError):
    """A configuration value is unknown, of the wrong type or invalid.

    Attributes:
        key: dotted key, e.g. ``train.lr``.
        source: the file (or ``--set``) the value came from, if known.
    """

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message}")


class CheckpointError(VidtokError):
    """A checkpoint is missing, corrupt, truncated or does not match the model."""
