"""The Ray Data engine of ``classify`` / ``embed``: CPU decode tasks feeding an actor pool of model replicas.

Dataflow::

    driver: the files to do (after discovery and --resume), one row {tid, path} each
        ─► Ray Data CPU tasks: DecodePool (the local engine's isolated decode process, prepare_views) per block
           of files ─► one row per view {tid, view, nviews, info, error, x: uint8 (3, T, crop, crop)}; a file that
           fails (bad, hung past --timeout, crashed its decoder) ─► one row with the error and nviews = 0
        ─► actor pool (map_batches with a callable class, min..max replicas, a GPU each where the cluster has them):
           batches of --batch-size views across videos ─► normalise + model ─► per-view outputs (float32 bytes)
        ─► driver: views gathered per video (a repeated view or video, e.g. from a retried task, is dropped)
           ─► the local engine's per-video callback ─► the same writers (CSV / JSONL / Parquet, NPY / safetensors)

Views travel between Ray workers as NumPy uint8 batches (Arrow tensor columns in the object store), never as pickled
tensors. Only the driver writes, a video at a time as its last view arrives, so the output, ``OUT.job.json`` and
``--resume`` are exactly those of the local engine: a driver killed mid-job loses only the videos in flight. Ray
retries a decode task whose worker died (``max_retries``) and restarts a model actor that died, retrying its batch;
the driver keeps the first copy of every view, so a video gets exactly one row. (Ray Data's defaults: a task is
retried without limit, an actor restarted without limit; a bad video never kills a Ray worker, since it is decoded in
a child process of the task, which reports a crash or a hang past ``--timeout`` as that video's error row.)

Ray is imported only here, when ``engine="ray"`` is asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from vidtok.engine.infer_workers import ViewSpec
from vidtok.errors import ConfigError, VidtokError, one_line
from vidtok.logs import get_logger

__all__ = ["RAY_INSTALL", "import_ray", "run_ray", "parse_replicas", "plan_replicas"]

RAY_INSTALL = "pip install 'vidtok[ray]'"

_log = get_logger("infer")

# Files per decode task on large jobs. Each task starts one decode process and Ray Data schedules the next task
# ~0.2 s after one ends: on 2 cores (tools/bench_infer.py, 128 videos) 4 files per task spent 45% of the decode CPU's
# time outside decoding and the job took 19.8 s; 16 files per task, 16.6 s. A task of 16 files is ~1.2 s of decoding.
MAX_FILES_PER_TASK = 16


def import_ray():
    """``ray`` and ``ray.data``, or a one-line error with the install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise VidtokError(f"--engine ray needs Ray Data ({e.name or 'ray'} is not installed): {RAY_INSTALL}") from None
    return ray


