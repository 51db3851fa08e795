"""The CLI: help, version, info, and one-line errors with non-zero exits."""

from __future__ import annotations

import re
import subprocess
import sys

from click.testing import CliRunner

import vidtok
from vidtok.cli import cli


def test_help_and_version():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "info" in r.output
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and vidtok.__version__ in r.output


def test_info_lists_versions_and_backends():
    r = CliRunner().invoke(cli, ["info"])
    assert r.exit_code == 0, r.output
    for word in ("torch", "torchvision", "av", "video backends", "pyav", "attention backends", "sdpa", "device"):
        assert word in r.output
    # the extensions classify / embed search folders for (their --ext default) are the ones of vidtok.io
    from vidtok.io import VIDEO_EXTENSIONS

    assert re.search(r"^video extensions +" + re.escape(" ".join(VIDEO_EXTENSIONS)) + "$", r.output, re.M)


def test_misspelled_config_key_is_one_line_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochz: 3\n")
    r = subprocess.run(
        [sys.executable, "-m", "vidtok.cli", "info", "--config", str(p)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "train.epochz" in lines[0] and str(p) in lines[0]


def test_debug_shows_traceback(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochz: 3\n")
    r = CliRunner().invoke(cli, ["--debug", "info", "--config", str(p)])
    assert r.exit_code != 0
    assert isinstance(r.exception, vidtok.ConfigError)
