"""Training loop: exact resume (in-process stop and a SIGKILLed subprocess), non-finite loss stop, DDP equivalence,
fine-tuning init with head re-initialisation, metrics / config files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from vidtok.engine.checkpoint import list_checkpoints, load_checkpoint, load_weights
from vidtok.engine.train import NonFiniteLossError, train

sys.path.insert(0, str(Path(__file__).parent))
from _engine_util import MotionDataset, NanAfter, TinyVideoNet, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_weights(run / "model.safetensors")[0]


def _run(cfg, out, **kw):
    make = kw.pop("make_model", TinyVideoNet)
    torch.manual_seed(123)  # the model's init; train() reseeds everything else from cfg.train.seed
    model = make()
    return train(cfg, out, model=model, progress=False, log=lambda m: None, **kw)


def _assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max diff {(a[k] - b[k]).abs().max().item()}"


@pytest.mark.slow
def test_resume_mid_epoch_is_bitwise_exact_with_workers(tmp_path):
    # Dropout, noise augmentation in the workers, Mixup/CutMix, EMA, accumulation and clipping all draw randomness.
    ds, val = MotionDataset(48), MotionDataset(12, seed=1)
    opts = dict(mixup_alpha=0.4, cutmix_alpha=0.4, ema_decay=0.9, accum_steps=2, clip_grad=0.5)
    full = _run(tiny_config(2, **opts), tmp_path / "full", train_dataset=ds, val_dataset=val)
    assert full["step"] == 18 and not full["stopped_early"]

    part = _run(tiny_config(2, **opts), tmp_path / "part", train_dataset=ds, val_dataset=val, stop_after=8)
    assert part["stopped_early"] and part["step"] == 8 and part["epoch"] == 1  # 6 steps/epoch: mid-epoch 1
    assert not (tmp_path / "part" / "model.safetensors").exists()
    resumed = _run(tiny_config(2, **opts), tmp_path / "part", train_dataset=ds, val_dataset=val, resume=True)
    assert resumed["step"] == 18
    _assert_bitwise(_weights(tmp_path / "full"), _weights(tmp_path / "part"))
    # the state of the last checkpoints agrees too (optimizer moments, EMA)
    _, _, sa = load_checkpoint(list_checkpoints(tmp_path / "full")[-1])
    _, _, sb = load_checkpoint(list_checkpoints(tmp_path / "part")[-1])
    _assert_bitwise(sa["ema"]["weights"], sb["ema"]["weights"])
    # metrics rows are not duplicated by the replay after resume
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    step_rows = [s for s in steps if s]
    assert sorted(set(step_rows)) == sorted(set(range(1, 19)))

    # control: the comparison can fail (another seed gives other weights)
    other = tiny_config(0, seed=5, **opts)
    other.train.epochs = 1
    _run(other, tmp_path / "other", train_dataset=ds)
    w = _weights(tmp_path / "other")
    assert not torch.equal(w["head.weight"], _weights(tmp_path / "full")["head.weight"])


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from _engine_util import MotionDataset, TinyVideoNet, tiny_config
    from vidtok.engine.train import train
    cfg = tiny_config(1, ckpt_every=1, keep_last=2, epochs=2)
    torch.manual_seed(123)
    train(cfg, {out!r}, model=TinyVideoNet(), train_dataset=MotionDataset(48, delay={delay}), progress=False)
    """
)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    ds = MotionDataset(48)
    full = tmp_path / "full"
    _run(tiny_config(1, ckpt_every=1, keep_last=2, epochs=2), full, train_dataset=ds)

    run = tmp_path / "killed"
    script = tmp_path / "job.py"
    script.write_text(_KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(run), delay=0.03))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list_checkpoints(run)) < 2:
            time.sleep(0.05)
        while time.time() < deadline:  # kill somewhere after step 5, possibly in the middle of a checkpoint write
            ck = list_checkpoints(run)
            if ck and int(ck[-1].name[5:13]) >= 5:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()
    killed_at = int(list_checkpoints(run)[-1].name[5:13])
    assert 5 <= killed_at < 24
    _run(tiny_config(1, ckpt_every=1, keep_last=2, epochs=2), run, train_dataset=ds, resume=True)
    _assert_bitwise(_weights(full), _weights(run))
    assert len(list_checkpoints(run)) == 2  # keep_last


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(0, ckpt_every=2, epochs=2)
    torch.manual_seed(0)
    model = NanAfter(5)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, tmp_path / "run", model=model, train_dataset=MotionDataset(48), progress=False, log=lambda m: None)
    msg = str(e.value)
    assert "loss is nan at step 6" in msg and "ckpt_00000004.safetensors" in msg and "train.lr" in msg
    ckpts = list_checkpoints(tmp_path / "run")
    assert [p.name for p in ckpts][-1] == "ckpt_00000004.safetensors"
    tensors, _, state = load_checkpoint(ckpts[-1])
    assert all(torch.isfinite(t).all() for t in tensors.values()) and state["step"] == 4
    assert not (tmp_path / "run" / "model.safetensors").exists()
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "error" and last["step"] == 6


