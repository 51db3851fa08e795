"""Batch inference over video files: ``classify`` (top-k labels per video) and ``embed`` (clip embeddings).

Dataflow::

    find_videos(paths) ─► shard by rank ─► skip what OUT already has (--resume)
        ─► DecodePool: N isolated processes, decode + resize + crop to uint8 views, per-file timeout
        ─► batches of views across video boundaries ─► normalise on the device ─► model (eval, inference_mode,
           bf16 autocast on CUDA) ─► per-video reduction (mean of probabilities / embeddings)
        ─► writer: one row (or the video's vectors) appended + flushed as soon as the video's last view is done
        ─► rank 0 merges every rank's part into OUT in discovery order

Both commands are an :class:`InferJob` (options, model, discovery, resume, sharding, the job record, the engine,
the merge) given what to compute per batch and what to record per video; the local engine's loop is
:class:`~vidtok.engine.infer_schedule.Scheduler`, the outputs are :mod:`vidtok.engine.infer_io`.

A file that cannot be decoded (corrupt, truncated, empty, not a video, unreadable, a decoder that hangs or crashes)
becomes a row with ``status="error"`` and a one-line ``error``; the job carries on.

Example::

    rows = vidtok.classify(["videos/"], "runs/k400/model.safetensors", topk=5, out="preds.csv")
    emb = vidtok.embed(["videos/"], "runs/k400/model.safetensors", window=2.0, hop=1.0)
    emb["embeddings"].shape, emb["index"][0]   # (N, D), {"path", "clip_start", "clip_end", "row"}
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidtok.config import TEST_SAMPLERS, check_choice
from vidtok.engine.device import amp_dtype, autocast, resolve_device
from vidtok.engine.infer_io import (
    CLASSIFY_FORMATS,
    EMBED_FORMATS,
    ClassifyWriter,
    EmbedWriter,
    check_job,
    find_videos,
    read_classify_output,
    read_embed_output,
    read_embed_videos,
    video_extensions,
    write_job,
)
from vidtok.engine.infer_io.files import _fmt_of
from vidtok.engine.infer_schedule import RateProgress, Scheduler, cpu_streams
from vidtok.engine.infer_workers import DecodePool, ViewSpec
from vidtok.errors import ConfigError, VidtokError
from vidtok.logs import get_logger
from vidtok.preprocessing import Preprocessing

ENGINES = ("local", "ray")

__all__ = ["classify", "embed", "parse_views", "parse_seconds", "find_videos", "load_for_inference", "cpu_streams"]


# --------------------------------------------------------------------------------------------------------------------
# Small parsers shared with the CLI


def parse_views(views: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"4x3"`` -> (4 temporal clips, 3 spatial crops); crops must be 1 or 3."""
    if views is None:
        return None
    if isinstance(views, str):
        parts = views.lower().split("x")
        try:
            clips, crops = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (int(parts[0]), 1)
        except ValueError:
            raise ConfigError(f"--views {views!r}: expected CLIPSxCROPS, e.g. 4x3", key="views") from None
    else:
        clips, crops = views
    if clips < 1 or crops not in (1, 3):
        raise ConfigError(f"--views {views!r}: need clips >= 1 and crops 1 or 3", key="views")
    return clips, crops


def parse_seconds(value: str | float | None, name: str) -> float | None:
    """``"2s"``, ``"1.5"``, ``"500ms"`` -> seconds."""
    if value is None:
        return None
    if isinstance(value, int | float):
        sec = float(value)
    else:
        v = value.strip().lower()
        try:
            if v.endswith("ms"):
                sec = float(v[:-2]) / 1000
            elif v.endswith("s"):
                sec = float(v[:-1])
            else:
                sec = float(v)
        except ValueError:
            raise ConfigError(f"--{name} {value!r}: expected seconds, e.g. 2s or 0.5", key=name) from None
    if not sec > 0:
        raise ConfigError(f"--{name} {value!r}: must be > 0 seconds", key=name)
    return sec


# --------------------------------------------------------------------------------------------------------------------
# Model, device, distributed


