"""vidtok checkpoints: one ``*.safetensors`` file holding the weights, the architecture and the preprocessing.

Format (version 1)::

    tensors   model.state_dict()
    metadata  {"format": "vidtok", "format_version": "1",
               "model": JSON {"name": registry name, "kwargs": {create_model keyword overrides}},
               "pretrained_cfg": JSON {"mean", "std", "num_frames", "frame_stride", "crop_size", "short_side",
                                       "test_clips", "test_crops", "class_names", "interpolation"},
               "config": JSON of the resolved run Config (optional)}

``create_model(name, **kwargs)`` rebuilds the architecture, so a checkpoint needs no code or YAML beside it. On load,
``pretrained_cfg`` also gets timm's derived keys (``input_size``, ``crop_pct``, ``first_conv``, ``classifier``,
``num_classes``; see :func:`make_pretrained_cfg`); they are not stored, so older files load exactly the same.
Nothing is ever unpickled. Every problem with a file is a :class:`~vidtok.errors.CheckpointError` naming the file and
what is wrong with it (missing, not safetensors, truncated, not a vidtok checkpoint, unknown model, shape mismatch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidtok.errors import CheckpointError, one_line, safe_text
from vidtok.preprocessing import Preprocessing

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DEFAULT_PRETRAINED_CFG",
    "TIMM_KEYS",
    "save_model",
    "load_model",
    "read_checkpoint",
    "resolve_checkpoint_path",
    "make_pretrained_cfg",
    "no_weight_init",
]

FORMAT = "vidtok"
FORMAT_VERSION = "1"

# Preprocessing a checkpoint expects unless it says otherwise: Preprocessing's defaults (ViViT's: pixels scaled to
# [-1, 1], 32 frames every 2nd frame, 224 centre crop after resizing the short side to 256, 4 temporal views x 1 crop
# at test time), no class names.
DEFAULT_PRETRAINED_CFG: dict[str, Any] = {**Preprocessing().to_pretrained_cfg(), "class_names": []}
# timm's model contract: keys timm's data-config resolution and tools read. They are derived from the keys above every
# time a pretrained_cfg is completed (so checkpoints written before they existed load with them, and they never
# disagree with crop_size / short_side); ``interpolation`` is the one stored setting among them.
TIMM_KEYS = ("input_size", "interpolation", "crop_pct", "first_conv", "classifier", "num_classes")

_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own cap on the JSON header


def make_pretrained_cfg(model: nn.Module | None = None, **overrides: Any) -> dict[str, Any]:
    """A complete ``pretrained_cfg``, the one place the dict is built: defaults, then ``model`` sizes and
    ``model.pretrained_cfg``, then overrides, read through :class:`~vidtok.preprocessing.Preprocessing`; then
    ``class_names`` and timm's keys derived from them (:data:`TIMM_KEYS`: ``input_size`` (C, H, W),
    ``interpolation``, ``crop_pct`` = crop_size / short_side, ``first_conv``, ``classifier``, ``num_classes``).

    ``num_frames`` and ``crop_size`` default to the model's own ``model_kwargs`` (``num_frames`` / ``img_size``) when
    present, so a checkpoint of a 16-frame 160² model says so even if nobody filled them in.
    """
    cfg: dict[str, Any] = {}
    if model is not None:
        kwargs = getattr(model, "model_kwargs", None) or {}
        if "num_frames" in kwargs:
            cfg["num_frames"] = kwargs["num_frames"]
        if "img_size" in kwargs and isinstance(kwargs["img_size"], int):
            cfg["crop_size"] = kwargs["img_size"]
        cfg.update(dict(getattr(model, "pretrained_cfg", None) or {}))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    prep = Preprocessing.from_pretrained_cfg(cfg)
    out = prep.to_pretrained_cfg()
    interpolation = out.pop("interpolation")
    out["class_names"] = [str(c) for c in cfg.get("class_names") or []]
    out.update({k: v for k, v in cfg.items() if k not in out and k not in TIMM_KEYS})  # other keys pass through
    patch_embed = getattr(model, "patch_embed", None)
    in_chans = int(getattr(patch_embed, "in_chans", 3))
    out["input_size"] = [in_chans, prep.crop_size, prep.crop_size]  # timm (C, H, W); frames in num_frames
    out["interpolation"] = interpolation  # the test-time short-side resize
    out["crop_pct"] = round(prep.crop_size / max(prep.short_side, 1), 4)  # resize to crop / crop_pct, centre crop
    out["first_conv"] = "patch_embed.proj"
    out["classifier"] = "head"
    if model is not None and hasattr(model, "num_classes"):
        out["num_classes"] = int(model.num_classes)
    return out


def _config_json(config: Any) -> str:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        from vidtok.config import config_to_dict

        config = config_to_dict(config)
    try:
        return json.dumps(config)
    except TypeError as e:
        raise CheckpointError(f"config is not JSON-serialisable: {e}") from e


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    pretrained_cfg: dict[str, Any] | None = None,
    config: Any = None,
) -> Path:
    """Write ``model`` as a vidtok checkpoint (weights + architecture + preprocessing) that :func:`load_model` opens.

    Args:
        model: a vidtok model (it must carry ``model_name`` and ``model_kwargs``, as ``create_model`` sets them).
        path: the ``.safetensors`` file to write (parent folders are created; written atomically).
        pretrained_cfg: preprocessing and class names; missing keys come from ``model.pretrained_cfg`` and
            :data:`DEFAULT_PRETRAINED_CFG`.
        config: the resolved run config (a ``vidtok.config.Config`` or a plain dict), stored as JSON.

    Returns:
        The path written.
    """
    from vidtok.files import save_safetensors

    path = Path(path)
    # unwrap torch.compile (OptimizedModule._orig_mod) and DDP / DataParallel (.module): their state_dict keys carry a
    # prefix the rebuilt model would not have
    for _ in range(3):
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else None
        )
        if inner is None:
            break
        model = inner
    name = getattr(model, "model_name", None)
    if not name:
        raise CheckpointError(f"{path}: model has no `model_name`; build it with vidtok.create_model")
    kwargs = dict(getattr(model, "model_kwargs", None) or {})
    try:
        model_json = json.dumps({"name": name, "kwargs": kwargs})
    except TypeError as e:
        raise CheckpointError(f"{path}: model_kwargs of {name!r} are not JSON-serialisable: {e}") from e
    cfg = make_pretrained_cfg(model, **(pretrained_cfg or {}))
    cfg = {k: v for k, v in cfg.items() if k not in TIMM_KEYS or k == "interpolation"}  # the rest is derived on load
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_json,
        "pretrained_cfg": json.dumps(cfg),
    }
    if config is not None:
        metadata["config"] = _config_json(config)
    return save_safetensors(path, model.state_dict(), metadata)


_INIT_FNS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip


@contextlib.contextmanager
def no_weight_init() -> Iterator[None]:
    """Skip ``torch.nn.init`` while building a model whose every weight is loaded right after.

    Random initialisation dominates building a ViT-B (tens of seconds on a busy 2-core machine); weights loaded with
    ``strict=True`` overwrite every parameter and persistent buffer anyway. Buffers computed directly (the fixed
    sincos table) are unaffected. Restores the functions on exit; not thread-safe (like HF's ``no_init_weights``).
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FNS if hasattr(nn.init, name)}

    def skip(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    try:
        for name in saved:
            setattr(nn.init, name, skip)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or for a run folder RUN/model.safetensors, else the newest RUN/checkpoints/*.safetensors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_file():
        return path
    final = path / "model.safetensors"
    if final.is_file():
        return final
    ckpts = sorted(
        (p for p in (path / "checkpoints").glob("*.safetensors") if not p.name.startswith(".")),  # skip temp files
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    if ckpts:
        return ckpts[-1]
    raise CheckpointError(f"{path}: folder has neither model.safetensors nor checkpoints/*.safetensors")


def read_header_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, or ``{}`` when ``path`` is not a readable safetensors file."""
    try:
        header = _read_header(Path(path))
    except (CheckpointError, OSError):
        return {}
    meta = header.get("__metadata__")
    return meta if isinstance(meta, dict) else {}


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and check the safetensors header ourselves, for messages that say what is wrong."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, too short for a header)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _HEADER_LIMIT:
            raise CheckpointError(f"{path}: not a safetensors file (header length {n} is implausible)")
        if 8 + n > size:
            raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {n} bytes, file {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file or corrupt header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors header (bad entry for tensor {key!r})") from None
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated (tensor data needs {8 + n + end} bytes, file has {size})")
    return header


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a vidtok checkpoint file or run folder, validated.

    Returns:
        ``(state_dict, meta)`` with ``meta = {"path", "model": {"name", "kwargs"}, "pretrained_cfg": {...},
        "config": dict | None, "format_version"}``; parameter names of older checkpoints are mapped to the
        current ones (:func:`vidtok.models.vivit.upgrade_state_dict`).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_checkpoint_path(path)
    header = _read_header(path)
    raw = header.get("__metadata__") or {}
    fmt = raw.get("format")
    if fmt != FORMAT:
        hint = ""
        if fmt in ("pt", "tf", "flax", "np", None):
            hint = "; convert it first with `vidtok convert SRC OUT`"
        raise CheckpointError(f"{path}: not a vidtok checkpoint (metadata format={fmt!r}, expected 'vidtok'){hint}")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported vidtok format_version {version!r} (this vidtok reads '1')")
    meta: dict[str, Any] = {"path": str(path), "format_version": version}
    for key, required in (("model", True), ("pretrained_cfg", True), ("config", False)):
        if key not in raw:
            if required:
                raise CheckpointError(f"{path}: metadata lacks {key!r}")
            meta[key] = None
            continue
        try:
            meta[key] = json.loads(raw[key])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON ({e})") from None
    model = meta["model"]
    if (
        not isinstance(model, dict)
        or not isinstance(model.get("name"), str)
        or not isinstance(model.get("kwargs", {}), dict)
    ):
        raise CheckpointError(f"{path}: metadata 'model' must be {{'name': str, 'kwargs': dict}}, got {model!r}")
    model.setdefault("kwargs", {})
    if not isinstance(meta["pretrained_cfg"], dict):
        raise CheckpointError(f"{path}: metadata 'pretrained_cfg' must be a JSON object")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors data ({one_line(str(e))})") from None
    from vidtok.models.vivit import upgrade_state_dict

    return upgrade_state_dict(tensors), meta


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Open a vidtok checkpoint (trained or converted): the model in eval mode with ``.pretrained_cfg`` attached.

    Args:
        path: a ``.safetensors`` checkpoint, or a run folder (RUN/model.safetensors, else the newest checkpoint in
            RUN/checkpoints/).
        device: where to put the model.

    Returns:
        The model; ``model.pretrained_cfg`` holds mean, std, num_frames, frame_stride, crop_size, short_side,
        test_clips, test_crops and class_names; ``model.checkpoint_config`` the stored run config (or None).

    A run folder whose newest file is unusable (truncated by a kill, corrupt) falls back to the previous one with a
    warning, as ``vidtok train --resume`` does.

    Raises:
        CheckpointError: naming the file and what is wrong with it (for a run folder: when none of its files loads).
    """
    p = Path(path)
    if not p.is_dir():
        return _load_model_file(p, device)
    candidates = [p / "model.safetensors"] if (p / "model.safetensors").is_file() else []
    ckpts = sorted(
        (c for c in (p / "checkpoints").glob("*.safetensors") if not c.name.startswith(".")),
        key=lambda c: (c.stat().st_mtime, c.name),
    )
    candidates += ckpts[::-1]
    if not candidates:
        resolve_checkpoint_path(p)  # raises the one-line "neither model.safetensors nor checkpoints" error
    errors: list[str] = []
    for c in candidates:
        try:
            model = _load_model_file(c, device)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            import warnings

            warnings.warn(safe_text(f"{errors[0]}; loaded {c} instead"), RuntimeWarning, stacklevel=2)
        return model
    raise CheckpointError(f"{p}: no usable checkpoint ({len(errors)} tried; newest: {errors[0]})")


def _load_model_file(path: Path, device: str | torch.device) -> nn.Module:
    from vidtok.models import create_model

    state, meta = read_checkpoint(path)
    path = meta["path"]
    name, kwargs = meta["model"]["name"], meta["model"]["kwargs"]
    try:
        with no_weight_init():  # every tensor is loaded below (strict)
            model = create_model(name, **kwargs)
    except CheckpointError:
        raise
    except Exception as e:  # unknown name (KeyError/ValueError from the registry) or kwargs it rejects
        raise CheckpointError(f"{path}: cannot build model {name!r} with {kwargs}: {one_line(str(e))}") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{path}: weights do not match model {name!r}: {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{path}: shape mismatch for {k!r}: checkpoint {tuple(state[k].shape)}, model {name!r} expects "
                f"{tuple(v.shape)}"
            )
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg = make_pretrained_cfg(model, **meta["pretrained_cfg"])
    model.checkpoint_config = meta["config"]
    return model.to(device).eval()
