"""vidtok → Hugging Face (`vidtok convert --to hf`): transformers loads the folder and gives vidtok's logits, a
HF → vidtok → HF round trip reproduces every tensor, and what transformers cannot express is refused with one line."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

from tests.test_convert_hf import TOL, _build, _clip, _convert_cli  # noqa: E402
from vidtok.cli import cli  # noqa: E402
from vidtok.models import create_model  # noqa: E402
from vidtok.models.hub import save_model  # noqa: E402

HF_CLASSES = {
    "vivit": transformers.VivitForVideoClassification,
    "videomae": transformers.VideoMAEForVideoClassification,
    "timesformer": transformers.TimesformerForVideoClassification,
}
TINY = dict(num_classes=5, num_frames=4, img_size=32, embed_dim=48, depth=2, num_heads=3, tubelet_size=(2, 8, 8))
NATIVE = {  # vidtok-built models of the three architectures transformers has
    "vivit": ("vivit_ti16x2", {}),
    "videomae": ("videomae_b16x2", {}),
    "timesformer": ("timesformer_b16", {"tubelet_size": (1, 8, 8)}),
}


def _to_hf(src, out, *args: str):
    return CliRunner().invoke(cli, ["convert", "--to", "hf", str(src), str(out), *args])


@pytest.mark.parametrize("arch", list(HF_CLASSES))
def test_round_trip_hf_vidtok_hf_is_identical(arch, tmp_path):
    hf = _build(arch)
    hf.save_pretrained(tmp_path / "hf")
    _convert_cli(tmp_path / "hf", tmp_path / "v.safetensors")
    res = _to_hf(tmp_path / "v.safetensors", tmp_path / "back")
    assert res.exit_code == 0, res.output
    ref = load_file(str(tmp_path / "hf" / "model.safetensors"))
    got = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(got) == sorted(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    c0 = json.loads((tmp_path / "hf" / "config.json").read_text())
    c1 = json.loads((tmp_path / "back" / "config.json").read_text())
    same = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "hidden_act", "layer_norm_eps", "image_size", "num_frames", "id2label")  # fmt: skip
    assert {k: c1[k] for k in same} == {k: c0[k] for k in same}
    back = HF_CLASSES[arch].from_pretrained(tmp_path / "back").eval()
    x = _clip(4)
    with torch.no_grad():
        assert torch.equal(
            back(pixel_values=x.permute(0, 2, 1, 3, 4)).logits, hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
        )


@pytest.mark.parametrize("arch", list(NATIVE))
def test_vidtok_model_in_transformers_gives_its_logits(arch, tmp_path):
    name, extra = NATIVE[arch]
    torch.manual_seed(0)
    model = create_model(name, **{**TINY, **extra})
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # every parameter matters, including zero-initialised temporal branches
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    model.pretrained_cfg.update(class_names=[f"c{i}" for i in range(5)], mean=[0.4, 0.5, 0.6])
    ckpt = save_model(model.eval(), tmp_path / "m.safetensors")
    res = _to_hf(ckpt, tmp_path / "hf")
    assert res.exit_code == 0, res.output
    hf = HF_CLASSES[arch].from_pretrained(tmp_path / "hf").eval()
    assert hf.config.id2label[3] == "c3"
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == [0.4, 0.5, 0.6] and pre["crop_size"] == {"height": 32, "width": 32}
    for seed in (0, 1):
        x = _clip(seed)
        with torch.no_grad():
            ref = model(x)
            got = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
        diff = (got - ref).abs().max().item()
        assert diff <= TOL, f"{arch}: max |Δlogits| {diff:.2e}"
    with torch.no_grad():
        assert (model(_clip(7)) - ref).abs().max() > 1e-3


@pytest.mark.parametrize(
    "name,kw,why",
    [
        ("vidtok_ti", {"token_reducer_layer": 1}, "token reducer 'tokenlearner'"),
        (
            "vivit_ti16x2",
            {"token_reducer": {"kind": "tokenlearner_fuser", "at_block": 1}, "class_token": "none", "pool": "mean"},
            "token reducer 'tokenlearner_fuser'",
        ),
        ("tokshift_ti16", {}, "TokShift (token_mixer='tokshift')"),
        ("vivit_b16x2_fe", {"depth_temporal": 1}, "attn_type='fe' (Model 2, factorised encoder)"),
        ("vivit_b16x2_fsa", {}, "factorised self-attention in this form"),
        ("vivit_b16x2_fdp", {}, "attn_type='fdp' (Model 4"),
        ("vivit_ti16x2", {"token_reducer": {"kind": "ats", "at_block": 1, "num_tokens": 2}}, "token reducer 'ats'"),
    ],
)
def test_refused_with_one_line(name, kw, why, tmp_path):
    args = {**TINY, "embed_dim": 32, "num_heads": 2, **kw}
    if name == "tokshift_ti16":
        args["tubelet_size"] = (1, 8, 8)
    ckpt = save_model(create_model(name, **args), tmp_path / "m.safetensors")
    res = _to_hf(ckpt, tmp_path / "hf")
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], res.stderr
    assert "no transformers counterpart" in lines[0]
    assert not (tmp_path / "hf").exists()


def test_existing_folder_needs_overwrite(tmp_path):
    ckpt = save_model(create_model("vivit_ti16x2", **TINY), tmp_path / "m.safetensors")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    res = _to_hf(ckpt, tmp_path / "hf")
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.stderr
    assert _to_hf(ckpt, tmp_path / "hf", "--overwrite").exit_code == 0
    assert (tmp_path / "hf" / "notes.txt").read_text() == "mine" and (tmp_path / "hf" / "config.json").is_file()
    res = _to_hf(ckpt, tmp_path / "hf2", "--num-frames", "8")
    assert res.exit_code == 2 and "--num-frames: not used by --to hf" in res.stderr
