"""One optimizer step and the state it works on: what ``vidtok train`` repeats, apart from the run around it.

::

    RunState.create(cfg, model)     model, AdamW (param groups, layer decay), GradScaler (fp16), ModelEma,
                                    mixing / frame-shuffle generators, step / epoch / step_in_epoch
    Schedule.plan(cfg, ...)         steps per epoch, total steps, warmup (from the loader's per-rank length)
    TrainStep.forward_backward      accum_steps micro-batches:
        batch ─► shuffle_time? ─► MixupCutmix? ─► autocast(model(x)) ─► CE / soft CE + reducer_aux_loss(model)
              ─► (loss / accum_steps).backward()   (DDP syncs gradients on the last micro-batch only)
        ─► loss averaged over micro-batches and ranks (the caller stops on a non-finite one)
    TrainStep.apply                 unscale ─► clip_grad_norm_ ─► optimizer / scaler step ─► zero_grad ─► EMA update

:mod:`vidtok.engine.train` runs the epochs around it (data order, logging, checkpoints, evaluation).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidtok.config import Config
from vidtok.engine import checkpoint as ckpt
from vidtok.engine.device import autocast
from vidtok.engine.distributed import all_reduce_sum
from vidtok.engine.optim import build_optimizer
from vidtok.errors import CheckpointError, ConfigError

__all__ = ["ModelEma", "RunState", "Schedule", "TrainStep", "reducer_aux_loss", "soft_cross_entropy"]


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


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft targets ``(B, K)`` (Mixup / CutMix), in float32."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def reducer_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """The training loss of the model's token reducer after a training forward (DynamicViT's keep-ratio loss,
    mixed-scale's batch shaping; zero for reducers without one), or None for a model without a reducer loss.

    ``model`` is the bare module (not the DDP / compiled wrapper: the reducer keeps its loss on itself during the
    wrapped forward). A model-level ``aux_loss()`` is used when the model has one, else ``model.reducer.aux_loss()``.
    """
    fn = getattr(model, "aux_loss", None)
    if not callable(fn):
        fn = getattr(getattr(model, "reducer", None), "aux_loss", None)
    return fn() if callable(fn) else None


def _check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """CheckpointError (one line) when a restored optimizer state does not fit the parameters it was given to: it was
    saved with the parameters in another order (a Model 2 checkpoint in the layout with top-level ``temporal_*``
    parameters, whose weights load through the renaming but whose AdamW moments are positional)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            moment = optimizer.state.get(p, {}).get("exp_avg")
            if moment is not None and moment.shape != p.shape:
                raise CheckpointError(
                    f"the optimizer state does not fit this model's parameters ({tuple(moment.shape)} for a "
                    f"{tuple(p.shape)} parameter); start a new run from its weights with --set train.init=RUN"
                )


@dataclass(frozen=True)
class Schedule:
    """Step counts of a run (optimizer steps; one step = ``accum_steps`` batches of ``batch_size // repeats`` items)."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup: int
    items_per_step: int  # dataset items one rank reads per optimizer step (the sampler position advances by this)

    @classmethod
    def plan(cls, cfg: Config, per_rank: int, repeats: int, world: int, num_items: int) -> Schedule:
        tc, d = cfg.train, cfg.data
        items_per_batch = d.batch_size // repeats
        steps_per_epoch = per_rank // max(1, items_per_batch) // tc.accum_steps
        if steps_per_epoch < 1:
            raise ConfigError(
                f"data.batch_size={d.batch_size} x train.accum_steps={tc.accum_steps} x {world} process(es) is "
                f"larger than the training set ({num_items} clips)",
                key="data.batch_size",
            )
        total = tc.epochs * steps_per_epoch
        if tc.max_steps > 0:
            total = min(total, tc.max_steps) if tc.epochs > 0 else tc.max_steps
        warmup = tc.warmup_steps if tc.warmup_steps > 0 else int(round(tc.warmup_epochs * steps_per_epoch))
        warmup = min(warmup, max(0, total - 1))
        epochs = math.ceil(total / steps_per_epoch)
        return cls(steps_per_epoch, total, epochs, warmup, tc.accum_steps * items_per_batch)


@dataclass
class RunState:
    """Everything a checkpoint restores: the model and its optimizer / scaler / EMA, the mixing and frame-shuffle
    generators, and where the run is (``step``; ``epoch`` and ``step_in_epoch`` fix the data position)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    ema: ModelEma | None
    mix_gen: torch.Generator
    shuffle_gen: torch.Generator
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0

    @classmethod
    def create(cls, cfg: Config, model: nn.Module) -> RunState:
        tc = cfg.train
        optimizer = build_optimizer(
            model, lr=tc.lr, weight_decay=tc.weight_decay, betas=tuple(tc.betas), layer_decay=tc.layer_decay
        )
        return cls(
            model=model,
            optimizer=optimizer,
            scaler=torch.amp.GradScaler("cuda") if tc.amp == "fp16" else None,
            ema=ModelEma(model, decay=tc.ema_decay) if tc.ema_decay > 0 else None,
            mix_gen=torch.Generator().manual_seed(tc.seed + 1),
            shuffle_gen=torch.Generator().manual_seed(tc.seed + 2),
        )

    @property
    def final_model(self) -> nn.Module:
        """What is evaluated and saved as ``model.safetensors``: the EMA weights when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def load(self, tensors: dict, state: dict, rank: int) -> None:
        """Restore from a checkpoint's weights and state file (this rank's RNG states)."""
        self.model.load_state_dict(tensors)
        self.optimizer.load_state_dict(state["optimizer"])
        _check_optimizer_state(self.optimizer)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.mix_gen.set_state(state["mix_generator"])
        self.shuffle_gen.set_state(state["shuffle_generator"])
        self.step, self.epoch, self.step_in_epoch = int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"])
        ckpt.restore_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])

    def state_dict(self, epoch: int, step_in_epoch: int) -> dict:
        """The checkpoint's training state (the caller puts the RNG states and run facts next to it)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "mix_generator": self.mix_gen.get_state(),
            "shuffle_generator": self.shuffle_gen.get_state(),
        }


