"""The data order of training and evaluation: one epoch sampler, one per-sample seed, one worker init, one loader.

::

    EpochSampler ──(index, epoch)──► SeededDataset ──► worker: dataset[(index, epoch)] ──► collate_clips ──► batch
      shuffle = randperm(seed + epoch)   sample_seed(seed, epoch, index) seeds the global RNGs around the item, and
      shard   = order[rank::world]       datasets that take (index, epoch) keys (VideoClipDataset) seed their own
      start   = position in the epoch    generator from the same function: augmentation does not depend on which
                (exact resume)           worker, how many workers, the rank that decodes the sample or a resume

Call ``loader.sampler.set_epoch(epoch)`` before each epoch (``set_epoch(epoch, start=k)`` resumes after the first
``k`` samples of this rank). Batches are dicts: ``video`` (B, C, T, H, W) float32 (test mode: (B, V, C, T, H, W)),
``label`` (B,) int64, ``index`` (B,) int64, ``path`` list[str]. With ``repeated_aug = R`` each video yields R clips from
one decode and a batch holds ``batch_size // R`` videos, so it still has ``batch_size`` clips.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

__all__ = ["EpochSampler", "SeededDataset", "build_loader", "collate_clips", "sample_seed", "seed_worker"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch: a function of (run seed, epoch, dataset index) only."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """Shuffles with ``seed + epoch``, shards across ranks like ``DistributedSampler``, yields ``(index, epoch)``, and
    can start part-way through an epoch (exact resume).

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
        self.start = 0  # samples of this rank already consumed in the current epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip the first ``start`` samples of this rank (for resume)."""
        self.epoch, self.start = int(epoch), int(start)

    @property
    def per_rank(self) -> int:
        """Samples this rank gets in a whole epoch."""
        n, w = self.num_samples, self.world_size
        if w == 1:
            return n
        if self.drop_last:
            return n // w
        if self.pad:
            return math.ceil(n / w)
        return len(range(self.rank, n, w))

    def indices(self) -> list[int]:
        """This rank's dataset indices for the whole current epoch, in order."""
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
        return iter([(i, self.epoch) for i in self.indices()[self.start :]])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


class SeededDataset(Dataset):
    """Wraps a map-style dataset: ``ds[(index, epoch)]`` seeds the torch / numpy / python RNGs with
    :func:`sample_seed` (restoring them afterwards) before reading the item, so random augmentations drawn from the
    global RNGs are reproducible per sample regardless of worker assignment and resume point. Datasets whose
    ``takes_epoch`` is true (``VideoClipDataset``, which seeds its own generator with :func:`sample_seed`) get the
    ``(index, epoch)`` key; others get ``index``. A plain int passes through.
    """

    def __init__(self, inner: Dataset, *, seed: int = 0):
        self.inner = inner
        self.seed = seed
        self.takes_epoch = bool(getattr(inner, "takes_epoch", False))

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self.inner[key]
        index, epoch = key
        seed = sample_seed(self.seed, epoch, index)
        py, nps, ts = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.manual_seed(seed)
        try:
            return self.inner[key] if self.takes_epoch else self.inner[index]
        finally:
            random.setstate(py)
            np.random.set_state(nps)
            torch.set_rng_state(ts)


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
    data_cfg=None,
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
    """The DataLoader of training and evaluation: :class:`EpochSampler` over :class:`SeededDataset`.

    Args:
        dataset: map-style dataset (a :class:`~vidtok.data.datasets.VideoClipDataset` or any dataset of dicts); its
            ``repeated_aug`` decides how many clips each training item gives.
        data_cfg: a :class:`~vidtok.config.DataConfig` (batch size, workers, prefetch, pin memory, persistent
            workers); None: ``batch_size`` / ``num_workers`` given here, no persistent workers.
        train: shuffle, pad the shards to equal length and drop the last incomplete batch; else keep order and give
            each sample to exactly one rank.
        seed: run seed: the shuffling and the per-sample seeds.
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
    repeats = int(getattr(dataset, "repeated_aug", 1) or 1) if train else 1
    if batch_size < 1 or batch_size % repeats:
        raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of repeated_aug ({repeats})")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    sampler = EpochSampler(len(dataset), shuffle=train, seed=seed, rank=rank, world_size=world_size, pad=train)
    cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["worker_init_fn"] = seed_worker
        if data_cfg is not None:
            kwargs.update(persistent_workers=data_cfg.persistent_workers, prefetch_factor=data_cfg.prefetch_factor)
    return DataLoader(
        SeededDataset(dataset, seed=seed),
        batch_size=batch_size // repeats,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=bool((data_cfg is None or data_cfg.pin_memory) and cuda),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),  # base seed of the workers, never the global RNG
        **kwargs,
    )
