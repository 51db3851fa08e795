"""2D ViT inflation: an inflated model on a clip of identical frames reproduces the 2D ViT (torchvision, the oracle).

The 2D ViT is a small torchvision ``VisionTransformer`` with random weights (no download). The timm layout is built
by renaming its state dict here, independently of the converter's own mapping.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torchvision.models.vision_transformer import VisionTransformer

import vidtok
from vidtok.cli import cli
from vidtok.convert.vit2d import canonical_from_2d, inflate_vit2d
from vidtok.errors import CheckpointError

D, HEADS, DEPTH, MLP, P, IMG, NCLS = 48, 3, 2, 96, 8, 32, 7
TOL = 1e-4


@pytest.fixture(scope="module")
def vit2d():
    torch.manual_seed(0)
    m = VisionTransformer(
        image_size=IMG, patch_size=P, num_layers=DEPTH, num_heads=HEADS, hidden_dim=D, mlp_dim=MLP, num_classes=NCLS
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():  # class token / biases / LayerNorms away from their trivial init
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m.eval()


def _tv_features(vit: VisionTransformer, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's CLS features after the final LayerNorm, and its logits."""
    x = vit._process_input(img)
    x = torch.cat([vit.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    feats = vit.encoder(x)[:, 0]
    return feats, vit.heads(feats)


def _to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {
        "cls_token": sd["class_token"],
        "pos_embed": sd["encoder.pos_embedding"],
        "patch_embed.proj.weight": sd["conv_proj.weight"],
        "patch_embed.proj.bias": sd["conv_proj.bias"],
        "norm.weight": sd["encoder.ln.weight"],
        "norm.bias": sd["encoder.ln.bias"],
        "head.weight": sd["heads.head.weight"],
        "head.bias": sd["heads.head.bias"],
    }
    ren = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
           "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj.weight": "attn.proj.weight",
           "self_attention.out_proj.bias": "attn.proj.bias", "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}  # fmt: skip
    for k, v in sd.items():
        m = re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)$", k)
        if m:
            rest = m.group(2)
            for a, b in ren.items():
                rest = rest.replace(a, b) if rest.startswith(a) else rest
            out[f"blocks.{m.group(1)}.{rest}"] = v
    return out


def _state(vit, layout):
    sd = vit.state_dict()
    return sd if layout == "torchvision" else _to_timm(sd)


def _img(seed=0, b=2):
    return torch.randn(b, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))


def _clip_of(img, t):
    return img[:, :, None].expand(-1, -1, t, -1, -1).contiguous()  # (B, C, T, H, W), identical frames


@pytest.mark.parametrize("layout", ["torchvision", "timm"])
@pytest.mark.parametrize("mode", ["central", "average"])
def test_vivit_model1_matches_2d(vit2d, layout, mode):
    """Model 1 with one temporal token: tubelet inflation + tiled positions + blocks reproduce the 2D ViT."""
    model = inflate_vit2d(_state(vit2d, layout), model_name="vivit_ti16x2", num_frames=2, tubelet_init=mode,
                          num_heads=HEADS)  # fmt: skip
    img = _img()
    with torch.no_grad():
        feats, logits = _tv_features(vit2d, img)
        x = _clip_of(img, 2)
        got_feats = model.forward_head(model.forward_features(x), pre_logits=True)
        got_logits = model(x)
    assert (got_feats - feats).abs().max().item() <= TOL
    assert (got_logits - logits).abs().max().item() <= TOL
    assert model.model_kwargs["embed_dim"] == D and model.model_kwargs["depth"] == DEPTH


def test_tokshift_matches_2d_when_nothing_is_shifted(vit2d):
    """A frame-wise TokShift model whose shift moves no channel is the 2D ViT on every frame."""
    model = inflate_vit2d(vit2d.state_dict(), model_name="tokshift_ti16", num_frames=4, num_heads=HEADS,
                          token_mixer_kwargs={"fold_div": 10 * D, "tokens": "cls"})  # fmt: skip
    img = _img(1)
    with torch.no_grad():
        feats, logits = _tv_features(vit2d, img)
        tokens = model.forward_features(_clip_of(img, 4))  # (B, T, 1 + S, D)
        assert tokens.shape == (2, 4, 1 + (IMG // P) ** 2, D)
        for t in range(4):
            assert (tokens[:, t, 0] - feats).abs().max().item() <= TOL
        assert (model(_clip_of(img, 4)) - logits).abs().max().item() <= TOL


def test_tokshift_inflated_checkpoint_shifts(vit2d, tmp_path):
    """The paper's TokShift (fold_div 4) inflated through the CLI: same weights, and the shift now changes the end
    frames, so logits move away from the 2D ViT's while staying finite."""
    sd_path = tmp_path / "vit.pth"
    torch.save(vit2d.state_dict(), sd_path)
    out = tmp_path / "tokshift.safetensors"
    res = CliRunner().invoke(cli, ["convert", str(sd_path), str(out), "--model", "tokshift_ti16", "--num-frames",
                                   "4", "--num-heads", str(HEADS)])  # fmt: skip
    assert res.exit_code == 0, res.output
    model = vidtok.load_model(out)
    assert model.model_name == "tokshift_ti16" and model.pretrained_cfg["num_frames"] == 4
    assert model.pretrained_cfg["mean"] == pytest.approx([0.485, 0.456, 0.406])  # torchvision's normalisation
    img = _img(2)
    with torch.no_grad():
        _, logits = _tv_features(vit2d, img)
        got = model(_clip_of(img, 4))
    assert torch.isfinite(got).all() and (got - logits).abs().max() > 1e-3
    assert torch.equal(model.blocks[1].attn.qkv.weight, vit2d.encoder.layers[1].self_attention.in_proj_weight)


def test_factorised_encoder_spatial_part_matches_2d(vit2d):
    """ViViT Model 2: the spatial encoder's per-slice CLS outputs are the 2D ViT's features, for any T'."""
    model = inflate_vit2d(vit2d.state_dict(), model_name="vivit_b16x2_fe", num_frames=6, num_heads=HEADS,
                          depth_temporal=1)  # fmt: skip
    seen = {}
    model.temporal.norm_in.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    img = _img(3)
    with torch.no_grad():
        feats, _ = _tv_features(vit2d, img)
        model(_clip_of(img, 6))
    cls = seen["x"][:, :, 0]  # (B, T', D)
    assert cls.shape == (2, 3, D)
    assert (cls - feats[:, None]).abs().max().item() <= TOL


def test_factorised_self_attention_starts_as_2d(vit2d):
    """ViViT Model 3: spatial paths come from the 2D ViT; temporal attention keeps its zero init (identity branch)."""
    model = inflate_vit2d(vit2d.state_dict(), model_name="vivit_b16x2_fsa", num_frames=4, num_heads=HEADS)
    assert "blocks.0.attn_t.qkv.weight" in model.inflation["kept_init"]
    assert "blocks.0.attn.qkv.weight" in model.inflation["copied"]
    assert model.blocks[0].attn_t.proj.weight.abs().max() == 0


def test_central_and_average_semantics(vit2d):
    """central: only frame t//2 of each tubelet matters; average: the order of frames in a tubelet does not."""
    sd = vit2d.state_dict()
    central = inflate_vit2d(sd, model_name="vivit_ti16x2", num_frames=4, num_heads=HEADS, tubelet_init="central")
    average = inflate_vit2d(sd, model_name="vivit_ti16x2", num_frames=4, num_heads=HEADS, tubelet_init="average")
    x = torch.randn(1, 3, 4, IMG, IMG, generator=torch.Generator().manual_seed(4))
    y = x.clone()
    y[:, :, 0::2] = torch.randn(1, 3, 2, IMG, IMG)  # change frames 0 and 2 (not central for t=2: index 1)
    z = x[:, :, [1, 0, 3, 2]]  # swap the two frames inside each tubelet
    with torch.no_grad():
        assert (central(x) - central(y)).abs().max() <= 1e-5
        assert (central(x) - central(z)).abs().max() > 1e-3
        assert (average(x) - average(z)).abs().max() <= 1e-5
        assert (average(x) - average(y)).abs().max() > 1e-3
    w = central.patch_embed.proj.weight
    assert torch.equal(w[:, :, 1], sd["conv_proj.weight"]) and w[:, :, 0].abs().max() == 0
    assert torch.allclose(average.patch_embed.proj.weight.sum(2), sd["conv_proj.weight"], atol=1e-6)


def test_positional_table_resized_and_tiled(vit2d):
    """A larger crop: the spatial grid is resized bicubically (checked against F.interpolate) and tiled over T'."""
    model = inflate_vit2d(vit2d.state_dict(), model_name="vivit_ti16x2", num_frames=6, img_size=48, num_heads=HEADS)
    table = model.pos_embed.table[0]  # (1 + 3·6·6, D)
    pos = vit2d.encoder.pos_embedding[0]
    g = pos[1:].reshape(1, 4, 4, D).permute(0, 3, 1, 2)
    ref = F.interpolate(g, size=(6, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(36, D)
    assert torch.allclose(table[0], pos[0])
    for t in range(3):
        assert torch.allclose(table[1 + 36 * t : 1 + 36 * (t + 1)], ref, atol=1e-6)
    assert model(torch.randn(1, 3, 6, 48, 48)).shape == (1, NCLS)


def test_new_head_when_class_count_differs(vit2d):
    model = inflate_vit2d(vit2d.state_dict(), model_name="vivit_ti16x2", num_frames=2, num_heads=HEADS,
                          num_classes=3)  # fmt: skip
    assert model.head.weight.shape == (3, D)
    assert "head.weight" in model.inflation["kept_init"]
    assert torch.equal(model.blocks[0].mlp.fc1.weight, vit2d.encoder.layers[0].mlp[0].weight)


def test_canonical_layouts_agree(vit2d):
    a = canonical_from_2d(vit2d.state_dict())
    b = canonical_from_2d(_to_timm(vit2d.state_dict()))
    assert a["layout"] == "torchvision" and b["layout"] == "timm"
    assert a["tensors"].keys() == b["tensors"].keys()
    assert all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])
    assert (a["embed_dim"], a["depth"], a["patch"], a["grid"], a["num_classes"]) == (D, DEPTH, P, (4, 4), NCLS)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_errors(vit2d, tmp_path):
    with pytest.raises(CheckpointError, match="not a 2D ViT state dict"):
        inflate_vit2d({"foo": torch.zeros(1)}, model_name="vivit_ti16x2")
    with pytest.raises(CheckpointError, match="needs --model"):
        inflate_vit2d(vit2d.state_dict(), model_name=None)
    with pytest.raises(CheckpointError, match="cannot infer attention heads"):
        inflate_vit2d(vit2d.state_dict(), model_name="vivit_ti16x2")  # D=48 is not a multiple of 64
    with pytest.raises(CheckpointError, match="no_such_model"):
        inflate_vit2d(vit2d.state_dict(), model_name="no_such_model", num_heads=HEADS)
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"\x80\x04junk")
    res = CliRunner().invoke(cli, ["convert", str(bad), str(tmp_path / "o.safetensors"), "--model", "vivit_ti16x2"])
    assert res.exit_code != 0 and "junk.pth" in res.output and res.output[-1] == "\n" and res.output.count("\n") == 1


def test_timm_hub_folder_auto_detected(vit2d, tmp_path):
    """A timm Hub folder (config.json without model_type + model.safetensors) goes the 2D path under --arch auto."""
    import json

    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224", "num_classes": NCLS}))
    save_file({k: v.contiguous() for k, v in _to_timm(vit2d.state_dict()).items()}, str(tmp_path / "model.safetensors"))
    out = tmp_path / "o.safetensors"
    args = ["convert", str(tmp_path), str(out), "--model", "vivit_ti16x2", "--num-frames", "2", "--num-heads", "3"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    model = vidtok.load_model(out)
    assert model.pretrained_cfg["mean"] == [0.5, 0.5, 0.5]  # timm layout: [-1, 1]
    img = _img(5)
    with torch.no_grad():
        assert (model(_clip_of(img, 2)) - _tv_features(vit2d, img)[1]).abs().max().item() <= TOL