class TrainStep:
    """One optimizer step in two halves, so the caller can stop on a non-finite loss before the weights change:
    :meth:`forward_backward` (``accum_steps`` micro-batches: frame shuffle, mixing, autocast forward, task loss +
    the reducer's loss, scaled backward; returns the loss averaged over micro-batches and ranks) and :meth:`apply`
    (unscale, clip, optimizer step, EMA)."""

    def __init__(
        self, cfg: Config, run: RunState, forward: nn.Module, device: torch.device, distributed: bool, num_classes: int
    ):
        self.tc, self.run, self.forward, self.device, self.distributed = cfg.train, run, forward, device, distributed
        self.mixer = None
        if self.tc.mixup_alpha > 0 or self.tc.cutmix_alpha > 0:
            from vidtok.data.transforms import MixupCutmix

            self.mixer = MixupCutmix(
                num_classes=num_classes,
                mixup_alpha=self.tc.mixup_alpha,
                cutmix_alpha=self.tc.cutmix_alpha,
                label_smoothing=self.tc.label_smoothing,
            )

    def loss(self, batch: dict) -> torch.Tensor:
        """Task loss + the token reducer's training loss of one micro-batch (forward only)."""
        from vidtok.data.clip_sampling import shuffle_time

        tc, run = self.tc, self.run
        x = batch["video"].to(self.device, non_blocking=True)
        y = torch.as_tensor(batch["label"]).to(self.device, non_blocking=True)
        if tc.shuffle_frames:
            x = shuffle_time(x, run.shuffle_gen)
        if self.mixer is not None:
            x, target = self.mixer(x, y, run.mix_gen)
        with autocast(self.device, tc.amp):
            logits = self.forward(x)
        if self.mixer is not None:
            loss = soft_cross_entropy(logits, target)
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=tc.label_smoothing)
        aux = reducer_aux_loss(run.model)
        return loss if aux is None else loss + aux.float()

    def forward_backward(self, batches: Iterator[dict]) -> float:
        tc, scaler = self.tc, self.run.scaler
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(tc.accum_steps):
            sync = micro == tc.accum_steps - 1 or not self.distributed
            with contextlib.nullcontext() if sync else self.forward.no_sync():
                loss = self.loss(next(batches))
                scaled = loss / tc.accum_steps
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_sum += loss.detach()
        stats = all_reduce_sum(torch.stack([loss_sum.float(), torch.ones((), device=self.device)]))
        return float(stats[0] / (stats[1] * tc.accum_steps))

    def apply(self) -> float | None:
        """Optimizer step on the accumulated gradients; returns the gradient norm when clipping."""
        run, tc = self.run, self.tc
        if run.scaler is not None:
            run.scaler.unscale_(run.optimizer)
        grad_norm = None
        if tc.clip_grad > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), tc.clip_grad))
        if run.scaler is not None:
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:
            run.ema.update(run.model)
        run.step += 1
        run.step_in_epoch += 1
        return grad_norm