def load_for_inference(checkpoint: str | os.PathLike | nn.Module) -> tuple[nn.Module, dict]:
    """The model in eval mode and its complete preprocessing dict (defaults filled in)."""
    from vidtok.models.hub import make_pretrained_cfg

    if isinstance(checkpoint, nn.Module):
        model = checkpoint
    else:
        from vidtok.models.hub import load_model

        model = load_model(checkpoint)
    cfg = make_pretrained_cfg(model)
    Preprocessing.from_pretrained_cfg(cfg).check("checkpoint preprocessing")
    return model.eval(), cfg


class _Dist:
    """This process's rank among torchrun's processes, and a gloo group for the few barriers inference needs (a week's
    timeout: rank 0 waits at the merge barrier until the slowest rank has finished its shard)."""

    def __init__(self) -> None:
        from vidtok.engine.distributed import env_ranks, gloo_group

        self.rank, _, self.world = env_ranks()
        self.group = gloo_group(timedelta(days=7)) if self.world > 1 else None

    def barrier(self) -> None:
        from vidtok.engine.distributed import barrier

        barrier(self.group)

    def sum(self, values: list[int]) -> list[int]:
        from vidtok.engine.distributed import all_reduce_sum

        return all_reduce_sum(torch.tensor(values, dtype=torch.int64), self.group).tolist()


# --------------------------------------------------------------------------------------------------------------------
# The shared loop: decode pool -> cross-video batches -> model -> per-video callback


def _run_loop(
    paths: list[str],
    spec: ViewSpec,
    forward: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    on_done: Callable[[str, dict | None, dict | None, str], None],
    *,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    timeout: float,
    progress: RateProgress,
    streams: int | None = None,
) -> None:
    """Decode ``paths`` in a :class:`DecodePool` and let a :class:`Scheduler` run them through ``forward``."""
    if not paths:
        return
    sched = Scheduler(
        len(paths), forward, on_done, device=device, batch_size=batch_size, progress=progress, streams=streams
    )
    max_buffered = max(2 * num_workers, 4)  # decoded videos held by the pool
    with DecodePool(paths, spec, num_workers=num_workers, timeout=timeout, max_buffered=max_buffered) as pool:
        sched.run(pool)


def _model_digest(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes, bytes): which weights produced an output."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def _resolve_backend(backend: str) -> str:
    """The decoder a job uses (``auto`` resolved), or a one-line error for an unknown or missing one."""
    from vidtok.io import resolve_backend

    try:
        return resolve_backend(backend)
    except ValueError as e:
        raise ConfigError(f"--backend: {e}", key="backend") from None
    except ImportError as e:
        raise VidtokError(f"--backend: {e}") from None


def _check_engine(engine: str, address: str | None, replicas) -> dict | None:
    """None for the local engine; the Ray engine's options (Ray imported, or a one-line install error)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: choose {' or '.join(ENGINES)}", key="engine")
    if engine == "local":
        if address is not None or replicas is not None:
            raise ConfigError("--address / --replicas go with --engine ray", key="engine")
        return None
    from vidtok.engine.infer_ray import import_ray, parse_replicas

    opts = {"address": address, "replicas": parse_replicas(replicas)}  # a bad value fails before Ray is imported
    import_ray()
    return opts


# --------------------------------------------------------------------------------------------------------------------
# The job both commands run


@dataclass(frozen=True)
class JobOptions:
    """The options ``classify`` and ``embed`` share (see :func:`classify` for each); checked by :meth:`check`."""

    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    batch_size: int = 16
    num_workers: int = 2
    timeout: float = 120.0
    device: str = "auto"
    amp: str = "auto"
    backend: str = "auto"
    stream: int = 0
    extensions: Sequence[str] | None = None
    streams: int | None = None
    verbose: bool = False
    engine: str = "local"
    address: str | None = None
    replicas: str | int | tuple[int, int] | None = None
    sampler: str = "uniform"

    @classmethod
    def pick(cls, arguments: dict[str, Any]) -> JobOptions:
        """The shared options out of a command's arguments (its ``locals()`` on entry)."""
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls)})

    def check(self) -> None:
        b, w, streams = self.batch_size, self.num_workers, self.streams
        if not isinstance(b, int) or b < 1:
            raise ConfigError(f"--batch-size {b!r}: must be an int >= 1", key="batch_size")
        if not isinstance(w, int) or w < 1:
            raise ConfigError(f"--workers {w!r}: must be an int >= 1 (decoding is isolated in workers)")
        if not self.timeout > 0:
            raise ConfigError(f"--timeout {self.timeout!r}: must be > 0 seconds", key="timeout")
        if streams is not None and (not isinstance(streams, int) or isinstance(streams, bool) or streams < 1):
            raise ConfigError(
                f"--streams {streams!r}: must be an int >= 1 (or 0 / None for one per core)", key="streams"
            )
        check_choice(self.sampler, TEST_SAMPLERS, "--sampler")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other (continue the output, or start it again)")
        if self.retry_failed and not self.resume:
            raise ConfigError("--retry-failed needs --resume (it retries the failed videos of an existing output)")


