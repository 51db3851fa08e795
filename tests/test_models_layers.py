"""Generic layers against independent oracles: tubelet inflation, positional tables and resizing, attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidtok.models import create_model
from vidtok.models.layers import Attention, DropPath, PosEmbed, TubeletEmbed, resize_grid_table, sincos_table
from vidtok.models.vivit import FactorisedBlock


def test_tubelet_shapes_and_conv_oracle():
    torch.manual_seed(0)
    emb = TubeletEmbed(in_chans=3, embed_dim=8, tubelet_size=(2, 4, 4))
    x = torch.randn(2, 3, 5, 9, 12)  # trailing frame / rows that don't fill a tubelet are dropped
    y = emb(x)
    assert y.shape == (2, 2, 2 * 3, 8)
    # token (t, h, w) = <kernel, the 2×4×4 tubelet at (2t, 4h, 4w)>
    t, h, w = 1, 1, 2
    patch = x[:, :, 2 * t : 2 * t + 2, 4 * h : 4 * h + 4, 4 * w : 4 * w + 4]
    ref = torch.einsum("bcthw,dcthw->bd", patch, emb.proj.weight) + emb.proj.bias
    torch.testing.assert_close(y[:, t, h * 3 + w], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="smaller than one tubelet"):
        emb(torch.randn(1, 3, 1, 16, 16))


@pytest.mark.parametrize("mode", ["central", "average"])
def test_inflation_matches_2d(mode):
    torch.manual_seed(0)
    w2, b2 = torch.randn(8, 3, 4, 4), torch.randn(8)
    emb = TubeletEmbed(in_chans=3, embed_dim=8, tubelet_size=(3, 4, 4))
    emb.inflate_from_2d(w2, b2, mode=mode)
    frames = torch.randn(2, 3, 3, 8, 8)
    if mode == "average":  # identical frames -> the 2D patch embedding
        frames = frames[:, :, :1].expand(-1, -1, 3, -1, -1)
    ref = F.conv2d(frames[:, :, 1], w2, b2, stride=4).flatten(2).transpose(1, 2)  # central frame = index 1
    torch.testing.assert_close(emb(frames)[:, 0], ref, atol=1e-5, rtol=1e-5)
    if mode == "central":
        assert emb.proj.weight[:, :, [0, 2]].abs().sum() == 0


def test_sincos_matches_videomae_formula():
    n, d = 10, 6
    ref = torch.tensor(
        [[p / 10000 ** (2 * (j // 2) / d) for j in range(d)] for p in range(n)], dtype=torch.float64
    )  # HF get_sinusoid_encoding_table, written out
    ref[:, 0::2], ref[:, 1::2] = ref[:, 0::2].sin(), ref[:, 1::2].cos()
    torch.testing.assert_close(sincos_table(n, d), ref.float())
    pe = PosEmbed(kind="sincos", grid=(2, 2, 3), dim=d)
    assert "table" not in pe.state_dict()  # fixed: not a checkpoint tensor


def test_resize_is_separable():
    T0, H0, W0, D = 4, 3, 3, 5
    time_only = torch.arange(T0, dtype=torch.float32)[:, None, None, None].expand(T0, H0, W0, D)
    out = resize_grid_table(time_only.reshape(-1, D), (T0, H0, W0), (8, 5, 6)).view(8, 5, 6, D)
    assert torch.allclose(out, out[:, :1, :1].expand_as(out))  # constant over space stays constant
    assert out[0, 0, 0, 0] < out[-1, 0, 0, 0]  # a time ramp stays a time ramp
    torch.manual_seed(0)
    space = torch.randn(1, H0, W0, D).expand(T0, H0, W0, D)
    out = resize_grid_table(space.reshape(-1, D), (T0, H0, W0), (2, 5, 6)).view(2, 5, 6, D)
    ref = F.interpolate(space[0].permute(2, 0, 1)[None], size=(5, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[1], ref[0].permute(1, 2, 0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0], out[1])  # frames not mixed into each other
    same = torch.randn(T0 * H0 * W0, D)
    assert resize_grid_table(same, (T0, H0, W0), (T0, H0, W0)) is same


@pytest.mark.parametrize("kind", ["joint", "separable", "spatial", "sincos"])
def test_pos_embed_kinds_and_resize(kind):
    pe = PosEmbed(kind=kind, grid=(4, 3, 3), dim=6, num_prefix=int(kind != "sincos"))
    patch, prefix = pe((4, 3, 3))
    assert patch.shape in ((4, 9, 6), (1, 9, 6))
    assert (prefix is None) == (kind == "sincos")
    patch2, _ = pe((6, 2, 4))
    assert patch2.shape[-2:] == (8, 6) and patch2.shape[0] in (1, 6)
    if kind == "separable":
        torch.testing.assert_close(patch, pe.spatial[0, 1:][None] + pe.temporal[0][:, None])


def test_model_runs_at_other_sizes_with_resized_tables():
    torch.manual_seed(0)
    m = create_model("vivit_ti16x2", img_size=32, num_frames=4, depth=1, embed_dim=16, num_heads=2).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    ref = m(x)
    # same size: no interpolation happens
    patch, _ = m.pos_embed((2, 2, 2))
    torch.testing.assert_close(patch.reshape(-1, 16), m.pos_embed.table[0, 1:])
    assert m(torch.randn(1, 3, 8, 48, 64)).shape == ref.shape


def _mha_reference(x, attn: Attention):
    """Independent multi-head attention from the separate q/k/v weights of the fused projection."""
    B, N, D = x.shape
    H = attn.num_heads
    wq, wk, wv = attn.qkv.weight.chunk(3)
    if attn.qkv_bias_mode == "qv":
        bq, bk, bv = attn.q_bias, torch.zeros(D), attn.v_bias
    else:
        bq, bk, bv = attn.qkv.bias.chunk(3)
    q, k, v = (F.linear(x, w, b).view(B, N, H, -1).transpose(1, 2) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    a = (q @ k.transpose(-1, -2) / math.sqrt(D // H)).softmax(-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(B, N, D)), a.mean(1)


@pytest.mark.parametrize("bias", ["all", "qv"])
def test_joint_attention_matches_reference(bias):
    torch.manual_seed(0)
    attn = Attention(16, 4, axis="joint", qkv_bias=bias, backend="math")
    if bias == "qv":
        torch.nn.init.normal_(attn.q_bias)
        torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(2, 3, 5, 16)
    out, w = attn(x, return_attn=True)
    ref, ref_w = _mha_reference(x.reshape(2, 15, 16), attn)
    torch.testing.assert_close(out.reshape(2, 15, 16), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)


def test_space_time_and_fdp_axes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 16)
    sp = Attention(16, 4, axis="space", backend="math")
    ref, _ = _mha_reference(x.reshape(6, 5, 16), sp)
    torch.testing.assert_close(sp(x), ref.view(2, 3, 5, 16), atol=1e-5, rtol=1e-5)
    tm = Attention(16, 4, axis="time", backend="math")
    ref, _ = _mha_reference(x.transpose(1, 2).reshape(10, 3, 16), tm)
    torch.testing.assert_close(tm(x), ref.view(2, 5, 3, 16).transpose(1, 2), atol=1e-5, rtol=1e-5)
    # fdp: heads 0-1 over space, heads 2-3 over time (before the output projection)
    fdp = Attention(16, 4, axis="fdp", backend="math")
    fdp.proj.weight.data = torch.eye(16)
    fdp.proj.bias.data.zero_()
    sp.qkv, tm.qkv = fdp.qkv, fdp.qkv
    sp.proj.weight.data, tm.proj.weight.data = torch.eye(16), torch.eye(16)
    sp.proj.bias.data.zero_()
    tm.proj.bias.data.zero_()
    out = fdp(x)
    torch.testing.assert_close(out[..., :8], sp(x)[..., :8], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[..., 8:], tm(x)[..., 8:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        Attention(18, 3, axis="fdp")


def test_factorised_block_zero_init_is_spatial_and_order_matters():
    torch.manual_seed(0)
    blk = FactorisedBlock(16, 2, order="space_time")
    x = torch.randn(2, 3, 4, 16)
    spatial = x + blk.attn(blk.norm1(x))
    torch.testing.assert_close(blk(x), spatial + blk.mlp(blk.norm2(spatial)))  # temporal branch starts at zero
    torch.nn.init.normal_(blk.attn_t.proj.weight, std=0.2)
    a = blk(x)
    blk.order = "time_space"
    assert not torch.allclose(a, blk(x))


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    y = dp(torch.ones(64, 3, 4))
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    dp.eval()
    assert torch.equal(dp(torch.ones(2, 3)), torch.ones(2, 3))
