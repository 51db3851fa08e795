"""Helpers for the data tests: one small synthetic dataset per session (per xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

_CACHE: dict[str, Path] = {}


def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 4 train (+ 1 val) videos of 32x32 px, 24 frames; written once and reused."""
    if "small" not in _CACHE:
        from vidtok.data.synthetic import make_synthetic_dataset

        root = tmp_path_factory.mktemp("synth_small")
        make_synthetic_dataset(root, num_classes=3, per_class=4, val_per_class=1, seed=7, size=32, frames=24)
        _CACHE["small"] = root
    return _CACHE["small"]
