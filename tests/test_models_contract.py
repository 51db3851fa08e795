"""timm's model contract and torch's own tools on every family: pretrained_cfg keys, num_features /
head_hidden_size, gradient checkpointing (same gradients), FlopCounterMode under no_grad, inference_mode and
torch.compile(fullgraph=True). torch.export / ONNX parity per family lives in tests/test_export.py."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vidtok.models import count_macs, create_model

TINY = dict(num_classes=5, num_frames=4, img_size=32, embed_dim=32, depth=2, num_heads=2)
FAMILIES = {
    "vivit_ti16x2": {},  # Model 1: joint attention, global class token
    "vivit_b16x2_fe": {"depth_temporal": 1},  # Model 2: factorised encoder
    "vivit_b16x2_fsa": {},  # Model 3: factorised self-attention
    "vivit_b16x2_fdp": {},  # Model 4: factorised dot product
    "tokshift_ti16": {},  # frame-wise ViT + TokShift
    "vidtok_ti": {"token_reducer_layer": 1},  # TokShift + TokenLearner
    "vivit_b16x2_tl8": {"token_reducer_layer": 1},  # Model 1 + TokenLearner
    "videomae_b16x2": {},  # sincos positions, q/v bias
    "timesformer_b16": {},  # divided space-time, separable positions
}
REDUCERS = {
    "ats": {"kind": "ats", "at_block": 1, "num_tokens": 3},
    "dynamicvit": {"kind": "dynamicvit", "at_block": [1], "keep_ratio": 0.5},
}


def tiny(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**TINY, **FAMILIES.get(name, {}), **kw})


def clip(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_timm_contract(name):
    m = tiny(name).eval()
    cfg = m.pretrained_cfg
    for key in ("input_size", "num_frames", "mean", "std", "interpolation", "crop_pct", "first_conv", "classifier"):
        assert key in cfg, key
    assert cfg["input_size"] == [3, 32, 32] and cfg["num_frames"] == 4
    assert cfg["crop_pct"] == pytest.approx(32 / cfg["short_side"], abs=1e-4)
    assert cfg["interpolation"] == "bilinear" and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert isinstance(m.get_submodule(cfg["first_conv"]), torch.nn.Conv3d)
    head = m.get_submodule(cfg["classifier"])
    assert isinstance(head, torch.nn.Linear) and head.out_features == cfg["num_classes"] == 5
    with torch.no_grad():
        emb = m.forward_head(m.forward_features(clip()), pre_logits=True)
    assert emb.shape == (2, m.num_features) and m.head_hidden_size == m.num_features == head.in_features
    json.dumps(cfg)  # travels as JSON in checkpoints and export metadata


def _grads(m: torch.nn.Module, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    m.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # drop-path / Gumbel noise: checkpointing must replay the same draws
    loss = F.cross_entropy(m(x), torch.tensor([0, 3]))
    reducer = getattr(m, "reducer", None)
    if reducer is not None:
        loss = loss + reducer.aux_loss()
    loss.backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "name,reducer", [(n, None) for n in FAMILIES] + [("vivit_ti16x2", r) for r in REDUCERS], ids=lambda v: str(v)
)
def test_grad_checkpointing_gives_the_same_gradients(name, reducer, monkeypatch):
    kw = {"drop_path_rate": 0.2}
    if reducer is not None:
        kw["token_reducer"] = REDUCERS[reducer]
    m = tiny(name, **kw).train()
    x = clip()
    ref = _grads(m, x, seed=1)
    import torch.utils.checkpoint as tuc

    calls = []
    real = tuc.checkpoint
    monkeypatch.setattr(tuc, "checkpoint", lambda *a, **k: calls.append(k.get("use_reentrant")) or real(*a, **k))
    m.set_grad_checkpointing(True)
    got = _grads(m, x, seed=1)
    n_blocks = len(m.blocks) + (len(m.temporal.blocks) if m.temporal is not None else 0)
    assert calls == [False] * n_blocks  # every block, non-reentrant
    assert got.keys() == ref.keys() and len(ref) == len(list(m.parameters()))
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)
    calls.clear()
    with torch.no_grad():
        m(x)  # inference never checkpoints
    m.set_grad_checkpointing(False)
    _grads(m, x, seed=1)
    assert calls == []


@pytest.mark.parametrize("name", list(FAMILIES))
def test_flop_counter_under_no_grad_and_inference_mode(name):
    m = tiny(name, attn_backend="math").eval()  # count_macs counts attention through the math path
    x = clip()
    with torch.no_grad():
        ref = m(x)
        with FlopCounterMode(display=False) as counter:
            out = m(x)
    assert torch.equal(out, ref)
    assert counter.get_total_flops() // 2 == count_macs(m, tuple(x.shape)) > 0
    with torch.inference_mode():
        inf = m(x)
    assert inf.is_inference() and torch.equal(inf, ref)


COMPILE_REDUCERS = {**REDUCERS, "token_pooling": {"kind": "token_pooling", "at_block": 1, "num_tokens": 2}}


@pytest.mark.parametrize(
    "name,reducer", [(n, None) for n in FAMILIES] + [("vivit_ti16x2", r) for r in COMPILE_REDUCERS], ids=str
)
def test_compile_fullgraph(name, reducer):
    """One Dynamo graph (no graph break) per family; the eager backend keeps this fast (Inductor: next test)."""
    torch._dynamo.reset()
    m = tiny(name, **({"token_reducer": COMPILE_REDUCERS[reducer]} if reducer else {})).eval()
    x = clip()
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=0, atol=0)


def test_compile_fullgraph_refuses_mixed_scale():
    """Mixed-scale tubelets keep an input-dependent token count: a graph break, so fullgraph=True fails."""
    torch._dynamo.reset()
    m = tiny("vivit_ti16x2", img_size=64, token_reducer={"kind": "mixed_scale"}).eval()
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad(), pytest.raises(Exception, match="data-dependent"):
        torch.compile(m, fullgraph=True, backend="eager")(x)


def test_compile_inductor_tiny():
    torch._dynamo.reset()
    m = tiny("vivit_ti16x2", depth=1).eval()
    x = clip()
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-5)


def test_old_checkpoint_without_timm_keys_loads_identically(tmp_path):
    """A checkpoint whose pretrained_cfg predates the timm keys loads with the same logits and gains them."""
    from safetensors.torch import save_file

    import vidtok

    m = tiny("vidtok_ti").eval()
    old_cfg = {
        "mean": [0.5] * 3, "std": [0.5] * 3, "num_frames": 4, "frame_stride": 2, "crop_size": 32, "short_side": 40,
        "test_clips": 1, "test_crops": 1, "class_names": list("abcde"),
    }  # fmt: skip
    meta = {
        "format": "vidtok",
        "format_version": "1",
        "model": json.dumps({"name": m.model_name, "kwargs": m.model_kwargs}),
        "pretrained_cfg": json.dumps(old_cfg),
    }
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "old.safetensors"), metadata=meta)
    loaded = vidtok.load_model(tmp_path / "old.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(clip()), m(clip()))
    cfg = loaded.pretrained_cfg
    assert {k: cfg[k] for k in old_cfg} == old_cfg
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_pct"] == 0.8 and cfg["classifier"] == "head"


def test_parameter_names_of_older_checkpoints_load_everywhere(tmp_path):
    from safetensors.torch import save_file

    from vidtok.engine.checkpoint import load_weights
    from vidtok.models.vivit import _RENAMED

    def older(state):  # the names a checkpoint written before the reducer / temporal-encoder modules carries
        out = {}
        for k, v in state.items():
            for old, new in _RENAMED:
                if k.startswith(new):
                    k = old + k[len(new) :]
                    break
            out[k] = v
        return out

    x = clip()
    for name, kw in (
        ("vivit_b16x2_fe", {"depth_temporal": 1}),
        ("vivit_ti16x2", {"class_token": "none", "token_reducer": "tokenlearner_fuser", "token_reducer_layer": 1}),
        ("vidtok_ti", {"token_reducer_layer": 1}),
    ):
        src, dst = tiny(name, **kw).eval(), tiny(name, **kw).eval()
        with torch.no_grad():
            for p in src.parameters():  # off the shared init, so only a correct load gives equal outputs
                p.add_(torch.randn_like(p) * 0.02)
        old = older(src.state_dict())
        assert old.keys() != src.state_dict().keys()
        dst.load_state_dict(old, strict=True)  # the load_state_dict pre-hook
        with torch.no_grad():
            torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
        save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "w.safetensors"))
        assert load_weights(tmp_path / "w.safetensors")[0].keys() == src.state_dict().keys()  # resume reads them too
