"""What a training run folder holds, and the rules for reusing one (no torch import: the CLI checks before loading).

::

    RUN/config.yaml  metrics.jsonl  model.safetensors  bad_files.txt  tb/
    RUN/checkpoints/ckpt_<step>.safetensors  ckpt_<step>.state.pt

``vidtok train --out RUN`` refuses a folder that already holds a run unless ``--resume`` (continue it) or
``--overwrite`` (delete the run's files, then start again); other files in RUN are left alone. Temporary files a
killed checkpoint write left behind (``checkpoints/.ckpt_*.tmp``) are removed when a run starts or resumes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vidtok.errors import ConfigError

__all__ = ["RUN_FILES", "RUN_DIRS", "has_run", "check_run_dir", "clear_run", "remove_stale_tmp"]

RUN_FILES = ("config.yaml", "metrics.jsonl", "model.safetensors", "bad_files.txt")
RUN_DIRS = ("checkpoints", "tb")


def has_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds any file or folder of a training run."""
    d = Path(run_dir)
    return any((d / n).exists() for n in (*RUN_FILES, *RUN_DIRS))


def check_run_dir(run_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run over another one (one line, exit 2) unless ``resume`` or ``overwrite``.

    Raises:
        ConfigError: ``--resume`` with ``--overwrite``, ``--resume`` of a folder without a run, an existing run
            without either flag, or ``--out`` naming a file.
    """
    d = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other (continue the run, or start it again)")
    if d.exists() and not d.is_dir():
        raise ConfigError(f"--out {d}: is a file, expected a run folder", key="out")
    if resume:
        if not (d / "checkpoints").is_dir():
            raise ConfigError(f"--resume: {d} has no checkpoints/ to resume from", key="out")
        return
    if has_run(d) and not overwrite:
        raise ConfigError(
            f"{d} already holds a training run; pass --resume to continue it or --overwrite to start again",
            key="out",
        )


def clear_run(run_dir: str | os.PathLike) -> None:
    """Delete the files and folders of a run (``--overwrite``); anything else in the folder stays."""
    d = Path(run_dir)
    for n in RUN_FILES:
        (d / n).unlink(missing_ok=True)
    for n in RUN_DIRS:
        shutil.rmtree(d / n, ignore_errors=True)


def remove_stale_tmp(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporaries left by a process killed while writing (``.NAME.XXXX.tmp``, ``*.part.safetensors``)."""
    d = Path(run_dir)
    gone = []
    for folder in (d, d / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            stale = (p.name.startswith(".") and p.name.endswith(".tmp")) or p.name.endswith(".part.safetensors")
            if stale and p.is_file():
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone
