"""Every registered model on tiny configs: shapes, gradients, the model contract, backends, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidtok.config import load_config, resolved_model_config
from vidtok.errors import ConfigError
from vidtok.models import create_model, describe_model, list_models, register_model
from vidtok.models.registry import _MODEL_ENTRYPOINTS, model_entrypoint
from vidtok.models.vivit import ViViT

REQUIRED = [
    "vivit_ti16x2", "vivit_s16x2", "vivit_b16x2", "vivit_l16x2", "vivit_b16x2_fe", "vivit_b16x2_fsa",
    "vivit_b16x2_fdp", "vivit_b16x2_tl8", "tokshift_b16", "tokshift_s16", "tokshift_ti16", "vidtok_ti", "vidtok_s",
    "vidtok_b",
]  # fmt: skip
CONFIGS = Path(__file__).resolve().parents[1] / "vidtok" / "configs"


def tiny(name: str, **extra) -> ViViT:
    """The registry entry with a tiny width/depth, 32² crops and 4 frames (architecture otherwise unchanged)."""
    kw = dict(img_size=32, num_frames=4, depth=2, embed_dim=32, num_heads=2, num_classes=5)
    with torch.device("meta"):  # the full-size entry (no memory, no init cost) tells which knobs to shrink
        m = create_model(name)
    if m.token_reducer is not None:
        kw["token_reducer_layer"] = 1
    if m.attn_type == "fe":
        kw["depth_temporal"] = 1
    kw.update(extra)
    return create_model(name, **kw)


def test_required_names_registered():
    names = list_models()
    assert set(REQUIRED) <= set(names)
    assert names == sorted(names)
    assert list_models("tokshift") == ["tokshift_b16", "tokshift_s16", "tokshift_ti16"]


def test_builtin_names_known_without_torch_are_the_zoo():
    """The torch-free list the CLI checks `model.name` against is exactly what the zoo registers."""
    from vidtok.models.registry import BUILTIN_MODELS, check_model_name
    from vidtok.models.zoo import __name__ as zoo

    registered = sorted(n for n in list_models() if model_entrypoint(n).__module__ == zoo)
    assert sorted(BUILTIN_MODELS) == registered
    check_model_name("vidtok_ti")
    with pytest.raises(ConfigError, match=r"unknown model 'vidtok_tiny' \(known: .*vidtok_ti,"):
        check_model_name("vidtok_tiny")


def test_registering_twice_is_an_error():
    def vivit_b16x2(**kw):  # same name as a built-in
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="already registered"):
        register_model(vivit_b16x2)


def test_unknown_name_and_bad_override():
    with pytest.raises(ConfigError, match="unknown model 'vivit_x'"):
        create_model("vivit_x")
    with pytest.raises(ConfigError, match="no_such_arg"):
        create_model("vivit_ti16x2", no_such_arg=1)
    with pytest.raises(ConfigError, match="attn_type must be one of"):
        create_model("vivit_ti16x2", attn_type="diagonal")
    with pytest.raises(ConfigError, match="class_token"):
        create_model("vivit_ti16x2", attn_type="fdp")  # fdp has no class-token handling


def test_a_bad_keyword_is_a_config_error_naming_it_but_a_type_error_inside_a_build_propagates():
    with pytest.raises(ConfigError, match="'vidtok_ti' has no argument 'num_tokens'") as e:
        create_model("vidtok_ti", num_tokens=4)
    assert e.value.key == "model.extra.num_tokens"

    @register_model(model_class=ViViT)
    def _test_entry_with_a_bug(**kwargs):
        return ViViT(**kwargs, depth="2")  # a bug in the entry, not in the user's overrides

    try:
        with pytest.raises(TypeError):
            create_model("_test_entry_with_a_bug", embed_dim=32, num_heads=2)
    finally:
        _MODEL_ENTRYPOINTS.pop("_test_entry_with_a_bug")


def test_every_entry_is_written_out_once():
    zoo = (Path(__file__).resolve().parents[1] / "vidtok" / "models" / "zoo.py").read_text()
    for name in list_models():
        assert zoo.count(f"def {name}(") == 1, name


@pytest.mark.parametrize("name", REQUIRED + ["videomae_b16x2", "timesformer_b16"])
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    m = tiny(name, drop_path_rate=0.1, dropout=0.1)
    m.train()
    for T, H, W in [(4, 32, 32), (6, 48, 16)]:  # the built size, then other T/H/W (resized positions)
        x = torch.randn(2, 3, T, H, W, requires_grad=True)
        y = m(x)
        assert y.shape == (2, 5)
        y.square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        grads = [p.grad for p in m.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads)
        m.zero_grad()
    m.eval()
    x = torch.randn(3, 3, 4, 32, 32)
    feats, aux = m.forward_features(x, return_aux=True)
    assert aux["grid"] == m.patch_embed.grid(4, 32, 32)
    emb = m.forward_head(feats, pre_logits=True)
    assert emb.shape == (3, m.num_features)
    torch.testing.assert_close(m.forward_head(feats), m(x))
    torch.testing.assert_close(m.head(emb), m(x))


@pytest.mark.parametrize("name", REQUIRED)
def test_model_contract(name):
    m = tiny(name)
    assert m.model_name == name
    rebuilt = create_model(m.model_name, **m.model_kwargs)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    names = {n for n, _ in m.named_parameters()}
    nwd = m.no_weight_decay()
    assert nwd <= names and any("bias" in n for n in nwd)
    assert not any(n.endswith("qkv.weight") or n.endswith("fc1.weight") for n in nwd)
    ids = {n: m.get_layer_id(n) for n in names}
    assert min(ids.values()) == 0 and max(ids.values()) == m.num_layers + 1
    assert ids["head.weight"] == m.num_layers + 1 and ids["patch_embed.proj.weight"] == 0
    assert ids["blocks.0.norm1.weight"] == 1 and ids[f"blocks.{len(m.blocks) - 1}.mlp.fc2.bias"] == len(m.blocks)
    cfg = m.pretrained_cfg
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3 and cfg["num_frames"] == 4 and cfg["crop_size"] == 32
    if name.startswith("vivit"):
        assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.5] * 3  # ViViT expects [-1, 1]
    m.reset_classifier(7)
    assert m(torch.randn(1, 3, 4, 32, 32)).shape == (1, 7)
    m.reset_classifier(0)
    assert m(torch.randn(1, 3, 4, 32, 32)).shape == (1, m.num_features)


@pytest.mark.parametrize("name", REQUIRED + ["videomae_b16x2", "timesformer_b16"])
def test_attention_backends_agree(name):
    torch.manual_seed(1)
    m = tiny(name).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    m.set_attn_backend("math")
    ref = m(x)
    m.set_attn_backend("sdpa")
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    m2 = create_model(name, **{**m.model_kwargs, "attn_backend": "sdpa"})
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.eval()(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", REQUIRED + ["videomae_b16x2", "timesformer_b16"])
def test_one_yaml_per_model(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.name == name
    with torch.device("meta"):
        m = create_model(name)
    assert resolved_model_config(cfg).num_frames == m.num_frames and cfg.data.num_frames == m.num_frames
    assert (cfg.data.crop_size, cfg.data.crop_size) == tuple(m.img_size)


def test_describe_model_uses_config():
    cfg = load_config(CONFIGS / "vidtok_ti.yaml", ["data.crop_size=64", "data.num_frames=8", "model.extra={depth: 6}"])
    d = describe_model("vidtok_ti", resolved_model_config(cfg))
    assert d["model"] == "vidtok_ti"
    assert "1×3×8×64×64" in d["input"]
    assert d["params"].endswith(")") and "M" in d["params"]
    assert float(d["flops"].split()[0]) > 0


def test_drop_path_and_dropout_only_in_training():
    torch.manual_seed(0)
    m = tiny("vivit_ti16x2", drop_path_rate=0.5, dropout=0.5)
    x = torch.randn(2, 3, 4, 32, 32)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    assert not torch.allclose(m(x), m(x))


def test_cli_info_shows_model():
    from click.testing import CliRunner

    from vidtok.cli import cli

    res = CliRunner().invoke(cli, ["info", "--model", "vivit_b16x2_tl8"])
    assert res.exit_code == 0, res.output
    assert "160.7 G multiply-adds" in res.output and "89.01 M" in res.output
    res = CliRunner().invoke(cli, ["info", "--model", "nope"])
    assert res.exit_code != 0 and "unknown model 'nope'" in res.output
