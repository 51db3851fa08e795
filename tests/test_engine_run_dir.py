"""A training run folder is never overwritten by accident: refusal without --resume / --overwrite, retention that
keeps the newest checkpoint, one-line errors for a resume that changes the model, stale temporaries removed,
files written with the user's umask, and load_model falling back past an unusable checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings

import pytest
import torch
from click.testing import CliRunner

from tests._engine_util import MotionDataset, TinyVideoNet, tiny_config
from vidtok.cli import cli
from vidtok.engine import checkpoint as ck
from vidtok.engine.train import train
from vidtok.errors import CheckpointError, ConfigError

pytestmark = pytest.mark.xdist_group("run_dir")


def _train(out, *, width: int = 16, **kw):
    torch.manual_seed(0)
    cfg = tiny_config(0, epochs=1, keep_last=kw.pop("keep_last", 3), ckpt_every=kw.pop("ckpt_every", 0))
    return train(
        cfg,
        out,
        model=TinyVideoNet(dim=width),
        train_dataset=MotionDataset(16),
        progress=False,
        log=kw.pop("log", lambda m: None),
        **kw,
    )


def _steps(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_existing_run_is_refused_unless_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    _train(run)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    model_bytes = (run / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a training run; pass --resume .* or --overwrite"):
        _train(run)
    assert (run / "model.safetensors").read_bytes() == model_bytes  # nothing touched
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    with pytest.raises(ConfigError, match="exclude each other"):
        _train(run, resume=True, overwrite=True)

    # the CLI refuses before loading anything (one line, exit 2)
    r = CliRunner().invoke(cli, ["train", "--out", str(run)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--overwrite" in r.stderr

    # --overwrite starts again: no duplicate steps in metrics.jsonl, a fresh set of checkpoints
    (run / "checkpoints" / "ckpt_00009999.safetensors").write_bytes(b"stale")
    (run / "notes.txt").write_text("the user's own file")
    _train(run, overwrite=True)
    steps = [s for s in _steps(run)]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) + steps.count(steps[-1]) - 1
    assert not (run / "checkpoints" / "ckpt_00009999.safetensors").exists()
    assert (run / "notes.txt").read_text() == "the user's own file"  # only the run's files are cleared


def test_retention_never_deletes_the_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    # higher-step leftovers of some other run (e.g. restored by hand): keep_last=1 must keep what this run wrote
    for step in (500, 600):
        w, s = ck.ckpt_paths(run, step)
        w.write_bytes(b"old")
        s.write_bytes(b"old")
    (run / "checkpoints" / "ckpt_00000600.state.pt").unlink()
    path = ck.save_checkpoint(
        run, step=4, model_state={"w": torch.ones(2)}, weights_meta={"format": "vidtok"}, state={}, keep_last=1
    )
    assert path.exists() and ck.load_checkpoint(path)[0]["w"].sum() == 2
    assert ck.list_checkpoints(run) == [path]


def test_resume_with_another_model_names_the_keys_in_one_line(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(0, epochs=2)
    torch.manual_seed(0)
    train(cfg, run, model=TinyVideoNet(), train_dataset=MotionDataset(16), progress=False, log=lambda m: None,
          stop_after=2)  # fmt: skip
    cfg2 = tiny_config(0, epochs=2)
    cfg2.data.crop_size = 16  # changes the input shape the run was trained for
    with pytest.raises(ConfigError) as e:
        train(cfg2, run, model=TinyVideoNet(size=16), train_dataset=MotionDataset(16, size=16), progress=False,
              log=lambda m: None, resume=True)  # fmt: skip
    msg = str(e.value)
    assert "\n" not in msg and "--resume" in msg and "data.crop_size: 8 -> 16" in msg


def test_resume_with_changed_tensor_shapes_is_one_line(tmp_path):
    run = tmp_path / "run"
    _train(run, ckpt_every=1, stop_after=1)
    with pytest.raises(ConfigError) as e:
        _train(run, width=12, resume=True)
    assert "\n" not in str(e.value) and "tensors differ" in str(e.value)


def test_stale_checkpoint_temporaries_are_removed_on_start_and_resume(tmp_path):
    run = tmp_path / "run"
    ckdir = run / "checkpoints"
    _train(run, ckpt_every=1, stop_after=1)
    (ckdir / ".ckpt_00000002.safetensors.x1y2.tmp").write_bytes(b"\0" * 4096)  # a kill during a checkpoint write
    logs: list[str] = []
    _train(run, resume=True, ckpt_every=1, stop_after=2, log=logs.append)
    assert not list(ckdir.glob(".*.tmp")) and any("interrupted checkpoint write" in m for m in logs)
    (ckdir / ".ckpt_00000003.state.pt.abcd.tmp").write_bytes(b"\0" * 4096)
    (run / "model.safetensors.part.safetensors").write_bytes(b"\0" * 16)
    _train(run, resume=True)
    assert not list(ckdir.glob(".*.tmp")) and not (run / "model.safetensors.part.safetensors").exists()
    assert (run / "model.safetensors").is_file()


def test_files_follow_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        _train(tmp_path / "run", ckpt_every=1)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o640}, {
        p.name: oct(p.stat().st_mode) for p in files
    }


def test_load_model_falls_back_to_the_previous_checkpoint(tmp_path):
    import vidtok
    from tests._infer_util import TINY
    from vidtok.models.hub import save_model

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    model = vidtok.create_model("vidtok_ti", **TINY)
    good = save_model(model, run / "checkpoints" / "ckpt_00000001.safetensors")
    bad = run / "checkpoints" / "ckpt_00000002.safetensors"
    bad.write_bytes(good.read_bytes()[:100])  # the newest was cut short by a kill
    os.utime(bad, (good.stat().st_mtime + 10, good.stat().st_mtime + 10))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        loaded = vidtok.load_model(run)
    assert any("ckpt_00000002" in str(x.message) and "loaded" in str(x.message) for x in w)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    good.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        vidtok.load_model(run)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the DataLoader workers through /proc")
def test_sigterm_stops_training_cleanly(tmp_path):
    """`vidtok train` under SIGTERM (docker stop): exit 143 with one line, DataLoader workers gone, resumable run."""
    import signal
    import subprocess
    import time
    from pathlib import Path

    from vidtok.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data", num_classes=2, per_class=3, val_per_class=1, size=32, frames=12)
    run = tmp_path / "run"
    sets = ["train.max_steps=500", "model.extra={depth: 2, token_reducer_layer: 1}", "data.num_workers=2",
            "data.batch_size=2", "train.device=cpu", "train.ckpt_every=1",
            f"data.root={tmp_path / 'data'}"]  # fmt: skip
    cmd = [
        sys.executable,
        "-m",
        "vidtok.cli",
        "train",
        "--config",
        "demo_vidtok_ti",
        "--out",
        str(run),
        "--no-progress",
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [*cmd, *[a for s in sets for a in ("--set", s)]], env=env, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(ck.list_checkpoints(run)) < 2 and proc.poll() is None:
            time.sleep(0.2)
        kids = set()
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids |= {int(x) for x in (task / "children").read_text().split()}
        assert kids, "no DataLoader workers"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        lines = err.decode().strip().splitlines()
        assert (
            proc.returncode == 143 and lines[-1] == "error: interrupted (SIGTERM)" and "Traceback" not in err.decode()
        )
        time.sleep(1)
        assert not [k for k in kids if Path(f"/proc/{k}").exists()]
        assert ck.load_latest(run)[3]["step"] >= 1  # a checkpoint to --resume from
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
