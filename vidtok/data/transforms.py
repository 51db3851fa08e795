"""Video transforms on uint8 frames with ``torchvision.transforms.v2``; batch-level Mixup / CutMix.

Layouts: decoders give uint8 ``(T, H, W, 3)``; torchvision v2 works on ``(T, C, H, W)`` video tensors; one clip
leaves here as float32 ``(C, T, H, W)`` (multi-view testing: ``(V, C, T, H, W)``)::

    (T,H,W,3) uint8 ─► (T,3,H,W) ─► scale jitter + crop (one resized_crop) ─► hflip ─► RandAugment ─► /255, (x-m)/s
                                                                                          ─► (3,T,h,w) float32

Every random choice is drawn from an explicit ``torch.Generator`` passed to ``__call__``, so a clip is reproducible
from (seed, epoch, index) alone whatever worker decodes it. The same spatial parameters apply to every frame of a
clip (one crop, one flip, one RandAugment op list per clip). RandAugment itself is torchvision's, run on the uint8
video with the global RNG forked and seeded from the generator.

Example::

    tf = TrainTransform(crop_size=224, scale_range=(256, 320))
    x = tf(frames, generator=torch.Generator().manual_seed(0))  # (3, 16, 224, 224) float32
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from vidtok.io.backends.common import short_side_size
from vidtok.preprocessing import Preprocessing, normalize

__all__ = ["TrainTransform", "EvalTransform", "MixupCutmix", "build_transforms", "to_model_input", "NORMALIZATION"]

# Named mean/std presets; the model's pretrained_cfg / DataConfig decides which one a run uses.
NORMALIZATION = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "kinetics": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),  # PySlowFast / pytorchvideo Kinetics recipes
    "minus1_1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # ViViT (scenic) checkpoints: x in [-1, 1]
}


def _check_frames(frames: torch.Tensor) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")


def to_model_input(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(T, C, H, W)`` -> normalised, contiguous float32 ``(C, T, H, W)``: ``(x / 255 - mean) / std``."""
    return normalize(video.permute(1, 0, 2, 3).contiguous(), mean, std)


