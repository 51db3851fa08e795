"""Helpers for the engine tests: a tiny video classifier and an in-memory clip dataset with random augmentation."""

from __future__ import annotations

import time

import torch
from torch import nn

from vidtok.config import Config


class TinyVideoNet(nn.Module):
    """(B, C, T, H, W) -> logits; has the vidtok model hooks the optimizer uses (no_weight_decay, layer ids)."""

    def __init__(
        self,
        num_classes: int = 3,
        channels: int = 3,
        frames: int = 4,
        size: int = 8,
        dim: int = 16,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.embed = nn.Linear(channels * size * size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, frames, dim))
        self.block = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.num_classes = num_classes
        self.num_layers = 1

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def get_layer_id(self, name: str) -> int:
        if name.startswith(("embed", "pos_embed")):
            return 0
        if name.startswith("block"):
            return 1
        return 2

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tok = self.embed(x.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w)) + self.pos_embed  # (B, T, D)
        tok = tok + self.block(tok)
        # temporal difference feature: the label of MotionDataset depends on the direction of change
        feat = self.norm(tok[:, 1:] - tok[:, :-1]).mean(1)  # (B, D)
        return self.head(feat)


class MotionDataset(torch.utils.data.Dataset):
    """Clips of a bright square moving left, right or standing still (label 0 / 1 / 2), with random noise
    augmentation drawn from the global torch RNG (so per-sample seeding matters for reproducibility)."""

    def __init__(
        self, n: int = 48, *, frames: int = 4, size: int = 8, seed: int = 0, noise: float = 0.1, delay: float = 0.0
    ):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.starts = torch.randint(2, size - 2, (n,), generator=g)
        self.frames, self.size, self.noise, self.delay = frames, size, noise, delay
        self.class_names = ["left", "right", "still"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if self.delay:
            time.sleep(self.delay)  # stands in for decoding time (lets a test kill a run mid-way)
        label = int(self.labels[i])
        v = torch.zeros(3, self.frames, self.size, self.size)
        step = {0: -1, 1: 1, 2: 0}[label]
        for t in range(self.frames):
            col = int(self.starts[i] + step * t) % self.size
            v[:, t, 2:5, col] = 1.0
        v = v + self.noise * torch.randn(v.shape)  # augmentation from the global RNG
        return {"video": v, "label": label, "index": i, "path": f"mem://{i}"}


def tiny_config(out_workers: int = 0, **train) -> Config:
    cfg = Config()
    cfg.model.name = "tiny"
    cfg.data.num_frames = 4
    cfg.data.crop_size = 8
    cfg.data.batch_size = 4
    cfg.data.num_workers = out_workers
    cfg.data.hflip = False
    cfg.train.epochs = 3
    cfg.train.lr = 3e-3
    cfg.train.min_lr = 1e-5
    cfg.train.warmup_steps = 2
    cfg.train.log_every = 1
    cfg.train.ckpt_every = 0
    cfg.train.eval_every = 0
    cfg.train.device = "cpu"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


class NanAfter(TinyVideoNet):
    """Returns NaN logits from the ``after``-th training forward on."""

    def __init__(self, after: int, **kw):
        super().__init__(**kw)
        self.after = after
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


class ViewDataset(torch.utils.data.Dataset):
    """Multi-view items (V, C, T, H, W) for evaluation tests."""

    def __init__(self, videos: torch.Tensor, labels: list[int], class_names: list[str]):
        self.videos, self.labels, self.class_names = videos, labels, class_names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.videos[i], "label": self.labels[i], "index": i, "path": f"mem://{i}"}