def parse_replicas(replicas: str | int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"2"`` -> (2, 2), ``"1:4"`` -> (1, 4): model replicas in the actor pool (None: see :func:`plan_replicas`)."""
    if replicas is None:
        return None
    try:
        if isinstance(replicas, str):
            lo, _, hi = replicas.partition(":")
            pair = (int(lo), int(hi or lo))
        elif isinstance(replicas, int):
            pair = (replicas, replicas)
        else:
            pair = (int(replicas[0]), int(replicas[1]))
    except (ValueError, TypeError, IndexError):
        raise ConfigError(f"--replicas {replicas!r}: expected N or MIN:MAX, e.g. 1:4", key="replicas") from None
    if pair[0] < 1 or pair[1] < pair[0]:
        raise ConfigError(f"--replicas {replicas!r}: need 1 <= MIN <= MAX", key="replicas")
    return pair


# --------------------------------------------------------------------------------------------------------------------
# Ray Data stages (run in Ray workers)


def _rows(tid: int, views: np.ndarray, info: dict | None, error: str) -> dict[str, np.ndarray]:
    """One video's rows: one per view, or a single error row (nviews 0) carrying a zero view."""
    n = len(views)
    return {
        "tid": np.full(n, tid, np.int64),
        "view": np.arange(n, dtype=np.int32),
        "nviews": np.full(n, 0 if error else n, np.int32),
        "info": np.asarray([json.dumps(info) if info is not None else ""] * n, dtype=object),
        "error": np.asarray([error] * n, dtype=object),
        "x": views,  # (V, 3, T, crop, crop) uint8
    }


def _decode(batch: dict[str, np.ndarray], *, spec: ViewSpec, timeout: float) -> Iterator[dict[str, np.ndarray]]:
    """Decode a block of files in one isolated process (the local engine's DecodePool); yield each video's rows as
    soon as it is decoded."""
    from vidtok.engine.infer_workers import DecodePool

    paths = [str(p) for p in batch["path"]]
    tids = [int(t) for t in batch["tid"]]
    empty = np.zeros((1, 3, spec.prep.num_frames, spec.prep.crop_size, spec.prep.crop_size), np.uint8)
    with DecodePool(paths, spec, num_workers=1, timeout=timeout, max_buffered=2) as pool:
        for _ in paths:
            i, _path, result = pool.get()
            if isinstance(result, str):
                yield _rows(tids[i], empty, None, result)
            elif len(result[1]) == 0:
                yield _rows(tids[i], empty, None, "no views")
            else:
                yield _rows(tids[i], result[1], result[0], "")


class _Replica:
    """One model replica: ``make_forward(device)`` from the driver, run on the views of each batch."""

    def __init__(self, make_forward_ref: Any, device: str, threads: int):
        import ray
        import torch

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.device = torch.device(device)
        self.forward = ray.get(make_forward_ref[0])(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ok = np.flatnonzero(batch["nviews"] > 0)
        out = {k: batch[k] for k in ("tid", "view", "nviews", "info", "error")}
        if len(ok):
            res = self.forward(torch.from_numpy(np.ascontiguousarray(batch["x"][ok])).to(self.device))
            for key, v in res.items():
                # each view's float32 bytes (+ their shape): plain binary columns, not Arrow tensor columns, whose
                # zero-copy slices Ray Data 2.60 sometimes reads past ("buffer is too small for requested array")
                v = np.ascontiguousarray(v.float().cpu().numpy())
                col = np.full(len(batch["tid"]), b"", dtype=object)
                col[ok] = [row.tobytes() for row in v]
                out["out_" + key] = col
                out["shape_" + key] = np.full(len(batch["tid"]), json.dumps(list(v.shape[1:])), dtype=object)
        return out


# --------------------------------------------------------------------------------------------------------------------
# Driver


def plan_replicas(
    resources: dict[str, float], device: str, replicas: tuple[int, int] | None
) -> tuple[bool, tuple[int, int], float]:
    """(GPU replicas?, (min, max) replicas, CPUs each replica holds) for a cluster's total ``resources``.

    A GPU replica holds one GPU and one CPU to feed it, and the pool grows up to one replica per GPU. On a CPU-only
    cluster a replica holds 2 CPUs (1 on a 2-CPU cluster) and the pool grows up to half the cluster's CPUs (the model
    and the view preparation cost about the same CPU time per video), the other half decoding.
    """
    gpus = int(resources.get("GPU", 0))
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"--device {device!r}: with --engine ray use auto, cpu or cuda", key="device")
    if device.startswith("cuda") and not gpus:
        raise ConfigError(f"--device {device}: the Ray cluster has no GPU", key="device")
    use_gpu = gpus > 0 and device != "cpu"
    cpus = float(resources.get("CPU", 1))
    if use_gpu:
        return True, replicas or (1, gpus), 1.0
    each = max(1.0, min(2.0, cpus / 2))
    return False, replicas or (1, max(1, int(cpus / 2 // each))), each


def _init(ray, address: str | None) -> bool:
    """Connect to ``address`` (``auto``, ``HOST:PORT``, ``ray://...``) or start a local cluster; True if this call
    started the connection (and so ends it)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's start-up lines ("Started a local Ray instance", the token notice) stay in its session logs
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        kw["include_dashboard"] = False
        # workers of this job's own cluster run at the priority of the local engine's decoders (Ray's default
        # niceness, 15, is for clusters whose nodes also run other services)
        os.environ.setdefault("RAY_worker_niceness", "0")
    _check_reachable(address)
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = address or "a local cluster"
        raise VidtokError(f"--address {where}: cannot connect to Ray ({one_line(str(e), 200)})") from None
    return True


def _check_reachable(address: str | None, timeout: float = 10.0) -> None:
    """A one-line error now for a ``HOST:PORT`` nothing answers on (Ray itself retries for minutes)."""
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected auto or HOST:PORT, e.g. 10.0.0.1:6379", key="address")
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise VidtokError(
            f"--address {address}: nothing answers there ({e.strerror or e}); is `ray start` running?"
        ) from None


def run_ray(
    paths: list[str],
    spec: ViewSpec,
    make_forward: Callable,
    on_done: Callable[[str, dict | None, dict | None, str], None],
    *,
    progress: Any,
    address: str | None,
    device: str,
    batch_size: int,
    timeout: float,
    replicas: tuple[int, int] | None = None,
    files_per_task: int | None = None,
) -> None:
    """Run the job of ``paths`` on Ray; call ``on_done(path, info, outputs, error)`` once per video on the driver.

    Args:
        paths: the files to do (already filtered by ``--resume``).
        spec: the views to cut (as for the local engine).
        make_forward: ``make_forward(torch.device) -> forward``; shipped once through the object store to each replica.
        on_done: the local engine's per-video callback (writes the row / vectors).
        progress: the local engine's progress bar.
        address: Ray cluster (``auto``, ``HOST:PORT``); None starts a local one on this machine.
        device: ``auto`` (a GPU per replica where the cluster has GPUs, else CPU), ``cpu`` or ``cuda``.
        batch_size: views per model call (across videos).
        timeout: seconds one file may take to decode.
        replicas: (min, max) model replicas; None: from 1 up to one per GPU, or on a CPU-only cluster up to
            half its CPUs at 2 CPUs each (:func:`plan_replicas`).
        files_per_task: files per decode task (one isolated decode process each). None: a quarter of the files per
            cluster CPU, from 1 (small jobs: the finest balancing) to :data:`MAX_FILES_PER_TASK`; a task's set-up
            and Ray Data's scheduling between tasks (~0.3 s, measured) are then shared among its files.
    """
    if not paths:
        return
    ray = import_ray()
    with _quiet_ray_logs():
        t0 = time.monotonic()
        started = _init(ray, address)
        try:
            if started:
                res = ray.cluster_resources()
                where = "a local Ray cluster" if address is None else f"the Ray cluster at {address}"
                _log.info(
                    f"ray: connected to {where} ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs) "
                    f"in {time.monotonic() - t0:.1f} s"
                )
            _run(
                ray, paths, spec, make_forward, on_done, progress, device, batch_size, timeout, replicas, files_per_task
            )
        finally:
            if started:
                ray.shutdown()


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    """Ray's and Ray Data's INFO / WARNING lines (execution plans, "execution finished", progress-bar notices) off
    for the job, back as they were after it: the job's own progress and summary are vidtok's lines."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _run(ray, paths, spec, make_forward, on_done, progress, device, batch_size, timeout, replicas, files_per_task):
    import torch
    from ray.data import ActorPoolStrategy, DataContext

    resources = ray.cluster_resources()
    use_gpu, (lo, hi), replica_cpus = plan_replicas(resources, device, replicas)
    threads = int(replica_cpus)
    if files_per_task is None:
        files_per_task = max(1, min(MAX_FILES_PER_TASK, len(paths) // (4 * int(resources.get("CPU", 1)))))
    _log.info(
        f"ray: {len(paths)} videos in decode tasks of {files_per_task} file(s); model replicas {lo}..{hi}, each "
        + (f"a GPU and {replica_cpus:g} CPU" if use_gpu else f"{replica_cpus:g} CPU(s)")
    )

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    # A task or actor that fails is retried by Ray; a video it carried never vanishes without an error
    ctx.max_errored_blocks = 0

    ref = ray.put(make_forward)
    items = [{"tid": i, "path": p} for i, p in enumerate(paths)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), -(-len(items) // files_per_task))))
    ds = ds.map_batches(
        _decode,
        fn_kwargs={"spec": spec, "timeout": timeout},
        batch_size=files_per_task,
        batch_format="numpy",
        num_cpus=1,
        # max_calls=0 is Ray's default (a worker runs any number of tasks); named here, it makes the decode tasks'
        # remote arguments differ from the replicas', so Ray Data never fuses decoding into the model actors (where
        # it would run in turn with the model instead of on every free CPU)
        max_calls=0,
    )
    ds = ds.map_batches(
        _Replica,
        fn_constructor_kwargs={"make_forward_ref": [ref], "device": "cuda" if use_gpu else "cpu", "threads": threads},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(min_size=lo, max_size=hi),
        num_gpus=1 if use_gpu else 0,
        num_cpus=replica_cpus,
    )

    state: dict[int, dict] = {}
    done: set[int] = set()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        keys = [k for k in batch if k.startswith("out_")]
        for r in range(len(batch["tid"])):
            tid = int(batch["tid"][r])
            if tid in done:
                continue  # a copy from a retried task
            nviews = int(batch["nviews"][r])
            if nviews == 0:
                done.add(tid)
                on_done(paths[tid], None, None, str(batch["error"][r]))
                progress.video_done()
                continue
            st = state.setdefault(tid, {"views": {}})
            view = int(batch["view"][r])
            if view in st["views"]:
                continue
            st["views"][view] = {
                k[4:]: np.frombuffer(batch[k][r], np.float32).reshape(json.loads(str(batch["shape_" + k[4:]][r])))
                for k in keys
            }
            if len(st["views"]) == nviews:
                del state[tid]
                done.add(tid)
                outs = {k[4:]: torch.from_numpy(np.stack([st["views"][v][k[4:]] for v in range(nviews)])) for k in keys}
                progress.add_clips(nviews)
                on_done(paths[tid], json.loads(str(batch["info"][r])), outs, "")
                progress.video_done()
    if len(done) != len(paths):
        missing = [paths[t] for t in range(len(paths)) if t not in done][:3]
        raise VidtokError(f"--engine ray: {len(paths) - len(done)} videos never came back (e.g. {missing}); --resume")
