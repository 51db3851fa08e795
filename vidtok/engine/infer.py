"""Batch inference over video files: ``classify`` (top-k labels per video) and ``embed`` (clip embeddings).

Dataflow::

    find_videos(paths) ─► shard by rank ─► skip what OUT already has (--resume)
        ─► DecodePool: N isolated processes, decode + resize + crop to uint8 views, per-file timeout
        ─► batches of views across video boundaries ─► normalise on the device ─► model (eval, inference_mode,
           bf16 autocast on CUDA) ─► per-video reduction (mean of probabilities / embeddings)
        ─► writer: one row (or the video's vectors) appended + flushed as soon as the video's last view is done
        ─► rank 0 merges every rank's part into OUT in discovery order

A file that cannot be decoded (corrupt, truncated, empty, not a video, unreadable, a decoder that hangs or crashes)
becomes a row with ``status="error"`` and a one-line ``error``; the job carries on.

Example::

    rows = vidtok.classify(["videos/"], "runs/k400/model.safetensors", topk=5, out="preds.csv")
    emb = vidtok.embed(["videos/"], "runs/k400/model.safetensors", window=2.0, hop=1.0)
    emb["embeddings"].shape, emb["index"][0]   # (N, D), {"path", "clip_start", "clip_end", "row"}
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidtok.engine.infer_io import (
    CLASSIFY_FORMATS,
    DEFAULT_EXTENSIONS,
    EMBED_FORMATS,
    ClassifyWriter,
    EmbedWriter,
    _fmt_of,
    check_job,
    find_videos,
    write_job,
)
from vidtok.engine.infer_schedule import RateProgress, Scheduler, cpu_streams
from vidtok.engine.infer_workers import DecodePool, ViewSpec
from vidtok.errors import ConfigError, VidtokError
from vidtok.logs import get_logger

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
    if cfg["short_side"] < cfg["crop_size"]:
        raise ConfigError(f"checkpoint preprocessing: short_side {cfg['short_side']} < crop_size {cfg['crop_size']}")
    return model.eval(), cfg


def _resolve_device(device: str) -> torch.device:
    from vidtok.engine.distributed import resolve_device

    return resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")), key="--device")


def _resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp not in ("auto", "none", "bf16", "fp16"):
        raise ConfigError(f"--amp {amp!r}: choose auto, none, bf16 or fp16", key="amp")
    if amp == "none":
        return None
    if amp == "auto":  # bf16 pays off on GPUs; on most CPUs it is slower than fp32
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA device", key="amp")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class _Dist:
    """Rank / world size from torchrun's environment, and a gloo group for the few barriers inference needs."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.group = None
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                # long timeout: rank 0 waits at the merge barrier until the slowest rank has finished its shard.
                # The group stays up for later calls in this process (re-creating it under torchrun can hang).
                dist.init_process_group("gloo", timeout=timedelta(days=7))
                atexit.register(_destroy_group)
            elif dist.get_backend() != "gloo":
                self.group = dist.new_group(backend="gloo", timeout=timedelta(days=7))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def sum(self, values: list[int]) -> list[int]:
        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(t, group=self.group)
        return t.tolist()

    def close(self) -> None:
        """Nothing to release: a group this created stays up for later calls and is destroyed at exit."""


# --------------------------------------------------------------------------------------------------------------------
# The shared loop: decode pool -> cross-video batches -> model -> per-video callback


