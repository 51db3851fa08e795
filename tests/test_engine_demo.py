"""The demo pipeline end to end on a tiny budget (synthetic videos -> train -> eval), and `vidtok eval` on its run.

The accuracy of the full demo is measured by `vidtok demo` itself (docs/training.md), not asserted here."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vidtok.cli import cli


@pytest.mark.slow
def test_demo_pipeline_and_eval_cli(tmp_path):
    from vidtok.engine.demo import run_demo

    lines = []
    overrides = [
        "train.max_steps=2",
        "model.extra={depth: 2, token_reducer_layer: 1}",
        "data.num_workers=0",
        "data.batch_size=4",
    ]
    res = run_demo(
        tmp_path / "demo",
        overrides=overrides,
        data={"per_class": 3, "val_per_class": 2, "frames": 20},
        progress=False,
        echo=lines.append,
    )
    out = tmp_path / "demo"
    for f in ("data/train.csv", "run/config.yaml", "run/metrics.jsonl", "run/model.safetensors", "eval/metrics.json"):
        assert (out / f).is_file(), f
    assert (out / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    text = "\n".join(lines)
    assert "held-out top-1" in text and "top-5" in text and str(out / "run" / "model.safetensors") in text
    assert res["chance"] == 25.0 and json.loads((out / "eval" / "metrics.json").read_text())["num_samples"] == 8
    # the other two user jobs and the pictures ran on the held-out folder: one row / vector per video
    import pyarrow.parquet as pq

    preds = (out / "predictions.csv").read_text().strip().splitlines()
    assert len(preds) == 1 + 8 and all(",ok," in row for row in preds[1:]), preds
    assert pq.read_table(out / "embeddings.parquet").num_rows == 8
    for f in ("curves.png", "tokenlearner_overlay.png"):
        assert (out / "pictures" / f).read_bytes()[:4] == b"\x89PNG", f
    assert str(out / "pictures" / "tokenlearner_overlay.png") in text
    # the review page of the held-out videos, and where it is
    from tests._report_util import read_data

    page = read_data(out / "report")
    assert (
        len(page["classify"]["rows"]) == 8
        and len(page["embed"]["v"]) == 8
        and str(out / "report" / "index.html") in text
    )
    assert all(r["t"] and r["o"] for r in page["classify"]["rows"])  # posters and TokenLearner overlays

    r = CliRunner().invoke(
        cli,
        ["eval", "-c", str(out / "run"), "--data", str(out / "data" / "val.csv"), "--workers", "0"]
        + ["--out", str(tmp_path / "ev"), "--clips", "2", "--sampler", "mmaction2"],
    )
    assert r.exit_code == 0, r.output
    assert "top-1" in r.output and "views/clip 2   sampler mmaction2" in r.output
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["test_sampler"] == "mmaction2"


def test_train_cli_reports_bad_config_in_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "r"), "--set", "train.amp=fp32"])
    assert r.exit_code != 0
    assert r.output.strip().startswith("error:") and len(r.output.strip().splitlines()) == 1


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    r = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "r"), "--resume"])
    assert r.exit_code == 2 and "no checkpoints/ to resume from" in r.output