class InferJob:
    """One ``classify`` / ``embed`` run, in the order it happens::

        options checked ─► decoder, engine, device, ranks ─► model + preprocessing          (__init__)
            ─► discovery ─► OUT checked / cleared / repaired ─► skip done (--resume) ─► this rank's shard
               ─► OUT.job.json ─► the writer                                                 (open)
            ─► DecodePool + Scheduler, or Ray ─► per video: record ─► writer                 (run)
            ─► rank 0 merges every rank's part into OUT ─► end summary                       (finish)

    Args:
        kind: ``"classify"`` or ``"embed"`` (the progress bar, the summary, errors).
        checkpoint: a checkpoint path / run folder, or a loaded model.
        out: the output file, or None (in memory; one process only).
        formats: the output formats ``kind`` writes (a bad ``out`` fails before the model loads).
        opts: the shared options.
    """

    def __init__(self, kind: str, checkpoint, out, formats: Sequence[str], opts: JobOptions):
        self.t0 = time.monotonic()
        self.kind, self.out, self.opts = kind, out, opts
        if out is not None:
            _fmt_of(Path(out), formats, kind)
        opts.check()
        self.backend = _resolve_backend(opts.backend)
        self.ray_opts = _check_engine(opts.engine, opts.address, opts.replicas)
        local = self.ray_opts is None  # Ray: each replica resolves its own device
        self.device = resolve_device(opts.device, key="--device") if local else None
        self.dist = _Dist()
        if self.dist.world > 1 and out is None:
            raise ConfigError("several processes (torchrun) need --out to merge their results", key="out")
        self.model, self.cfg = load_for_inference(checkpoint)
        self.prep = Preprocessing.from_pretrained_cfg(self.cfg)
        self.counts = {"ok": 0, "error": 0}
        self.files: list[str] = []
        self.todo: list[str] = []
        self.skipped = 0
        self.writer: Any = None

    def check_memory(self, what: str, views: int) -> None:
        """Refuse a request whose decoded views alone cannot fit in this machine's memory (before anything decodes).

        A video's views ``(V, 3, T, crop, crop)`` uint8 exist in its worker, in the pipe buffer and in the parent
        (about 3 copies), next to the decoded frames (at most ``V * T`` frames of ``short_side x 16/9 short_side``).
        """
        t, crop, short = self.cfg["num_frames"], self.cfg["crop_size"], self.cfg["short_side"]
        per_view = 3 * t * crop * crop
        frames = min(views, 1 << 16) * t * short * (short * 16 // 9) * 3
        need = 3 * views * per_view + frames + 2 * self.opts.batch_size * per_view * 4
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
            return
        if need > total:
            gib = 1 << 30
            raise ConfigError(
                f"{what}: one video needs about {need / gib:.0f} GiB for {views} views of {t}x{crop}x{crop} "
                f"frames; this machine has {total / gib:.0f} GiB of memory: ask for fewer views",
                key="views",
            )

    def record(self, **settings: Any) -> dict[str, Any]:
        """What makes an output's rows comparable: the weights, the preprocessing, the decoder (``auto`` resolved:
        two decoders may differ in the last bit of a frame) and the command's settings."""
        keys = ("num_frames", "frame_stride", "crop_size", "short_side", "mean", "std")
        pre = {k: self.cfg[k] for k in keys if k in self.cfg}
        digest = _model_digest(self.model)
        return {"command": self.kind, "weights_sha256": digest, "backend": self.backend, **pre, **settings}

    def open(self, paths, writer: Any, record: Callable[[], dict] | None = None) -> None:
        """Discover files, check / clear / repair OUT, keep this rank's files to do; ``writer`` gets the rows.

        ``record()`` gives what is stored beside OUT (``OUT.job.json``); ``--resume`` refuses an output whose record
        differs, so that one output never mixes rows of two checkpoints or view settings."""
        o, dist, out = self.opts, self.dist, self.out
        self.files = find_videos(paths, o.extensions)
        if not self.files:
            exts = " ".join(video_extensions(o.extensions))
            raise VidtokError(f"no video files found under {', '.join(map(str, paths))} (extensions: {exts})")
        self.writer = writer
        if out is not None:
            rec = record() if record is not None else None
            exists = writer.exists()
            dist.barrier()  # every rank has looked before anyone writes
            if exists and not o.resume:
                if not o.overwrite:
                    raise VidtokError(f"{out} exists; pass --resume to continue it or --overwrite to start again")
                if dist.rank == 0:
                    writer.remove()
            elif o.resume:
                if rec is not None:
                    check_job(out, rec)  # every rank reads the same record, so all stop alike
                writer.repair()
            dist.barrier()
            if rec is not None and dist.rank == 0:
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                write_job(out, rec)
        done = writer.done_paths(include_failed=not o.retry_failed) if o.resume else set()
        dist.barrier()  # everyone has read the same `done` before anyone appends
        done_real = {os.path.realpath(p) for p in done}  # the same file under another spelling counts as done
        todo = [p for p in self.files if p not in done and os.path.realpath(p) not in done_real]
        self.todo, self.skipped = todo[dist.rank :: dist.world], len(self.files) - len(todo)

    def make_forward(self, compute: Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]):
        """``make_forward(device)``: the model moved there, and a call on a uint8 batch (normalised on the device,
        under autocast when ``--amp`` asks) that returns ``compute(model, x)``. It closes over the model and the
        preprocessing only: the Ray engine ships it to each replica."""
        model, prep, amp = self.model, self.prep, self.opts.amp

        def make(dev: torch.device) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
            model.to(dev)
            dtype = amp_dtype(amp, dev, key="--amp")
            norm = prep.normalizer(dev)

            @torch.inference_mode()
            def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
                with autocast(dev, dtype):
                    return compute(model, norm(x))

            return forward

        return make

    def run(self, spec: ViewSpec, compute, to_record: Callable[[str, dict | None, dict | None, str], tuple]) -> None:
        """This rank's videos through the model on the chosen engine; ``to_record(path, info, outputs, error)``
        gives each video's arguments of ``writer.write`` (the first a dict with ``status``). Closes the writer and
        waits for every rank."""
        o = self.opts

        def on_done(path: str, info: dict | None, outs: dict | None, error: str) -> None:
            args = to_record(path, info, outs, error)
            self.counts[args[0]["status"]] += 1
            self.writer.write(*args)

        make_forward = self.make_forward(compute)
        progress = RateProgress(len(self.todo), o.verbose and self.dist.rank == 0, self.kind)
        try:
            if self.ray_opts is not None:
                self._run_ray(spec, make_forward, on_done, progress)
            else:
                _run_loop(
                    self.todo, spec, make_forward(self.device), on_done, progress=progress, device=self.device,
                    batch_size=o.batch_size, num_workers=o.num_workers, timeout=o.timeout, streams=o.streams,
                )  # fmt: skip
        finally:
            progress.close()
            self.writer.close()
        self.dist.barrier()

    def _run_ray(self, spec: ViewSpec, make_forward, on_done, progress: RateProgress) -> None:
        from vidtok.engine.infer_ray import run_ray

        o = self.opts
        if self.dist.world > 1:
            raise ConfigError("--engine ray runs from one driver process, not under torchrun", key="engine")
        amp_dtype(o.amp, torch.device("cuda" if str(o.device).startswith("cuda") else "cpu"), key="--amp")  # before Ray
        run_ray(
            self.todo, spec, make_forward, on_done, progress=progress, device=o.device,
            batch_size=o.batch_size, timeout=o.timeout, **self.ray_opts,
        )  # fmt: skip

    def finish(self, merge: Callable[[], Any], read_back: Callable[[], Any]) -> Any:
        """Rank 0's ``merge()`` of every part into OUT; the other ranks ``read_back()`` the merged OUT. Logs the
        end summary (rank 0, with ``verbose``): ok / failed over all ranks, skipped, and where the error list is."""
        res = merge() if self.dist.rank == 0 else None
        self.dist.barrier()
        if self.dist.rank != 0:
            res = read_back()
        n_ok, n_err = self.dist.sum([self.counts["ok"], self.counts["error"]])
        if self.opts.verbose and self.dist.rank == 0:
            s = f"{self.kind}: {n_ok} ok, {n_err} failed, {self.skipped} skipped (already in the output) in "
            s += f"{time.monotonic() - self.t0:.1f} s"
            if self.out is not None:
                s += f"; output: {self.out}"
                errors_file = Path(self.out).with_name(Path(self.out).name + ".errors.csv")
                if errors_file.exists():
                    s += f"; every failed video with its error: {errors_file}"
            elif n_err:
                s += "; failed videos have status=error and an error message"
            get_logger("infer").info(s)
        return res


