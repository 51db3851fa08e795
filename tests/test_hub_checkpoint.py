"""vidtok checkpoint format: save / load round trip, run folders, and one-line errors for every broken file."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vidtok
from vidtok.errors import CheckpointError
from vidtok.models.hub import read_checkpoint, save_model

TINY = dict(num_classes=3, num_frames=4, img_size=32, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return vidtok.create_model("vivit_ti16x2", **TINY).eval()


@pytest.fixture(scope="module")
def ckpt(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("hub") / "m.safetensors"
    save_model(
        tiny,
        path,
        pretrained_cfg={"class_names": ["a", "b", "c"], "frame_stride": 3},
        config={"model": {"name": "vivit_ti16x2"}},
    )
    return path


def _x():
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def test_round_trip(tiny, ckpt):
    model = vidtok.load_model(ckpt)
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(_x()), tiny(_x()))
    assert model.model_name == "vivit_ti16x2"
    assert model.model_kwargs == tiny.model_kwargs
    cfg = model.pretrained_cfg
    assert cfg["class_names"] == ["a", "b", "c"] and cfg["frame_stride"] == 3
    assert cfg["num_frames"] == 4 and cfg["crop_size"] == 32  # taken from the model's kwargs
    for key in ("mean", "std", "short_side", "test_clips", "test_crops"):
        assert key in cfg
    assert model.checkpoint_config == {"model": {"name": "vivit_ti16x2"}}


def test_metadata_layout(tiny, ckpt):
    """The on-disk contract: plain safetensors, metadata strings, JSON values."""
    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "vidtok" and meta["format_version"] == "1"
    assert json.loads(meta["model"]) == {"name": "vivit_ti16x2", "kwargs": tiny.model_kwargs}
    assert set(json.loads(meta["pretrained_cfg"])) == {
        "mean",
        "std",
        "num_frames",
        "frame_stride",
        "crop_size",
        "short_side",
        "test_clips",
        "test_crops",
        "class_names",
        "interpolation",  # timm's other keys (input_size, crop_pct, ...) are derived on load, not stored
    }
    assert keys == set(tiny.state_dict())


def test_run_folder(tiny, ckpt, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    old, new = run / "checkpoints" / "step_10.safetensors", run / "checkpoints" / "step_20.safetensors"
    save_model(tiny, old, pretrained_cfg={"class_names": ["old"] * 3})
    save_model(tiny, new, pretrained_cfg={"class_names": ["new"] * 3})
    t = time.time()
    os.utime(old, (t - 100, t - 100))
    assert vidtok.load_model(run).pretrained_cfg["class_names"] == ["new"] * 3
    save_model(tiny, run / "model.safetensors", pretrained_cfg={"class_names": ["final"] * 3})
    assert vidtok.load_model(run).pretrained_cfg["class_names"] == ["final"] * 3


def _err(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        vidtok.load_model(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    _err(tmp_path / "absent.safetensors", "no such file")


def test_empty_run_folder(tmp_path):
    _err(tmp_path, "neither model.safetensors nor checkpoints")


def test_not_safetensors(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_text("this is a text file, not tensors at all\n")
    _err(p, "not a safetensors file")
    q = tmp_path / "tiny.safetensors"
    q.write_bytes(b"abc")
    _err(q, "not a safetensors file")


def test_pickle_is_not_safetensors(tmp_path, tiny):
    p = tmp_path / "model.pt"
    torch.save(tiny.state_dict(), p)
    _err(p, "not a safetensors file")


def test_truncated(ckpt, tmp_path):
    data = ckpt.read_bytes()
    p = tmp_path / "cut.safetensors"
    p.write_bytes(data[: len(data) - 1000])
    _err(p, "truncated")
    p.write_bytes(data[:20])  # cut inside the header
    _err(p, "truncated|not a safetensors")


def test_corrupt_header(ckpt, tmp_path):
    data = bytearray(ckpt.read_bytes())
    data[10:20] = b"\xff" * 10  # inside the JSON header
    p = tmp_path / "bad.safetensors"
    p.write_bytes(bytes(data))
    _err(p, "corrupt|not a safetensors")


def test_plain_safetensors_is_wrong_format(tiny, tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(p))
    msg = _err(p, "not a vidtok checkpoint")
    assert "vidtok convert" in msg


def _rewrite(ckpt, tmp_path, *, meta=None, tensors=None):
    with safe_open(str(ckpt), "pt") as f:
        m = dict(f.metadata())
    t = load_file(str(ckpt))
    m.update(meta or {})
    if tensors is not None:
        t = tensors(t)
    p = tmp_path / "edited.safetensors"
    save_file(t, str(p), metadata=m)
    return p


def test_future_version(ckpt, tmp_path):
    _err(_rewrite(ckpt, tmp_path, meta={"format_version": "9"}), "format_version '9'")


def test_unknown_model(ckpt, tmp_path):
    p = _rewrite(ckpt, tmp_path, meta={"model": json.dumps({"name": "no_such_model", "kwargs": {}})})
    _err(p, "no_such_model")


def test_bad_model_json(ckpt, tmp_path):
    _err(_rewrite(ckpt, tmp_path, meta={"model": "{not json"}), "'model' is not valid JSON")


def test_shape_mismatch(ckpt, tmp_path, tiny):
    kwargs = dict(tiny.model_kwargs, num_classes=4)
    p = _rewrite(ckpt, tmp_path, meta={"model": json.dumps({"name": "vivit_ti16x2", "kwargs": kwargs})})
    msg = _err(p, "shape mismatch")
    assert "(3, 32)" in msg and "(4, 32)" in msg


def test_missing_tensor(ckpt, tmp_path):
    def drop(t):
        t.pop("head.weight")
        return t

    _err(_rewrite(ckpt, tmp_path, tensors=drop), "missing 1 tensors")


def test_read_checkpoint_returns_metadata(ckpt):
    tensors, meta = read_checkpoint(ckpt)
    assert meta["model"]["name"] == "vivit_ti16x2" and "head.weight" in tensors


def test_no_weight_init_restores_torch_init():
    from vidtok.models.hub import no_weight_init

    before = torch.nn.init.trunc_normal_
    t = torch.zeros(4)
    with pytest.raises(RuntimeError), no_weight_init():
        assert torch.nn.init.trunc_normal_(t, std=1.0) is t and t.abs().sum() == 0  # skipped
        raise RuntimeError("boom")
    assert torch.nn.init.trunc_normal_ is before
    assert torch.nn.init.normal_(t).abs().sum() > 0


def test_save_unwraps_wrappers(tiny, tmp_path):
    """DataParallel / torch.compile wrappers prefix state-dict keys; the checkpoint stores the bare model."""
    p = save_model(torch.nn.DataParallel(tiny), tmp_path / "dp.safetensors")
    with safe_open(str(p), "pt") as f:
        assert set(f.keys()) == set(tiny.state_dict())
    with torch.no_grad():
        assert torch.equal(vidtok.load_model(p)(_x()), tiny(_x()))
    q = save_model(torch.compile(tiny), tmp_path / "compiled.safetensors")  # not run, so nothing is compiled
    with safe_open(str(q), "pt") as f:
        assert set(f.keys()) == set(tiny.state_dict())


def test_unwritable_destination(tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_model(tiny, blocker / "sub" / "m.safetensors")  # parent is a file
