"""Process groups from torchrun's environment and the collective helpers training, evaluation and inference use.

Single node, N processes::

    torchrun --nproc-per-node 4 -m vidtok.cli train --config k400_vidtok_b --out runs/k400

Multi-node (run the same line on every node; node 0's address is the rendezvous point)::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint node0.example:29500 --rdzv-id k400 -m vidtok.cli train --config ... --out runs/k400
    # on node 1: the same with --node-rank 1

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``::

    environment ──env_ranks──► (rank, local_rank, world)
      ──init_distributed(device)──► DistInfo (nccl on CUDA, gloo on CPU; the process bound to cuda:LOCAL_RANK)
      ──gloo_group(timeout)──────► a CPU group for barriers / counts next to an nccl training group (inference)
    barrier / all_reduce_sum / all_gather_objects: collectives over the default (or a given) group

Without those variables everything runs as one process and the collectives are identities. The data order of a
distributed run (sharding, resumable epochs, per-sample seeds) is :mod:`vidtok.data.loader`; device strings and
autocast are :mod:`vidtok.engine.device`.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from vidtok.engine.device import resolve_device

__all__ = [
    "DistInfo",
    "env_ranks",
    "init_distributed",
    "gloo_group",
    "world_size",
    "barrier",
    "all_reduce_sum",
    "all_gather_objects",
]


@dataclass
class DistInfo:
    """This process's place in the run: rank, GPU slot, process count, backend and device."""

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


def env_ranks() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment; ``(0, 0, 1)`` outside torchrun."""
    return _env_int("RANK", 0), _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1)


def init_distributed(device: str = "auto", *, key: str = "train.device") -> DistInfo:
    """Initialise the default process group if launched by torchrun (``WORLD_SIZE`` > 1), else a one-process info."""
    rank, local_rank, world = env_ranks()
    dev = resolve_device(device, local_rank, key=key)
    if world <= 1:
        return DistInfo(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, backend=backend, device=dev)


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gloo_group(timeout: timedelta) -> Any:
    """A CPU (gloo) group under torchrun: None = the default group, initialised here as gloo if nobody has yet
    (destroyed at exit; it stays up for later calls, as re-creating it under torchrun can hang); a new gloo subgroup
    when the default group is nccl. ``timeout`` bounds every wait on it."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timeout)
        atexit.register(_destroy_group)
        return None
    if dist.get_backend() != "gloo":
        return dist.new_group(backend="gloo", timeout=timeout)
    return None


def world_size() -> int:
    """Processes in the default group (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier(group: Any = None) -> None:
    if world_size() > 1:
        dist.barrier(group=group)


def all_reduce_sum(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Sum over ranks (on a copy); identity in one process."""
    if world_size() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def all_gather_objects(obj: Any, group: Any = None) -> list:
    """List of ``obj`` from every rank (rank order); ``[obj]`` in one process."""
    w = world_size()
    if w == 1:
        return [obj]
    out = [None] * w
    dist.all_gather_object(out, obj, group=group)
    return out
