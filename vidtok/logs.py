"""Log lines and progress for every command: one logger tree (``vidtok.*``), one handler, bars that never collide.

::

    logging.getLogger("vidtok.<area>") ─┐
    warnings.warn (CLI: captured)  ─────┼─► setup_logging's handler ─► tqdm.write(line, stderr): open bars are
    Progress: periodic lines ───────────┘                              cleared, the line printed, the bars redrawn
    Progress: bar ─► tqdm on stderr, only when stderr is a terminal and progress is wanted

A :class:`Progress` is a tqdm bar on a terminal. Without one (``--no-progress``, a log file, CI) it logs a line
every :data:`LOG_INTERVAL_S` seconds and one at the end, e.g.
``train: step 120/400 (30%), loss 0.812, lr 1.00e-03, 41.2 clips/s, 0:01:10 elapsed, ETA 0:02:43``.

Example::

    from vidtok.logs import Progress, get_logger

    log = get_logger("engine")
    progress = Progress(total=len(todo), desc="classify", unit="video", bar=verbose)
    for video in todo:
        ...
        progress.update(1, postfix="12.3 clips/s")
    progress.close()
    log.info("classify: 10 ok, 0 failed")
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["LOG_INTERVAL_S", "Progress", "get_logger", "setup_logging"]

LOG_INTERVAL_S = 15.0  # seconds between progress lines when there is no bar

_T = TypeVar("_T")


class _TqdmHandler(logging.Handler):
    """Writes each record as one line on the current ``sys.stderr`` through ``tqdm.write`` (bars stay intact)."""

    def __init__(self) -> None:
        super().__init__()
        self.pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if os.getpid() != self.pid:  # a forked worker: the parent's bars are not ours to redraw
                sys.stderr.write(msg + "\n")
                sys.stderr.flush()
                return
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        except Exception:
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            msg = f"{record.levelname.lower()}: {msg}"
        return msg


def setup_logging(*, level: int = logging.INFO, capture_warnings: bool = False) -> logging.Logger:
    """Give the ``vidtok`` logger its one handler (idempotent) and return it.

    Args:
        level: the ``vidtok`` logger's level.
        capture_warnings: route ``warnings.warn`` through the same handler (the CLI does; a library leaves
            Python's warnings alone).
    """
    logger = logging.getLogger("vidtok")
    logger.setLevel(level)
    handler = next((h for h in logger.handlers if isinstance(h, _TqdmHandler)), None)
    if handler is None:
        handler = _TqdmHandler()
        handler.setFormatter(_Formatter())
        logger.addHandler(handler)
    if capture_warnings:
        logging.captureWarnings(True)
        pyw = logging.getLogger("py.warnings")
        if not any(isinstance(h, _TqdmHandler) for h in pyw.handlers):
            pyw.addHandler(handler)
            pyw.propagate = False
    return logger


def get_logger(area: str) -> logging.Logger:
    """``logging.getLogger("vidtok.<area>")``, with the ``vidtok`` handler set up."""
    setup_logging(level=logging.getLogger("vidtok").level or logging.INFO)
    return logging.getLogger(f"vidtok.{area}")


def _hms(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class Progress:
    """A tqdm bar when ``bar`` and stderr is a terminal; otherwise a log line every :data:`LOG_INTERVAL_S` s.

    Args:
        total: units of work.
        desc: what is running (``train``, ``classify``, ...).
        unit: the unit's name (``step``, ``video``, ``batch``).
        bar: show a bar if stderr is a terminal (``False``: ``--no-progress``, periodic lines only).
        initial: units already done (a resumed run).
        logger: where the lines go (default ``vidtok.progress``).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        *,
        bar: bool = True,
        initial: int = 0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self._n0 = int(initial)
        self.postfix = ""
        self.log = logger or get_logger("progress")
        self._t0 = self._last = time.monotonic()
        self._bar = None
        if bar and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, initial=self.n, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True
            )

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        """``n`` more units done; ``postfix`` (e.g. ``"loss 0.81, 40 clips/s"``) describes the latest state."""
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if self._bar is not None:
            if postfix is not None:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= LOG_INTERVAL_S or self.n >= self.total:
            self._last = now
            self.log.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress line: ``desc: n/total unit (pct), postfix, elapsed, ETA``."""
        now = time.monotonic() if now is None else now
        elapsed = now - self._t0
        pct = 100.0 * self.n / self.total if self.total else 100.0
        parts = [f"{self.desc}: {self.unit} {self.n}/{self.total} ({pct:.0f}%)"]
        if self.postfix:
            parts.append(self.postfix)
        parts.append(f"{_hms(elapsed)} elapsed")
        done = self.n - self._n0
        if done > 0 and self.n < self.total:
            parts.append(f"ETA {_hms(elapsed / done * (self.total - self.n))}")
        return ", ".join(parts)

    def iterate(self, iterable: Iterable[_T]) -> Iterator[_T]:
        """Yield from ``iterable``, one unit per item, and close at the end."""
        try:
            for item in iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
