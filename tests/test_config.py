"""Config loader: defaults, strict keys and types, dotted overrides, dump round trip."""

from __future__ import annotations

import pytest

from vidtok.config import Config, config_from_dict, config_to_dict, dump_config, load_config
from vidtok.errors import ConfigError


def write(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_good_file_overrides_defaults(tmp_path):
    p = write(tmp_path, "model:\n  name: vivit_ti16x2\n  num_classes: 7\ntrain:\n  lr: 1e-3\n  betas: [0.9, 0.95]\n")
    cfg = load_config(p)
    assert cfg.model.name == "vivit_ti16x2"
    assert cfg.model.num_classes == 7
    assert cfg.train.lr == pytest.approx(1e-3)  # PyYAML reads 1e-3 as a string; a float field takes it
    assert cfg.train.betas == (0.9, 0.95)
    assert cfg.data.num_frames == Config().data.num_frames  # untouched defaults stay


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.key == "train.lrr"
    assert str(p) in str(ei.value) and "train.lrr" in str(ei.value)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        load_config(write(tmp_path, "modle:\n  name: x\n"))


@pytest.mark.parametrize(
    "text,key",
    [
        ("train:\n  epochs: ten\n", "train.epochs"),
        ("train:\n  epochs: 1.5\n", "train.epochs"),
        ("data:\n  hflip: 1\n", "data.hflip"),
        ("data:\n  scale_range: [256]\n", "data.scale_range"),
        ("train:\n  lr: fast\n", "train.lr"),
        ("model: 3\n", "model"),
    ],
)
def test_wrong_type(tmp_path, text, key):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text))
    assert ei.value.key == key
    assert key in str(ei.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_on_top_of_file(tmp_path):
    p = write(tmp_path, "train:\n  lr: 0.1\n")
    cfg = load_config(p, ["train.lr=3e-4", "data.num_workers=0", "model.name=123", "model.extra={depth: 2}"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.num_workers == 0
    assert cfg.model.name == "123"  # str fields take the text as typed
    assert cfg.model.extra == {"depth": 2}


@pytest.mark.parametrize("bad", ["train.lr", "train.nope=1", "=3", "train.epochs=x"])
def test_bad_overrides(bad):
    with pytest.raises(ConfigError):
        load_config(None, [bad])


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "data.mean=[0.1, 0.2, 0.3]"])
    text = dump_config(cfg, tmp_path / "out.yaml")
    again = load_config(tmp_path / "out.yaml")
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert "epochs: 3" in text


def test_shipped_configs_load():
    from vidtok.config import RECIPES_DIR

    files = sorted(RECIPES_DIR.glob("*.yaml"))
    assert len(files) >= 20, files
    for f in files:
        load_config(f)