def _view_spec(job: InferJob, mode: str, clips: int, crops: int, **kw: Any) -> ViewSpec:
    o = job.opts
    return ViewSpec(
        mode=mode,
        prep=job.prep,
        clips=clips,
        crops=crops,
        backend=job.backend,
        stream=o.stream,
        sampler=o.sampler,
        **kw,
    )


# --------------------------------------------------------------------------------------------------------------------
# classify


def classify(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike | nn.Module,
    *,
    topk: int = 5,
    views: str | tuple[int, int] | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    batch_size: int = 16,
    num_workers: int = 2,
    timeout: float = 120.0,
    device: str = "auto",
    amp: str = "auto",
    backend: str = "auto",
    stream: int = 0,
    extensions: Sequence[str] | None = None,
    streams: int | None = None,
    verbose: bool = False,
    engine: str = "local",
    address: str | None = None,
    replicas: str | int | tuple[int, int] | None = None,
    sampler: str = "uniform",
) -> list[dict]:
    """Top-k classes of every video under ``paths``, averaging probabilities over multi-view clips x crops.

    Args:
        paths: files, folders (searched recursively by ``extensions``) or ``@list.txt`` files.
        checkpoint: a vidtok checkpoint / run folder (``vidtok train`` or ``vidtok convert``), or a loaded model.
        topk: labels per video.
        views: ``"CLIPSxCROPS"``, e.g. ``"4x3"``; default: the checkpoint's ``test_clips`` x ``test_crops``.
        sampler: where the clips sit in time: ``uniform`` (evenly spaced, as ``vidtok eval`` by default) or a peer's
            test protocol, ``mmaction2``, ``pytorchvideo``, ``pyslowfast``
            (:func:`vidtok.data.clip_sampling.eval_clips`).
        out: ``.csv``, ``.jsonl`` or ``.parquet`` written as videos finish; None keeps rows in memory only.
        resume: skip videos already in ``out``, failed ones included (repairing a half-written file first).
        retry_failed: with ``resume``, try the videos recorded as failed again (their rows are replaced).
        overwrite: start ``out`` again if it exists.
        batch_size: views per forward pass (batches span several videos).
        num_workers: decode processes.
        timeout: seconds one file may take to decode before it is given up.
        device: ``auto`` (this rank's GPU if any, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        amp: ``auto`` (bf16 on CUDA, off on CPU), ``none``, ``bf16``, ``fp16``.
        backend: video decoder (see ``vidtok.io.available_backends()``).
        stream: which video stream of each file, counted among its video streams (0 = the first).
        extensions: video file extensions searched for in folders (None: :data:`vidtok.io.VIDEO_EXTENSIONS`).
        streams: on CPU, model calls run side by side on parts of each batch (None: one per core; see
            :func:`cpu_streams`). Ignored on CUDA.
        verbose: progress bar and end summary on stderr (rank 0).
        engine: ``local`` (this machine: decode processes + model) or ``ray`` (Ray Data: decode tasks on the
            cluster's CPUs feeding model replicas; see :mod:`vidtok.engine.infer_ray`). Same output either way.
        address: with ``engine="ray"``: ``auto`` / ``HOST:PORT`` of a running cluster; None starts a local one.
        replicas: with ``engine="ray"``: model replicas, ``N`` or ``(min, max)`` / ``"MIN:MAX"`` (default: 1 up
            to one per GPU; on a CPU-only cluster up to half its CPUs at 2 CPUs each).

    Returns:
        One dict per video (the whole output, merged, in discovery order): ``path``, ``status`` ("ok" | "error"),
        ``error``, ``duration`` (s), ``views``, ``labels``, ``probs``, ``indices`` (top-k, best first).
    """
    opts = JobOptions.pick(locals())
    if not isinstance(topk, int) or topk < 1:
        raise ConfigError(f"--topk {topk!r}: must be an int >= 1", key="topk")
    job = InferJob("classify", checkpoint, out, CLASSIFY_FORMATS, opts)
    clips, crops = parse_views(views) or (job.cfg["test_clips"], job.cfg["test_crops"])
    job.check_memory(f"--views {clips}x{crops}", clips * crops)
    num_classes = int(getattr(job.model, "num_classes", 0) or 0)
    names = list(job.cfg.get("class_names") or [])
    k = min(topk, num_classes) if num_classes else topk
    writer = ClassifyWriter(out, topk=k, rank=job.dist.rank, world_size=job.dist.world)
    job.open(paths, writer, lambda: job.record(views=f"{clips}x{crops}", topk=k, sampler=opts.sampler))

    def to_row(path: str, info: dict | None, outs: dict | None, error: str) -> tuple[dict]:
        if error:
            row = {"path": path, "status": "error", "error": error, "duration": None, "views": 0}
            return ({**row, "labels": [], "probs": [], "indices": []},)
        probs = outs["probs"].mean(0)  # average over views
        p, idx = probs.topk(min(k, probs.numel()))
        row = {"path": path, "status": "ok", "error": "", "duration": round(float(info["duration"]), 3)}
        row["views"] = int(outs["probs"].shape[0])
        row["labels"] = [names[i] if i < len(names) else str(i) for i in idx.tolist()]
        row["probs"] = [round(float(v), 6) for v in p.tolist()]
        row["indices"] = idx.tolist()
        return (row,)

    job.run(_view_spec(job, "uniform", clips, crops), _classify_head, to_row)
    return job.finish(lambda: writer.merge(job.files), lambda: read_classify_output(out))