class TrainTransform:
    """Training augmentation: random short-side scale jitter, random square crop, flip, RandAugment, normalise.

    Scale jitter + crop are done as one ``resized_crop`` of the matching region of the original frames (the result
    equals resizing the short side to ``s`` and cropping, up to interpolation at the border) so only the crop is
    resampled.

    Args:
        crop_size: output height and width.
        scale_range: (min, max) short side, drawn uniformly (integers, inclusive) per clip.
        hflip: flip left-right with probability 0.5. Turn off when left/right carries the label.
        randaugment: apply torchvision RandAugment (same ops for all frames of the clip).
        randaugment_ops: RandAugment ``num_ops``.
        randaugment_magnitude: RandAugment ``magnitude`` (of 31 bins).
        mean: per-channel mean of [0, 1] pixels.
        std: per-channel std.
    """

    def __init__(
        self,
        *,
        crop_size: int = 224,
        scale_range: tuple[int, int] = (256, 320),
        hflip: bool = True,
        randaugment: bool = False,
        randaugment_ops: int = 2,
        randaugment_magnitude: int = 9,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ):
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        lo, hi = scale_range
        if not (1 <= lo <= hi):
            raise ValueError(f"scale_range must be (min, max) with 1 <= min <= max, got {tuple(scale_range)}")
        prep = Preprocessing(mean=mean, std=std, crop_size=crop_size)  # checks mean / std
        self.crop_size = crop_size
        self.scale_range = (int(lo), int(hi))
        self.hflip = hflip
        self.mean, self.std = prep.mean, prep.std
        self.randaugment = (
            v2.RandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude) if randaugment else None
        )

    def params(self, height: int, width: int, generator: torch.Generator | None) -> dict:
        """Draw the crop region (in input coordinates) and the flip for one clip."""
        lo, hi = self.scale_range
        short = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        short = max(short, self.crop_size)  # never crop more than the resized frame holds
        rh, rw = short_side_size(height, width, short)
        top = int(torch.randint(rh - self.crop_size + 1, (1,), generator=generator))
        left = int(torch.randint(rw - self.crop_size + 1, (1,), generator=generator))
        sy, sx = height / rh, width / rw  # resized -> input coordinates
        y0, x0 = int(round(top * sy)), int(round(left * sx))
        h = max(min(int(round(self.crop_size * sy)), height - y0), 1)
        w = max(min(int(round(self.crop_size * sx)), width - x0), 1)
        flip = self.hflip and bool(torch.rand(1, generator=generator) < 0.5)
        seed = int(torch.randint(2**62, (1,), generator=generator))  # RandAugment's RNG seed
        return {"top": y0, "left": x0, "height": h, "width": w, "flip": flip, "seed": seed}

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> float32 ``(3, T, crop, crop)``."""
        _check_frames(frames)
        video = frames.permute(0, 3, 1, 2)  # (T, C, H, W), a view
        p = self.params(video.shape[-2], video.shape[-1], generator)
        size = [self.crop_size, self.crop_size]
        video = F.resized_crop(video, p["top"], p["left"], p["height"], p["width"], size, antialias=True)
        if p["flip"]:
            video = F.horizontal_flip(video)
        if self.randaugment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(p["seed"])
                video = self.randaugment(tv_tensors.Video(video)).as_subclass(torch.Tensor)
        return to_model_input(video, self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, hflip={self.hflip}, "
            f"randaugment={self.randaugment is not None}, mean={self.mean}, std={self.std})"
        )


class EvalTransform:
    """Testing: :meth:`Preprocessing.eval_views <vidtok.preprocessing.Preprocessing.eval_views>`, i.e. resize the
    short side, then a centre crop or three crops along the long side, normalised.

    Args:
        crop_size: output height and width.
        short_side: short side after resizing.
        num_crops: 1 (centre) or 3 (start, centre, end of the long side, as PySlowFast's multi-crop test).
        mean: per-channel mean of [0, 1] pixels.
        std: per-channel std.
        preprocessing: all of the above as one object (the other arguments are then ignored).
    """

    def __init__(
        self,
        *,
        crop_size: int = 224,
        short_side: int = 256,
        num_crops: int = 1,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        preprocessing: Preprocessing | None = None,
    ):
        prep = preprocessing or Preprocessing(
            mean=mean, std=std, crop_size=crop_size, short_side=short_side, test_crops=num_crops
        )
        self.prep = prep.check("EvalTransform")

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> float32 ``(num_crops, 3, T, crop, crop)``. ``generator`` is unused."""
        _check_frames(frames)
        return self.prep.eval_views(frames)

    def __repr__(self) -> str:
        p = self.prep
        return (
            f"EvalTransform(crop_size={p.crop_size}, short_side={p.short_side}, num_crops={p.test_crops}, "
            f"mean={p.mean}, std={p.std})"
        )


def build_transforms(data_cfg, train: bool) -> TrainTransform | EvalTransform:
    """The transform a :class:`~vidtok.config.DataConfig` describes, for training or testing; both take sizes and
    normalisation from the config's :class:`~vidtok.preprocessing.Preprocessing`."""
    prep = Preprocessing.from_data_config(data_cfg)
    if train:
        return TrainTransform(
            crop_size=prep.crop_size,
            scale_range=tuple(data_cfg.scale_range),
            hflip=data_cfg.hflip,
            randaugment=data_cfg.randaugment,
            randaugment_ops=data_cfg.randaugment_ops,
            randaugment_magnitude=data_cfg.randaugment_magnitude,
            mean=prep.mean,
            std=prep.std,
        )
    return EvalTransform(preprocessing=prep)


class MixupCutmix:
    """Batch-level Mixup or CutMix for video batches of any layout whose last two dims are (H, W).

    torchvision's ``v2.MixUp`` / ``v2.CutMix`` accept a 5-D batch only as a ``tv_tensors.Video`` in (B, T, C, H, W)
    and draw from the global RNG; this one takes ``(B, C, T, H, W)`` (or anything ``(B, ..., H, W)``) and an
    explicit generator. Each call picks Mixup or CutMix (``switch_prob`` chooses CutMix when both are on), draws
    ``lam ~ Beta(alpha, alpha)``, pairs every sample with the batch rolled by one (as torchvision and timm do, so
    the batch should be shuffled), and returns soft targets ``lam·y + (1-lam)·y_rolled`` with label smoothing.
    CutMix pastes the same box into every frame, and ``lam`` is corrected to the box's true area.

    Args:
        num_classes: width of the soft targets.
        mixup_alpha: Beta parameter for Mixup; 0 turns Mixup off.
        cutmix_alpha: Beta parameter for CutMix; 0 turns CutMix off.
        switch_prob: probability of CutMix when both are on.
        label_smoothing: smoothing folded into the targets (so the loss is plain soft-target cross entropy).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0 or (mixup_alpha == 0 and cutmix_alpha == 0):
            raise ValueError(f"need alphas >= 0, one of them > 0; got mixup={mixup_alpha}, cutmix={cutmix_alpha}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)

    def _beta(self, alpha: float, generator: torch.Generator | None) -> float:
        # Beta(a, a) as X / (X + Y) with X, Y ~ Gamma(a): torch has no generator-aware gamma, numpy seeded from ours.
        import numpy as np

        seed = int(torch.randint(2**62, (1,), generator=generator))
        return float(np.random.default_rng(seed).beta(alpha, alpha))

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        off = self.label_smoothing / self.num_classes
        y = torch.full((labels.shape[0], self.num_classes), off, dtype=torch.float32, device=labels.device)
        return y.scatter_(1, labels.view(-1, 1).long(), 1.0 - self.label_smoothing + off)

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the mixed batch (same shape, new tensor) and soft targets ``(B, num_classes)``."""
        if x.ndim < 3 or labels.ndim != 1 or x.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected x (B, ..., H, W) and labels (B,), got {tuple(x.shape)} and {tuple(labels.shape)}"
            )
        y = self.one_hot(labels)
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha == 0 or bool(torch.rand(1, generator=generator) < self.switch_prob)
        )
        if use_cutmix:
            lam = self._beta(self.cutmix_alpha, generator)
            H, W = x.shape[-2:]
            r = 0.5 * (1.0 - lam) ** 0.5
            cy = int(torch.randint(H, (1,), generator=generator))
            cx = int(torch.randint(W, (1,), generator=generator))
            y1, y2 = max(cy - int(r * H), 0), min(cy + int(r * H), H)
            x1, x2 = max(cx - int(r * W), 0), min(cx + int(r * W), W)
            out = x.clone()
            out[..., y1:y2, x1:x2] = x.roll(1, 0)[..., y1:y2, x1:x2]
            lam = 1.0 - (y2 - y1) * (x2 - x1) / (H * W)
        else:
            lam = self._beta(self.mixup_alpha, generator)
            out = x.mul(lam).add_(x.roll(1, 0), alpha=1.0 - lam)
        return out, y.mul(lam).add_(y.roll(1, 0), alpha=1.0 - lam)
