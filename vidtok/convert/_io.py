"""Reading foreign weight files safely: safetensors, or PyTorch ``.bin`` / ``.pth`` with ``weights_only=True``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vidtok.errors import CheckpointError, exception_line, one_line

__all__ = ["read_state_dict", "read_json", "find_weight_files"]

_SAFE_NAMES = ("model.safetensors", "model.safetensors.index.json")
_BIN_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def find_weight_files(folder: Path) -> list[Path]:
    """The weight file(s) of a HF-style model folder: safetensors preferred, then pytorch_model.bin; shards listed
    by their ``*.index.json``."""
    for name in (*_SAFE_NAMES, *_BIN_NAMES):
        p = folder / name
        if p.is_file():
            if name.endswith(".index.json"):
                index = read_json(p)
                shards = sorted(set((index.get("weight_map") or {}).values()))
                if not shards:
                    raise CheckpointError(f"{p}: index lists no weight files")
                return [folder / s for s in shards]
            return [p]
    others = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")) or sorted(folder.glob("*.pth"))
    if len(others) == 1:
        return others
    if not others:
        raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin in this folder")
    raise CheckpointError(f"{folder}: several weight files ({', '.join(p.name for p in others)}); pass one of them")


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    pickled = head[:2] == b"PK" or head[:1] == b"\x80"  # torch zip archive or legacy pickle
    if path.suffix == ".safetensors" or not pickled:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            if path.suffix == ".safetensors":
                raise CheckpointError(f"{path}: not a valid safetensors file ({one_line(str(e))})") from None
            if not pickled:
                raise CheckpointError(
                    f"{path}: not a weights file (neither safetensors nor a PyTorch checkpoint; it starts with "
                    f"{head!r})"
                ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad or unsafe files
        raise CheckpointError(f"{path}: cannot read as a weights-only PyTorch file ({exception_line(e)})") from None
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A plain ``name -> tensor`` dict, from the common wrappers ({"model": sd}, {"state_dict": sd}, ...)."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, dict):
            for key in ("model", "state_dict", "module", "model_state"):
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
            else:
                break
        else:
            break
    raise CheckpointError(f"{path}: not a state dict (expected a mapping of names to tensors)")


def read_state_dict(paths: str | os.PathLike | list[Path]) -> dict[str, torch.Tensor]:
    """Tensors from one weight file or a list of shards, without unpickling arbitrary objects."""
    if not isinstance(paths, list):
        paths = [Path(paths)]
    state: dict[str, torch.Tensor] = {}
    for p in paths:
        state.update(_read_one(Path(p)))
    return state