def test_run_folder_contents_and_eval(tmp_path):
    cfg = tiny_config(0, epochs=4, eval_every=2, label_smoothing=0.0)
    r = _run(cfg, tmp_path / "run", train_dataset=MotionDataset(96), val_dataset=MotionDataset(30, seed=9))
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and "tiny" in (run / "config.yaml").read_text()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in rows if x["kind"] == "epoch"]
    assert [x["epoch"] for x in epochs] == [0, 1, 2, 3]
    assert "val_top1" in epochs[1] and "val_top1" not in epochs[0] and "val_top1" in epochs[3]
    assert all({"loss", "lr", "clips_per_sec"} <= x.keys() for x in rows if x["kind"] == "step")
    assert r["val"]["top1"] > 55  # the motion task is learnable (chance: 33 %)
    _, meta = load_weights(run / "model.safetensors")
    pcfg = json.loads(meta["pretrained_cfg"])
    assert pcfg["class_names"] == ["left", "right", "still"] and pcfg["num_frames"] == 4


def test_init_reinitialises_a_mismatching_head(tmp_path):
    from vidtok.engine.checkpoint import weights_metadata
    from vidtok.engine.train import init_from_checkpoint
    from vidtok.files import save_safetensors

    torch.manual_seed(0)
    src = TinyVideoNet(num_classes=5)
    src.model_name = "tiny"
    meta = weights_metadata(src, pretrained_cfg={"class_names": []})
    save_safetensors(tmp_path / "src.safetensors", src.state_dict(), meta)
    torch.manual_seed(1)
    dst = TinyVideoNet(num_classes=3)
    head_before = dst.head.weight.clone()
    logs = []
    init_from_checkpoint(dst, str(tmp_path / "src.safetensors"), reinit_head=False, log=logs.append)
    assert torch.equal(dst.embed.weight, src.embed.weight) and torch.equal(dst.head.weight, head_before)
    assert "head re-initialised" in logs[0]
    # same class count: loaded, unless reinit_head
    torch.manual_seed(1)
    same = TinyVideoNet(num_classes=5)
    init_from_checkpoint(same, str(tmp_path / "src.safetensors"), reinit_head=False, log=logs.append)
    assert torch.equal(same.head.weight, src.head.weight)
    torch.manual_seed(1)
    fresh = TinyVideoNet(num_classes=5)
    before = fresh.head.weight.clone()
    init_from_checkpoint(fresh, str(tmp_path / "src.safetensors"), reinit_head=True, log=logs.append)
    assert torch.equal(fresh.head.weight, before)


_DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from _engine_util import MotionDataset, TinyVideoNet, tiny_config
    from vidtok.engine.train import train
    cfg = tiny_config(1, epochs=2, accum_steps={accum})
    cfg.data.batch_size = {bs}
    torch.manual_seed(123)
    train(cfg, {out!r}, model=TinyVideoNet(dropout=0.0), train_dataset=MotionDataset(48),
          val_dataset=MotionDataset(10, seed=3), progress=False)
    """
)


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    # global batch 8 = 2 processes x 2 clips x 2 accumulation steps = 1 process x 4 clips x 2 steps
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path / "ddp"), bs=2, accum=2))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr

    cfg = tiny_config(1, epochs=2, accum_steps=2)
    cfg.data.batch_size = 4
    _run(cfg, tmp_path / "single", make_model=lambda: TinyVideoNet(dropout=0.0), train_dataset=MotionDataset(48))
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # reduced metrics: the loss logged by rank 0 is the global mean, equal to the single process's
    la = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    la = [x["loss"] for x in la if x["kind"] == "step"]
    lb = [x["loss"] for x in lb if x["kind"] == "step"]
    assert len(la) == len(lb) == 12
    assert max(abs(x - y) for x, y in zip(la, lb, strict=True)) < 1e-4
    # only rank 0 wrote: one set of checkpoints, the evaluation saw all 10 validation clips once
    assert len(list_checkpoints(tmp_path / "ddp")) == 2


class _ConstantAuxReducer(torch.nn.Module):
    """Stands in for a token reducer with a training loss (DynamicViT's ratio loss, mixed-scale batch shaping)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.calls = 0

    def aux_loss(self) -> torch.Tensor:
        self.calls += 1
        return 50.0 * self.w  # differentiable, so the optimizer sees it too


class _NetWithReducer(TinyVideoNet):
    def __init__(self):
        super().__init__()
        self.reducer = _ConstantAuxReducer()

    def get_layer_id(self, name: str) -> int:
        return 1 if name.startswith("reducer") else super().get_layer_id(name)


def test_reducer_aux_loss_is_added_to_the_training_loss(tmp_path):
    cfg = tiny_config(0, epochs=1, log_every=1, weight_decay=0.0)
    torch.manual_seed(0)
    model = _NetWithReducer()
    train(cfg, tmp_path / "run", model=model, train_dataset=MotionDataset(24), progress=False, log=lambda m: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "step"]
    assert losses and min(losses) > 45  # CE alone is ~1.1 for 3 classes
    assert model.reducer.calls >= len(losses) and model.reducer.w.item() < 1.0  # its gradient reached the optimizer


class _Clips(torch.utils.data.Dataset):
    """Fixed random 64 px clips with labels, the shape of the tiny reducer models."""

    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 4, 64, 64, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.x[i], "label": int(self.y[i])}


@pytest.mark.parametrize(
    "spec",
    [{"kind": "dynamicvit", "at_block": [1, 2], "keep_ratio": 0.5}, {"kind": "mixed_scale"}],
    ids=lambda s: s["kind"],
)
def test_train_adds_the_real_reducers_losses(tmp_path, spec):
    """The first logged loss (before any weight changes) is CE + loss_weight x the reducer's own loss: the same run
    with loss_weight 0 logs CE alone, and the difference is the reducer's loss of that batch, weighted."""
    from vidtok.models import create_model

    first, aux = {}, {}
    for w in (0.0, 50.0):
        torch.manual_seed(0)
        tiny = dict(num_classes=3, num_frames=4, img_size=64, embed_dim=32, depth=3, num_heads=2)
        model = create_model("vidtok_ti", token_reducer={**spec, "loss_weight": w}, **tiny)
        seen: list[float] = []

        def hook(m, args, out, seen=seen):
            seen.append(m.aux_loss().item() / max(m.loss_weight, 1))

        model.reducer.register_forward_hook(hook)
        cfg = tiny_config(0, epochs=1, max_steps=1, log_every=1)
        train(cfg, tmp_path / f"w{w}", model=model, train_dataset=_Clips(), progress=False, log=lambda m: None)
        rows = [json.loads(x) for x in (tmp_path / f"w{w}" / "metrics.jsonl").read_text().splitlines()]
        first[w] = next(r["loss"] for r in rows if r["kind"] == "step")
        aux[w] = seen[-1]
    assert aux[50.0] > 1e-4  # the batch has a reducer loss to add
    assert first[50.0] - first[0.0] == pytest.approx(50.0 * aux[50.0], rel=1e-3)
