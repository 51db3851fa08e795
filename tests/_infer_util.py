"""Helpers for the inference tests: a tiny checkpoint, a folder mixing good and bad files, and the fault hook.

The fault hook is loaded by decode workers through ``VIDTOK_INFER_FAULT_HOOK=tests._infer_util:fault``; it
simulates decoders that hang (``HANG`` in the file name), segfault (``CRASH``) or exit (``EXIT``) on chosen files,
and slows every file down by ``VIDTOK_TEST_SLOW`` seconds (for kill-and-resume tests). It acts only in a
process that multiprocessing started (a decode worker): called anywhere else (the pytest process) it raises
instead of hanging or killing that process.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch

from tests.videos import make_frames, sample_video_paths, write_video

HOOK = "tests._infer_util:fault"
REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_classes=3, num_frames=4, img_size=32, embed_dim=32, depth=2, num_heads=2, token_reducer_layer=1)
PCFG = dict(
    class_names=["a", "b", "c"], num_frames=4, frame_stride=2, crop_size=32, short_side=40, test_clips=2, test_crops=1
)


def fault(path: str) -> None:
    if multiprocessing.parent_process() is None:
        raise RuntimeError(f"the test fault hook runs only in a decode worker, not in process {os.getpid()}")
    name = os.path.basename(path)
    if "HANG" in name:
        time.sleep(3600)
    if "CRASH" in name:
        faulthandler.disable()  # pytest's faulthandler would dump this (intended) segfault's stack into the log
        os.kill(os.getpid(), signal.SIGSEGV)
    if "EXIT" in name:
        os._exit(3)
    slow = float(os.environ.get("VIDTOK_TEST_SLOW", "0") or 0)
    if slow:
        time.sleep(slow)


def make_checkpoint(folder: Path, name: str = "vidtok_ti", **over) -> Path:
    import vidtok
    from vidtok.models.hub import save_model

    torch.manual_seed(0)
    kwargs = {**TINY, **over}
    if name != "vidtok_ti":
        kwargs.pop("token_reducer_layer", None)
    model = vidtok.create_model(name, **kwargs)
    return save_model(model, folder / f"{name}.safetensors", pretrained_cfg=PCFG)


def make_good_videos(folder: Path, n: int = 5) -> list[Path]:
    """Small H.264 videos of different lengths and sizes (one .mkv in a subfolder), plus a real sample if present."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        t, h, w = 20 + 9 * i, 48 + 8 * (i % 2), 64
        sub = folder / "sub" if i == n - 1 else folder
        sub.mkdir(exist_ok=True)
        p = sub / (f"good{i}.mkv" if i == n - 1 else f"good{i}.mp4")
        write_video(p, make_frames(t, h, w, seed=i), 25, "libx264", pix_fmt="yuv420p", options={"crf": "18"})
        paths.append(p)
    samples = [p for p in sample_video_paths() if "carphone_pristine" in p.name]
    if samples:
        dst = folder / "sample_carphone.mp4"
        shutil.copy(samples[0], dst)
        paths.append(dst)
    return paths


def make_bad_files(folder: Path, good: Path) -> dict[str, Path]:
    """Corrupt, truncated, empty, non-video and unreadable (dangling link) files with video extensions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bad = {
        "corrupt": folder / "corrupt.mp4",
        "truncated": folder / "truncated.mp4",
        "empty": folder / "empty.avi",
        "text": folder / "notes.webm",
        "dangling": folder / "gone.mp4",
    }
    bad["corrupt"].write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    data = good.read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 3])
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("this is not a video\n" * 20)
    bad["dangling"].symlink_to(folder / "does_not_exist.mp4")
    (folder / "README.txt").write_text("not picked up: wrong extension\n")
    return bad
