"""The training loop: ``train(cfg, out_dir)`` runs a whole run and can resume it exactly.

Dataflow per optimizer step (nanoGPT / MAE ``train_one_epoch`` style)::

    lr = cosine_lr(step)                                   warmup + cosine, per optimizer step
    for micro in range(accum_steps):                       gradient accumulation (DDP syncs on the last only)
        batch = next(loader)                               ResumableSampler -> SeededDataset -> workers
        x, y = mix(batch)                                  optional Mixup / CutMix (explicit generator)
        with autocast(bf16 | fp16): loss = CE(model(x), y) label smoothing / soft targets
        backward(loss / accum_steps)                       GradScaler for fp16
    guard: loss finite on every rank, else stop (last good checkpoint kept)
    clip_grad_norm_, optimizer.step, EMA update
    log (metrics.jsonl, TensorBoard, progress bar), checkpoint every N steps / at epoch end, keep last K

Exact resume: the data order is a seeded permutation per epoch whose position is saved; augmentation randomness is
seeded per sample from (seed, epoch, index); the DataLoader gets its own generator so it never draws from the
global RNG; the global RNG states, optimizer, scaler, EMA and mixing generator are saved with every checkpoint. On
CPU with a fixed seed, an interrupted-and-resumed run ends with bitwise the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidtok.config import Config, check_config_paths, config_to_dict, dump_config, validate_config
from vidtok.engine import checkpoint as ckpt
from vidtok.engine.distributed import (
    DistInfo,
    ResumableSampler,
    SeededDataset,
    all_reduce_sum,
    barrier,
    init_distributed,
)
from vidtok.engine.optim import build_optimizer, cosine_lr, set_lr
from vidtok.engine.run_dir import check_run_dir, clear_run, remove_stale_tmp
from vidtok.errors import CheckpointError, ConfigError, VidtokError
from vidtok.logs import Progress, get_logger

__all__ = ["train", "NonFiniteLossError", "ModelEma", "shuffle_time", "soft_cross_entropy"]


class NonFiniteLossError(VidtokError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint of the bad state."""


# --------------------------------------------------------------------------------------------------------------------
# Small pieces


class ModelEma:
    """Exponential moving average of a model's parameters and buffers (timm ``ModelEmaV2``), kept on the same
    device. ``decay`` is warmed up as ``min(decay, (1 + n) / (10 + n))`` so early averages are not dominated by the
    random initialisation."""

    def __init__(self, model: nn.Module, *, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            src = msd[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src.to(v.dtype), alpha=1.0 - d)
            else:
                v.copy_(src)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])


def shuffle_time(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Randomly permute the frames of every clip (control experiment: destroys motion, keeps appearance).

    Args:
        x: ``(B, C, T, H, W)`` or multi-view ``(B, V, C, T, H, W)``.
        generator: CPU generator deciding the permutations.
    """
    t_dim = x.ndim - 3
    lead = x.shape[: t_dim - 1]  # (B,) or (B, V)
    t = x.shape[t_dim]
    perm = torch.argsort(torch.rand(*lead, t, generator=generator), dim=-1).to(x.device)  # (*lead, T)
    idx = perm.view(*lead, 1, t, 1, 1).expand_as(x)  # (*lead, C, T, H, W)
    return torch.gather(x, t_dim, idx)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft targets ``(B, K)`` (Mixup / CutMix), in float32."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers run in parallel already; intra-op threads would oversubscribe the cores


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Metrics:
    """metrics.jsonl (always; `vidtok plot` and resume read it) + TensorBoard when ``log_to`` asks, rank 0 only.

    TensorBoard tags: ``train/{loss, lr, clips_per_sec, grad_norm}`` per logged step, ``epoch/{loss, lr}`` and
    ``val/{top1, top5, loss}`` per epoch, and the image ``val/confusion`` (row-normalised confusion matrix) at each
    evaluation; tensorboard is imported only when asked for.
    """

    def __init__(
        self, run_dir: Path, enabled: bool, *, truncate_after_step: int | None, log_to: tuple[str, ...] = ("jsonl",)
    ):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if truncate_after_step is not None and self.path.is_file():
            # resuming: rows logged after the checkpoint we resume from are replayed, so drop them.
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row.get("step", 0) <= truncate_after_step:
                    keep.append(line)
            self.path.write_text("".join(line + "\n" for line in keep))
        if "tensorboard" in log_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ConfigError(
                    f"train.log_to: tensorboard needs the tensorboard package: pip install 'vidtok[tensorboard]' ({e})",
                    key="train.log_to",
                ) from None
            # resuming: events after the checkpoint are superseded (TensorBoard shows the newest per step)
            purge = truncate_after_step + 1 if truncate_after_step is not None else None
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            kind = row.get("kind", "step")
            group = "train" if kind == "step" else kind
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch"):
                    tag = f"val/{k[4:]}" if k.startswith("val_") else f"{group}/{k}"
                    self.tb.add_scalar(tag, v, row.get("step", 0))
            self.tb.flush()

    def confusion(self, matrix: Any, step: int) -> None:
        """The row-normalised confusion matrix (rows = true class) as a grey image ``val/confusion``, 16 px a cell."""
        if self.tb is None or matrix is None:
            return
        m = torch.as_tensor(matrix, dtype=torch.float32)
        m = m / m.sum(1, keepdim=True).clamp_min(1)  # (K, K) in [0, 1]
        img = m.repeat_interleave(16, 0).repeat_interleave(16, 1)[None]  # (1, 16·K, 16·K)
        self.tb.add_image("val/confusion", img, step, dataformats="CHW")
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------------------------------------------------
# Building the pieces from a config


def _build_datasets(cfg: Config, train_dataset, val_dataset, run_dir: Path):
    if train_dataset is None:
        from vidtok.data import build_dataset

        bad = run_dir / "bad_files.txt"  # unreadable videos are replaced and listed here
        train_dataset = build_dataset(cfg.data, "train", seed=cfg.train.seed, bad_files=bad)
        has_val = bool(cfg.data.val) or (
            cfg.data.root and ((Path(cfg.data.root) / "val.csv").is_file() or (Path(cfg.data.root) / "val").is_dir())
        )
        if val_dataset is None and has_val:
            val_dataset = build_dataset(
                cfg.data, "val", class_names=train_dataset.class_names, seed=cfg.train.seed, bad_files=bad
            )
    return train_dataset, val_dataset


def _sync_model_config(cfg: Config, class_names: list[str]) -> None:
    """The data decides what the model sees: class count, frames and crop size."""
    if class_names:
        cfg.model.num_classes = len(class_names)
    cfg.model.num_frames = cfg.data.num_frames
    cfg.model.img_size = cfg.data.crop_size


def build_model_from_config(cfg: Config) -> nn.Module:
    from vidtok.models import create_model

    m = cfg.model
    return create_model(
        m.name,
        num_classes=m.num_classes,
        num_frames=m.num_frames,
        img_size=m.img_size,
        attn_backend=m.attn_backend,
        drop_path_rate=m.drop_path_rate,
        dropout=m.dropout,
        **m.extra,
    )


def _head_names(model: nn.Module) -> set[str]:
    names = set()
    nl = getattr(model, "num_layers", None)
    get_id = getattr(model, "get_layer_id", None)
    for n, _ in model.named_parameters():
        if callable(get_id) and nl is not None:
            if int(get_id(n)) == int(nl) + 1:
                names.add(n)
        elif n.startswith(("head.", "fc.", "classifier.")):
            names.add(n)
    return names


def init_from_checkpoint(model: nn.Module, path: str, *, reinit_head: bool, log: Callable[[str], None]) -> None:
    """Load weights from a vidtok checkpoint (file or run folder) for fine-tuning.

    Head tensors are skipped (kept at their fresh initialisation) when ``reinit_head`` or when their shape differs
    (another class count); any other missing or mismatching tensor is a :class:`CheckpointError`.
    """
    from vidtok.models.hub import read_checkpoint

    state, meta = read_checkpoint(path)
    own = model.state_dict()
    heads = _head_names(model)
    head_buffers = {k for k in own if any(k.startswith(h.rsplit(".", 1)[0] + ".") for h in heads)}
    heads |= head_buffers
    skipped = []
    load = {}
    for k, v in state.items():
        if k not in own:
            continue
        if k in heads and (reinit_head or tuple(v.shape) != tuple(own[k].shape)):
            skipped.append(k)
            continue
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{meta['path']}: shape mismatch for {k!r}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
            )
        load[k] = v
    missing = [k for k in own if k not in load and k not in heads]
    if missing:
        raise CheckpointError(f"{meta['path']}: --init lacks {len(missing)} tensors of the model (e.g. {missing[:3]})")
    model.load_state_dict(load, strict=False)
    log(
        f"init: loaded {len(load)} tensors from {meta['path']}"
        + (f"; head re-initialised ({len(skipped)})" if skipped else "")
    )


def _check_resume_compatible(path: Path, state: dict, cfg: Config, model: nn.Module, tensors: dict) -> None:
    """One line naming the config keys (and tensors) that differ when the model to resume is not the one saved."""
    try:
        old = json.loads(state.get("config") or "{}")
    except ValueError:
        old = {}
    new = config_to_dict(cfg)
    keys = [("model", k) for k in new["model"]] + [("data", k) for k in ("num_frames", "crop_size")]
    diffs = [
        f"{sec}.{k}: {old[sec][k]!r} -> {new[sec][k]!r}"
        for sec, k in keys
        if sec in old and k in old[sec] and old[sec][k] != new[sec][k]
    ]
    own = model.state_dict()
    bad = [k for k in own if k not in tensors or tuple(tensors[k].shape) != tuple(own[k].shape)]
    bad += [k for k in tensors if k not in own]
    if not bad:
        return
    what = "; ".join(diffs) if diffs else f"{len(bad)} tensors differ (e.g. {', '.join(bad[:3])})"
    raise ConfigError(
        f"--resume: {path.name} was saved from another model or shape ({what}); resume with the run's config.yaml, "
        "or start a new run (--out elsewhere or --overwrite)",
        key="model",
    )


def _pretrained_cfg(cfg: Config, class_names: list[str]) -> dict:
    d = cfg.data
    return {
        "mean": list(d.mean),
        "std": list(d.std),
        "num_frames": d.num_frames,
        "frame_stride": d.frame_stride,
        "crop_size": d.crop_size,
        "short_side": d.test_short_side,
        "test_clips": d.test_clips,
        "test_crops": d.test_crops,
        "class_names": list(class_names),
    }


def _unwrap(model: nn.Module) -> nn.Module:
    return (
        model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) else model
    )


def _save_final(model: nn.Module, path: Path, pretrained_cfg: dict, config: dict) -> Path:
    if getattr(model, "model_name", None):
        from vidtok.models.hub import save_model

        tmp = path.with_name(path.name + ".part.safetensors")
        save_model(model, tmp, pretrained_cfg=pretrained_cfg, config=config)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path
    meta = ckpt.weights_metadata(model, pretrained_cfg=pretrained_cfg, config=config)
    return ckpt.save_weights(path, model.state_dict(), meta)


# --------------------------------------------------------------------------------------------------------------------
# The run


def train(
    cfg: Config,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    model: nn.Module | None = None,
    train_dataset=None,
    val_dataset=None,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run in ``out_dir``.

    Args:
        cfg: the run config (``cfg.train`` drives the loop; ``cfg.data`` the loader; ``cfg.model`` the model).
        out_dir: run folder: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``model.safetensors``.
        resume: continue from the newest good checkpoint in ``out_dir`` (corrupt ones are skipped). The config may
            not change the model or its tensor shapes (a one-line error names the keys that differ).
        overwrite: ``out_dir`` holds a run: delete its files first. Without ``resume`` or ``overwrite`` a folder
            holding a run is refused (see :mod:`vidtok.engine.run_dir`).
        model: use this module instead of building ``cfg.model`` (tests, custom architectures).
        train_dataset, val_dataset: use these map-style datasets instead of building them from ``cfg.data``;
            items are dicts with ``video`` and ``label``; ``class_names`` is read from the training set if present.
        progress: show a progress bar (rank 0) when stderr is a terminal; otherwise, or with ``False``, log a
            progress line every :data:`vidtok.logs.LOG_INTERVAL_S` seconds.
        stop_after: stop after this optimizer step as if interrupted (a checkpoint is written; the schedule is
            unchanged). For tests and time-boxed jobs.
        log: line logger (default: the ``vidtok.train`` logger on rank 0).

    Returns:
        Summary dict: ``step``, ``epoch``, ``train_loss``, ``val`` (last evaluation or None), ``model_path``,
        ``run_dir``, ``seconds``, ``clips_per_sec``.

    Raises:
        NonFiniteLossError: the loss became NaN / inf; the run folder keeps its last good checkpoint.
        CheckpointError: ``resume`` without a usable checkpoint, or a bad ``--init`` file.
    """
    t_start = time.time()
    tc = validate_config(cfg).train
    check_run_dir(out_dir, resume=resume, overwrite=overwrite)  # every rank looks before rank 0 writes (below)
    if train_dataset is None:
        check_config_paths(cfg)
    dist_info: DistInfo = init_distributed(tc.device)
    device = dist_info.device
    if tc.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp: fp16 needs CUDA (use bf16 on CPU)", key="train.amp")
    main = dist_info.is_main
    run_dir = Path(out_dir)
    if log is None:
        _logger = get_logger("train")

        def log(msg: str) -> None:
            if main:
                _logger.info(msg)

    barrier()
    if main:
        if overwrite:
            clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_tmp(run_dir):
            log(f"removed {p.name} (left by an interrupted checkpoint write)")

    # ---- state from a previous run (read first: it carries the config the run was started with) ----
    resumed = None
    if resume:
        path, tensors, _meta, state = ckpt.load_latest(run_dir, warn=log)
        resumed = (path, tensors, state)
        log(f"resume: {path.name} (step {state['step']}, epoch {state['epoch']})")

    # ---- data ----
    train_dataset, val_dataset = _build_datasets(cfg, train_dataset, val_dataset, run_dir)
    class_names = list(getattr(train_dataset, "class_names", []) or [])
    if resumed is not None and resumed[2].get("class_names") and not class_names:
        class_names = list(resumed[2]["class_names"])
    _sync_model_config(cfg, class_names)

    # ---- model (same init on every rank; DDP also broadcasts rank 0's weights) ----
    torch.manual_seed(tc.seed)
    if model is None:
        model = build_model_from_config(cfg)
    model.to(device)
    if tc.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError(
                f"train.grad_checkpointing: {type(model).__name__} has no set_grad_checkpointing()",
                key="train.grad_checkpointing",
            )
        model.set_grad_checkpointing(True)
    init_path = tc.init
    if init_path and resumed is None:
        init_from_checkpoint(model, init_path, reinit_head=tc.reinit_head, log=log)
    elif tc.reinit_head and resumed is None and hasattr(model, "reset_classifier"):
        model.reset_classifier(cfg.model.num_classes)

    optimizer = build_optimizer(
        model, lr=tc.lr, weight_decay=tc.weight_decay, betas=tuple(tc.betas), layer_decay=tc.layer_decay
    )
    scaler = torch.amp.GradScaler("cuda") if tc.amp == "fp16" else None
    ema = ModelEma(model, decay=tc.ema_decay) if tc.ema_decay > 0 else None
    mix_gen = torch.Generator().manual_seed(tc.seed + 1)
    shuffle_gen = torch.Generator().manual_seed(tc.seed + 2)

    # ---- data loading: resumable order, per-sample seeds ----
    world, rank = dist_info.world_size, dist_info.rank
    d = cfg.data
    sampler = ResumableSampler(len(train_dataset), shuffle=True, seed=tc.seed, rank=rank, world_size=world)
    batches_per_epoch = sampler.per_rank // max(1, d.batch_size // int(getattr(train_dataset, "repeated_aug", 1) or 1))
    steps_per_epoch = batches_per_epoch // tc.accum_steps
    if steps_per_epoch < 1:
        raise ConfigError(
            f"data.batch_size={d.batch_size} x train.accum_steps={tc.accum_steps} x {world} process(es) is larger "
            f"than the training set ({len(train_dataset)} clips)",
            key="data.batch_size",
        )
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps > 0:
        total_steps = min(total_steps, tc.max_steps) if tc.epochs > 0 else tc.max_steps
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = tc.warmup_steps if tc.warmup_steps > 0 else int(round(tc.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(0, total_steps - 1))

    from vidtok.data.loader import collate_clips

    workers = d.num_workers
    repeats = int(getattr(train_dataset, "repeated_aug", 1) or 1)  # clips per decoded video
    if d.batch_size % repeats:
        raise ConfigError(
            f"data.batch_size={d.batch_size} must be a multiple of data.repeated_aug={repeats}", key="data.batch_size"
        )
    loader_kwargs: dict[str, Any] = {}
    if workers > 0:
        loader_kwargs["persistent_workers"] = d.persistent_workers
        loader_kwargs["prefetch_factor"] = d.prefetch_factor
        loader_kwargs["worker_init_fn"] = _worker_init
    loader = torch.utils.data.DataLoader(
        SeededDataset(train_dataset, seed=tc.seed),
        batch_size=d.batch_size // repeats,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=d.pin_memory and device.type == "cuda",
        drop_last=True,
        generator=torch.Generator(),  # worker base seeds come from here, never from the global RNG
        **loader_kwargs,
    )

    # ---- restore ----
    step, epoch, step_in_epoch = 0, 0, 0
    if resumed is not None:
        _, tensors, state = resumed
        _check_resume_compatible(resumed[0], state, cfg, model, tensors)
        model.load_state_dict(tensors)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        mix_gen.set_state(state["mix_generator"])
        shuffle_gen.set_state(state["shuffle_generator"])
        step, epoch, step_in_epoch = int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"])
        ckpt.restore_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])

    cfg_dict = config_to_dict(cfg)
    pretrained_cfg = _pretrained_cfg(cfg, class_names)
    if main:
        dump_config(cfg, run_dir / "config.yaml")
    metrics = _Metrics(
        run_dir, main, truncate_after_step=step if resumed is not None else None, log_to=tuple(tc.log_to)
    )

    ddp_model = model
    reducer = getattr(model, "reducer", None)  # token reducers with a training loss of their own
    if dist_info.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if tc.compile:
        ddp_model = torch.compile(ddp_model)  # the weights stay shared with `model` (checkpoints, EMA, eval)
    num_classes = cfg.model.num_classes
    if not class_names:
        num_classes = int(getattr(model, "num_classes", num_classes))
    mixer = None
    if tc.mixup_alpha > 0 or tc.cutmix_alpha > 0:
        from vidtok.data.transforms import MixupCutmix

        mixer = MixupCutmix(
            num_classes=num_classes,
            mixup_alpha=tc.mixup_alpha,
            cutmix_alpha=tc.cutmix_alpha,
            label_smoothing=tc.label_smoothing,
        )
    mixing = mixer is not None
    last_good = ckpt.list_checkpoints(run_dir)[-1] if main and ckpt.list_checkpoints(run_dir) else None

    def save(at_epoch: int, at_step_in_epoch: int) -> Path | None:
        nonlocal last_good
        if at_step_in_epoch >= steps_per_epoch:
            at_epoch, at_step_in_epoch = at_epoch + 1, 0
        rngs = [ckpt.capture_rng_state()]
        if dist_info.distributed:
            from vidtok.engine.distributed import all_gather_objects

            rngs = all_gather_objects(rngs[0])
        if not main:
            return None
        state = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "epoch": at_epoch,
            "step_in_epoch": at_step_in_epoch,
            "samples_seen": step * d.batch_size * tc.accum_steps * world,
            "data_order": {
                "seed": tc.seed,
                "epoch": at_epoch,
                "position": at_step_in_epoch * tc.accum_steps * (d.batch_size // repeats),
            },
            "mix_generator": mix_gen.get_state(),
            "shuffle_generator": shuffle_gen.get_state(),
            "rng": rngs,
            "world_size": world,
            "config": json.dumps(cfg_dict),
            "class_names": list(class_names),
        }
        # checkpoints hold the raw weights; the EMA weights travel in the state file
        meta = ckpt.weights_metadata(model, pretrained_cfg=pretrained_cfg, config=cfg_dict)
        path = ckpt.save_checkpoint(
            run_dir, step=step, model_state=model.state_dict(), weights_meta=meta, state=state, keep_last=tc.keep_last
        )
        last_good = path
        return path

    log(
        f"train: {len(train_dataset)} clips, {num_classes} classes, {world} process(es) on {device}, "
        f"{steps_per_epoch} steps/epoch x {epochs} epochs = {total_steps} steps (warmup {warmup}), "
        f"batch {d.batch_size}x{tc.accum_steps}x{world}"
    )
    # a bar on a terminal; with --no-progress or into a log file, a progress line every LOG_INTERVAL_S seconds
    bar = Progress(total_steps, "train", "step", bar=progress, initial=step) if main else None

    clips_per_step = d.batch_size * tc.accum_steps * world
    last_val: dict | None = None
    loss_ema = None
    t_window, n_window = time.time(), 0
    total_clips, total_time = 0, 0.0
    epoch_loss_sum = torch.zeros((), dtype=torch.float64)
    epoch_loss_n = 0
    stopped_early = False
    try:
        while step < total_steps and not stopped_early:
            model.train()
            sampler.set_epoch(epoch, start=step_in_epoch * tc.accum_steps * (d.batch_size // repeats))
            data_iter = iter(loader)
            if step_in_epoch == 0:
                epoch_loss_sum.zero_()
                epoch_loss_n = 0
            while step_in_epoch < steps_per_epoch and step < total_steps:
                t0 = time.time()
                lr = cosine_lr(step, base_lr=tc.lr, min_lr=tc.min_lr, warmup_steps=warmup, total_steps=total_steps)
                set_lr(optimizer, lr)
                loss_sum = torch.zeros((), device=device)
                for micro in range(tc.accum_steps):
                    batch = next(data_iter)
                    x = batch["video"].to(device, non_blocking=True)
                    y = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
                    if tc.shuffle_frames:
                        x = shuffle_time(x, shuffle_gen)
                    if mixing:
                        x, target = mixer(x, y, mix_gen)
                    sync = micro == tc.accum_steps - 1 or not dist_info.distributed
                    ctx = contextlib.nullcontext() if sync else ddp_model.no_sync()
                    with ctx:
                        with _autocast(device, tc.amp):
                            logits = ddp_model(x)
                        if mixing:
                            loss = soft_cross_entropy(logits, target)
                        else:
                            loss = F.cross_entropy(logits.float(), y, label_smoothing=tc.label_smoothing)
                        if reducer is not None:  # DynamicViT ratio loss / mixed-scale batch shaping (0 for others)
                            loss = loss + reducer.aux_loss().float()
                        scaled = loss / tc.accum_steps
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    loss_sum += loss.detach()
                # ---- non-finite guard (all ranks agree) ----
                stats = all_reduce_sum(torch.stack([loss_sum.float(), torch.ones((), device=device)]))
                mean_loss = float(stats[0] / (stats[1] * tc.accum_steps))
                if not math.isfinite(mean_loss):
                    where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written yet"
                    metrics.log({"kind": "error", "step": step + 1, "epoch": epoch, "error": f"loss={mean_loss}"})
                    raise NonFiniteLossError(
                        f"loss is {mean_loss} at step {step + 1} (epoch {epoch}, lr {lr:.3g}); run stopped, {where}. "
                        "Try a lower train.lr, a longer warmup, train.clip_grad > 0 or train.amp=none"
                    )
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = None
                if tc.clip_grad > 0:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                step += 1
                step_in_epoch += 1
                epoch_loss_sum += mean_loss
                epoch_loss_n += 1
                dt = time.time() - t0
                total_clips += clips_per_step
                total_time += dt
                n_window += clips_per_step
                loss_ema = mean_loss if loss_ema is None else 0.9 * loss_ema + 0.1 * mean_loss
                if bar is not None:
                    rate = clips_per_step / max(dt, 1e-9)
                    bar.update(1, postfix=f"loss {loss_ema:.3f}, lr {lr:.2e}, {rate:.1f} clips/s")
                if step % max(1, tc.log_every) == 0 or step == total_steps:
                    now = time.time()
                    row = {
                        "kind": "step",
                        "step": step,
                        "epoch": epoch,
                        "loss": mean_loss,
                        "lr": lr,
                        "clips_per_sec": n_window / max(now - t_window, 1e-9),
                    }
                    if grad_norm is not None:
                        row["grad_norm"] = grad_norm
                    metrics.log(row)
                    t_window, n_window = now, 0
                if tc.ckpt_every > 0 and step % tc.ckpt_every == 0 and step < total_steps:
                    save(epoch, step_in_epoch)
                if stop_after is not None and step >= stop_after and step < total_steps:
                    save(epoch, step_in_epoch)
                    stopped_early = True
                    break
            if stopped_early:
                break
            # ---- epoch end ----
            ep_loss = float(epoch_loss_sum) / max(1, epoch_loss_n)
            row = {"kind": "epoch", "step": step, "epoch": epoch, "loss": ep_loss, "lr": lr}
            finished = step >= total_steps
            if val_dataset is not None and (finished or (tc.eval_every > 0 and (epoch + 1) % tc.eval_every == 0)):
                last_val = run_eval(cfg, ema.module if ema is not None else model, val_dataset, device, dist_info)
                metrics.confusion(last_val.pop("confusion", None), step)
                row.update({f"val_{k}": v for k, v in last_val.items() if isinstance(v, (int, float))})
                log(f"epoch {epoch}: loss {ep_loss:.4f}  val top1 {last_val['top1']:.2f}  top5 {last_val['top5']:.2f}")
                model.train()
            metrics.log(row)
            if step_in_epoch >= steps_per_epoch:
                epoch += 1
                step_in_epoch = 0
            if tc.ckpt_every == 0 or finished:
                save(epoch, step_in_epoch)
    finally:
        if bar is not None:
            bar.close()
        metrics.close()

    model_path = None
    if not stopped_early and main:
        final = ema.module if ema is not None else model
        model_path = _save_final(final, run_dir / "model.safetensors", pretrained_cfg, cfg_dict)
        log(f"saved {model_path}")
    barrier()
    return {
        "run_dir": str(run_dir),
        "step": step,
        "epoch": epoch,
        "train_loss": loss_ema,
        "val": last_val,
        "model_path": str(model_path) if model_path else None,
        "seconds": time.time() - t_start,
        "clips_per_sec": total_clips / max(total_time, 1e-9),
        "stopped_early": stopped_early,
    }


def run_eval(cfg: Config, model: nn.Module, val_dataset, device: torch.device, dist_info: DistInfo) -> dict:
    """Evaluate during training (sharded over ranks); returns top1/top5/loss/num_samples."""
    from vidtok.engine.evaluate import evaluate

    res = evaluate(
        model,
        val_dataset,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        device=device,
        amp=cfg.train.amp,
        shuffle_frames=cfg.train.shuffle_frames,
        seed=cfg.train.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
    )
    return {
        "top1": res["top1"],
        "top5": res["top5"],
        "loss": res["loss"],
        "num_samples": res["num_samples"],
        "confusion": res.get("confusion"),
    }
