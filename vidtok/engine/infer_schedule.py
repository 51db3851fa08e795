"""The local inference scheduler: decoded videos in, batches of views through the model, one callback per video.

Dataflow::

    pool.get() ─► (task id, path, (info, views) | error) ─► queue of views, across video boundaries
        ─► parts of ``batch_size / streams`` views ─► model: here, or in one of ``streams`` CPU threads
        ─► each part's rows back to their videos ─► a video whose last view is done (or that failed to decode)
        ─► ``on_done(path, info, outputs, error)`` and ``progress.video_done()``

:class:`Scheduler` holds that state. It needs only an object with ``get(timeout) -> (tid, path, result) | None``
(:class:`~vidtok.engine.infer_workers.DecodePool`, or a list of prepared results in a test), so its ordering,
batching and error handling are tested without worker processes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from vidtok.logs import Progress

__all__ = ["Scheduler", "RateProgress", "cpu_streams"]

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]
OnDone = Callable[[str, "dict | None", "dict | None", str], None]


class ResultSource(Protocol):
    def get(self, timeout: float | None = None) -> tuple[int, str, Any] | None: ...


def cpu_streams(batch_size: int, streams: int | None = None) -> tuple[int, int]:
    """How ``classify`` / ``embed`` run the model on CPU: ``(streams, intra-op threads per stream)``.

    Several model calls on parts of the batch, side by side in threads with few intra-op threads each, keep every
    core busy without an OpenMP pool that spins against the decode workers. Measured on 2 cores (vidtok_ti,
    tools/bench_infer.py): the model alone runs 0.96-1.29x as fast as one call with 2 threads, depending on the run
    and the model size (so about the same); the gain is end to end, where classify ran at 1.57 videos/s, against
    1.07 with one model call of ``cores - workers`` intra-op threads.

    Args:
        batch_size: clips per batch (a batch is split into at most this many parts).
        streams: model threads; None: one per core (at most ``batch_size``).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, min(cores, batch_size)) if streams is None else max(1, min(int(streams), batch_size))
    return n, max(1, cores // n)


class RateProgress:
    """Videos done and clips per second: a :class:`~vidtok.logs.Progress` bar when ``enabled``, else only counts."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = Progress(total, desc, "video") if enabled else None
        self.t0 = time.monotonic()
        self.clips = 0

    def add_clips(self, n: int) -> None:
        self.clips += n

    def video_done(self) -> None:
        if self.bar is not None:
            dt = max(time.monotonic() - self.t0, 1e-9)
            self.bar.update(1, postfix=f"{self.clips / dt:.1f} clips/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Video:
    """One video between its arrival and its callback: its views' outputs as ``(first view, {key: rows})``."""

    __slots__ = ("path", "info", "parts", "left")

    def __init__(self, path: str, info: dict | None, left: int):
        self.path, self.info, self.parts, self.left = path, info, [], left


class Scheduler:
    """Batches views across videos, runs ``forward`` on them and calls ``on_done`` once per video.

    ``on_done(path, info, outputs, error)``: ``outputs`` maps each key of ``forward``'s result to a CPU float tensor
    with one row per view, in view order (``None`` with an ``error``). Videos are reported as they complete, which
    is not necessarily the order they arrived in.

    On CPU the model runs in ``streams`` threads (see :func:`cpu_streams`), each with ``cores // streams`` intra-op
    threads, on parts of ``batch_size / streams`` views. Each stream takes the next part as soon as it is free (one
    part waits ready beyond those being computed): no stream waits for another to finish a batch. Waiting
    for all parts of a batch instead leaves a core idle whenever one part runs slower (it shares its core with a
    decode worker): about 6 % of an end-to-end run on 2 cores.

    Args:
        total: videos the source will deliver (each exactly once).
        forward: the model call on a uint8 batch ``(B, 3, T, crop, crop)`` already on ``device``.
        on_done: the per-video callback.
        device: where ``forward`` runs (CUDA: batches are pinned and copied asynchronously).
        batch_size: views per batch.
        progress: gets ``add_clips(n)`` per part and ``video_done()`` per video.
        streams: CPU model threads (None: one per core).
        max_views: views taken out of the source ahead of the model (default ``2 * batch_size``); decoded videos
            beyond that wait in the source, whose back-pressure then stops decoding.
    """

    def __init__(
        self,
        total: int,
        forward: Forward,
        on_done: OnDone,
        *,
        device: torch.device,
        batch_size: int,
        progress: Any,
        streams: int | None = None,
        max_views: int | None = None,
    ):
        self.total, self.forward, self.on_done, self.device, self.progress = total, forward, on_done, device, progress
        self.n_streams, self.per_stream = cpu_streams(batch_size, streams) if device.type == "cpu" else (1, 0)
        self.part = -(-batch_size // self.n_streams)  # views per model call
        self.cap = max_views if max_views is not None else 2 * batch_size
        self.queue: deque[list] = deque()  # [tid, views, next view index]
        self.videos: dict[int, _Video] = {}
        self.queued_views = self.received = self.finished = self.inflight = 0
        self.work: queue.Queue = queue.Queue(maxsize=1)  # parts for the streams (one waits beyond those running)
        self.done: queue.Queue = queue.Queue()  # (owners, outputs or the exception a stream raised)
        self.threads: list[threading.Thread] = []

    # -- the loop ----------------------------------------------------------------------------------------------------

    def run(self, source: ResultSource) -> None:
        """Take every video from ``source`` and report it; raises what ``forward`` or ``on_done`` raised."""
        if self.total == 0:
            return
        saved = torch.get_num_threads()
        self._start_streams()
        try:
            while self.finished < self.total:
                self._step(source)
        finally:
            self._stop_streams()
            torch.set_num_threads(saved)

    def _step(self, source: ResultSource) -> None:
        self._collect(block=False)
        arrived, waited = 0, False
        if self.received < self.total and self.queued_views < self.cap:
            wait = self._wait_time()
            waited = wait is not None and wait > 0
            arrived = self._receive(source, wait)
        last = self.received == self.total
        while self.queued_views >= self.part or (self.queued_views > 0 and (last or (waited and arrived == 0))):
            self._dispatch(*self._take())
        if last and self.queued_views == 0 and self.finished < self.total:
            if not self.inflight:
                raise RuntimeError(f"{self.total - self.finished} videos were never completed (a bug)")
            self._collect(block=True)  # every video is decoded: wait for the streams

    def _wait_time(self) -> float | None:
        """How long to wait for decoded videos: without limit when there is nothing to run, briefly when a partial
        part is waiting (if decoding is the bottleneck, partial parts cost nothing and rows get written sooner), not
        at all when a full part is ready. With parts in flight never long: their rows are written as soon as they
        are done, even while a slow file holds up the source (an interrupted job keeps them)."""
        if self.queued_views == 0:
            return 0.05 if self.inflight else None
        return 0.0 if self.queued_views >= self.part else 0.2

    def _receive(self, source: ResultSource, wait: float | None) -> int:
        """Queue what the source has (waiting up to ``wait`` for the first); the number of videos received."""
        n = 0
        item = source.get(timeout=wait)
        while item is not None:
            n += 1
            self.received += 1
            tid, path, result = item
            if isinstance(result, str):
                self.videos[tid] = _Video(path, None, 0)
                self._finish(tid, error=result)
            else:
                info, views = result
                self.videos[tid] = _Video(path, info, len(views))
                if len(views) == 0:
                    self._finish(tid, error="no views")
                else:
                    self.queue.append([tid, views, 0])
                    self.queued_views += len(views)
            more = self.received < self.total and self.queued_views < self.cap
            item = source.get(timeout=0) if more else None
        return n

    # -- parts of batches --------------------------------------------------------------------------------------------

    def _take(self) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """Up to ``part`` queued views (across videos) and their owners ``(tid, first view, count)``."""
        chunks, owners, n = [], [], 0
        while self.queue and n < self.part:
            item = self.queue[0]
            tid, views, start = item
            k = min(self.part - n, len(views) - start)
            chunks.append(views[start : start + k])
            owners.append((tid, start, k))
            n += k
            if start + k == len(views):
                self.queue.popleft()
            else:
                item[2] = start + k
        self.queued_views -= n
        return (np.concatenate(chunks) if len(chunks) > 1 else chunks[0]), owners

    def _run_model(self, x: np.ndarray) -> dict[str, torch.Tensor]:
        t = torch.from_numpy(x)
        pin = self.device.type == "cuda"
        if pin:
            t = t.pin_memory()
        return {k: v.float().cpu() for k, v in self.forward(t.to(self.device, non_blocking=pin)).items()}

    def _dispatch(self, x: np.ndarray, owners: list) -> None:
        if not self.threads:
            self._complete(owners, self._run_model(x))
            return
        self.work.put((owners, x))  # blocks while every stream is busy and a part already waits
        self.inflight += 1

    def _collect(self, block: bool) -> None:
        while self.inflight:
            try:
                owners, out = self.done.get(block=block)
            except queue.Empty:
                return
            self.inflight -= 1
            block = False
            if isinstance(out, BaseException):
                raise out
            self._complete(owners, out)

    def _complete(self, owners: list[tuple[int, int, int]], out: dict[str, torch.Tensor]) -> None:
        self.progress.add_clips(sum(k for _, _, k in owners))
        off = 0
        for tid, start, k in owners:
            video = self.videos[tid]
            video.parts.append((start, {key: v[off : off + k] for key, v in out.items()}))
            off += k
            video.left -= k
            if video.left == 0:
                self._finish(tid)

    def _finish(self, tid: int, error: str = "") -> None:
        video = self.videos.pop(tid)
        outs = None
        if not error:  # parts of one video may come back from different streams in any order
            parts = [o for _, o in sorted(video.parts, key=lambda p: p[0])]
            outs = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        self.on_done(video.path, video.info, outs, error)
        self.finished += 1
        self.progress.video_done()

    # -- CPU model threads -------------------------------------------------------------------------------------------

    def _stream_main(self) -> None:
        while (item := self.work.get()) is not None:
            owners, x = item
            try:
                self.done.put((owners, self._run_model(x)))
            except BaseException as e:  # handed to the main thread, which raises it
                self.done.put((owners, e))

    def _start_streams(self) -> None:
        if self.device.type == "cpu":
            torch.set_num_threads(self.per_stream)
        if self.n_streams > 1:
            self.threads = [
                threading.Thread(target=self._stream_main, name=f"vidtok-model_{i}", daemon=True)
                for i in range(self.n_streams)
            ]
            for t in self.threads:
                t.start()

    def _stop_streams(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.work.get_nowait()  # parts not started (an error or Ctrl-C stopped the job)
        for _ in self.threads:
            self.work.put(None)
        for t in self.threads:
            t.join()
        self.threads = []
