"""Checkpoints: atomic writes, safe loading (no unpickling), corrupt/truncated detection and fallback, pruning."""

from __future__ import annotations

import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtok.engine import checkpoint as ck
from vidtok.errors import CheckpointError
from vidtok.files import atomic_write

sys.path.insert(0, str(Path(__file__).parent))
from _engine_util import MotionDataset, TinyVideoNet, tiny_config  # noqa: E402


def _save(run, step, value=0.0):
    state = {"optimizer": {"x": torch.full((3,), value)}, "epoch": 0, "step_in_epoch": step}
    model_state = {"w": torch.full((4, 4), value), "b": torch.arange(3.0)}
    return ck.save_checkpoint(run, step=step, model_state=model_state, weights_meta={"format": "vidtok"}, state=state)


def test_roundtrip_and_prune(tmp_path):
    for s in (1, 2, 3, 4):
        _save(tmp_path, s, float(s))
    assert [p.name for p in ck.list_checkpoints(tmp_path)][-1] == "ckpt_00000004.safetensors"
    tensors, meta, state = ck.load_checkpoint(ck.list_checkpoints(tmp_path)[-1])
    assert torch.equal(tensors["w"], torch.full((4, 4), 4.0)) and meta["format"] == "vidtok"
    assert state["step"] == 4 and torch.equal(state["optimizer"]["x"], torch.full((3,), 4.0))
    deleted = ck.prune_checkpoints(tmp_path, 2)
    assert [p.name for p in deleted] == ["ckpt_00000001.safetensors", "ckpt_00000002.safetensors"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt_00000003.safetensors",
        "ckpt_00000003.state.pt",
        "ckpt_00000004.safetensors",
        "ckpt_00000004.state.pt",
    ]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def boom(tmp):
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


@pytest.mark.parametrize("damage", ["truncate_state", "truncate_weights", "flip_weights", "missing_state", "garbage"])
def test_corrupt_newest_checkpoint_falls_back(tmp_path, damage):
    _save(tmp_path, 10, 1.0)
    w20 = _save(tmp_path, 20, 2.0)
    s20 = w20.with_name("ckpt_00000020.state.pt")
    if damage == "truncate_state":
        s20.write_bytes(s20.read_bytes()[:100])
    elif damage == "truncate_weights":
        w20.write_bytes(w20.read_bytes()[:-7])
    elif damage == "flip_weights":
        b = bytearray(w20.read_bytes())
        b[-3] ^= 0xFF  # tensor data: the header still parses, only the hash catches it
        w20.write_bytes(bytes(b))
    elif damage == "missing_state":
        s20.unlink()
    else:
        s20.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError) as e:
        ck.load_checkpoint(w20)
    assert "ckpt_00000020" in str(e.value) and "\n" not in str(e.value)
    warnings = []
    path, tensors, _, state = ck.load_latest(tmp_path, warn=warnings.append)
    assert path.name == "ckpt_00000010.safetensors" and state["step"] == 10
    assert torch.equal(tensors["w"], torch.full((4, 4), 1.0))
    assert len(warnings) == 1 and "ckpt_00000020" in warnings[0]


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints to resume from"):
        ck.load_latest(tmp_path)
    w = _save(tmp_path, 5)
    w.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        ck.load_latest(tmp_path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_state_file_never_unpickles_code(tmp_path):
    w = _save(tmp_path, 3)
    s = w.with_name("ckpt_00000003.state.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"weights_sha256": "x", "evil": Evil()}, s, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="corrupt or truncated state file"):
        ck.load_checkpoint(w)


def test_rng_state_roundtrip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = ck.capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ck.restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_resume_skips_a_corrupt_last_checkpoint(tmp_path):
    """End to end: the newest checkpoint of a run is damaged; --resume continues from the one before and still
    ends with the weights of an uninterrupted run."""
    from vidtok.engine.train import train

    def run(out, **kw):
        torch.manual_seed(7)
        return train(
            tiny_config(0, epochs=2, ckpt_every=3, keep_last=5),
            out,
            model=TinyVideoNet(),
            train_dataset=MotionDataset(32),
            progress=False,
            log=lambda m: None,
            **kw,
        )

    run(tmp_path / "full")
    run(tmp_path / "part", stop_after=7)  # checkpoints at 3, 6 and 7
    newest = ck.list_checkpoints(tmp_path / "part")[-1]
    assert newest.name == "ckpt_00000007.safetensors"
    newest.write_bytes(newest.read_bytes()[:50])  # truncated
    logs = []

    torch.manual_seed(7)
    train(
        tiny_config(0, epochs=2, ckpt_every=3, keep_last=5),
        tmp_path / "part",
        model=TinyVideoNet(),
        train_dataset=MotionDataset(32),
        progress=False,
        log=logs.append,
        resume=True,
    )
    assert any("skipping unusable checkpoint" in m and "ckpt_00000007" in m for m in logs)
    assert any("resume: ckpt_00000006" in m for m in logs)
    a = ck.load_weights(tmp_path / "full" / "model.safetensors")[0]
    b = ck.load_weights(tmp_path / "part" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
