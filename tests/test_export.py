"""Deployment export (vidtok.export, `vidtok export`): ONNX run by onnxruntime and torch.export .pt2 programs give
PyTorch's logits for every family at batch 1 and 3 (one dynamic-batch file), the preprocessing travels inside the file
and beside it, and reducers with an input-dependent token count are refused with one line."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from vidtok.cli import cli  # noqa: E402
from vidtok.export import ExportError, export_model, load_exported, read_export_metadata  # noqa: E402
from vidtok.models import create_model  # noqa: E402

TOL = 1e-4
TINY = dict(num_classes=5, num_frames=4, img_size=32, embed_dim=32, depth=2, num_heads=2)
ONE = {"depth": 1}  # one block is enough to exercise a family's layers; ONNX conversion time grows with depth
FAMILIES = {
    "vivit_ti16x2": ONE,  # ViViT Model 1
    "vivit_b16x2_fe": {**ONE, "depth_temporal": 1},  # Model 2
    "vivit_b16x2_fsa": ONE,  # Model 3
    "vivit_b16x2_fdp": ONE,  # Model 4
    "tokshift_ti16": ONE,  # TokShift
    "vidtok_ti": {"token_reducer_layer": 1},  # TokShift + TokenLearner after block 1 of 2
    "vivit_b16x2_tl8": {"token_reducer_layer": 1, "num_heads": 2},  # Model 1 + TokenLearner
    "videomae_b16x2": ONE,
    "timesformer_b16": ONE,
    "vivit_ti16x2+ats": {"token_reducer": {"kind": "ats", "at_block": 1, "num_tokens": 3}},
    "vivit_ti16x2+dynamicvit": {"token_reducer": {"kind": "dynamicvit", "at_block": [1], "keep_ratio": 0.5}},
}


def tiny(key: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model(key.split("+")[0], **{**TINY, **FAMILIES.get(key, {}), **kw})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # perturb every parameter: zero-initialised ones (temporal branches, predictors) matter
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return m.eval()


def clip(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow  # ONNX conversion takes a few seconds per family
@pytest.mark.parametrize("key", list(FAMILIES))
def test_onnx_and_pt2_match_pytorch(key, tmp_path):
    m = tiny(key)
    outs = {}
    for fmt, name in (("onnx", "m.onnx"), ("torch-export", "m.pt2")):
        res = export_model(m, tmp_path / name, format=fmt, verify=False)
        outs[fmt] = load_exported(res["path"])
    for b in (1, 3):
        x = clip(b, seed=b)
        with torch.no_grad():
            ref = m(x)
        for fmt, run in outs.items():
            got = run(x)
            assert got.shape == ref.shape == (b, 5)
            diff = (got - ref).abs().max().item()
            assert diff <= TOL, f"{key} {fmt} batch {b}: max |Δlogits| {diff:.2e}"
    with torch.no_grad():  # a different clip gives different logits: the comparison can fail
        assert (outs["onnx"](clip(3, seed=9)) - m(clip(3, seed=3))).abs().max() > 1e-3


def test_preprocessing_travels_with_the_file(tmp_path):
    import onnx

    m = tiny("vivit_ti16x2")
    m.pretrained_cfg.update(class_names=list("abcde"), mean=[0.1, 0.2, 0.3], frame_stride=3, short_side=40)
    res = export_model(m, tmp_path / "m.onnx", verify=False)
    props = {p.key: p.value for p in onnx.load(res["path"]).metadata_props}
    assert json.loads(props["mean"]) == [0.1, 0.2, 0.3] and json.loads(props["frame_stride"]) == 3
    assert json.loads(props["class_names"]) == list("abcde") and props["input_layout"] == "B,C,T,H,W"
    meta = read_export_metadata(res["path"])
    assert meta == json.loads((tmp_path / "m.onnx.json").read_text())
    pre = meta["preprocessing"]
    assert pre["num_frames"] == 4 and pre["crop_size"] == 32 and pre["short_side"] == 40 and pre["crop_pct"] == 0.8
    assert meta["input"]["shape"] == ["batch", 3, 4, 32, 32] and meta["output"]["shape"] == ["batch", 5]
    assert meta["model"] == {"name": "vivit_ti16x2", "kwargs": m.model_kwargs}
    res = export_model(m, tmp_path / "m.pt2", verify=False)
    assert read_export_metadata(res["path"])["preprocessing"] == pre


def test_refusals_are_one_line(tmp_path):
    red = {"kind": "mixed_scale"}
    m = create_model("vivit_ti16x2", **{**TINY, "img_size": 64}, token_reducer=red).eval()
    for name in ("m.onnx", "m.pt2"):
        with pytest.raises(ExportError, match="token count depends on the input") as e:
            export_model(m, tmp_path / name)
        assert "\n" not in str(e.value)
    pool = create_model("vivit_ti16x2", **TINY, token_reducer={"kind": "token_pooling", "at_block": 1, "num_tokens": 2})
    with pytest.raises(ExportError, match="no ONNX operator; use --format torch-export"):
        export_model(pool.eval(), tmp_path / "p.onnx")
    res = export_model(pool.eval(), tmp_path / "p.pt2")  # fixed K clusters: fine as a .pt2
    assert res["max_abs_diff"] <= TOL
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p.onnx").exists()


def test_cli_export_refuses_to_overwrite(tmp_path):
    from vidtok.models.hub import save_model

    ckpt = save_model(tiny("tokshift_ti16"), tmp_path / "ck.safetensors")
    out = tmp_path / "out" / "model.pt2"
    res = CliRunner().invoke(cli, ["export", str(ckpt), str(out)])
    assert res.exit_code == 0, res.output
    assert "torch-export" in res.output and "verified: max |logits - PyTorch|" in res.output
    assert out.is_file() and (tmp_path / "out" / "model.pt2.json").is_file()
    res = CliRunner().invoke(cli, ["export", str(ckpt), str(out)])
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.output
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "missing.safetensors"), str(tmp_path / "x.onnx")])
    assert res.exit_code != 0 and res.output.startswith("error: ") and "no such file" in res.output


def test_ats_sampling_count_equals_searchsorted():
    """ATS draws its indices with a comparison count (ONNX has no searchsorted); same result as searchsorted."""
    from vidtok.models.reducers import AdaptiveTokenSampling

    g = torch.Generator().manual_seed(0)
    for M, N, k in ((7, 16, 5), (3, 49, 49), (4, 10, 1)):
        scores = torch.rand(M, N, generator=g) ** 4
        scores[0, : N // 2] = 0  # zero-significance tokens are skipped
        idx, valid = AdaptiveTokenSampling.sample(scores, k)
        p = scores / scores.sum(-1, keepdim=True)
        cdf = p.cumsum(-1)
        cdf[:, -1] = 1.0 + 1e-6
        u = ((torch.arange(k) + 0.5) / k)[None].expand(M, k).contiguous()
        ref = torch.searchsorted(cdf, u).clamp_max(N - 1)
        for r in range(M):
            assert idx[r][valid[r]].tolist() == sorted(set(ref[r].tolist()))
