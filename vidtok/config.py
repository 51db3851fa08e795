"""Run configuration: nested dataclasses with commented defaults, strict YAML loading, dotted overrides, dump.

A recipe (YAML) holds only the differences from the defaults below; ``--set key.sub=value`` on the command line
goes on top. A recipe is a path to a YAML file or the name of one bundled with the package
(``vidtok/configs/<name>.yaml``: one per registry model, the demo and the Kinetics-400 recipes)::

    "demo_vidtok_ti" ──► existing file? ──no──► vidtok/configs/demo_vidtok_ti.yaml ──► YAML ──► Config ◄── overrides
 Unknown keys and wrong types are a :class:`~vidtok.errors.ConfigError` naming the key
and the file. The resolved config is written to every run folder and into every checkpoint, so a model can be
rebuilt from the checkpoint alone.

Example::

    cfg = load_config("vidtok_ti", ["train.lr=3e-4", "data.num_workers=0"])   # or a path: "my_recipe.yaml"
    print(dump_config(cfg))
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from vidtok.errors import ConfigError

__all__ = [
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "apply_overrides",
    "list_recipes",
    "recipe_path",
    "validate_config",
    "check_config_paths",
    "resolved_model_config",
    "read_text",
    "parse_yaml",
    "check_device",
    "VIDEO_BACKENDS",
    "ATTN_BACKENDS",
    "DATA_FORMATS",
]

# vidtok.io.BACKENDS and vidtok.kernels.BACKENDS, named here so that checking a config imports no torch (a test keeps
# them equal)
VIDEO_BACKENDS = ("auto", "pyav", "decord", "torchcodec")
ATTN_BACKENDS = ("auto", "triton", "sdpa", "math")
DATA_FORMATS = ("kinetics", "list", "folder")
# evaluation views: vidtok's evenly spaced windows, or a peer's test-time convention (vidtok.data.clip_sampling)
TEST_SAMPLERS = ("uniform", "mmaction2", "pytorchvideo", "pyslowfast")
AMP_MODES = ("none", "bf16", "fp16")
LOG_SINKS = ("jsonl", "tensorboard")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

RECIPES_DIR = Path(__file__).resolve().parent / "configs"  # package data: ships in the wheel


def list_recipes() -> list[str]:
    """Names of the bundled recipes (``--config NAME``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """The YAML file ``name_or_path`` means: an existing file, else a bundled recipe of that name.

    Raises:
        ConfigError: neither a file nor a bundled recipe (the message lists the recipes).
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = RECIPES_DIR / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if str(p.parent) in ("", ".") and bundled.is_file():
        return bundled
    if p.is_dir():
        raise ConfigError("is a directory, not a config file", source=str(name_or_path))
    raise ConfigError(
        f"config file not found, and not a bundled recipe (bundled: {', '.join(list_recipes())})",
        source=str(name_or_path),
    )


@dataclass
class ModelConfig:
    name: str = "vidtok_ti"  # registry name (`vidtok.list_models()`)
    num_classes: int = 400  # Kinetics-400 unless the data says otherwise (the trainer sets it from the class list)
    # The model's input size is data.num_frames x data.crop_size (one source of truth); these two keys are accepted
    # when they agree with it (older recipes and checkpoints carry them) and refused when they do not.
    num_frames: int | None = None  # null: data.num_frames
    img_size: int | None = None  # null: data.crop_size
    attn_backend: str = "auto"  # spacetime_attention backend: auto | triton | sdpa | math
    drop_path_rate: float = 0.0  # stochastic depth; ViViT fine-tuning uses 0.1-0.3
    dropout: float = 0.0  # dropout before the head
    extra: dict[str, Any] = field(default_factory=dict)  # architecture-specific kwargs for create_model


@dataclass
class DataConfig:
    format: str = "kinetics"  # kinetics (official CSV) | list ("path label") | folder (one folder per class)
    root: str = ""  # folder the videos live under (Kinetics: <root>/<split>/<label>/ or flat)
    train: str = ""  # training annotations: CSV / list file, or a class-folder root
    val: str = ""  # held-out annotations, same format
    classes: str = ""  # class list file or k400 | k600 | k700; empty: derived from the training data
    backend: str = "auto"  # video decoder: auto | torchcodec | decord | pyav
    stream: int = 0  # which video stream of each file, counted among its video streams (0 = the first)
    num_frames: int = 16  # frames per clip
    frame_stride: int = 2  # take every 2nd frame: 16 frames cover ~1.3 s at 25 fps
    crop_size: int = 224  # spatial crop fed to the model
    scale_range: tuple[int, int] = (256, 320)  # training short-side jitter before the random crop
    test_short_side: int = 256  # testing: resize the short side, then centre / three crops
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # ViViT checkpoints expect [-1, 1]: (x - 0.5) / 0.5
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    hflip: bool = True  # off for datasets where left/right carries the label (e.g. synthetic motion direction)
    randaugment: bool = False  # RandAugment on training clips (same op for every frame of a clip)
    randaugment_ops: int = 2  # RandAugment num_ops (VideoMAE / timm rand-m7-n4 style recipes vary it)
    randaugment_magnitude: int = 9  # RandAugment magnitude, of 31 bins
    test_clips: int = 4  # multi-view testing: uniform temporal views (ViViT uses 4, TokShift 10)
    test_crops: int = 1  # 1 = centre crop, 3 = three spatial crops
    test_sampler: str = "uniform"  # where the test_clips views sit: uniform | mmaction2 | pytorchvideo | pyslowfast
    batch_size: int = 8  # per process
    num_workers: int = 2  # DataLoader workers per process; decoding happens there
    prefetch_factor: int = 2
    pin_memory: bool = True  # only takes effect on CUDA
    persistent_workers: bool = True
    repeated_aug: int = 1  # clips sampled per decoded video (VideoMAE-style repeated sampling)
    max_retries: int = 10  # a sample that fails to decode is replaced by another index at most this often


@dataclass
class TrainConfig:
    epochs: int = 30
    max_steps: int = 0  # optimizer steps; > 0 stops earlier than `epochs`
    lr: float = 1e-3  # peak learning rate after warmup
    min_lr: float = 1e-6  # cosine floor
    warmup_steps: int = 0  # linear warmup (optimizer steps); 0 means warmup_epochs decides
    warmup_epochs: float = 2.5
    weight_decay: float = 0.05  # AdamW; not applied to norms, biases, positional embeddings, cls / learned tokens
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0  # batch-level Mixup (0 = off)
    cutmix_alpha: float = 0.0  # batch-level CutMix (0 = off)
    clip_grad: float = 1.0  # max gradient norm; 0 = off
    accum_steps: int = 1  # gradient accumulation: effective batch = batch_size * accum_steps * world_size
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a GradScaler and needs CUDA)
    ema_decay: float = 0.0  # EMA of weights (0 = off); evaluation uses the EMA weights when on
    layer_decay: float = 1.0  # layer-wise lr decay for fine-tuning (1.0 = off)
    init: str = ""  # checkpoint to start from (converted / inflated / trained); head re-initialised if needed
    reinit_head: bool = False  # force a fresh classifier even when the class count matches
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 10  # optimizer steps between log lines / metrics rows
    eval_every: int = 1  # epochs between evaluations on data.val (0 = only at the end)
    ckpt_every: int = 0  # optimizer steps between checkpoints (0 = at each epoch end)
    keep_last: int = 3  # checkpoints kept in the run folder
    compile: bool = False  # torch.compile the model
    grad_checkpointing: bool = False  # recompute each block's activations in backward: less memory, more compute
    log_to: list[str] = field(default_factory=lambda: ["jsonl"])  # + "tensorboard": RUN/tb event files (jsonl stays)
    # control experiment that permutes the frames of every clip (train and eval),
    # destroying motion while keeping appearance; a model that uses motion drops to chance with it
    shuffle_frames: bool = False


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------------------------------
# Strict conversion between plain dicts (YAML) and the dataclasses.


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str | None) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(extra: str = "") -> typing.NoReturn:
        raise ConfigError(
            f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}{extra}", key=key, source=source
        )

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        fail()
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return _from_dict(tp, value, key, source)
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads `1e-3` (no dot) as a string; it is meant as a number
            try:
                return float(value)
            except ValueError:
                fail()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                fail(f" (needs {len(args)} items)")
            return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            fail()
        return dict(value)
    raise ConfigError(f"{key}: unsupported field type {tp}", key=key, source=source)  # pragma: no cover


def _from_dict(cls: type, data: dict, prefix: str, source: str | None, base: Any = None) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            full = f"{prefix}.{k}" if prefix else str(k)
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown key '{full}' (known keys here: {known})", key=full, source=source)
    obj = base if base is not None else cls()
    for k, v in data.items():
        full = f"{prefix}.{k}" if prefix else k
        current = getattr(obj, k)
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict):
            setattr(obj, k, _from_dict(hints[k], v, full, source, base=current))
        else:
            setattr(obj, k, _coerce(v, hints[k], full, source))
    return obj


def config_from_dict(data: dict, *, source: str | None = None, base: Config | None = None) -> Config:
    """Build a :class:`Config` from a nested dict, strictly (unknown keys and wrong types raise ConfigError)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping, got {type(data).__name__}", source=source)
    return _from_dict(Config, data, "", source, base=base if base is not None else Config())


# --------------------------------------------------------------------------------------------------------------------
# Value checks: every entry point (CLI, demo, eval, Python ``train``) runs the same ones on the finished config.


def check_device(device: str, key: str = "train.device") -> str:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``, checked as text (whether CUDA exists is checked where the
    device is opened)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"{key}: unknown device {device!r} (use auto, cpu, cuda or cuda:N)", key=key)
    return device


