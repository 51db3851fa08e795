"""Isolated decode workers for batch inference: a file that hangs or crashes its decoder costs that file, not the job.

Why not ``torch.utils.data.DataLoader``: its iterator dies with any worker (a segfaulting decoder ends the whole
job) and its ``timeout`` aborts the iterator instead of skipping one file. This pool does the same job (decoding
and preprocessing in worker processes, overlapped with the model) with one supervisor thread in the parent that

* hands each worker one file at a time (plus one queued, so a worker never waits for the parent),
* receives results as soon as they are ready (raw uint8 bytes over a pipe, no pickling of frames) and keeps at most
  ``max_buffered`` decoded videos waiting for the model (back-pressure),
* kills a worker whose current file has run past ``timeout`` seconds and reports that file as failed,
* notices a worker that died (segfault, ``os._exit``, OOM kill), reports its current file as failed, requeues the
  files it had not started, and starts a replacement.

Workers send uint8 views ``(V, 3, T, crop, crop)`` cut by the checkpoint's
:class:`~vidtok.preprocessing.Preprocessing`; the parent normalises them on the device with the same object
(``prep.normalizer(device)``), so the pipe carries a quarter of the bytes of float32 clips::

    path ─► open_video(short_side=prep.short_side) ─► clip indices (uniform / sliding) ─► frames decoded once
         ─► prep.cut_views ─► uint8 (V, 3, T, c, c) ─► pipe ─► parent: prep.normalizer(device) ─► model

Testing hook: ``VIDTOK_INFER_FAULT_HOOK=module:function`` makes every worker call ``function(path)`` before
decoding a file (tests use it to simulate a decoder that hangs or kills the process on chosen files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from typing import Any

import numpy as np

from vidtok.errors import exception_line
from vidtok.preprocessing import Preprocessing

__all__ = ["ViewSpec", "prepare_views", "DecodePool", "FAULT_HOOK_ENV"]

FAULT_HOOK_ENV = "VIDTOK_INFER_FAULT_HOOK"


@dataclass(frozen=True)
class ViewSpec:
    """What to cut out of each video.

    Attributes:
        mode: "uniform" (classify / per-video embed: ``clips`` uniform windows x ``crops`` spatial crops) or
            "sliding" (embed: windows of ``window`` s every ``hop`` s, ``num_frames`` frames spread over each, or
            the model's own clip length at ``frame_stride`` when ``window`` is None).
        prep: the checkpoint's preprocessing (frames, stride, short side, crop, normalisation).
        clips, crops: views of "uniform".
        window, hop: seconds, for "sliding".
        backend: video decoder for ``vidtok.open_video``.
        stream: which video stream of each file (0 = the first video stream).
        sampler: where the "uniform" mode's clips sit in time (:func:`vidtok.data.clip_sampling.eval_clips`:
            ``uniform``, ``mmaction2``, ``pytorchvideo``, ``pyslowfast``), as the dataset's ``test_sampler``.
    """

    mode: str
    prep: Preprocessing
    clips: int = 1
    crops: int = 1
    window: float | None = None
    hop: float | None = None
    backend: str = "auto"
    stream: int = 0
    sampler: str = "uniform"


def _clips_for(spec: ViewSpec, n: int, fps: float):
    from vidtok.data.clip_sampling import eval_clips, sliding_clips

    t, stride = spec.prep.num_frames, spec.prep.frame_stride
    if spec.mode == "uniform":
        return eval_clips(spec.sampler, n, fps, clip_len=t, frame_stride=stride, num_clips=spec.clips)
    if spec.window is None:  # the model's own clip length, back to back (or every `hop` s)
        win = (t - 1) * stride + 1
        hop = max(int(round(spec.hop * fps)), 1) if spec.hop is not None else win
        return sliding_clips(n, fps, window=win, hop=hop, unit="frames", clip_len=t)
    hop = spec.hop if spec.hop is not None else spec.window
    return sliding_clips(n, fps, window=spec.window, hop=hop, unit="seconds", clip_len=t)


def prepare_views(path: str, spec: ViewSpec) -> tuple[dict, np.ndarray]:
    """Decode ``path`` and cut its views, as uint8. Runs in a worker.

    Returns:
        info: {"duration": seconds, "clips": [[start_s, end_s], ...] one per temporal clip, "num_frames", "fps"}
        views: uint8 ``(V, 3, T, crop, crop)``, V = clips x crops, clip-major (:meth:`Preprocessing.cut_views`);
            ``spec.prep.normalize`` of them is exactly what ``Preprocessing.eval_views`` (the dataset's
            ``EvalTransform``, ``vidtok viz``) returns for the same frames.
    """
    import torch

    from vidtok.errors import VideoDecodeError
    from vidtok.io import open_video

    prep = spec.prep
    # Decode-time resize: the reader resizes the frames it decoded (Preprocessing.resize's function) before handing
    # them over, so full-resolution frames are never gathered twice.
    with open_video(path, spec.backend, stream=spec.stream, short_side=prep.short_side) as video:
        meta = video.metadata
        n, fps = int(meta.num_frames), float(meta.fps or 0.0)
        if n < 1:
            raise VideoDecodeError(path, "no frames")
        if not fps > 0:
            fps = 25.0  # unknown rate (some raw streams): timestamps assume 25 fps
        clips = _clips_for(spec, n, fps)
        flat = torch.cat([c.indices for c in clips])  # (sum T,)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        frames = video.get_frames(uniq.tolist())  # (U, rh, rw, 3) uint8, each frame decoded once
    rows = inverse.view(len(clips), prep.num_frames).tolist()
    out = prep.cut_views(frames, rows, spec.crops if spec.mode == "uniform" else 1)
    duration = float(meta.duration) if meta.duration else n / fps
    info = {
        "duration": duration,
        "clips": [[c.start_sec, c.end_sec] for c in clips],
        "num_frames": n,
        "fps": fps,
    }
    return info, out


def _load_hook():
    spec = os.environ.get(FAULT_HOOK_ENV, "")
    if not spec:
        return None
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn)


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel sends SIGKILL to this worker when the process that started it dies (``kill -9``, the OOM
    killer), so no orphan keeps memory or the parent's stdout. Elsewhere the worker loop's parent-pid check does."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # pragma: no cover - no prctl (unusual libc)
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(0)


def _worker_main(task_conn, result_conn, spec: ViewSpec, parent_pid: int | None = None) -> None:
    import signal

    # Ctrl-C and SIGTERM reach the whole process group: the parent handles them (and stops us); a worker dying of
    # one would be reported as a crash and its file recorded as failed instead of being left for --resume.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent_pid = parent_pid if parent_pid is not None else os.getppid()
    _die_with_parent(parent_pid)

    import torch

    torch.set_num_threads(1)  # parallelism comes from the number of workers
    hook = _load_hook()
    from vidtok.errors import VideoDecodeError

    while True:
        try:
            while not task_conn.poll(1.0):  # forked siblings hold copies of our pipe: EOF alone is not enough
                if os.getppid() != parent_pid:
                    return
            msg = task_conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        tid, path = msg
        result_conn.send(("start", tid))
        try:
            if hook is not None:
                hook(path)
            info, views = prepare_views(path, spec)
        except VideoDecodeError as e:
            result_conn.send(("error", tid, e.reason))
            continue
        except Exception as e:  # any failure on one file is that file's error, never the worker's end
            result_conn.send(("error", tid, exception_line(e)))
            continue
        result_conn.send(("ok", tid, info, views.shape))
        result_conn.send_bytes(memoryview(views).cast("B"))


@dataclass
class _Worker:
    proc: Any
    task_conn: Any
    result_conn: Any
    pending: deque = field(default_factory=deque)  # task ids sent, oldest first (the first one is the current)
    started_at: float | None = None  # when the current task started (from the worker's "start" message)


class DecodePool:
    """Decode files in ``num_workers`` isolated processes; iterate over ``(task_id, path, result)`` as they finish.

    ``result`` is ``(info, views)`` (see :func:`prepare_views`) or an error string. Every task yields exactly once.

    Args:
        paths: files, in the order to start them.
        spec: the views to cut.
        num_workers: decode processes (>= 1).
        timeout: seconds one file may take before its worker is killed and the file is reported failed.
        max_buffered: decoded videos waiting for the consumer before workers are given no more files.
        start_method: multiprocessing start method ("fork" on Linux by default, like DataLoader: workers inherit
            the loaded decoder libraries, which take seconds to load; replacements are forked from the supervisor
            thread, as ``multiprocessing.Pool`` does).
    """

    def __init__(
        self,
        paths: list[str],
        spec: ViewSpec,
        *,
        num_workers: int = 2,
        timeout: float = 120.0,
        max_buffered: int = 8,
        start_method: str | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.paths = list(paths)
        self.spec = spec
        self.num_workers = num_workers
        self.timeout = float(timeout)
        self.max_buffered = max(1, max_buffered)
        method = (
            start_method
            or os.environ.get("VIDTOK_INFER_START_METHOD")
            or ("fork" if sys.platform.startswith("linux") else "spawn")
        )
        self._ctx = mp.get_context(method)
        self._out: queue.Queue = queue.Queue()
        self._todo: deque = deque(range(len(self.paths)))
        self._workers: list[_Worker] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffered = 0  # results handed to _out and not yet taken by the consumer
        self._lock = threading.Lock()
        self.restarts = 0

    # -- processes ---------------------------------------------------------------------------------------------------
    def _spawn(self, ctx) -> _Worker:
        task_r, task_w = ctx.Pipe(duplex=False)
        res_r, res_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_main, args=(task_r, res_w, self.spec, os.getpid()), daemon=True)
        proc.start()
        task_r.close()  # the parent keeps only its ends, so a dead worker reads as EOF
        res_w.close()
        return _Worker(proc, task_w, res_r)

    def _kill(self, w: _Worker) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5)
        for c in (w.task_conn, w.result_conn):
            with contextlib.suppress(OSError):
                c.close()

    def __enter__(self) -> DecodePool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        import vidtok.data.clip_sampling  # noqa: F401
        import vidtok.io.backends.common  # noqa: F401
        from vidtok.io import resolve_backend

        # Import and load everything a worker needs here, once: forked workers (and their replacements) inherit it
        # instead of each loading the decoder's libraries (torchcodec's FFmpeg takes seconds). Nothing here imports
        # torchvision (whose import pulls in torch._dynamo, seconds): the decode-time resize calls torch directly.
        self.spec = dataclasses.replace(self.spec, backend=resolve_backend(self.spec.backend))
        _load_hook()
        n = min(self.num_workers, max(len(self.paths), 1))
        self._workers = [self._spawn(self._ctx) for _ in range(n)]
        self._thread = threading.Thread(target=self._supervise, name="vidtok-decode-supervisor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for w in self._workers:
            with contextlib.suppress(OSError, ValueError):
                w.task_conn.send(None)
        deadline = time.monotonic() + 2
        for w in self._workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            self._kill(w)
        self._workers = []

    # -- supervision (runs in its own thread) ------------------------------------------------------------------------
    def _emit(self, tid: int, result: Any) -> None:
        with self._lock:
            self._buffered += 1
        self._out.put((tid, self.paths[tid], result))

    def _fill(self) -> None:
        for w in self._workers:
            while self._todo and len(w.pending) < 2:
                with self._lock:
                    inflight = sum(len(x.pending) for x in self._workers)
                    if self._buffered + inflight >= self.max_buffered + len(self._workers):
                        return
                tid = self._todo.popleft()
                try:
                    w.task_conn.send((tid, self.paths[tid]))
                except (OSError, ValueError):
                    self._todo.appendleft(tid)  # dead worker: the liveness check replaces it
                    break
                w.pending.append(tid)

    def _replace(self, i: int, reason: str) -> None:
        """Worker i is dead or hung: fail its current file, requeue the rest, start a fresh worker."""
        w = self._workers[i]
        self._kill(w)
        if w.pending:
            current = w.pending.popleft()
            self._emit(current, reason)
            self._todo.extendleft(reversed(w.pending))
        self.restarts += 1
        self._workers[i] = self._spawn(self._ctx)

    def _handle(self, i: int) -> None:
        w = self._workers[i]
        try:
            msg = w.result_conn.recv()
            if msg[0] == "start":
                w.started_at = time.monotonic()
                return
            tid = msg[1]
            if msg[0] == "ok":
                info, shape = msg[2], msg[3]
                views = np.empty(shape, np.uint8)
                w.result_conn.recv_bytes_into(memoryview(views).cast("B"))
                result: Any = (info, views)
            else:
                result = msg[2]
        except (EOFError, OSError):
            w.proc.join(timeout=1)
            code = w.proc.exitcode
            self._replace(i, f"decoder process crashed (exit code {code})")
            return
        if w.pending and w.pending[0] == tid:
            w.pending.popleft()
        w.started_at = None
        self._emit(tid, result)

    def _supervise(self) -> None:
        try:
            while not self._stop.is_set():
                self._fill()
                if not self._todo and not any(w.pending for w in self._workers):
                    return
                now = time.monotonic()
                wait_s = 0.5
                for i, w in enumerate(self._workers):
                    if w.pending and w.started_at is not None:
                        left = w.started_at + self.timeout - now
                        if left <= 0:
                            self._replace(i, f"decode timed out after {self.timeout:g} s (worker killed)")
                        else:
                            wait_s = min(wait_s, left)
                conns = {w.result_conn: i for i, w in enumerate(self._workers) if w.pending}
                sentinels = {w.proc.sentinel: i for i, w in enumerate(self._workers) if w.pending}
                if not conns:
                    time.sleep(0.01)  # waiting for the consumer (back-pressure)
                    continue
                ready = mp_wait(list(conns) + list(sentinels), timeout=wait_s)
                handled = set()
                for r in ready:
                    if r in conns:
                        i = conns[r]
                        if self._workers[i].result_conn is r:
                            handled.add(i)
                            self._handle(i)
                for r in ready:
                    i = sentinels.get(r)
                    if i is not None and i not in handled and self._workers[i].proc.sentinel == r:
                        # died with nothing left to read (a pending message would have made the conn ready too)
                        w = self._workers[i]
                        if w.result_conn.poll():
                            continue
                        w.proc.join(timeout=1)
                        self._replace(i, f"decoder process crashed (exit code {w.proc.exitcode})")
        except BaseException as e:  # never leave the consumer waiting forever
            self._out.put(e)

    # -- consumer side -----------------------------------------------------------------------------------------------
    def get(self, timeout: float | None = None):
        """The next finished ``(task_id, path, result)``; None if nothing finished within ``timeout`` (0: don't wait).

        Raises:
            RuntimeError: the supervisor stopped without reporting every file (a bug; the cause is chained).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            try:
                item = self._out.get(timeout=left) if left > 0 else self._out.get_nowait()
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive() and self._out.empty():
                    raise RuntimeError("decode supervisor stopped before every file was reported") from None
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            if isinstance(item, BaseException):
                raise RuntimeError(f"decode supervisor failed: {exception_line(item)}") from item
            with self._lock:
                self._buffered -= 1
            return item
