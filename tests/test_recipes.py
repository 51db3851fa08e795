"""Bundled recipes: `--config NAME` works like a path (package data, so an installed wheel has them), and the
`vidtok synth` defaults are the demo's dataset, so the demo recipe on a default synth run reproduces the demo."""

from __future__ import annotations

import inspect

from click.testing import CliRunner

from vidtok.cli import cli
from vidtok.config import RECIPES_DIR, list_recipes, load_config, recipe_path


def test_a_bundled_recipe_name_loads_like_its_path(tmp_path, monkeypatch):
    names = list_recipes()
    assert {"demo_vidtok_ti", "vidtok_ti", "k400_vidtok_b"} <= set(names)
    by_name = load_config("demo_vidtok_ti", ["train.epochs=2"])
    assert by_name == load_config(RECIPES_DIR / "demo_vidtok_ti.yaml", ["train.epochs=2"])
    assert by_name.model.name == "vidtok_ti" and by_name.data.crop_size == 64 and by_name.train.epochs == 2
    assert load_config("demo_vidtok_ti.yaml") == load_config("demo_vidtok_ti")
    # from any folder; and a file of that name in the working folder is the user's and wins
    monkeypatch.chdir(tmp_path)
    assert recipe_path("vidtok_b") == RECIPES_DIR / "vidtok_b.yaml"
    (tmp_path / "vidtok_b.yaml").write_text("train:\n  epochs: 7\n")
    assert recipe_path("vidtok_b.yaml").resolve() == (tmp_path / "vidtok_b.yaml").resolve()
    assert load_config("vidtok_b.yaml").train.epochs == 7


def test_an_unknown_recipe_is_one_line_naming_the_choices(tmp_path):
    r = CliRunner().invoke(cli, ["train", "--config", "demo_vidtok_tl", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error:")
    assert "demo_vidtok_tl" in line and "not a bundled recipe" in line and "demo_vidtok_ti" in line
    r = CliRunner().invoke(cli, ["train", "--config", "sub/vidtok_ti", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "sub/vidtok_ti" in r.output  # a path with a folder is never a recipe name


def test_synth_defaults_are_the_demo_dataset():
    """`vidtok synth OUT` (CLI defaults) == make_synthetic_dataset defaults == what `vidtok demo` writes."""
    from vidtok.data.synthetic import make_synthetic_dataset
    from vidtok.engine.demo import DEMO_DATA

    cli_defaults = {p.name: p.default for p in cli.commands["synth"].params}
    fn_defaults = {k: v.default for k, v in inspect.signature(make_synthetic_dataset).parameters.items()}
    per_class = DEMO_DATA["per_class"]
    assert cli_defaults["num_classes"] == fn_defaults["num_classes"] == DEMO_DATA["num_classes"]
    assert cli_defaults["per_class"] == fn_defaults["per_class"] == per_class
    assert cli_defaults["val_per_class"] is None and max(per_class // 4, 1) == DEMO_DATA["val_per_class"]
    for key in ("size", "frames"):
        assert cli_defaults[key] == fn_defaults[key] == DEMO_DATA[key], key
    assert cli_defaults["seed"] == fn_defaults["seed"] == 0 and cli_defaults["fps"] == fn_defaults["fps"]


def test_demo_recipe_fits_the_synth_defaults():
    """The recipe's data settings match the videos a default synth writes, and give it the steps it needs."""
    from vidtok.engine.demo import DEMO_DATA

    cfg = load_config("demo_vidtok_ti")
    d = cfg.data
    assert d.format == "kinetics" and d.hflip is False  # a flip turns `right` into `left`
    assert d.test_short_side == DEMO_DATA["size"] and d.crop_size <= DEMO_DATA["size"] <= d.scale_range[0]
    assert (d.num_frames - 1) * d.frame_stride + 1 <= DEMO_DATA["frames"]
    steps = cfg.train.epochs * (DEMO_DATA["num_classes"] * DEMO_DATA["per_class"] // d.batch_size)
    assert steps >= 150, steps  # accuracy rises after ~100 steps; 40 videos per class gave 80 steps and chance
