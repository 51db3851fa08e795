"""Compute of the named models at their paper settings, counted on the meta device (no memory, no weights)."""

from __future__ import annotations

import pytest
import torch

from vidtok.models import count_macs, count_params, create_model


def _macs(name: str) -> tuple[int, int]:
    with torch.device("meta"):
        m = create_model(name)
    return count_macs(m, (1, 3, m.num_frames, *m.img_size)), count_params(m)


def test_vivit_b16x2_matches_paper():
    macs, params = _macs("vivit_b16x2")
    assert macs / 1e9 == pytest.approx(455.2, rel=0.02)  # ViViT paper, Model 1 B/16x2 at 32×224²
    assert params / 1e6 == pytest.approx(88.9, rel=0.01)


def test_tokenlearner_model_is_cheap():
    full, _ = _macs("vivit_b16x2")
    tl, _ = _macs("vivit_b16x2_tl8")
    assert tl <= 0.40 * full  # 8 tokens × 16 slices = 128 of 3,137 tokens after block 4 of 12
