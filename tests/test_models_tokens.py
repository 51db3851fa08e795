"""TokShift and TokenLearner: hand-written oracles, placement in blocks, token counts and the FLOPs they save."""

from __future__ import annotations

import pytest
import torch

from vidtok.models import count_macs, create_model
from vidtok.models.tokenlearner import TokenFuser, TokenLearner
from vidtok.models.tokshift import token_shift
from vidtok.models.vivit import Block


def shift_loop(x: torch.Tensor, fold_div: int, tokens: str) -> torch.Tensor:
    """TokShift written element by element, straight from the paper's description."""
    B, T, N, C = x.shape
    fold = C // fold_div
    out = x.clone()
    sel = {"cls": [0], "all": list(range(N)), "patch": list(range(1, N))}[tokens]
    for b in range(B):
        for t in range(T):
            for n in sel:
                for c in range(C):
                    if c < fold:
                        out[b, t, n, c] = x[b, t + 1, n, c] if t + 1 < T else 0.0
                    elif c < 2 * fold:
                        out[b, t, n, c] = x[b, t - 1, n, c] if t - 1 >= 0 else 0.0
    return out


@pytest.mark.parametrize("tokens", ["cls", "all", "patch"])
@pytest.mark.parametrize("fold_div,C", [(4, 8), (3, 10), (8, 8), (1, 4)])
def test_token_shift_matches_loop(tokens, fold_div, C):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, C)
    torch.testing.assert_close(token_shift(x, fold_div, tokens), shift_loop(x, fold_div, tokens), rtol=0, atol=0)


def test_token_shift_gradient_and_errors():
    x = torch.randn(1, 3, 2, 8, requires_grad=True)
    token_shift(x, 4, "all").sum().backward()
    # channels [0, 2) of frame 0 feed frame -1 (dropped) ... every moved channel is used once except at the ends
    assert x.grad[0, 0, 0, :2].eq(0).all() and x.grad[0, 2, 0, 2:4].eq(0).all() and x.grad[0, 1].eq(1).all()
    with pytest.raises(ValueError, match="tokens must be"):
        token_shift(x, 4, "some")
    with pytest.raises(ValueError, match=r"\(B, T, N, C\)"):
        token_shift(x[0], 4)


def test_block_places_shift_before_attention_and_mlp():
    torch.manual_seed(0)
    blk = create_model("tokshift_ti16", depth=1, embed_dim=16, num_heads=2, img_size=32, num_frames=4).blocks[0]
    assert isinstance(blk, Block)
    x = torch.randn(2, 4, 5, 16)
    h = token_shift(x, 4, "cls")
    h = h + blk.attn(blk.norm1(h))
    h = token_shift(h, 4, "cls")
    h = h + blk.mlp(blk.norm2(h))
    torch.testing.assert_close(blk(x), h)


def test_tokshift_with_nothing_to_shift_is_framewise_vit():
    torch.manual_seed(0)
    kw = dict(img_size=32, num_frames=4, depth=2, embed_dim=32, num_heads=2, num_classes=5)
    shifted = create_model("tokshift_ti16", **kw, token_mixer_kwargs={"fold_div": 64, "tokens": "cls"}).eval()
    plain = create_model("tokshift_ti16", **kw, token_mixer=None).eval()
    plain.load_state_dict(shifted.state_dict())
    x = torch.randn(2, 3, 4, 32, 32)
    torch.testing.assert_close(shifted(x), plain(x))
    # a frame-wise ViT: per-frame logits averaged; each frame alone gives its own logits
    per_frame = torch.stack([plain(x[:, :, t : t + 1]) for t in range(4)]).mean(0)
    torch.testing.assert_close(plain(x), per_frame, atol=1e-5, rtol=1e-5)
    default = create_model("tokshift_ti16", **kw).eval()
    default.load_state_dict(shifted.state_dict())
    assert not torch.allclose(default(x), plain(x))  # fold_div=4 does mix frames


def test_tokenlearner_v11_maps_and_counts():
    torch.manual_seed(0)
    tl = TokenLearner(dim=16, num_tokens=5)
    x = torch.randn(2, 3, 12, 16)
    y, maps = tl(x, (3, 4), return_maps=True)
    assert y.shape == (2, 3, 5, 16) and maps.shape == (2, 3, 5, 12)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3, 5))
    torch.testing.assert_close(y, torch.einsum("btsn,btnd->btsd", maps, x))  # weighted pooling of the slice
    joint = TokenLearner(dim=16, num_tokens=5, joint=True)
    yj, mj = joint(x, return_maps=True)
    assert yj.shape == (2, 1, 5, 16) and mj.shape == (2, 1, 5, 36)
    torch.testing.assert_close(mj.sum(-1), torch.ones(2, 1, 5))


