"""DataLoader set-up: epoch-aware sharded sampling, per-worker seeding, collate for (repeated) clips.

::

    EpochSampler ──(index, epoch)──► worker: VideoClipDataset[(index, epoch)] ──► collate_clips ──► batch dict
      shuffle = randperm(seed + epoch)    generator seeded by (seed, epoch, index): augmentation does not depend on
      shard   = order[rank::world]        which worker, how many workers, or the rank that decodes the sample

Call ``loader.sampler.set_epoch(epoch)`` before each epoch (as with ``DistributedSampler``). Batches are dicts:
``video`` (B, C, T, H, W) float32 (test mode: (B, V, C, T, H, W)), ``label`` (B,) int64, ``index`` (B,) int64,
``path`` list[str]. With ``repeated_aug = R`` each video yields R clips from one decode and a batch holds
``batch_size // R`` videos, so it still has ``batch_size`` clips.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data._utils.collate import default_collate

__all__ = ["EpochSampler", "build_loader", "collate_clips", "seed_worker"]


class EpochSampler(Sampler):
    """Shuffles with ``seed + epoch``, shards across ranks like ``DistributedSampler``, and yields ``(index, epoch)``.

    Args:
        num_samples: dataset length.
        shuffle: random order (training) or 0..n-1 (testing).
        seed: shuffling seed, the same on every rank.
        rank: this process's rank.
        world_size: number of processes.
        drop_last: drop the tail so every rank gets ``floor(n / world)`` samples.
        pad: otherwise repeat samples from the start so every rank gets ``ceil(n / world)`` (``DistributedSampler``
            behaviour, keeps ranks in step for training); ``pad=False`` gives each sample to exactly one rank (for
            exact evaluation; ranks may then differ by one sample).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        pad: bool = True,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.drop_last, self.pad = drop_last, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        w = self.world_size
        if w > 1:
            if self.drop_last:
                order = order[: (len(order) // w) * w]
            elif self.pad:
                total = math.ceil(len(order) / w) * w
                order = (order * math.ceil(total / len(order)))[:total]
            order = order[self.rank :: w]
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self._order()])

    def __len__(self) -> int:
        n, w = self.num_samples, self.world_size
        if w == 1:
            return n
        if self.drop_last:
            return n // w
        if self.pad:
            return math.ceil(n / w)
        return len(range(self.rank, n, w))


def collate_clips(batch: list) -> dict:
    """Collate dataset items; items that are lists (repeated sampling) are flattened first."""
    flat = [d for item in batch for d in (item if isinstance(item, list) else [item])]
    return default_collate(flat)


def seed_worker(worker_id: int) -> None:
    """Seed numpy / random from torch's per-worker seed (already ``base_seed + worker_id``); one thread per worker."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    torch.set_num_threads(1)  # workers already run in parallel; intra-op threads would oversubscribe the cores


def build_loader(
    dataset,
    data_cfg,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    drop_last: bool | None = None,
) -> DataLoader:
    """A DataLoader for a :class:`~vidtok.data.datasets.VideoClipDataset` configured by ``data_cfg``.

    Args:
        dataset: the dataset (its ``repeated_aug`` decides how many clips each item gives).
        data_cfg: batch size, workers, prefetch, pin memory, persistent workers.
        train: shuffle and drop the last incomplete batch; else keep order, no padding across ranks.
        seed: shuffling seed (the dataset's own seed drives augmentation).
        rank: this process's rank.
        world_size: number of processes.
        device: pin memory only when this is a CUDA device (default: CUDA if available).
        batch_size: override ``data_cfg.batch_size`` (clips per batch).
        num_workers: override ``data_cfg.num_workers``.
        drop_last: override (default: ``train``).
    """
    batch_size = data_cfg.batch_size if batch_size is None else batch_size
    num_workers = data_cfg.num_workers if num_workers is None else num_workers
    drop_last = train if drop_last is None else drop_last
    repeats = getattr(dataset, "repeated_aug", 1) if train else 1
    if batch_size < 1 or batch_size % repeats:
        raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of repeated_aug ({repeats})")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    sampler = EpochSampler(
        len(dataset), shuffle=train, seed=seed, rank=rank, world_size=world_size, drop_last=False, pad=train
    )
    if device is None:
        cuda = torch.cuda.is_available()
    else:
        cuda = torch.device(device).type == "cuda"
    kwargs = {}
    if num_workers > 0:
        kwargs = {
            "persistent_workers": data_cfg.persistent_workers,
            "prefetch_factor": data_cfg.prefetch_factor,
            "worker_init_fn": seed_worker,
        }
    return DataLoader(
        dataset,
        batch_size=batch_size // repeats,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=bool(data_cfg.pin_memory and cuda),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),  # base seed of the workers
        **kwargs,
    )