def check_choice(value: Any, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: unknown value {value!r} (choose one of: {', '.join(choices)})", key=key)


def validate_config(cfg: Config, source: str | None = None) -> Config:
    """Refuse values that cannot work (zero / negative counts, NaN, unknown choices, crops larger than the frames).

    Raises:
        ConfigError: one line naming the first offending key and why.
    """

    def bad(key: str, why: str) -> typing.NoReturn:
        raise ConfigError(f"{key}: {why}", key=key, source=source)

    def num(key: str, v: float, lo: float | None = None, hi: float | None = None, *, lo_open=False, hi_open=False):
        if isinstance(v, float) and not math.isfinite(v):
            bad(key, f"must be a finite number, got {v}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            bad(key, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and (v >= hi if hi_open else v > hi):
            bad(key, f"must be {'<' if hi_open else '<='} {hi}, got {v}")

    m, d, t = cfg.model, cfg.data, cfg.train
    if not m.name:
        bad("model.name", "must name a registry model (see `vidtok info`)")
    check_choice(m.attn_backend, ATTN_BACKENDS, "model.attn_backend")
    num("model.num_classes", m.num_classes, 1)
    for mkey, dkey in (("num_frames", "num_frames"), ("img_size", "crop_size")):
        mv, dv = getattr(m, mkey), getattr(d, dkey)
        if mv is not None and mv != dv:
            bad(
                f"model.{mkey}",
                f"{mv} disagrees with data.{dkey}={dv} (the data decides the model's input; drop model.{mkey})",
            )
    num("model.drop_path_rate", m.drop_path_rate, 0, 1, hi_open=True)
    num("model.dropout", m.dropout, 0, 1, hi_open=True)

    check_choice(d.format, DATA_FORMATS, "data.format")
    check_choice(d.backend, VIDEO_BACKENDS, "data.backend")
    check_choice(d.test_sampler, TEST_SAMPLERS, "data.test_sampler")
    num("data.num_frames", d.num_frames, 1)
    num("data.frame_stride", d.frame_stride, 1)
    num("data.crop_size", d.crop_size, 1)
    num("data.test_short_side", d.test_short_side, 1)
    lo, hi = d.scale_range
    num("data.scale_range[0]", lo, 1)
    if hi < lo:
        bad("data.scale_range", f"must be [min, max] with min <= max, got [{lo}, {hi}]")
    if d.crop_size > d.test_short_side:
        bad("data.crop_size", f"{d.crop_size} is larger than data.test_short_side={d.test_short_side}")
    if d.crop_size > lo:
        bad("data.crop_size", f"{d.crop_size} is larger than the smallest training short side data.scale_range[0]={lo}")
    for i, v in enumerate(d.mean):
        num(f"data.mean[{i}]", v)
    for i, v in enumerate(d.std):
        num(f"data.std[{i}]", v, 0, lo_open=True)
    num("data.randaugment_ops", d.randaugment_ops, 0)
    num("data.randaugment_magnitude", d.randaugment_magnitude, 0, 30)
    num("data.test_clips", d.test_clips, 1)
    if d.test_crops not in (1, 3):
        bad("data.test_crops", f"must be 1 (centre) or 3 (three crops), got {d.test_crops}")
    num("data.batch_size", d.batch_size, 1)
    num("data.num_workers", d.num_workers, 0)
    num("data.prefetch_factor", d.prefetch_factor, 1)
    num("data.repeated_aug", d.repeated_aug, 1)
    num("data.max_retries", d.max_retries, 0)
    num("data.stream", d.stream, 0)

    num("train.epochs", t.epochs, 0)
    num("train.max_steps", t.max_steps, 0)
    if t.epochs == 0 and t.max_steps == 0:
        bad("train.epochs", "must be >= 1 (or set train.max_steps > 0)")
    num("train.lr", t.lr, 0, lo_open=True)
    num("train.min_lr", t.min_lr, 0)
    num("train.warmup_steps", t.warmup_steps, 0)
    num("train.warmup_epochs", t.warmup_epochs, 0)
    num("train.weight_decay", t.weight_decay, 0)
    for i, b in enumerate(t.betas):
        num(f"train.betas[{i}]", b, 0, 1, hi_open=True)
    num("train.label_smoothing", t.label_smoothing, 0, 1, hi_open=True)
    num("train.mixup_alpha", t.mixup_alpha, 0)
    num("train.cutmix_alpha", t.cutmix_alpha, 0)
    num("train.clip_grad", t.clip_grad, 0)
    num("train.accum_steps", t.accum_steps, 1)
    check_choice(t.amp, AMP_MODES, "train.amp")
    num("train.ema_decay", t.ema_decay, 0, 1, hi_open=True)
    num("train.layer_decay", t.layer_decay, 0, 1, lo_open=True)
    check_device(t.device, "train.device")
    num("train.log_every", t.log_every, 1)
    num("train.eval_every", t.eval_every, 0)
    num("train.ckpt_every", t.ckpt_every, 0)
    num("train.keep_last", t.keep_last, 0)
    for sink in t.log_to:
        check_choice(sink, LOG_SINKS, "train.log_to")
    if "jsonl" not in t.log_to:
        bad("train.log_to", f"must include jsonl (vidtok plot and --resume read metrics.jsonl), got {list(t.log_to)}")
    return cfg


def resolved_model_config(cfg: Config) -> ModelConfig:
    """``cfg.model`` with its input size filled in from the data (``num_frames`` = data.num_frames, ``img_size`` =
    data.crop_size): the model a run builds."""
    return dataclasses.replace(cfg.model, num_frames=cfg.data.num_frames, img_size=cfg.data.crop_size)


def check_config_paths(cfg: Config) -> None:
    """The files and folders a training config names exist (checked before anything heavy is imported)."""
    d = cfg.data
    if d.root and not os.path.isdir(d.root):
        raise ConfigError(f"data.root: no such folder: {d.root}", key="data.root")
    for key in ("train", "val"):
        v = getattr(d, key)
        if v and not os.path.exists(v) and not (d.root and os.path.exists(os.path.join(d.root, v))):
            raise ConfigError(f"data.{key}: no such file or folder: {v}", key=f"data.{key}")
    if d.classes and d.classes not in ("k400", "k600", "k700") and not os.path.isfile(d.classes):
        raise ConfigError(f"data.classes: no such file: {d.classes} (or use k400 | k600 | k700)", key="data.classes")
    if cfg.train.init and not os.path.exists(cfg.train.init):
        raise ConfigError(f"train.init: no such file or folder: {cfg.train.init}", key="train.init")


def config_to_dict(cfg: Any) -> dict:
    """Nested plain dict (tuples as lists) suitable for YAML / JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config, path: str | os.PathLike | None = None) -> str:
    """YAML text of the resolved config; also written to ``path`` if given."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


def _field_type(dotted: str) -> Any:
    """Annotation of the field at ``dotted`` in :class:`Config`, or None if there is none."""
    tp: Any = Config
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{p}' is not a section", key=dotted, source="--set")
    node[parts[-1]] = value


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Apply ``key.sub=value`` strings (values parsed as YAML: ``3e-4``, ``true``, ``[1, 2]``) to ``cfg``."""
    data: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value", source="--set")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key", source="--set")
        if _field_type(key) is str:
            value: Any = raw  # `--set model.name=123` means the string
        else:
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
        _set_dotted(data, key, value)
    return config_from_dict(data, source="--set", base=cfg)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML would keep the last one silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_text(path: str | os.PathLike, *, key: str | None = None, what: str = "file") -> str:
    """A user's text file (config, annotations, class list) decoded as UTF-8.

    Raises:
        ConfigError: the file is missing, unreadable, a folder, or not UTF-8 text (naming the byte offset).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", key=key, source=os.fsdecode(path)) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a folder, expected a file", key=key, source=os.fsdecode(path)) from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} ({e.strerror})", key=key, source=os.fsdecode(path)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}); save the {what} as UTF-8",
            key=key,
            source=os.fsdecode(path),
        ) from None


def parse_yaml(text: str, source: str) -> Any:
    """YAML text parsed strictly (safe types only, duplicate keys refused)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None)
        detail = f": {problem}" if problem and "duplicate key" in str(problem) else ""
        raise ConfigError(f"not valid YAML{where}{detail}", source=source) from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the recipe ``path`` (a YAML file or a bundled recipe name; differences only), then
    ``overrides``; the result is validated (:func:`validate_config`).

    Raises:
        ConfigError: the file is missing, not UTF-8 or not YAML, a key is unknown or repeated, or a value has the
            wrong type or an impossible value.
    """
    cfg = Config()
    if path is not None:
        p = recipe_path(path)
        data = parse_yaml(read_text(p, what="config file"), str(p))
        cfg = config_from_dict(data or {}, source=str(p))
    cfg = apply_overrides(cfg, overrides) if overrides else cfg
    return validate_config(cfg, source=str(path) if path is not None and not overrides else None)
