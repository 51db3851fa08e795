"""How a model's pixels are prepared: :class:`Preprocessing`, the one description and the one implementation.

A checkpoint carries it (``pretrained_cfg``), a run config describes it (``DataConfig``), and every evaluation-time
consumer cuts its views with it: the dataset's eval transform, the classify / embed decode workers, ``vidtok viz``,
``vidtok eval`` and the export metadata. Training augmentation takes its crop size and normalisation from it::

    checkpoint pretrained_cfg ─► Preprocessing.from_pretrained_cfg ─┐
    run config DataConfig     ─► Preprocessing.from_data_config   ──┤
                                                                    ▼
    uint8 (T, H, W, 3) ─► resize (short side) ─► crop boxes ─► cut_views: uint8 (V, 3, T, c, c) ─► normalize: float32
                          io.backends.common     centre or 3       clip-major views                (x/255 - mean)/std
                          .resize_short_side      along the long side

The resize is :func:`vidtok.io.backends.common.resize_short_side` (torchvision's antialiased bilinear on uint8), the
one a decoder applies at decode time (``open_video(..., short_side=)``), so resizing while decoding and after decoding
give the same pixels. This module imports no torchvision: decode workers use it. It sits below ``vidtok.models`` (the
checkpoint format reads ``pretrained_cfg`` through it) and above ``vidtok.io`` (its resize); ``vidtok.data`` re-exports
it as ``vidtok.data.Preprocessing``.

Example::

    prep = Preprocessing.from_pretrained_cfg(model.pretrained_cfg)
    x = prep.eval_views(frames)           # (test_crops, 3, T, crop, crop) float32, frames: uint8 (T, H, W, 3)
    cfg = prep.to_pretrained_cfg()        # the keys a checkpoint stores (the writer adds class_names)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vidtok.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["Preprocessing", "normalize", "PIXEL_KEYS"]

# The pretrained_cfg keys that decide pixels, in the order checkpoints store them.
PIXEL_KEYS = (
    "mean",
    "std",
    "num_frames",
    "frame_stride",
    "crop_size",
    "short_side",
    "test_clips",
    "test_crops",
    "interpolation",
)
# Preprocessing attribute -> DataConfig field (a run config describes everything but the interpolation).
_DATA_FIELDS = {k: k for k in PIXEL_KEYS if k != "interpolation"}
_DATA_FIELDS["short_side"] = "test_short_side"
_INT_KEYS = ("num_frames", "frame_stride", "crop_size", "short_side", "test_clips", "test_crops")


def _normalizer_tensors(mean: Sequence[float], std: Sequence[float], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=device).view(3, 1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32, device=device)
    return scale, shift.view(3, 1, 1, 1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(..., 3, T, H, W)`` -> float32 ``(x / 255 - mean) / std`` per channel, the same layout.

    One float copy of ``x``, scaled and shifted in place: ``x * (1 / (255 std)) + (-mean / std)``.
    """
    scale, shift = _normalizer_tensors(mean, std, x.device)
    return _scale_shift(x, scale, shift)


