"""Atomic file writes: the one writer of safetensors files (trained models, converted models, training checkpoints).

::

    tensors + metadata ──save_safetensors──► atomic_write: temp file next to PATH (".PATH.XXXX.tmp")
        ──► write ──► chmod to the user's umask ──► fsync ──► os.replace(tmp, PATH) ──► fsync(folder)

A crash leaves the old file or the new one, never half of one; a killed writer's temp file is cleaned up by the next
run (:func:`vidtok.engine.run_dir.remove_stale_tmp`). Below ``vidtok.models`` and ``vidtok.engine``, so both use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from vidtok.errors import CheckpointError

__all__ = ["atomic_write", "file_mode", "save_safetensors"]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0o666 & ~umask), as ``open()`` would create it."""
    try:  # Linux: read it without changing it (os.umask sets and returns; not thread-safe)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return 0o666 & ~old


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file next to ``path``, fsync it, and rename it over ``path``.

    The file gets the permissions of any file the user creates (their umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # after write(): a writer may have replaced the file (safetensors does)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights, views): clone the second and later views; CPU."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in state.items():
        v = v.detach()
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else (id(v), 0)
        if key in seen or not v.is_contiguous():
            v = v.clone().contiguous()
        else:
            seen.add(key)
        out[k] = v.cpu() if v.device.type != "cpu" else v
    return out


def save_safetensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` (a state dict) with string ``metadata`` as a safetensors file at ``path``, atomically.

    Raises:
        CheckpointError: the file cannot be written (one line naming it and the reason).
    """
    from safetensors.torch import save_file

    flat = _unshared(tensors)
    try:
        return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata or {}))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e})") from None
