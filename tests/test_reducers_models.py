"""Token reducers inside the backbones: shapes and gradients everywhere they make sense, and each reducer's defining
property at model level (identity / equivalence with the plain model, budgets, masking not dropping)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidtok.config import load_config
from vidtok.errors import ConfigError
from vidtok.models import create_model, list_models
from vidtok.models.reducers import REDUCER_KINDS

TINY = dict(num_classes=3, num_frames=4, img_size=64, embed_dim=32, depth=3, num_heads=2)  # 2 × 4 × 4 tubelets
ARCHS = {
    "vivit_ti16x2": {},  # Model 1: joint attention, global class token
    "vidtok_ti": {},  # per-slice attention + TokShift, then joint; mean pooling
    "tokshift_ti16": {},  # frame-wise, per-frame class tokens
    "vivit_b16x2_fe": {"depth_temporal": 1},  # Model 2: factorised encoder
    "vivit_b16x2_fsa": {},  # Model 3: factorised self-attention (no masks: Token Pooling only)
}
REDUCERS = {
    "token_pooling": {"kind": "token_pooling", "at_block": 1, "num_tokens": 5},
    "ats": {"kind": "ats", "at_block": 1, "num_tokens": 6},
    "dynamicvit": {"kind": "dynamicvit", "at_block": [1, 2], "keep_ratio": 0.6},
    "mixed_scale": {"kind": "mixed_scale"},
}


def tiny(name: str, reducer: dict | None = None, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    args = {**TINY, **ARCHS.get(name, {}), **kw}
    return create_model(name, token_reducer=reducer, **args) if reducer is not None else create_model(name, **args)


def clip(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 4, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", list(REDUCERS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_reducer_in_backbone_shapes_and_gradients(arch, kind):
    if arch == "vivit_b16x2_fsa" and kind != "token_pooling":
        with pytest.raises(ConfigError, match="masks tokens"):
            tiny(arch, REDUCERS[kind])
        return
    model = tiny(arch, REDUCERS[kind])
    assert model.reducer is not None and model.reducer.kind == kind
    x = clip()
    model.train()
    tokens, aux = model.forward_features(x, return_aux=True)
    logits = model.forward_head(tokens)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    loss = F.cross_entropy(logits, torch.tensor([0, 2])) + model.reducer.aux_loss()
    loss.backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    for n, p in model.named_parameters():
        if n.startswith("reducer."):  # the learned reducers' parameters get gradients through masks / gates
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
    if kind in ("dynamicvit", "mixed_scale"):
        assert any(p.grad.abs().sum() > 0 for p in model.reducer.parameters())
    assert "reducer_index" in aux and "token_index" in aux
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 32)


def test_token_pooling_with_as_many_clusters_as_tokens_equals_the_plain_model():
    for arch in ("vivit_ti16x2", "tokshift_ti16"):
        plain = tiny(arch).eval()
        n = 16  # tokens per slice
        pooled = tiny(arch, {"kind": "token_pooling", "at_block": 1, "num_tokens": n}).eval()
        pooled.load_state_dict(plain.state_dict())
        x = clip()
        with torch.no_grad():
            torch.testing.assert_close(pooled(x), plain(x), rtol=1e-5, atol=1e-5)
            # with fewer clusters the output differs (the comparison can fail)
            fewer = tiny(arch, {"kind": "token_pooling", "at_block": 1, "num_tokens": 4}).eval()
            fewer.load_state_dict(plain.state_dict())
            assert not torch.allclose(fewer(x), plain(x), atol=1e-4)


@pytest.mark.parametrize("arch", ["vivit_ti16x2", "tokshift_ti16"])
def test_mixed_scale_forced_fine_reproduces_the_plain_tubelet_model(arch):
    plain = tiny(arch).eval()
    mixed = tiny(arch, {"kind": "mixed_scale", "force": "fine"}).eval()
    missing, unexpected = mixed.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("reducer.") for k in missing) and not unexpected
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(mixed(x), plain(x), rtol=1e-5, atol=1e-5)
        mixed.reducer.force = "coarse"  # 4× fewer tokens: a different model output
        tokens, aux = mixed.forward_features(x, return_aux=True)
        assert aux["token_index"].shape[-1] == 4  # one coarse token per 2×2 region of the 4×4 grid
        assert not torch.allclose(mixed.forward_head(tokens), plain(x), atol=1e-4)


def test_mixed_scale_token_count_follows_the_gate_and_pads():
    model = tiny("vidtok_ti", {"kind": "mixed_scale", "fine_ratio": 0.3}).eval()
    gate = model.reducer.gate[-1]
    with torch.no_grad():
        gate.weight.normal_(0, 3.0)  # a content-dependent gate
    x = clip(4)
    with torch.no_grad():
        _, aux = model.forward_features(x, return_aux=True)
    fine = aux["reducer_fine"]  # (B, T', R)
    counts = (4 * fine + (1 - fine)).sum(-1)  # tokens per slice: 4 per fine region, 1 per coarse
    assert counts.unique().numel() > 1, "test needs different counts per slice"
    torch.testing.assert_close(aux["token_keep"].sum(-1), counts)
    # padding slots don't change a clip's output: each clip alone = the clip in the batch
    with torch.no_grad():
        batched = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


def test_ats_never_exceeds_its_budget_and_padding_is_invisible():
    model = tiny("vivit_ti16x2", {"kind": "ats", "at_block": 1, "num_tokens": 12}, class_token="global").eval()
    x = clip(4, seed=3)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.mul_(8)  # peaky class-token attention (random init is nearly uniform)
        _, aux = model.forward_features(x, return_aux=True)
        kept = aux["token_keep"].sum(-1)  # (B, T')
        assert (kept <= 12).all() and aux["token_keep"].shape[-1] == 12
        assert kept.unique().numel() > 1, "test needs different counts per input"
        batched = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


def test_dynamicvit_keeps_the_ratio_at_inference():
    model = tiny("vivit_ti16x2", {"kind": "dynamicvit", "at_block": [1, 2], "keep_ratio": 0.5}).eval()
    with torch.no_grad():
        tokens, aux = model.forward_features(clip(), return_aux=True)
    assert tokens.shape == (2, 1, 1 + 2 * 4, 32)  # 16 → 8 → 4 per slice, 2 slices, + class token
    assert aux["token_keep"] is None and aux["token_index"].shape == (2, 2, 4)


def test_dynamicvit_masks_not_drops_in_training():
    """Pruned tokens stay in the sequence but no kept token sees them: perturbing them changes nothing else."""
    model = tiny(
        "vivit_ti16x2", {"kind": "dynamicvit", "at_block": [1], "keep_ratio": 0.5}, class_token="none", pool="mean"
    ).train()
    x = clip()

    def run(perturb: torch.Tensor | None):
        model.reducer.generator = torch.Generator().manual_seed(0)
        handle = None
        if perturb is not None:

            def pre(_mod, args):
                (h, *rest) = args
                return (h + 100.0 * perturb[..., None], *rest)

            handle = model.blocks[1].register_forward_pre_hook(pre)
        try:
            return model.forward_features(x, return_aux=True)
        finally:
            if handle is not None:
                handle.remove()

    tokens, aux = run(None)
    keep = aux["token_keep"]
    assert tokens.shape == (2, 2, 16, 32) and keep.shape == (2, 2, 16)  # all tokens still there
    pruned = (keep == 0).float()
    assert pruned.sum() > 0 and (keep == 1).sum() > 0
    tokens2, aux2 = run(pruned)
    assert torch.equal(aux2["token_keep"], keep)
    kept = keep > 0
    torch.testing.assert_close(tokens2[kept], tokens[kept], rtol=1e-4, atol=1e-4)
    # the perturbed tokens themselves did change before the final fill (the hook had an effect)
    with torch.no_grad():
        model.reducer.generator = torch.Generator().manual_seed(0)
        h = model._embed(x)[0]
        h = model.blocks[0](h)
        assert not torch.allclose(h + 100.0 * pruned[..., None], h)


def test_tokenlearner_dict_spec_equals_the_keyword_form():
    a = tiny("vivit_ti16x2", {"kind": "tokenlearner", "at_block": 2, "num_tokens": 4})
    b = tiny("vivit_ti16x2", None, token_reducer="tokenlearner", token_reducer_layer=2,
             token_reducer_kwargs={"num_tokens": 4})  # fmt: skip
    assert a.reducer.kind == "tokenlearner" and a.reducer.num_tokens == 4 and a.token_reducer_layer == 2
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_reducer_from_yaml_config_and_checkpoint_roundtrip(tmp_path):
    from vidtok.engine.train import build_model_from_config
    from vidtok.models.hub import load_model, save_model

    cfg_path = tmp_path / "ats.yaml"
    cfg_path.write_text(
        "model:\n  name: vidtok_ti\n  num_classes: 3\n"
        "  extra:\n    depth: 2\n    embed_dim: 32\n    num_heads: 2\n"
        "    token_reducer: {kind: ats, at_block: 1, num_tokens: 6}\n"
        "data:\n  num_frames: 4\n  crop_size: 64\n"
    )
    cfg = load_config(cfg_path)
    model = build_model_from_config(cfg).eval()
    assert model.reducer.kind == "ats" and model.reducer.num_tokens == 6
    path = save_model(model, tmp_path / "m.safetensors")
    again = load_model(path)
    assert again.reducer.kind == "ats"
    x = clip(1)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    with pytest.raises(ConfigError, match=r"depth=3\), got 5"):
        create_model("vidtok_ti", **{**TINY, "token_reducer": {"kind": "ats", "at_block": 5}})


@pytest.mark.parametrize("kind", list(REDUCERS))
def test_describe_model_names_the_reducer(kind):
    from vidtok.config import resolved_model_config
    from vidtok.models import describe_model

    cfg = load_config(None, ["model.name=vivit_ti16x2", "data.crop_size=64", "data.num_frames=4"])
    cfg.model.extra = {"depth": 3, "embed_dim": 32, "num_heads": 2, "token_reducer": REDUCERS[kind]}
    d = describe_model("vivit_ti16x2", resolved_model_config(cfg))
    assert kind in d["tokens"] and float(d["flops"].split()[0]) >= 0


MASKS_NEED_JOINT_OR_SPACE = {"vivit_b16x2_fsa", "vivit_b16x2_fdp", "timesformer_b16"}
CLASS_TOKEN_MODELS = {"vivit_ti16x2", "vivit_s16x2", "vivit_b16x2", "vivit_l16x2", "vivit_b16x2_tl8",
                      "vivit_b16x2_fe", "timesformer_b16", "tokshift_ti16", "tokshift_s16", "tokshift_b16"}  # fmt: skip
REFUSED = {  # the family members a kind does not fit, and why
    "tokenlearner": (set(), ""),
    "token_pooling": (set(), ""),
    "tokenlearner_fuser": (CLASS_TOKEN_MODELS, "needs class_token='none'"),
    "ats": (MASKS_NEED_JOINT_OR_SPACE, "masks tokens"),
    "dynamicvit": (MASKS_NEED_JOINT_OR_SPACE, "masks tokens"),
    "mixed_scale": (MASKS_NEED_JOINT_OR_SPACE, "masks tokens"),
}


@pytest.mark.parametrize("kind", sorted(REDUCER_KINDS))
def test_a_spec_with_only_the_kind_works_on_every_family_member_that_accepts_it(kind):
    x = clip(1)
    refused = set()
    for name in list_models():
        kw = dict(TINY, token_reducer_layer=1, depth_temporal=1) if "_fe" in name else dict(TINY, token_reducer_layer=1)
        torch.manual_seed(0)
        try:
            model = create_model(name, token_reducer={"kind": kind}, **kw).eval()
        except ConfigError as e:
            assert "\n" not in str(e) and REFUSED[kind][1] in str(e), (name, str(e))
            refused.add(name)
            continue
        assert model.reducer.kind == kind
        with torch.no_grad():
            logits = model(x)
        assert logits.shape == (1, 3) and torch.isfinite(logits).all(), name
    assert refused == REFUSED[kind][0]


def test_model_aux_loss_is_the_reducers_and_zero_without_one():
    model = tiny("vivit_ti16x2", REDUCERS["dynamicvit"]).train()
    model(clip())
    assert model.aux_loss().dim() == 0 and model.aux_loss() > 0
    assert torch.equal(model.aux_loss(), model.reducer.aux_loss())
    for plain in (tiny("vivit_ti16x2"), tiny("vidtok_ti", token_reducer_layer=1)):  # no reducer / TokenLearner
        plain.train()(clip())
        assert plain.aux_loss().dim() == 0 and plain.aux_loss().item() == 0.0