def _scale_shift(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    import torch

    return x.to(torch.float32).mul_(scale).add_(shift)


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its input pixels, and the operations that produce them.

    Attributes:
        mean, std: per-channel statistics of [0, 1] pixels (ViViT: 0.5 / 0.5, i.e. pixels in [-1, 1]).
        num_frames: frames per clip.
        frame_stride: take every ``frame_stride``-th frame.
        crop_size: square crop fed to the model.
        short_side: testing resizes the shorter side to this many pixels before cropping.
        test_clips: uniform temporal views at test time.
        test_crops: 1 (centre crop) or 3 (start, centre, end of the long side).
        interpolation: the short-side resize (timm's name; the resize is antialiased bilinear).
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    num_frames: int = 32
    frame_stride: int = 2
    crop_size: int = 224
    short_side: int = 256
    test_clips: int = 4
    test_crops: int = 1
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        for key in ("mean", "std"):
            v = tuple(float(x) for x in getattr(self, key))
            if len(v) != 3:
                raise ConfigError(f"{key} needs 3 values (one per RGB channel), got {list(v)}", key=key)
            object.__setattr__(self, key, v)
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be > 0, got {list(self.std)}", key="std")
        for key in _INT_KEYS:
            object.__setattr__(self, key, int(getattr(self, key)))
        object.__setattr__(self, "interpolation", str(self.interpolation or "bilinear"))

    # -- conversions -------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained_cfg(cls, cfg: Mapping[str, Any]) -> Preprocessing:
        """Read the pixel keys of a ``pretrained_cfg`` (missing ones take the defaults; other keys are ignored)."""
        return cls(**{k: cfg[k] for k in PIXEL_KEYS if cfg.get(k) is not None})

    def to_pretrained_cfg(self) -> dict[str, Any]:
        """The pixel keys as a checkpoint stores them (JSON types: lists and ints)."""
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return {k: out[k] for k in PIXEL_KEYS}

    @classmethod
    def from_data_config(cls, data: Any) -> Preprocessing:
        """What a run's :class:`~vidtok.config.DataConfig` describes (``test_short_side`` is ``short_side``)."""
        return cls(**{k: getattr(data, field) for k, field in _DATA_FIELDS.items()})

    def data_config_fields(self) -> dict[str, Any]:
        """The :class:`~vidtok.config.DataConfig` fields this describes (for ``dataclasses.replace(data, **...)``)."""
        return {field: getattr(self, k) for k, field in _DATA_FIELDS.items()}

    def replace(self, **changes: Any) -> Preprocessing:
        return dataclasses.replace(self, **changes)

    def check(self, where: str = "preprocessing") -> Preprocessing:
        """Refuse values no evaluation view can be cut with; returns self.

        Raises:
            ConfigError: one line naming ``where`` and the key.
        """
        if self.crop_size < 1 or self.short_side < self.crop_size:
            raise ConfigError(
                f"{where}: short_side {self.short_side} < crop_size {self.crop_size}"
                " (need 1 <= crop_size <= short_side)",
                key="crop_size",
            )
        for key in ("num_frames", "frame_stride", "test_clips"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}: {key} must be >= 1, got {getattr(self, key)}", key=key)
        if self.test_crops not in (1, 3):
            raise ConfigError(f"{where}: test_crops must be 1 or 3, got {self.test_crops}", key="test_crops")
        return self

    # -- geometry ----------------------------------------------------------------------------------------------------
    def resize_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` after resizing the short side to :attr:`short_side` (aspect ratio kept)."""
        from vidtok.io.backends.common import short_side_size

        return short_side_size(height, width, self.short_side)

    def crop_boxes(self, height: int, width: int, crops: int | None = None) -> list[tuple[int, int]]:
        """Top-left corners of the ``crops`` (default :attr:`test_crops`) square crops in a resized frame: the centre,
        or the start, centre and end of the long side (PySlowFast's three-crop test)."""
        crops = self.test_crops if crops is None else crops
        c = self.crop_size
        cy, cx = (height - c) // 2, (width - c) // 2
        if crops == 1:
            return [(cy, cx)]
        if crops != 3:
            raise ConfigError(f"test_crops must be 1 or 3, got {crops}", key="test_crops")
        if height > width:  # portrait: crops along the height
            return [(0, cx), (cy, cx), (height - c, cx)]
        return [(cy, 0), (cy, cx), (cy, width - c)]

    # -- pixels ------------------------------------------------------------------------------------------------------
    def resize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., H, W, 3)`` with the short side resized to :attr:`short_side`."""
        from vidtok.io.backends.common import resize_short_side

        return resize_short_side(frames, self.short_side)

    def cut_views(self, frames: Any, clip_rows: Sequence[Sequence[int]], crops: int | None = None) -> np.ndarray:
        """Views of already resized frames, uint8 ``(V, 3, T, crop, crop)``, V = clips x crops, clip-major.

        Args:
            frames: uint8 ``(U, rh, rw, 3)`` (NumPy or CPU tensor), the resized frames.
            clip_rows: for each clip, the ``num_frames`` rows of ``frames`` it is made of.
            crops: spatial crops per clip (default :attr:`test_crops`).
        """
        src = frames.numpy() if hasattr(frames, "numpy") else np.asarray(frames)
        rh, rw = src.shape[1:3]
        boxes = self.crop_boxes(rh, rw, crops)
        c = self.crop_size
        t = len(clip_rows[0]) if clip_rows else self.num_frames
        out = np.empty((len(clip_rows), len(boxes), 3, t, c, c), np.uint8)
        for ci, rows in enumerate(clip_rows):
            for b, (y, x) in enumerate(boxes):
                # (T, c, c, 3) -> (3, T, c, c); NumPy's strided copy is ~3x faster than torch's for this uint8 transpose
                np.copyto(out[ci, b], src[list(rows), y : y + c, x : x + c].transpose(3, 0, 1, 2))
        return out.reshape(-1, 3, t, c, c)

    def normalizer(self, device: Any = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
        """:func:`normalize` with this mean / std, its constants made once on ``device``."""
        scale, shift = _normalizer_tensors(self.mean, self.std, device)
        return lambda x: _scale_shift(x, scale, shift)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., 3, T, H, W)`` -> float32, normalised with this mean / std."""
        return normalize(x, self.mean, self.std)

    def eval_views(self, frames: torch.Tensor, crops: int | None = None) -> torch.Tensor:
        """One clip's test views: uint8 ``(T, H, W, 3)`` -> float32 ``(crops, 3, T, crop, crop)`` (resize, crop,
        normalise)."""
        import torch

        resized = self.resize(frames)
        views = self.cut_views(resized, [range(resized.shape[0])], crops)
        return self.normalize(torch.from_numpy(views))
