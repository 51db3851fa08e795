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


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def safe_text(s: str) -> str:
    """Free text (an error message naming a non-UTF-8 file) made writable as UTF-8: bad bytes as ``\\xHH``."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def exception_line(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception on one line (the reason recorded for a file or a checkpoint that failed)."""
    msg = one_line(str(e), limit)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def exception_reason(e: BaseException, limit: int = 300) -> str:
    """The message of ``e`` on one line, or its type name if it has none: the reason recorded next to a file that
    failed to decode. An ``OSError``-like error (FFmpeg's ``[Errno N] ...: 'path'``) gives its ``strerror`` alone,
    since the path is already named."""
    return one_line(getattr(e, "strerror", None) or str(e), limit) or type(e).__name__


def format_error(e: BaseException) -> tuple[str, int]:
    """The one line ``error: ...`` the CLI prints for ``e``, and the exit code.

    vidtok's own errors keep their message (exit 2 for :class:`ConfigError`, 1 otherwise); click's usage errors
    (unknown option, bad choice, wrong type) exit 2; an ``OSError`` (disk full, permission denied) names its file
    and exits 1; Ctrl-C / SIGTERM exit 130 / 143. Anything else is a bug and is not formatted here (the caller
    lets its traceback show).
    """
    if isinstance(e, VidtokError):
        return f"error: {one_line(str(e))}", e.exit_code
    if isinstance(e, KeyboardInterrupt):
        sig = getattr(e, "signal_name", None)
        return f"error: interrupted{f' ({sig})' if sig else ''}", int(getattr(e, "exit_code", 130))
    if isinstance(e, OSError):
        names = [os.fsdecode(f) for f in (e.filename, e.filename2) if f is not None]
        where = f"{' -> '.join(names)}: " if names else ""
        return f"error: {one_line(where + (e.strerror or str(e)))}", 1
    try:
        import click

        if isinstance(e, click.ClickException):
            msg = one_line(e.format_message())
            ctx = getattr(e, "ctx", None)
            if isinstance(e, click.UsageError) and ctx is not None:
                msg += f" (see '{ctx.command_path} --help')"
            return f"error: {msg}", e.exit_code
    except ImportError:  # pragma: no cover - click is a dependency
        pass
    raise TypeError(f"not a user-facing error: {type(e).__name__}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker / Kubernetes stop) turned into the same clean shutdown as Ctrl-C: writers flush and close,
    workers are stopped, the process exits 143."""

    signal_name = "SIGTERM"
    exit_code = 143
