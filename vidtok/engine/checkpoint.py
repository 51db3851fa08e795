"""Training checkpoints: safetensors weights + a state file, written atomically, the last K kept.

Layout inside a run folder::

    RUN/checkpoints/ckpt_00001200.safetensors   model weights in the vidtok single-file format (loadable by
                                                 vidtok.load_model on its own)
    RUN/checkpoints/ckpt_00001200.state.pt      optimizer, scaler, schedule, step, epoch, data position, RNG
                                                 states (torch / CUDA / numpy / python), EMA weights, config,
                                                 class names, and the sha256 of the weights file

Both files are written by :func:`vidtok.files.atomic_write` (a temporary name in the same folder, fsync'ed and
renamed; ``os.replace`` is atomic on POSIX), the state file last, so a crash leaves either a complete checkpoint or
none. The state file holds only tensors and plain Python containers: it is written with ``torch.save`` and read with
``torch.load(weights_only=True)`` (nothing is unpickled as code). A truncated, corrupt or mismatching checkpoint
raises :class:`CheckpointError`; :func:`load_latest` then falls back to the previous good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidtok.errors import CheckpointError, exception_line
from vidtok.files import atomic_write, save_safetensors

__all__ = [
    "CKPT_DIR",
    "weights_metadata",
    "load_weights",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "load_latest",
    "prune_checkpoints",
    "capture_rng_state",
    "restore_rng_state",
]

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt_(\d{8,})\.safetensors$")


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Weights (vidtok single-file safetensors format, see docs/checkpoints.md)


def weights_metadata(
    model: nn.Module | None, *, pretrained_cfg: dict | None = None, config: dict | None = None
) -> dict[str, str]:
    """The safetensors metadata of the vidtok format for ``model`` (name / kwargs when the model has them)."""
    meta = {"format": "vidtok", "format_version": "1"}
    name = getattr(model, "model_name", None) if model is not None else None
    if name is not None:
        meta["model"] = json.dumps({"name": name, "kwargs": dict(getattr(model, "model_kwargs", {}) or {})})
    if pretrained_cfg is not None:
        meta["pretrained_cfg"] = json.dumps(pretrained_cfg)
    if config is not None:
        meta["config"] = json.dumps(config)
    return meta


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; any read problem is a :class:`CheckpointError` naming the file. Parameter names of
    older checkpoints are mapped to the current ones (:func:`vidtok.models.vivit.upgrade_state_dict`)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises SafetensorError / OSError on truncated or garbled files
        raise CheckpointError(f"{path}: not a readable safetensors file ({exception_line(e)})") from e
    from vidtok.models.vivit import upgrade_state_dict

    return upgrade_state_dict(tensors), meta


# --------------------------------------------------------------------------------------------------------------------
# RNG state as tensors / plain lists (loadable with weights_only=True)


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and, if initialised, CUDA) as tensors and plain lists."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints


def ckpt_paths(run_dir: str | os.PathLike, step: int) -> tuple[Path, Path]:
    d = Path(run_dir) / CKPT_DIR
    return d / f"ckpt_{step:08d}.safetensors", d / f"ckpt_{step:08d}.state.pt"


def save_checkpoint(
    run_dir: str | os.PathLike,
    *,
    step: int,
    model_state: dict[str, torch.Tensor],
    weights_meta: dict[str, str],
    state: dict[str, Any],
    keep_last: int = 0,
) -> Path:
    """Write ``ckpt_<step>.safetensors`` and ``ckpt_<step>.state.pt`` atomically; prune to ``keep_last`` (0 = all).

    ``state`` must hold only tensors and plain containers (checked on write by loading it back with
    ``weights_only=True`` semantics on read). The sha256 of the weights file is added so a weights file that was
    swapped or damaged after the fact is caught on resume.

    Returns:
        The weights path.
    """
    wpath, spath = ckpt_paths(run_dir, step)
    save_safetensors(wpath, model_state, weights_meta)
    full = dict(state)
    full["step"] = int(step)
    full["weights_file"] = wpath.name
    full["weights_sha256"] = _sha256(wpath)
    atomic_write(spath, lambda tmp: torch.save(full, tmp))
    if keep_last > 0:
        prune_checkpoints(run_dir, keep_last, keep=wpath)
    return wpath


def load_checkpoint(weights_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """Load a checkpoint written by :func:`save_checkpoint` (weights path or its ``.state.pt``).

    Returns:
        ``(model_state, weights_metadata, state)``.

    Raises:
        CheckpointError: a file is missing, truncated, corrupt, or the weights do not match the recorded hash.
    """
    p = Path(weights_path)
    if p.name.endswith(".state.pt"):
        p = p.with_name(p.name[: -len(".state.pt")] + ".safetensors")
    spath = p.with_name(p.name[: -len(".safetensors")] + ".state.pt")
    if not spath.is_file():
        raise CheckpointError(f"{spath}: training state file not found (incomplete checkpoint)")
    try:
        state = torch.load(spath, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{spath}: corrupt or truncated state file ({exception_line(e)})") from e
    if not isinstance(state, dict) or "weights_sha256" not in state:
        raise CheckpointError(f"{spath}: not a vidtok training state file")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint weights file not found")
    if _sha256(p) != state["weights_sha256"]:
        raise CheckpointError(f"{p}: weights file does not match the hash recorded in {spath.name} (corrupt)")
    tensors, meta = load_weights(p)
    return tensors, meta, state


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Weights files of the run's checkpoints, oldest (lowest step) first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest(
    run_dir: str | os.PathLike, *, warn: Callable[[str], None] | None = None
) -> tuple[Path, dict[str, torch.Tensor], dict[str, str], dict]:
    """Newest checkpoint of ``run_dir`` that loads; corrupt ones are reported through ``warn`` and skipped.

    Raises:
        CheckpointError: there is no checkpoint, or none of them loads.
    """
    paths = list_checkpoints(run_dir)
    if not paths:
        raise CheckpointError(f"{Path(run_dir) / CKPT_DIR}: no checkpoints to resume from")
    errors = []
    for p in reversed(paths):
        try:
            tensors, meta, state = load_checkpoint(p)
        except CheckpointError as e:
            errors.append(str(e))
            if warn is not None:
                warn(f"skipping unusable checkpoint: {e}")
            continue
        return p, tensors, meta, state
    raise CheckpointError(f"{run_dir}: no usable checkpoint ({len(errors)} tried; newest: {errors[0]})")


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int, *, keep: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (both files); ``keep`` (the one just written) is never
    deleted, even when older-named files of higher steps are around. Returns the deleted weights paths."""
    paths = list_checkpoints(run_dir)
    if keep is not None and Path(keep) in paths:
        paths.remove(Path(keep))
        keep_last -= 1
    doomed = paths[: max(0, len(paths) - max(keep_last, 0))]
    for p in doomed:
        p.with_name(p.name[: -len(".safetensors")] + ".state.pt").unlink(missing_ok=True)
        p.unlink(missing_ok=True)
    return doomed
