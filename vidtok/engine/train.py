"""The training loop: ``train(cfg, out_dir)`` runs a whole run and can resume it exactly.

One run, top to bottom (``train`` is the orchestration; ``RunState``, ``Schedule`` and ``TrainStep`` are
:mod:`vidtok.engine.train_step`, the rest is below)::

    run folder (check / clear / stale temps) ─► resume: newest good checkpoint (weights + state)
    datasets (cfg.data) ─► model (create_model, --init, grad checkpointing)
    RunState: model, optimizer, GradScaler, EMA, mixing / frame-shuffle generators, step / epoch / position
    build_loader: EpochSampler (resumable) ─► SeededDataset ─► workers ─► collate      (vidtok.data.loader)
    _Loop.run: per epoch, per optimizer step:
        lr = cosine_lr(step)                                 warmup + cosine, per optimizer step
        TrainStep.forward_backward: for each of accum_steps micro-batches (DDP syncs on the last only):
            x, y = shuffle_time / Mixup / CutMix (explicit generators)
            with autocast: loss = CE(model(x), y) + model's token-reducer loss (DynamicViT ratio, mixed-scale shape)
            backward(loss / accum_steps)                     GradScaler for fp16
        guard: loss finite on every rank, else stop (last good checkpoint kept)
        TrainStep.apply: clip_grad_norm_, optimizer.step, EMA update
        log (metrics.jsonl, TensorBoard, progress), checkpoint every N steps / at epoch end (keep last K), evaluate
    model.safetensors (EMA weights when EMA is on)

Exact resume: the data order is a seeded permutation per epoch whose position is saved; augmentation randomness is
seeded per sample from (seed, epoch, index); the DataLoader gets its own generator so it never draws from the
global RNG; the global RNG states, optimizer, scaler, EMA and mixing generator are saved with every checkpoint. On
CPU with a fixed seed, an interrupted-and-resumed run ends with bitwise the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidtok.config import (
    Config,
    check_config_paths,
    config_to_dict,
    dump_config,
    resolved_model_config,
    validate_config,
)
from vidtok.engine import checkpoint as ckpt
from vidtok.engine.distributed import DistInfo, all_gather_objects, barrier, init_distributed
from vidtok.engine.optim import cosine_lr, set_lr
from vidtok.engine.run_dir import check_run_dir, clear_run, remove_stale_tmp
from vidtok.engine.train_step import RunState, Schedule, TrainStep
from vidtok.errors import CheckpointError, ConfigError, VidtokError
from vidtok.logs import Progress, get_logger

__all__ = [
    "train",
    "NonFiniteLossError",
    "build_model_from_config",
    "init_from_checkpoint",
]


class NonFiniteLossError(VidtokError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint of the bad state."""


