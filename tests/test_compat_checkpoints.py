"""Checkpoints written by an earlier vidtok still load and give the logits they gave when written.

The fixture (tests/fixtures/compat, written by ``generate.py`` at the commit named in its manifest) holds one small
checkpoint per architecture family and token-reducer kind, a fixed input and the logits each model produced. A
refactor that renames a parameter, moves a module or changes a default fails here instead of in users' hands.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vidtok
from vidtok.models.hub import read_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "compat"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())
EXPECTED = load_file(str(FIXTURE / "expected_logits.safetensors"))


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the logits were written single-threaded: same kernels, same summation order
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("key", sorted(MANIFEST["models"]))
def test_old_checkpoint_loads_with_identical_logits(key, one_thread):
    path = FIXTURE / f"{key}.safetensors"
    model = vidtok.load_model(path).eval()
    assert model.model_name == MANIFEST["models"][key]
    with torch.no_grad():
        out = model(EXPECTED["input"])
    torch.testing.assert_close(out, EXPECTED[key], rtol=0, atol=0)


def test_old_checkpoint_preprocessing_reads():
    _, meta = read_checkpoint(FIXTURE / "vidtok_ti_tl.safetensors")
    assert meta["pretrained_cfg"]["class_names"] == ["a", "b", "c"]
    cfg = vidtok.load_model(FIXTURE / "vidtok_ti_tl.safetensors").pretrained_cfg
    assert cfg["class_names"] == ["a", "b", "c"] and cfg["num_frames"] == 4 and cfg["frame_stride"] == 2
    assert (cfg["crop_size"], cfg["short_side"], cfg["test_clips"], cfg["test_crops"]) == (32, 40, 2, 1)
    assert tuple(cfg["input_size"]) == (3, 32, 32) and cfg["crop_pct"] == 32 / 40
