"""Log lines and progress: `--no-progress` prints periodic progress lines, a log line never runs into a progress bar
(on a terminal every line goes through tqdm.write), and every command shares one handler."""

from __future__ import annotations

import io
import logging
import re
import warnings

import pytest
from click.testing import CliRunner

import vidtok.logs
from tests._data_util import small_synth
from vidtok.cli import cli

LINE = re.compile(r"^train: step (\d+)/(\d+) \(\d+%\), loss [\d.]+, lr [\d.e+-]+, [\d.]+ clips/s, [\d:]+ elapsed")
TRAIN = ["model.extra={depth: 2, embed_dim: 32, num_heads: 2, token_reducer_layer: 1}"]
TRAIN += ["data.crop_size=32", "data.scale_range=[32, 36]", "data.test_short_side=32", "data.num_workers=0"]
TRAIN += ["data.batch_size=4", "data.hflip=false", "train.device=cpu", "train.warmup_steps=1"]


class _Terminal(io.StringIO):
    """stderr as a terminal: tqdm draws its bar here with carriage returns."""

    def isatty(self) -> bool:
        return True


def _visible_lines(raw: str) -> list[str]:
    """What a terminal shows: each newline-ended line is what follows its last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in raw.split("\n")]


@pytest.mark.xdist_group("data_small_synth")
def test_no_progress_prints_periodic_progress_lines(tmp_path_factory, tmp_path, monkeypatch):
    root = small_synth(tmp_path_factory)
    monkeypatch.setattr(vidtok.logs, "LOG_INTERVAL_S", 0.0)  # a line per step instead of one per 15 s
    args = ["train", "--config", "demo_vidtok_ti", "--out", str(tmp_path / "run"), "--no-progress", "--epochs", "2"]
    for kv in [*TRAIN, f"data.root={root}"]:
        args += ["--set", kv]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    progress = [m for m in map(LINE.match, lines) if m]
    assert [int(m[1]) for m in progress] == list(range(1, len(progress) + 1)) and len(progress) == 6, r.output
    assert all(int(m[2]) == 6 for m in progress)
    assert "\r" not in r.output  # no bar drawn into a log
    assert any(line.startswith("train: 12 clips, 3 classes") for line in lines) and "saved " in r.output


@pytest.mark.xdist_group("data_small_synth")
def test_log_lines_never_run_into_a_progress_bar(tmp_path_factory, tmp_path, monkeypatch):
    """On a terminal the bar is drawn; the epoch lines (and warnings) land on lines of their own."""
    from vidtok.config import load_config
    from vidtok.engine.train import train

    root = small_synth(tmp_path_factory)
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    data_log = vidtok.logs.get_logger("data")

    class _Warn(logging.Filter):  # a warning from another area while the bar is up
        def filter(self, record):
            if record.getMessage().startswith("epoch 0"):
                data_log.warning("some/file.mp4: cannot open as a video")
            return True

    train_log = logging.getLogger("vidtok.train")
    train_log.addFilter(_Warn())
    try:
        cfg = load_config("demo_vidtok_ti", [*TRAIN, f"data.root={root}", "train.epochs=2", "train.eval_every=1"])
        train(cfg, tmp_path / "run", progress=True)
    finally:
        train_log.removeFilter(_Warn)
        train_log.filters.clear()
    raw = term.getvalue()
    assert "\r" in raw and "step" in raw and "clips/s" in raw  # the bar was drawn
    shown = _visible_lines(raw)
    for text in ("epoch 0: loss", "epoch 1: loss", "warning: some/file.mp4: cannot open as a video", "saved "):
        hits = [line for line in shown if text in line]
        assert hits and all(line.startswith(text) for line in hits), (text, hits)
    # and in the raw bytes: every log line starts right after a newline or a carriage return, never after bar text
    for m in re.finditer(r"epoch \d: loss|warning: some/file", raw):
        assert m.start() == 0 or raw[m.start() - 1] in "\r\n", raw[max(0, m.start() - 80) : m.end()]


def test_one_handler_for_every_command_and_warnings_go_through_it(monkeypatch):
    # pytest restores warnings.showwarning after every test; start this one as a fresh process would
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(logging, "_warnings_showwarning", None)
    for args in (["info", "--model", "vidtok_ti"], ["info"]):
        assert CliRunner().invoke(cli, args).exit_code == 0
    handlers = [h for h in logging.getLogger("vidtok").handlers if isinstance(h, vidtok.logs._TqdmHandler)]
    assert len(handlers) == 1
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    bar = vidtok.logs.Progress(10, "classify", "video")
    bar.update(3, postfix="1.0 clips/s")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("torchcodec failed on x.mp4; reading it with PyAV", RuntimeWarning, stacklevel=1)
    bar.close()
    shown = _visible_lines(term.getvalue())
    assert any(line.startswith("warning: ") and "reading it with PyAV" in line for line in shown), shown