class _Metrics:
    """metrics.jsonl (always; `vidtok plot` and resume read it) + TensorBoard when ``log_to`` asks, rank 0 only.

    TensorBoard tags: ``train/{loss, lr, clips_per_sec, grad_norm}`` per logged step, ``epoch/{loss, lr}`` and
    ``val/{top1, top5, loss}`` per epoch, and the images ``val/confusion`` (row-normalised confusion matrix) and, for a
    model with TokenLearner, ``val/tokenlearner`` (its token maps on the first validation clip) at each evaluation;
    tensorboard is imported only when asked for.
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

    def token_maps(self, model: nn.Module, val_dataset: Any, data_cfg: Any, step: int) -> None:
        """``val/tokenlearner``: the TokenLearner maps on the first view of the first validation item (the same clip
        at every evaluation, so the images show how the learned tokens change); nothing for other models."""
        if self.tb is None or val_dataset is None or len(val_dataset) == 0:
            return
        from vidtok.viz.attention import token_map_image

        with torch.random.fork_rng(devices=[]):  # a dataset drawing from the global RNG leaves training's intact
            item = val_dataset[0]
        item = item[0] if isinstance(item, list) else item  # repeated_aug datasets give a list
        clip = item["video"][0] if item["video"].ndim == 5 else item["video"]  # (V, C, T, H, W) -> first view
        was_training = model.training
        model.eval()  # the maps of the model as evaluated: no dropout / stochastic depth (nor their RNG draws)
        try:
            img = token_map_image(model, clip, mean=data_cfg.mean, std=data_cfg.std)
        finally:
            model.train(was_training)
        if img is not None:
            self.tb.add_image("val/tokenlearner", img, step, dataformats="HWC")
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
    """The data decides the class count (frames and crop size: :func:`~vidtok.config.resolved_model_config`)."""
    if class_names:
        cfg.model.num_classes = len(class_names)


def build_model_from_config(cfg: Config) -> nn.Module:
    from vidtok.models import create_model

    m = resolved_model_config(cfg)
    keys = ("num_classes", "num_frames", "img_size", "attn_backend", "drop_path_rate", "dropout")
    return create_model(m.name, **{k: getattr(m, k) for k in keys}, **m.extra)


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
    from vidtok.preprocessing import Preprocessing

    return {**Preprocessing.from_data_config(cfg.data).to_pretrained_cfg(), "class_names": list(class_names)}


def _save_final(model: nn.Module, path: Path, pretrained_cfg: dict, config: dict) -> Path:
    """``model.safetensors``: :func:`vidtok.models.hub.save_model` for registry models, plain weights otherwise."""
    from vidtok.files import save_safetensors

    if getattr(model, "model_name", None):
        from vidtok.models.hub import save_model

        return save_model(model, path, pretrained_cfg=pretrained_cfg, config=config)
    meta = ckpt.weights_metadata(model, pretrained_cfg=pretrained_cfg, config=config)
    return save_safetensors(path, model.state_dict(), meta)


def _prepare_model(cfg: Config, model: nn.Module | None, device: torch.device, resuming: bool, log) -> nn.Module:
    """Build (same init on every rank; DDP also broadcasts rank 0's weights), move, grad checkpointing, ``--init``."""
    tc = cfg.train
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
    if tc.init and not resuming:
        init_from_checkpoint(model, tc.init, reinit_head=tc.reinit_head, log=log)
    elif tc.reinit_head and not resuming and hasattr(model, "reset_classifier"):
        model.reset_classifier(cfg.model.num_classes)
    return model


class _Checkpointer:
    """Writes the run's checkpoints (rank 0; every rank contributes its RNG states) and remembers the last good one."""

    def __init__(self, cfg: Config, run_dir: Path, dist_info: DistInfo, class_names: list[str], sched: Schedule):
        self.cfg, self.run_dir, self.dist_info, self.sched = cfg, run_dir, dist_info, sched
        self.class_names = list(class_names)
        self.cfg_dict = config_to_dict(cfg)
        self.pretrained_cfg = _pretrained_cfg(cfg, class_names)
        found = ckpt.list_checkpoints(run_dir) if dist_info.is_main else []
        self.last_good: Path | None = found[-1] if found else None

    def save(self, run: RunState) -> Path | None:
        epoch, step_in_epoch = run.epoch, run.step_in_epoch
        if step_in_epoch >= self.sched.steps_per_epoch:
            epoch, step_in_epoch = epoch + 1, 0
        rngs = [ckpt.capture_rng_state()]
        if self.dist_info.distributed:
            rngs = all_gather_objects(rngs[0])
        if not self.dist_info.is_main:
            return None
        tc, d, world = self.cfg.train, self.cfg.data, self.dist_info.world_size
        state = {
            **run.state_dict(epoch, step_in_epoch),
            "samples_seen": run.step * d.batch_size * tc.accum_steps * world,
            "data_order": {"seed": tc.seed, "epoch": epoch, "position": step_in_epoch * self.sched.items_per_step},
            "rng": rngs,
            "world_size": world,
            "config": json.dumps(self.cfg_dict),
            "class_names": self.class_names,
        }
        # checkpoints hold the raw weights; the EMA weights travel in the state file
        meta = ckpt.weights_metadata(run.model, pretrained_cfg=self.pretrained_cfg, config=self.cfg_dict)
        self.last_good = ckpt.save_checkpoint(
            self.run_dir, step=run.step, model_state=run.model.state_dict(), weights_meta=meta, state=state,
            keep_last=tc.keep_last,
        )  # fmt: skip
        return self.last_good

    def save_final(self, run: RunState) -> Path:
        return _save_final(run.final_model, self.run_dir / "model.safetensors", self.pretrained_cfg, self.cfg_dict)


class _Loop:
    """Epochs of optimizer steps with logging, checkpoints and evaluation; :meth:`run` returns True when stopped
    early by ``stop_after``."""

    def __init__(
        self, cfg, run, step_fn, loader, sched, saver, metrics, *, val_dataset, dist_info, stop_after, progress, log
    ):
        self.cfg, self.tc, self.run, self.step_fn, self.loader = cfg, cfg.train, run, step_fn, loader
        self.sched, self.saver, self.metrics, self.val_dataset = sched, saver, metrics, val_dataset
        self.dist_info, self.stop_after, self.log = dist_info, stop_after, log
        self.clips_per_step = cfg.data.batch_size * cfg.train.accum_steps * dist_info.world_size
        self.loss_ema: float | None = None
        self.last_val: dict | None = None
        self.total_clips, self.total_time = 0, 0.0
        self.t_window, self.n_window = time.time(), 0
        self.epoch_loss_sum, self.epoch_loss_n = torch.zeros((), dtype=torch.float64), 0
        self.lr = 0.0
        # a bar on a terminal; with --no-progress or into a log file, a progress line every LOG_INTERVAL_S seconds
        main = dist_info.is_main
        self.bar = Progress(sched.total_steps, "train", "step", bar=progress, initial=run.step) if main else None

    def run_all(self) -> bool:
        try:
            while self.run.step < self.sched.total_steps:
                if self._epoch():
                    return True
            return False
        finally:
            if self.bar is not None:
                self.bar.close()
            self.metrics.close()

    def _epoch(self) -> bool:
        run, sched, tc = self.run, self.sched, self.tc
        run.model.train()
        self.loader.sampler.set_epoch(run.epoch, start=run.step_in_epoch * sched.items_per_step)
        batches = iter(self.loader)
        if run.step_in_epoch == 0:
            self.epoch_loss_sum.zero_()
            self.epoch_loss_n = 0
        while run.step_in_epoch < sched.steps_per_epoch and run.step < sched.total_steps:
            t0 = time.time()
            self.lr = cosine_lr(
                run.step, base_lr=tc.lr, min_lr=tc.min_lr, warmup_steps=sched.warmup, total_steps=sched.total_steps
            )
            set_lr(run.optimizer, self.lr)
            mean_loss = self.step_fn.forward_backward(batches)
            self._guard(mean_loss)
            grad_norm = self.step_fn.apply()
            self._after_step(mean_loss, grad_norm, time.time() - t0)
            if tc.ckpt_every > 0 and run.step % tc.ckpt_every == 0 and run.step < sched.total_steps:
                self.saver.save(run)
            if self.stop_after is not None and self.stop_after <= run.step < sched.total_steps:
                self.saver.save(run)
                return True
        self._end_epoch()
        return False

    def _guard(self, mean_loss: float) -> None:
        """All ranks see the same reduced loss, so they stop together."""
        if math.isfinite(mean_loss):
            return
        run, last = self.run, self.saver.last_good
        where = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
        self.metrics.log({"kind": "error", "step": run.step + 1, "epoch": run.epoch, "error": f"loss={mean_loss}"})
        raise NonFiniteLossError(
            f"loss is {mean_loss} at step {run.step + 1} (epoch {run.epoch}, lr {self.lr:.3g}); run stopped, {where}. "
            "Try a lower train.lr, a longer warmup, train.clip_grad > 0 or train.amp=none"
        )

    def _after_step(self, mean_loss: float, grad_norm: float | None, dt: float) -> None:
        run, n = self.run, self.clips_per_step
        self.epoch_loss_sum += mean_loss
        self.epoch_loss_n += 1
        self.total_clips += n
        self.total_time += dt
        self.n_window += n
        self.loss_ema = mean_loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * mean_loss
        if self.bar is not None:
            self.bar.update(1, postfix=f"loss {self.loss_ema:.3f}, lr {self.lr:.2e}, {n / max(dt, 1e-9):.1f} clips/s")
        if run.step % max(1, self.tc.log_every) == 0 or run.step == self.sched.total_steps:
            now = time.time()
            row = {"kind": "step", "step": run.step, "epoch": run.epoch, "loss": mean_loss, "lr": self.lr}
            row["clips_per_sec"] = self.n_window / max(now - self.t_window, 1e-9)
            if grad_norm is not None:
                row["grad_norm"] = grad_norm
            self.metrics.log(row)
            self.t_window, self.n_window = now, 0

    def _end_epoch(self) -> None:
        run, tc = self.run, self.tc
        ep_loss = float(self.epoch_loss_sum) / max(1, self.epoch_loss_n)
        row = {"kind": "epoch", "step": run.step, "epoch": run.epoch, "loss": ep_loss, "lr": self.lr}
        finished = run.step >= self.sched.total_steps
        if self.val_dataset is not None and (finished or (tc.eval_every > 0 and (run.epoch + 1) % tc.eval_every == 0)):
            self.last_val = run_eval(self.cfg, run.final_model, self.val_dataset, self.dist_info)
            self.metrics.confusion(self.last_val.pop("confusion", None), run.step)
            self.metrics.token_maps(run.final_model, self.val_dataset, self.cfg.data, run.step)
            row.update({f"val_{k}": v for k, v in self.last_val.items() if isinstance(v, (int, float))})
            v = self.last_val
            self.log(f"epoch {run.epoch}: loss {ep_loss:.4f}  val top1 {v['top1']:.2f}  top5 {v['top5']:.2f}")
            run.model.train()
        self.metrics.log(row)
        if run.step_in_epoch >= self.sched.steps_per_epoch:
            run.epoch += 1
            run.step_in_epoch = 0
        if tc.ckpt_every == 0 or finished:
            self.saver.save(run)


def _open_run_dir(out_dir, *, resume: bool, overwrite: bool, main: bool, log) -> tuple[Path, tuple | None]:
    """Clear (``overwrite``) / create the run folder, remove stale temporaries, and read the checkpoint to resume."""
    run_dir = Path(out_dir)
    barrier()
    if main:
        if overwrite:
            clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_tmp(run_dir):
            log(f"removed {p.name} (left by an interrupted checkpoint write)")
    if not resume:
        return run_dir, None
    path, tensors, _meta, state = ckpt.load_latest(run_dir, warn=log)
    log(f"resume: {path.name} (step {state['step']}, epoch {state['epoch']})")
    return run_dir, (path, tensors, state)


def _rank0_logger(main: bool) -> Callable[[str], None]:
    logger = get_logger("train")
    return (lambda msg: logger.info(msg)) if main else (lambda msg: None)


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
    dist_info = init_distributed(tc.device)
    device, main = dist_info.device, dist_info.is_main
    if tc.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp: fp16 needs CUDA (use bf16 on CPU)", key="train.amp")
    log = log or _rank0_logger(main)
    # the state of a previous run is read first: it carries the config the run was started with
    run_dir, resumed = _open_run_dir(out_dir, resume=resume, overwrite=overwrite, main=main, log=log)
    train_dataset, val_dataset = _build_datasets(cfg, train_dataset, val_dataset, run_dir)
    class_names = list(getattr(train_dataset, "class_names", []) or [])
    if resumed is not None and resumed[2].get("class_names") and not class_names:
        class_names = list(resumed[2]["class_names"])
    _sync_model_config(cfg, class_names)
    model = _prepare_model(cfg, model, device, resumed is not None, log)
    num_classes = cfg.model.num_classes if class_names else int(getattr(model, "num_classes", cfg.model.num_classes))
    run = RunState.create(cfg, model)
    loader, sched = _train_loader(cfg, train_dataset, dist_info)
    if resumed is not None:
        _check_resume_compatible(resumed[0], resumed[2], cfg, model, resumed[1])
        run.load(resumed[1], resumed[2], dist_info.rank)
    if main:
        dump_config(cfg, run_dir / "config.yaml")
    metrics = _Metrics(run_dir, main, truncate_after_step=run.step if resumed else None, log_to=tuple(tc.log_to))
    saver = _Checkpointer(cfg, run_dir, dist_info, class_names, sched)
    step_fn = TrainStep(cfg, run, _wrap(model, dist_info, tc.compile), device, dist_info.distributed, num_classes)
    log(
        f"train: {len(train_dataset)} clips, {num_classes} classes, {dist_info.world_size} process(es) on "
        f"{device}, {sched.steps_per_epoch} steps/epoch x {sched.epochs} epochs = {sched.total_steps} steps (warmup "
        f"{sched.warmup}), batch {cfg.data.batch_size}x{tc.accum_steps}x{dist_info.world_size}"
    )
    loop = _Loop(
        cfg, run, step_fn, loader, sched, saver, metrics,
        val_dataset=val_dataset, dist_info=dist_info, stop_after=stop_after, progress=progress, log=log,
    )  # fmt: skip
    stopped_early = loop.run_all()
    model_path = saver.save_final(run) if main and not stopped_early else None
    if model_path is not None:
        log(f"saved {model_path}")
    barrier()
    return {
        "run_dir": str(run_dir),
        "step": run.step,
        "epoch": run.epoch,
        "train_loss": loop.loss_ema,
        "val": loop.last_val,
        "model_path": str(model_path) if model_path else None,
        "seconds": time.time() - t_start,
        "clips_per_sec": loop.total_clips / max(loop.total_time, 1e-9),
        "stopped_early": stopped_early,
    }


def _train_loader(cfg: Config, train_dataset, dist_info: DistInfo):
    """The training DataLoader (:func:`vidtok.data.loader.build_loader`) and the run's :class:`Schedule`."""
    from vidtok.data.loader import build_loader

    d = cfg.data
    repeats = int(getattr(train_dataset, "repeated_aug", 1) or 1)  # clips per decoded video
    if d.batch_size % repeats:
        raise ConfigError(
            f"data.batch_size={d.batch_size} must be a multiple of data.repeated_aug={repeats}", key="data.batch_size"
        )
    loader = build_loader(
        train_dataset, d, train=True, seed=cfg.train.seed, rank=dist_info.rank, world_size=dist_info.world_size,
        device=dist_info.device,
    )  # fmt: skip
    sched = Schedule.plan(cfg, loader.sampler.per_rank, repeats, dist_info.world_size, len(train_dataset))
    return loader, sched


def _wrap(model: nn.Module, dist_info: DistInfo, compile_: bool) -> nn.Module:
    """What the train step calls: DDP over processes, then ``torch.compile``; the weights stay shared with ``model``
    (checkpoints, EMA and evaluation use ``model`` itself)."""
    if dist_info.distributed:
        device = dist_info.device
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if compile_ else model


def run_eval(cfg: Config, model: nn.Module, val_dataset, dist_info: DistInfo) -> dict:
    """Evaluate during training (sharded over ranks); returns top1/top5/loss/num_samples/confusion."""
    from vidtok.engine.evaluate import evaluate

    res = evaluate(
        model,
        val_dataset,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        device=dist_info.device,
        amp=cfg.train.amp,
        shuffle_frames=cfg.train.shuffle_frames,
        seed=cfg.train.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
    )
    return {k: res.get(k) for k in ("top1", "top5", "loss", "num_samples", "confusion")}