def _classify_head(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"probs": model(x).float().softmax(-1)}


# --------------------------------------------------------------------------------------------------------------------
# embed


def embed(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike | nn.Module,
    *,
    out: str | os.PathLike | None = None,
    window: str | float | None = None,
    hop: str | float | None = None,
    per_video: bool = False,
    normalize: bool = False,
    fp16: bool = False,
    tokens: bool = False,
    load: bool = True,
    resume: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    batch_size: int = 16,
    num_workers: int = 2,
    timeout: float = 120.0,
    device: str = "auto",
    amp: str = "auto",
    backend: str = "auto",
    stream: int = 0,
    extensions: Sequence[str] | None = None,
    streams: int | None = None,
    verbose: bool = False,
    engine: str = "local",
    address: str | None = None,
    replicas: str | int | tuple[int, int] | None = None,
    sampler: str = "uniform",
) -> dict[str, Any]:
    """Clip embeddings (the model's pre-logits features) of every video under ``paths``.

    Args:
        paths: files, folders (searched recursively by ``extensions``) or ``@list.txt`` files.
        checkpoint: a vidtok checkpoint / run folder, or a loaded model.
        out: ``.parquet`` (index columns + ``embedding``), ``.npy`` or ``.safetensors`` (+ ``OUT.index.csv``);
            None keeps everything in memory.
        window: window length in seconds (``"2s"``); default: the model's clip (``num_frames`` x ``frame_stride``
            frames). ``num_frames`` frames are spread evenly over each window.
        hop: seconds between window starts; default: ``window`` (back to back).
        sampler: with ``per_video``: where its clips sit (as in :func:`classify`).
        per_video: one vector per video instead: the mean over the checkpoint's ``test_clips`` clips (``sampler``)
            (centre crop); clip start / end are 0 and the duration.
        normalize: L2-normalise each vector (after per-video pooling).
        fp16: store float16 vectors (default float32).
        tokens: also store the TokenLearner tokens ``aux["learned_tokens"]`` ``(T', S, D)`` per row.
        resume, retry_failed, overwrite, batch_size, num_workers, timeout, device, amp, backend, extensions,
            streams, verbose, engine, address, replicas: as in :func:`classify`.
        load: return the vectors. With ``out``, a ``.npy`` / ``.safetensors`` output comes back memory-mapped
            (copy-on-write; see :func:`vidtok.engine.infer_io.read_embed_output`) and a parquet one is read into
            memory. ``False`` returns only ``"videos"`` (the CLI does this: a large output is never read back).

    Returns:
        {"embeddings": (N, D) array, "tokens": (N, T', S, D) array or None, "index": [{"path", "clip_start",
        "clip_end", "row"}], "videos": [{"path", "status", "error", "duration"}]}, in discovery order
        (``load=False``: embeddings, tokens and index are None).
    """
    opts = JobOptions.pick(locals())
    if per_video and (window is not None or hop is not None):
        raise ConfigError("--per-video and --window/--hop exclude each other", key="per_video")
    if sampler != "uniform" and not per_video:
        check_choice(sampler, TEST_SAMPLERS, "--sampler")
        raise ConfigError(f"--sampler {sampler}: places the --per-video clips (sliding windows have their own)")
    win_s, hop_s = parse_seconds(window, "window"), parse_seconds(hop, "hop")
    job = InferJob("embed", checkpoint, out, EMBED_FORMATS, opts)
    test_clips = job.cfg["test_clips"]
    if per_video:
        job.check_memory(f"--per-video ({test_clips} clips)", test_clips)
    writer = EmbedWriter(out, rank=job.dist.rank, world_size=job.dist.world)
    settings = dict(window=win_s, hop=hop_s if hop_s is not None else win_s)  # the hop in effect (default: window)
    settings.update(per_video=per_video, test_clips=test_clips if per_video else None, sampler=sampler)
    job.open(paths, writer, lambda: job.record(**settings, normalize=normalize, fp16=fp16, tokens=tokens))
    out_dtype = np.float16 if fp16 else np.float32

    def to_record(path: str, info: dict | None, outs: dict | None, error: str) -> tuple:
        if error:
            return ({"path": path, "status": "error", "error": error, "duration": None, "clips": []},)
        emb, tok = outs["emb"], outs.get("tokens")
        clips = info["clips"]
        if per_video:
            emb = emb.mean(0, keepdim=True)
            tok = tok.mean(0, keepdim=True) if tok is not None else None
            clips = [[0.0, float(info["duration"])]]
        if normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        rec = {"path": path, "status": "ok", "error": "", "duration": round(float(info["duration"]), 3)}
        rec["clips"] = [[round(float(s), 3), round(float(e), 3)] for s, e in clips]
        return rec, emb.numpy().astype(out_dtype), tok.numpy().astype(out_dtype) if tok is not None else None

    mode = "uniform" if per_video else "sliding"
    spec = _view_spec(job, mode, test_clips, 1, window=win_s, hop=hop_s)
    job.run(spec, functools.partial(_embed_head, tokens=tokens), to_record)
    return job.finish(lambda: writer.merge(job.files, load=load), lambda: _read_embed_back(out, load))


def _embed_head(model: nn.Module, x: torch.Tensor, *, tokens: bool) -> dict[str, torch.Tensor]:
    """The clip embeddings (pre-logits features) of a batch, and with ``tokens`` the TokenLearner tokens."""
    if not tokens:
        return {"emb": model.forward_head(model.forward_features(x), pre_logits=True)}
    feats, aux = model.forward_features(x, return_aux=True)
    if not isinstance(aux, dict) or "learned_tokens" not in aux:
        raise ConfigError(
            f"--tokens: model {getattr(model, 'model_name', type(model).__name__)} has no "
            "TokenLearner (forward_features gives no learned_tokens)",
            key="tokens",
        )
    return {"tokens": aux["learned_tokens"], "emb": model.forward_head(feats, pre_logits=True)}


def _read_embed_back(out, load: bool) -> dict[str, Any]:
    if load:
        return read_embed_output(out)
    return {"embeddings": None, "tokens": None, "index": None, "videos": read_embed_videos(out)}
