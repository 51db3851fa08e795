"""Distributed data parallel set-up from torchrun's environment, a resumable distributed sampler, and reductions.

Single node, N processes::

    torchrun --nproc-per-node 4 -m vidtok.cli train --config k400_vidtok_b --out runs/k400

Multi-node (run the same line on every node; node 0's address is the rendezvous point)::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint node0.example:29500 --rdzv-id k400 -m vidtok.cli train --config ... --out runs/k400
    # on node 1: the same with --node-rank 1

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them, picks nccl on CUDA and gloo on CPU, and binds each process to ``cuda:LOCAL_RANK``. Without those variables
everything runs as one process and the helpers here are no-ops.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "is_main_process",
    "get_world_size",
    "all_reduce_sum",
    "all_reduce_mean",
    "all_gather_objects",
    "barrier",
    "ResumableSampler",
    "SeededDataset",
    "sample_seed",
]


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def resolve_device(device: str, local_rank: int = 0, *, key: str = "train.device") -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; otherwise the given device, checked
    (one-line :class:`~vidtok.errors.ConfigError` naming ``key`` for an unknown or absent device)."""
    from vidtok.config import check_device
    from vidtok.errors import ConfigError

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
        return torch.device("cpu")
    d = torch.device(check_device(device, key))
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: '{device}' requested but this machine has no CUDA device (use cpu or auto)", key=key)
    if d.type == "cuda" and d.index is None:
        d = torch.device(f"cuda:{local_rank}")
    if d.type == "cuda" and d.index >= torch.cuda.device_count():
        raise ConfigError(
            f"{key}: '{device}' requested but there are {torch.cuda.device_count()} CUDA devices", key=key
        )
    if d.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{key}: '{device}' requested but MPS is not available", key=key)
    return d


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the default process group if launched by torchrun (``WORLD_SIZE`` > 1), else a one-process info."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, backend=backend, device=dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place on a copy); identity in one process."""
    if get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    w = get_world_size()
    return all_reduce_sum(t) / w if w > 1 else t


def all_gather_objects(obj):
    """List of ``obj`` from every rank (rank order); ``[obj]`` in one process."""
    w = get_world_size()
    if w == 1:
        return [obj]
    out = [None] * w
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Data order that can be resumed mid-epoch, and per-sample augmentation seeds


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (run seed, epoch, dataset index)."""
    h = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class ResumableSampler(Sampler):
    """``DistributedSampler`` semantics (a seeded permutation per epoch, padded to a multiple of the world size,
    rank ``r`` taking positions ``r, r + W, ...``) that can start part-way through an epoch. Like
    ``vidtok.data.EpochSampler`` it yields ``(index, epoch)`` pairs, so augmentation randomness is a function of
    (seed, epoch, index), not of which worker process happened to load the sample. Use with :class:`SeededDataset`.

    Args:
        num_samples_total: dataset length.
        shuffle: permute each epoch (training) or keep order (evaluation).
        seed: run seed.
        rank, world_size: this process and the number of processes.
        drop_last: drop the tail instead of padding (no sample repeated across ranks).
    """

    def __init__(
        self,
        num_samples_total: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        if num_samples_total <= 0:
            raise ValueError(f"dataset is empty (num_samples_total={num_samples_total})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.n = num_samples_total
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0  # samples of this rank already consumed in the current epoch
        if drop_last:
            self.per_rank = self.n // world_size
        else:
            self.per_rank = math.ceil(self.n / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip the first ``start`` samples of this rank (for resume)."""
        self.epoch = epoch
        self.start = start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        if total > len(order):
            order = (order * math.ceil(total / len(order)))[:total]
        else:
            order = order[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices()[self.start :]:
            yield (i, self.epoch)

    def __len__(self) -> int:
        return self.per_rank - self.start


class SeededDataset(Dataset):
    """Wraps a map-style dataset: ``ds[(index, epoch)]`` seeds the torch / numpy / python RNGs with
    :func:`sample_seed` (restoring them afterwards) before reading the item, so random augmentations drawn from the
    global RNGs are reproducible per sample regardless of worker assignment and resume point. Datasets that take
    ``(index, epoch)`` keys themselves (``vidtok.data.VideoClipDataset``, which seeds its own generator from them)
    get the key unchanged; others get ``index``. A plain int passes through.
    """

    def __init__(self, inner: Dataset, *, seed: int = 0):
        self.inner = inner
        self.seed = seed
        try:
            from vidtok.data.datasets import VideoClipDataset

            self.pass_epoch = isinstance(inner, VideoClipDataset)
        except ImportError:  # pragma: no cover
            self.pass_epoch = False

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self.inner[key]
        index, epoch = key
        import random

        import numpy as np

        seed = sample_seed(self.seed, epoch, index)
        py, nps, ts = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.manual_seed(seed)
        try:
            return self.inner[key] if self.pass_epoch else self.inner[index]
        finally:
            random.setstate(py)
            np.random.set_state(nps)
            torch.set_rng_state(ts)
