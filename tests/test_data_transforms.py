"""Video transforms: shapes, value ranges, exact crop/flip oracles, determinism, RandAugment per clip, Mixup/CutMix."""

from __future__ import annotations

import pytest
import torch

from vidtok.data.transforms import NORMALIZATION, EvalTransform, MixupCutmix, TrainTransform, to_model_input
from vidtok.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def frames(t: int = 6, h: int = 40, w: int = 60, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=gen(seed))


def denorm(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(C, T, H, W) normalised -> uint8-valued float (T, H, W, C)."""
    m = torch.tensor(mean).view(3, 1, 1, 1)
    s = torch.tensor(std).view(3, 1, 1, 1)
    return ((x * s + m) * 255).permute(1, 2, 3, 0)


def test_train_shapes_and_value_range():
    f = frames()
    f[0] = 0
    f[1] = 255
    tf = TrainTransform(crop_size=32, scale_range=(40, 48), mean=(0.5,) * 3, std=(0.5,) * 3)
    x = tf(f, gen())
    assert x.shape == (3, 6, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6
    assert torch.allclose(x[:, 0], torch.tensor(-1.0)) and torch.allclose(x[:, 1], torch.tensor(1.0))


def test_train_crop_is_exact_crop_or_flip_of_input():
    # scale_range = short side and crop = short side: no resampling, the output is a horizontal window of the input
    f = frames(t=3, h=32, w=50)
    mean, std = NORMALIZATION["imagenet"]
    tf = TrainTransform(crop_size=32, scale_range=(32, 32), hflip=True, mean=mean, std=std)
    seen = set()
    for s in range(16):
        out = denorm(tf(f, gen(s)), mean, std).round()
        match = None
        for x0 in range(50 - 32 + 1):
            win = f[:, :, x0 : x0 + 32].float()
            if torch.equal(out, win):
                match = ("plain", x0)
            elif torch.equal(out, win.flip(2)):
                match = ("flip", x0)
        assert match is not None, f"seed {s}: output is not a crop of the input"
        seen.add(match[0])
    assert seen == {"plain", "flip"}
    tf_noflip = TrainTransform(crop_size=32, scale_range=(32, 32), hflip=False, mean=mean, std=std)
    for s in range(8):
        out = denorm(tf_noflip(f, gen(s)), mean, std).round()
        assert any(torch.equal(out, f[:, :, x0 : x0 + 32].float()) for x0 in range(19))


def test_train_determinism_under_generator():
    f = frames()
    tf = TrainTransform(crop_size=24, scale_range=(28, 44), randaugment=True)
    a, b = tf(f, gen(3)), tf(f, gen(3))
    assert torch.equal(a, b)
    others = [tf(f, gen(s)) for s in range(4, 10)]
    assert not any(torch.equal(a, o) for o in others)
    # the global RNG is neither used nor disturbed
    torch.manual_seed(0)
    r0 = torch.rand(3)
    torch.manual_seed(0)
    tf(f, gen(1))
    assert torch.equal(torch.rand(3), r0)


def test_randaugment_same_ops_on_every_frame():
    one = frames(t=1, h=36, w=36, seed=4)
    clip = one.expand(8, -1, -1, -1).contiguous()  # 8 identical frames
    tf = TrainTransform(crop_size=32, scale_range=(36, 40), randaugment=True, randaugment_magnitude=15)
    for s in range(6):
        x = tf(clip, gen(s))
        assert torch.equal(x, x[:, :1].expand_as(x)), "frames of one clip were augmented differently"
    plain = TrainTransform(crop_size=32, scale_range=(36, 40), randaugment=False)
    assert any(not torch.equal(tf(clip, gen(s)), plain(clip, gen(s))) for s in range(6))


def test_eval_three_crops_along_long_side():
    t, h, w = 2, 30, 60
    ramp = torch.arange(w, dtype=torch.float32).mul(255 / (w - 1)).round().to(torch.uint8)
    f = ramp.view(1, 1, w, 1).expand(t, h, w, 3).contiguous()
    ev = EvalTransform(crop_size=20, short_side=20, num_crops=3, mean=(0, 0, 0), std=(1, 1, 1))
    x = ev(f)
    assert x.shape == (3, 3, 2, 20, 20)
    means = x.mean(dim=(1, 2, 3, 4))
    assert means[0] < means[1] < means[2]
    assert x[0, :, :, :, 0].mean() == pytest.approx(0.0, abs=0.02)  # left crop starts at the left edge
    assert x[2, :, :, :, -1].mean() == pytest.approx(1.0, abs=0.02)  # right crop ends at the right edge
    tall = f.transpose(1, 2).contiguous()  # portrait: crops go top / centre / bottom
    y = ev(tall)
    assert y.shape == (3, 3, 2, 20, 20) and y[0].mean() < y[1].mean() < y[2].mean()
    c = EvalTransform(crop_size=20, short_side=24, num_crops=1)(f)
    assert c.shape == (1, 3, 2, 20, 20)


def test_to_model_input_matches_formula():
    v = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8, generator=gen())
    mean, std = NORMALIZATION["kinetics"]
    ref = (v.permute(1, 0, 2, 3).double() / 255 - torch.tensor(mean).double().view(3, 1, 1, 1)) / torch.tensor(
        std
    ).double().view(3, 1, 1, 1)
    assert torch.allclose(to_model_input(v, mean, std).double(), ref, atol=1e-5)


def test_validation_messages():
    with pytest.raises(ValueError, match=r"expected frames of shape \(T, H, W, 3\), got \(3, 8, 8\)"):
        TrainTransform(crop_size=4, scale_range=(8, 8))(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        TrainTransform(crop_size=4, scale_range=(8, 8))(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"scale_range .* got \(9, 8\)"):
        TrainTransform(scale_range=(9, 8))
    with pytest.raises(ConfigError, match="EvalTransform: test_crops must be 1 or 3, got 2"):
        EvalTransform(num_crops=2)
    with pytest.raises(ConfigError, match="EvalTransform: short_side 20 < crop_size 24"):
        EvalTransform(crop_size=24, short_side=20)
    with pytest.raises(ConfigError, match=r"std must be > 0, got \[0.5, 0.0, 0.5\]"):
        TrainTransform(std=(0.5, 0.0, 0.5))


def test_mixup_on_5d_video_batch():
    x = torch.randn(4, 3, 5, 8, 8, generator=gen())
    y = torch.tensor([0, 1, 2, 3])
    mix = MixupCutmix(num_classes=5, mixup_alpha=0.8, cutmix_alpha=0.0)
    out, soft = mix(x, y, gen(1))
    lam = soft[0, 0].item()
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(out, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(4)) and soft[0, 3].item() == pytest.approx(1 - lam)
    out2, soft2 = mix(x, y, gen(1))
    assert torch.equal(out, out2) and torch.equal(soft, soft2)


def test_cutmix_same_box_in_every_frame_and_true_area():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1, 1).expand(4, 3, 6, 16, 16).contiguous()
    y = torch.tensor([0, 1, 2, 3])
    mix = MixupCutmix(num_classes=4, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1)
    hits = 0
    for s in range(10):
        out, soft = mix(x, y, gen(s))
        pasted = out[1] != x[1]  # sample 1 gets sample 0's pixels (value 0) inside the box
        frac = pasted.float().mean().item()
        assert torch.equal(pasted, pasted[:, :1].expand_as(pasted))  # same box in every frame and channel
        assert torch.all(out[1][pasted] == 0)
        # target weight of the pasted class = pasted area, after label smoothing (0.1 / 4 per class)
        assert soft[1, 0].item() == pytest.approx(frac * 0.9 + 0.025, abs=1e-5)
        assert soft[1].sum().item() == pytest.approx(1.0)
        hits += frac > 0
    assert hits >= 5
