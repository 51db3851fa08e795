"""Preprocessing: the one eval preprocessing. The dataset's eval path, classify's decode workers and viz give
bit-identical model inputs for one real video; pretrained_cfg round-trips; the model config takes its input size from
the data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtok.config import Config, resolved_model_config, validate_config
from vidtok.errors import ConfigError
from vidtok.preprocessing import PIXEL_KEYS, Preprocessing, normalize

COMPAT = Path(__file__).parent / "fixtures" / "compat"


def _data_cfg(path: Path, **kw):
    d = Config().data
    fields = dict(format="list", val=str(path), num_frames=4, frame_stride=3, crop_size=64, scale_range=(72, 80))
    return dataclasses.replace(d, **fields, test_short_side=72, mean=(0.45, 0.4, 0.5), std=(0.2, 0.25, 0.3), **kw)


@pytest.fixture(scope="module")
def real_video(sample_videos, tmp_path_factory):
    path = next(p for p in sample_videos if p.stem == "carphone_pristine")  # 176x144 H.264: landscape, 3 crops differ
    listing = tmp_path_factory.mktemp("prep") / "val.txt"
    listing.write_text(f"{path} 0\n")
    return path, listing


def test_dataset_classify_and_viz_inputs_are_bit_identical(real_video):
    from vidtok.data import build_dataset
    from vidtok.engine.infer_workers import ViewSpec, prepare_views
    from vidtok.viz.attention import load_clip

    path, listing = real_video
    d = _data_cfg(listing, test_clips=2, test_crops=3)
    prep = Preprocessing.from_data_config(d)
    dataset = build_dataset(d, "val", train=False, class_names=["a"])
    from_dataset = dataset[0]["video"]  # (clips x crops, 3, T, c, c) float32, clip-major
    assert from_dataset.shape == (6, 3, 4, 64, 64)

    _, views = prepare_views(str(path), ViewSpec(mode="uniform", prep=prep, clips=2, crops=3))
    from_classify = prep.normalizer("cpu")(torch.from_numpy(views))  # what classify's parent does with the batch
    assert from_classify.dtype == torch.float32
    assert torch.equal(from_classify, from_dataset)

    centre = Preprocessing.from_pretrained_cfg({**prep.to_pretrained_cfg(), "test_clips": 1})
    one_clip = build_dataset(dataclasses.replace(d, test_clips=1), "val", train=False, class_names=["a"])[0]["video"]
    shown, x, _ = load_clip(path, centre.to_pretrained_cfg())
    assert torch.equal(x[0], one_clip[1])  # viz's centre crop == the dataset's middle crop of the centred clip
    assert np.array_equal(shown.transpose(3, 0, 1, 2), _uint8_centre(path, centre))  # the frames viz draws on


@pytest.mark.parametrize("sampler", ["mmaction2", "pytorchvideo", "pyslowfast"])
def test_eval_and_classify_place_a_peers_views_alike(real_video, sampler):
    """`vidtok eval --sampler X` and `vidtok classify --sampler X` give the model the same inputs (PySlowFast's and
    pytorchvideo's differ from the uniform ones; mmaction2's starts are the uniform ones on a video this long)."""
    from vidtok.data import build_dataset
    from vidtok.engine.infer_workers import ViewSpec, prepare_views

    path, listing = real_video
    d = _data_cfg(listing, test_clips=3, test_crops=1, test_sampler=sampler)
    prep = Preprocessing.from_data_config(d)
    from_dataset = build_dataset(d, "val", train=False, class_names=["a"])[0]["video"]
    info, views = prepare_views(str(path), ViewSpec(mode="uniform", prep=prep, clips=3, crops=1, sampler=sampler))
    assert torch.equal(prep.normalizer("cpu")(torch.from_numpy(views)), from_dataset)
    _, uniform = prepare_views(str(path), ViewSpec(mode="uniform", prep=prep, clips=3, crops=1))
    assert np.array_equal(views, uniform) == (sampler == "mmaction2")


def _uint8_centre(path: Path, prep: Preprocessing) -> np.ndarray:
    from vidtok.engine.infer_workers import ViewSpec, prepare_views

    _, views = prepare_views(str(path), ViewSpec(mode="uniform", prep=prep, clips=1, crops=1))
    return views[0]


def test_eval_views_resize_crop_and_normalise_by_hand():
    frames = torch.randint(0, 256, (3, 30, 50, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    prep = Preprocessing(mean=(0.1, 0.2, 0.3), std=(0.5, 0.4, 0.3), crop_size=20, short_side=24, test_crops=3)
    out = prep.eval_views(frames)
    assert out.shape == (3, 3, 3, 20, 20)
    resized = prep.resize(frames)  # (3, 24, 40, 3): short side 24, aspect kept
    assert resized.shape == (3, 24, 40, 3) and prep.resize_size(30, 50) == (24, 40)
    assert prep.crop_boxes(24, 40) == [(2, 0), (2, 10), (2, 20)]  # start, centre, end of the long side
    assert prep.crop_boxes(40, 24, crops=1) == [(10, 2)]
    ref = resized[:, 2:22, 20:40].permute(3, 0, 1, 2).double() / 255  # the end crop, (3, T, c, c)
    ref = (ref - torch.tensor(prep.mean).double().view(3, 1, 1, 1)) / torch.tensor(prep.std).double().view(3, 1, 1, 1)
    assert torch.allclose(out[2].double(), ref, atol=1e-6)
    assert torch.equal(normalize(torch.from_numpy(prep.cut_views(resized, [range(3)])), prep.mean, prep.std), out)


def test_pretrained_cfg_round_trip_and_compat_checkpoints():
    from vidtok.models.hub import make_pretrained_cfg, read_checkpoint

    prep = Preprocessing(mean=(0.45, 0.45, 0.45), std=(0.225,) * 3, num_frames=8, crop_size=112, short_side=128)
    stored = prep.to_pretrained_cfg()
    assert list(stored) == list(PIXEL_KEYS) and stored["mean"] == [0.45] * 3
    assert json.loads(json.dumps(stored)) == stored
    assert Preprocessing.from_pretrained_cfg(stored) == prep
    full = make_pretrained_cfg(None, **stored, class_names=["a", "b"])
    assert full["crop_pct"] == 0.875 and full["input_size"] == [3, 112, 112] and full["class_names"] == ["a", "b"]
    assert Preprocessing.from_pretrained_cfg(full) == prep
    files = sorted(f for f in COMPAT.glob("*.safetensors") if f.name != "expected_logits.safetensors")
    assert files
    for f in files:  # checkpoints written before Preprocessing existed read into it and back unchanged
        _, meta = read_checkpoint(f)
        old = meta["pretrained_cfg"]
        again = Preprocessing.from_pretrained_cfg(old).to_pretrained_cfg()
        assert {k: old[k] for k in PIXEL_KEYS if k in old} == {k: again[k] for k in PIXEL_KEYS if k in old}, f.name


def test_invalid_preprocessing_is_one_line_config_error():
    with pytest.raises(ConfigError, match=r"std must be > 0, got \[0.5, 0.0, 0.5\]"):
        Preprocessing(std=(0.5, 0.0, 0.5))
    with pytest.raises(ConfigError, match=r"mean needs 3 values"):
        Preprocessing(mean=(0.5, 0.5))
    with pytest.raises(ConfigError, match="checkpoint preprocessing: short_side 200 < crop_size 224"):
        Preprocessing(short_side=200).check("checkpoint preprocessing")
    with pytest.raises(ConfigError, match="test_crops must be 1 or 3, got 2"):
        Preprocessing(test_crops=2).check()


def test_model_input_size_comes_from_the_data():
    cfg = Config()
    cfg.data.num_frames, cfg.data.crop_size, cfg.data.test_short_side = 8, 96, 112
    cfg.data.scale_range = (112, 128)
    m = resolved_model_config(validate_config(cfg))
    assert (m.num_frames, m.img_size) == (8, 96) and cfg.model.num_frames is None
    cfg.model.num_frames, cfg.model.img_size = 8, 96  # agreeing values (older recipes / checkpoints) are accepted
    validate_config(cfg)
    cfg.model.num_frames = 16
    with pytest.raises(ConfigError, match=r"model.num_frames: 16 disagrees with data.num_frames=8") as e:
        validate_config(cfg)
    assert e.value.key == "model.num_frames" and "\n" not in str(e.value)
    cfg.model.num_frames, cfg.model.img_size = None, 224
    with pytest.raises(ConfigError, match=r"model.img_size: 224 disagrees with data.crop_size=96"):
        validate_config(cfg)