def test_tokenlearner_v10_and_fuser():
    torch.manual_seed(0)
    tl = TokenLearner(dim=16, num_tokens=4, version="1.0")
    x = torch.randn(2, 3, 12, 16)
    y, maps = tl(x, (3, 4), return_maps=True)
    assert y.shape == (2, 3, 4, 16) and ((maps > 0) & (maps < 1)).all()
    torch.testing.assert_close(y, torch.einsum("btsn,btnd->btsd", maps, x))  # sum pooling
    mean = TokenLearner(dim=16, num_tokens=4, version="1.0", sum_pooling=False)
    mean.load_state_dict(tl.state_dict())
    torch.testing.assert_close(mean(x, (3, 4)), y / 12)
    with pytest.raises(ValueError, match="grid"):
        tl(x, (5, 5))
    fuser = TokenFuser(dim=16, num_tokens=4)
    assert fuser(y, x).abs().max() == 0  # zero-initialised token mixing: the fused stack starts as identity
    torch.nn.init.normal_(fuser.token_mix.weight)
    assert fuser(y, x).shape == x.shape and fuser(y, x).abs().max() > 0


@pytest.mark.parametrize("name", ["vivit_b16x2_tl8", "vidtok_ti"])
def test_learned_token_counts_and_maps(name):
    m = create_model(name, img_size=64, num_frames=8, depth=3, embed_dim=32, num_heads=2, token_reducer_layer=1)
    feats, aux = m.forward_features(torch.randn(2, 3, 8, 64, 64), return_aux=True)
    assert aux["learned_tokens"].shape == (2, 4, 8, 32)
    assert aux["token_maps"].shape == (2, 4, 8, 4, 4)
    torch.testing.assert_close(aux["token_maps"].sum((-1, -2)), torch.ones(2, 4, 8))
    n_cls = 1 if m.class_token == "global" else 0
    assert feats.shape[-2] * feats.shape[1] == 4 * 8 + n_cls


def test_tokenlearner_fuser_variant_and_joint_mode():
    kw = dict(img_size=32, num_frames=4, depth=3, embed_dim=32, num_heads=2, num_classes=3, token_reducer_layer=1)
    m = create_model("vidtok_ti", **{**kw, "token_reducer": "tokenlearner_fuser"})
    feats, aux = m.forward_features(torch.randn(2, 3, 4, 32, 32), return_aux=True)
    assert feats.shape == (2, 2, 4, 32) and aux["learned_tokens"].shape == (2, 2, 8, 32)  # back on the full grid
    m = create_model("vivit_b16x2_tl8", **kw, token_reducer_kwargs={"num_tokens": 6, "joint": True})
    feats = m.forward_features(torch.randn(2, 3, 4, 32, 32))
    assert feats.shape == (2, 1, 1 + 6, 32)


def _layer_macs(n: int, d: int, mlp: float = 4.0) -> float:
    """Multiply-adds of one joint-attention block on n tokens: qkv + proj + MLP linears, q·k and a·v."""
    return n * d * d * (4 + 2 * mlp) + 2 * n * n * d


@pytest.mark.parametrize("num_tokens", [8, 16])
def test_tokenlearner_flops_follow_token_counts(num_tokens):
    T, S, D, depth, k = 8, 64, 64, 6, 2  # 16 frames at 128² -> 8 slices of 8×8 tubelets
    kw = dict(img_size=128, num_frames=16, depth=depth, embed_dim=D, num_heads=4, num_classes=10)
    with torch.device("meta"):
        full = create_model("vivit_b16x2", **kw)
        tl = create_model(
            "vivit_b16x2_tl8", **kw, token_reducer_layer=k, token_reducer_kwargs={"num_tokens": num_tokens}
        )
    shape = (1, 3, 16, 128, 128)
    macs_full, macs_tl = count_macs(full, shape), count_macs(tl, shape)
    n0, n1 = 1 + T * S, 1 + T * num_tokens
    embed_head = T * S * D * (3 * 2 * 16 * 16) + D * 10
    tl_cost = T * S * (D * 64 + 64 * num_tokens) + T * num_tokens * S * D  # MLP maps + weighted pooling
    pred_full = embed_head + depth * _layer_macs(n0, D)
    pred_tl = embed_head + k * _layer_macs(n0, D) + (depth - k) * _layer_macs(n1, D) + tl_cost
    assert macs_full == pytest.approx(pred_full, rel=1e-3)
    assert macs_tl == pytest.approx(pred_tl, rel=1e-3)
    assert macs_tl < macs_full


@pytest.mark.parametrize(
    "name", ["vivit_b16x2_fe", "vivit_b16x2_fsa", "vivit_b16x2_fdp", "tokshift_ti16", "timesformer_b16"]
)
def test_tokenlearner_plugs_into_every_variant(name):
    kw = dict(img_size=32, num_frames=4, depth=3, embed_dim=32, num_heads=2, num_classes=3, token_reducer_layer=1)
    kw.update(token_reducer="tokenlearner", token_reducer_kwargs={"num_tokens": 3})
    if name.endswith("_fe"):
        kw["depth_temporal"] = 1
    m = create_model(name, **kw)
    x = torch.randn(2, 3, 4, 32, 32, requires_grad=True)
    m(x).sum().backward()
    assert m.reducer.learner.mlp.fc1.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    _, aux = m.forward_features(x, return_aux=True)
    t = aux["grid"][0]
    assert aux["learned_tokens"].shape == (2, t, 3, 32)