def _normalizer(cfg: dict, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    mean = torch.tensor(cfg["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(cfg["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1, 1) * 255.0)

    def norm(x: torch.Tensor) -> torch.Tensor:  # uint8 (B, 3, T, H, W) -> float32, same as (x / 255 - m) / s
        return x.to(torch.float32).sub_(mean).mul_(inv_std)  # in place: one float copy of the batch, not three

    return norm


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


def _job_record(command: str, model: nn.Module, cfg: dict, backend: str, **settings: Any) -> dict[str, Any]:
    """What makes an output's rows comparable: the weights, the preprocessing, the decoder (``auto`` resolved: two
    decoders may differ in the last bit of a frame) and the command's settings."""
    pre = {k: cfg[k] for k in ("num_frames", "frame_stride", "crop_size", "short_side", "mean", "std") if k in cfg}
    return {
        "command": command,
        "weights_sha256": _model_digest(model),
        "backend": backend,
        **pre,
        **settings,
    }


def _check_memory(what: str, views: int, num_frames: int, crop: int, short_side: int, batch_size: int) -> None:
    """Refuse a request whose decoded views alone cannot fit in this machine's memory (before anything decodes).

    A video's views ``(V, 3, T, crop, crop)`` uint8 exist in its worker, in the pipe buffer and in the parent
    (about 3 copies), next to the decoded frames (at most ``V * T`` frames of ``short_side x 16/9 short_side``)."""
    per_view = 3 * num_frames * crop * crop
    frames = min(views, 1 << 16) * num_frames * short_side * (short_side * 16 // 9) * 3
    need = 3 * views * per_view + frames + 2 * batch_size * per_view * 4
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return
    if need > total:
        gib = 1 << 30
        raise ConfigError(
            f"{what}: one video needs about {need / gib:.0f} GiB for {views} views of {num_frames}x{crop}x{crop} "
            f"frames; this machine has {total / gib:.0f} GiB of memory: ask for fewer views",
            key="views",
        )


def _prepare_job(
    paths,
    out,
    *,
    resume: bool,
    overwrite: bool,
    retry_failed: bool,
    extensions,
    make_writer,
    dist: _Dist,
    job: Callable[[], dict] | None = None,
) -> tuple[list[str], list[str], int, Any]:
    """Discover files, check / clear / repair OUT; return (all files, this rank's files to do, skipped, writer).

    ``job()`` gives the record stored beside OUT (``OUT.job.json``); ``--resume`` refuses an output whose record
    differs, so that one output never mixes rows of two checkpoints or view settings."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other (continue the output, or start it again)")
    if retry_failed and not resume:
        raise ConfigError("--retry-failed needs --resume (it retries the failed videos of an existing output)")
    files = find_videos(paths, extensions)
    if not files:
        raise VidtokError(f"no video files found under {', '.join(map(str, paths))} (extensions: {extensions})")
    writer = make_writer()
    if out is not None:
        record = job() if job is not None else None
        exists = writer.exists()
        dist.barrier()  # every rank has looked before anyone writes
        if exists and not resume:
            if not overwrite:
                raise VidtokError(f"{out} exists; pass --resume to continue it or --overwrite to start again")
            if dist.rank == 0:
                writer.remove()
        elif resume:
            if record is not None:
                check_job(out, record)  # every rank reads the same record, so all stop alike
            writer.repair()
        dist.barrier()
        if record is not None and dist.rank == 0:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            write_job(out, record)
    done = writer.done_paths(include_failed=not retry_failed) if resume else set()
    dist.barrier()  # everyone has read the same `done` before anyone appends
    done_real = {os.path.realpath(p) for p in done}  # the same file under another spelling counts as done
    todo = [p for p in files if p not in done and os.path.realpath(p) not in done_real]
    return files, todo[dist.rank :: dist.world], len(files) - len(todo), writer


def _resolve_backend(backend: str) -> str:
    """The decoder a job uses (``auto`` resolved), or a one-line error for an unknown or missing one."""
    from vidtok.io import resolve_backend

    try:
        return resolve_backend(backend)
    except ValueError as e:
        raise ConfigError(f"--backend: {e}", key="backend") from None
    except ImportError as e:
        raise VidtokError(f"--backend: {e}") from None


def _check_common(batch_size: int, num_workers: int, timeout: float, streams: int | None = None) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size!r}: must be an int >= 1", key="batch_size")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"--workers {num_workers!r}: must be an int >= 1 (decoding is isolated in workers)")
    if not timeout > 0:
        raise ConfigError(f"--timeout {timeout!r}: must be > 0 seconds", key="timeout")
    if streams is not None and (not isinstance(streams, int) or isinstance(streams, bool) or streams < 1):
        raise ConfigError(f"--streams {streams!r}: must be an int >= 1 (or 0 / None for one per core)", key="streams")


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


def _report(verbose: bool, kind: str, dist: _Dist, counts: dict, skipped: int, t0: float, out) -> None:
    """The end summary (rank 0): this run's ok / failed over all ranks, skipped, and where the error list is."""
    n_ok, n_err = dist.sum([counts["ok"], counts["error"]])
    if not verbose or dist.rank != 0:
        return
    s = f"{kind}: {n_ok} ok, {n_err} failed, {skipped} skipped (already in the output) in {time.monotonic() - t0:.1f} s"
    if out is not None:
        s += f"; output: {out}"
        errors_file = Path(out).with_name(Path(out).name + ".errors.csv")
        if errors_file.exists():
            s += f"; every failed video with its error: {errors_file}"
    elif n_err:
        s += "; failed videos have status=error and an error message"
    get_logger("infer").info(s)


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
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    streams: int | None = None,
    verbose: bool = False,
    engine: str = "local",
    address: str | None = None,
    replicas: str | int | tuple[int, int] | None = None,
) -> list[dict]:
    """Top-k classes of every video under ``paths``, averaging probabilities over multi-view clips x crops.

    Args:
        paths: files, folders (searched recursively by ``extensions``) or ``@list.txt`` files.
        checkpoint: a vidtok checkpoint / run folder (``vidtok train`` or ``vidtok convert``), or a loaded model.
        topk: labels per video.
        views: ``"CLIPSxCROPS"``, e.g. ``"4x3"``; default: the checkpoint's ``test_clips`` x ``test_crops``.
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
        extensions: video file extensions searched for in folders.
        streams: on CPU, model calls run side by side on parts of each batch (None: one per core; see
            :func:`cpu_streams`). Ignored on CUDA.
        verbose: progress bar and end summary on stderr (rank 0).
        engine: ``local`` (this machine: decode processes + model) or ``ray`` (Ray Data: decode tasks on the
            cluster's CPUs feeding model replicas; see :mod:`vidtok.engine.infer_ray`). Same output either way.
        address: with ``engine="ray"``: ``auto`` / ``HOST:PORT`` of a running cluster; None starts a local one.
        replicas: with ``engine="ray"``: model replicas, ``N`` or ``(min, max)`` / ``"MIN:MAX"`` (default: one
            per GPU of the cluster, else one).

    Returns:
        One dict per video (the whole output, merged, in discovery order): ``path``, ``status`` ("ok" | "error"),
        ``error``, ``duration`` (s), ``views``, ``labels``, ``probs``, ``indices`` (top-k, best first).
    """
    t0 = time.monotonic()
    if out is not None:
        _fmt_of(Path(out), CLASSIFY_FORMATS, "classify")  # a bad --out fails before the model is loaded
    if not isinstance(topk, int) or topk < 1:
        raise ConfigError(f"--topk {topk!r}: must be an int >= 1", key="topk")
    _check_common(batch_size, num_workers, timeout, streams)
    backend = _resolve_backend(backend)
    ray_opts = _check_engine(engine, address, replicas)
    dev = _resolve_device(device) if ray_opts is None else None  # Ray: each replica's own device
    dist = _Dist()
    if dist.world > 1 and out is None:
        raise ConfigError("several processes (torchrun) need --out to merge their results", key="out")
    try:
        model, cfg = load_for_inference(checkpoint)
        clips, crops = parse_views(views) or (cfg["test_clips"], cfg["test_crops"])
        _check_memory(
            f"--views {clips}x{crops}",
            clips * crops,
            cfg["num_frames"],
            cfg["crop_size"],
            cfg["short_side"],
            batch_size,
        )
        num_classes = int(getattr(model, "num_classes", 0) or 0)
        names = list(cfg.get("class_names") or [])
        k = min(topk, num_classes) if num_classes else topk
        files, todo, skipped, writer = _prepare_job(
            paths,
            out,
            resume=resume,
            overwrite=overwrite,
            retry_failed=retry_failed,
            extensions=extensions,
            make_writer=lambda: ClassifyWriter(out, topk=k, rank=dist.rank, world_size=dist.world),
            dist=dist,
            job=lambda: _job_record("classify", model, cfg, backend, views=f"{clips}x{crops}", topk=k),
        )
        spec = ViewSpec(
            mode="uniform",
            num_frames=cfg["num_frames"],
            frame_stride=cfg["frame_stride"],
            crop_size=cfg["crop_size"],
            short_side=cfg["short_side"],
            clips=clips,
            crops=crops,
            backend=backend,
            stream=stream,
        )

        def make_forward(dev: torch.device) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
            model.to(dev)
            amp_dtype = _resolve_amp(amp, dev)
            norm = _normalizer(cfg, dev)

            @torch.inference_mode()
            def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(norm(x))
                return {"probs": logits.float().softmax(-1)}

            return forward

        counts = {"ok": 0, "error": 0}

        def on_done(path: str, info: dict | None, outs: dict | None, error: str) -> None:
            if error:
                row = {"path": path, "status": "error", "error": error, "duration": None, "views": 0}
                row.update(labels=[], probs=[], indices=[])
            else:
                probs = outs["probs"].mean(0)  # average over views
                p, idx = probs.topk(min(k, probs.numel()))
                labels = [names[i] if i < len(names) else str(i) for i in idx.tolist()]
                row = {
                    "path": path,
                    "status": "ok",
                    "error": "",
                    "duration": round(float(info["duration"]), 3),
                    "views": int(outs["probs"].shape[0]),
                    "labels": labels,
                    "probs": [round(float(v), 6) for v in p.tolist()],
                    "indices": idx.tolist(),
                }
            counts[row["status"]] += 1
            writer.write(row)

        _run_job(
            "classify",
            todo,
            spec,
            make_forward,
            on_done,
            writer,
            dist,
            verbose=verbose,
            ray_opts=ray_opts,
            device=device if ray_opts is not None else dev,
            amp=amp,
            batch_size=batch_size,
            num_workers=num_workers,
            timeout=timeout,
            streams=streams,
        )
        rows = writer.merge(files) if dist.rank == 0 else []
        dist.barrier()
        if dist.rank != 0:
            from vidtok.engine.infer_io import read_classify_output

            rows = read_classify_output(out)
        _report(verbose, "classify", dist, counts, skipped, t0, out)
        return rows
    finally:
        dist.close()


# --------------------------------------------------------------------------------------------------------------------
# embed


def _run_job(
    kind: str,
    todo,
    spec,
    make_forward,
    on_done,
    writer,
    dist: _Dist,
    *,
    verbose: bool,
    ray_opts: dict | None,
    device: str | torch.device,
    amp: str,
    **loop_kw,
) -> None:
    """Run this rank's videos on the chosen engine with a progress bar, close the writer, wait for every rank.

    ``make_forward(torch.device)`` gives the model call on that device: here, or in each Ray model replica."""
    progress = RateProgress(len(todo), verbose and dist.rank == 0, kind)
    try:
        if ray_opts is not None:
            from vidtok.engine.infer_ray import run_ray

            if dist.world > 1:
                raise ConfigError("--engine ray runs from one driver process, not under torchrun", key="engine")
            _resolve_amp(amp, torch.device("cuda" if str(device).startswith("cuda") else "cpu"))  # fails before Ray
            keep = ("batch_size", "timeout")
            run_ray(
                todo,
                spec,
                make_forward,
                on_done,
                progress=progress,
                device=device,
                **ray_opts,
                **{k: loop_kw[k] for k in keep},
            )
        else:
            _run_loop(todo, spec, make_forward(device), on_done, progress=progress, device=device, **loop_kw)
    finally:
        progress.close()
        writer.close()
    dist.barrier()


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
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    streams: int | None = None,
    verbose: bool = False,
    load: bool = True,
    engine: str = "local",
    address: str | None = None,
    replicas: str | int | tuple[int, int] | None = None,
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
        per_video: one vector per video instead: the mean over the checkpoint's ``test_clips`` uniform clips
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
    t0 = time.monotonic()
    if out is not None:
        _fmt_of(Path(out), EMBED_FORMATS, "embed")
    if per_video and (window is not None or hop is not None):
        raise ConfigError("--per-video and --window/--hop exclude each other", key="per_video")
    win_s, hop_s = parse_seconds(window, "window"), parse_seconds(hop, "hop")
    _check_common(batch_size, num_workers, timeout, streams)
    backend = _resolve_backend(backend)
    ray_opts = _check_engine(engine, address, replicas)
    dev = _resolve_device(device) if ray_opts is None else None  # Ray: each replica's own device
    dist = _Dist()
    if dist.world > 1 and out is None:
        raise ConfigError("several processes (torchrun) need --out to merge their results", key="out")
    try:
        model, cfg = load_for_inference(checkpoint)
        if per_video:
            _check_memory(
                f"--per-video ({cfg['test_clips']} clips)",
                cfg["test_clips"],
                cfg["num_frames"],
                cfg["crop_size"],
                cfg["short_side"],
                batch_size,
            )
        files, todo, skipped, writer = _prepare_job(
            paths,
            out,
            resume=resume,
            overwrite=overwrite,
            retry_failed=retry_failed,
            extensions=extensions,
            make_writer=lambda: EmbedWriter(out, rank=dist.rank, world_size=dist.world),
            dist=dist,
            job=lambda: _job_record(
                "embed",
                model,
                cfg,
                backend,
                window=win_s,
                hop=hop_s if hop_s is not None else win_s,  # the hop in effect (default: back to back)
                per_video=per_video,
                test_clips=cfg["test_clips"] if per_video else None,
                normalize=normalize,
                fp16=fp16,
                tokens=tokens,
            ),
        )
        spec = ViewSpec(
            mode="uniform" if per_video else "sliding",
            num_frames=cfg["num_frames"],
            frame_stride=cfg["frame_stride"],
            crop_size=cfg["crop_size"],
            short_side=cfg["short_side"],
            clips=cfg["test_clips"],
            crops=1,
            window=win_s,
            hop=hop_s,
            backend=backend,
            stream=stream,
        )
        out_dtype = np.float16 if fp16 else np.float32

        def make_forward(dev: torch.device) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
            model.to(dev)
            amp_dtype = _resolve_amp(amp, dev)
            norm = _normalizer(cfg, dev)

            @torch.inference_mode()
            def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    if tokens:
                        feats, aux = model.forward_features(norm(x), return_aux=True)
                        if not isinstance(aux, dict) or "learned_tokens" not in aux:
                            raise ConfigError(
                                f"--tokens: model {getattr(model, 'model_name', type(model).__name__)} has no "
                                "TokenLearner (forward_features gives no learned_tokens)",
                                key="tokens",
                            )
                        res = {"tokens": aux["learned_tokens"]}
                    else:
                        feats, res = model.forward_features(norm(x)), {}
                    res["emb"] = model.forward_head(feats, pre_logits=True)
                return res

            return forward

        counts = {"ok": 0, "error": 0}

        def on_done(path: str, info: dict | None, outs: dict | None, error: str) -> None:
            if error:
                counts["error"] += 1
                writer.write({"path": path, "status": "error", "error": error, "duration": None, "clips": []})
                return
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
            counts["ok"] += 1
            writer.write(
                rec,
                emb.numpy().astype(out_dtype),
                tok.numpy().astype(out_dtype) if tok is not None else None,
            )

        _run_job(
            "embed",
            todo,
            spec,
            make_forward,
            on_done,
            writer,
            dist,
            verbose=verbose,
            ray_opts=ray_opts,
            device=device if ray_opts is not None else dev,
            amp=amp,
            batch_size=batch_size,
            num_workers=num_workers,
            timeout=timeout,
            streams=streams,
        )
        res = writer.merge(files, load=load) if dist.rank == 0 else None
        dist.barrier()
        if res is None:
            from vidtok.engine.infer_io import read_embed_output, read_embed_videos

            if load:
                res = read_embed_output(out)
            else:
                res = {"embeddings": None, "tokens": None, "index": None, "videos": read_embed_videos(out)}
        _report(verbose, "embed", dist, counts, skipped, t0, out)
        return res
    finally:
        dist.close()
