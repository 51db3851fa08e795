"""Decode workers die with their parent: after ``kill -9`` of classify no worker outlives it, and SIGTERM (docker,
Kubernetes) shuts the job down like Ctrl-C: writer closed, workers stopped, exit 143, stdout closed for a pipe."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._infer_util import HOOK, make_checkpoint, make_good_videos
from vidtok.engine.infer_io import read_classify_output

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.xdist_group("infer_signals"), pytest.mark.skipif(sys.platform != "linux", reason="/proc")]


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids |= {int(x) for x in (task / "children").read_text().split()}
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its parent is gone or has not reaped it yet)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    good = make_good_videos(d / "videos", n=4)
    (d / "videos" / "HANG.mp4").write_bytes(good[0].read_bytes())  # the fault hook makes its worker hang
    return {"dir": d, "videos": d / "videos", "ckpt": make_checkpoint(d)}


def _start(job, out: Path, slow: float) -> tuple[subprocess.Popen, set[int]]:
    """classify with 2 workers (every file takes ``slow`` s more, HANG.mp4 forever); the process and its workers."""
    env = dict(os.environ, PYTHONPATH=str(REPO), VIDTOK_INFER_FAULT_HOOK=HOOK, VIDTOK_TEST_SLOW=str(slow))
    cmd = [sys.executable, "-m", "vidtok.cli", "classify", str(job["videos"]), "-c", str(job["ckpt"])]
    cmd += ["--out", str(out), "--workers", "2", "--device", "cpu", "--backend", "pyav", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
        time.sleep(0.2)
        workers = _children(proc.pid)
    assert len(workers) >= 2, proc.stderr.read().decode() if proc.poll() is not None else "no workers started"
    time.sleep(1.0)  # the workers are inside their first file now
    return proc, workers


def _gone_within(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    left = {p for p in pids if _alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if _alive(p)}
    return left


def test_kill_9_of_the_parent_leaves_no_worker(job, tmp_path):
    proc, workers = _start(job, tmp_path / "p.csv", slow=60)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone_within(workers, 5.0) == set()
    finally:
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_sigterm_is_a_clean_stop(job, tmp_path):
    out = tmp_path / "p.csv"
    proc, workers = _start(job, out, slow=0)
    try:
        deadline = time.monotonic() + 60  # one worker hangs on HANG.mp4, the other finishes the rest
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
            time.sleep(0.2)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)  # returns only once nobody holds the stdout pipe open
        assert time.monotonic() - t0 < 15
        lines = err.decode().strip().splitlines()
        assert (
            proc.returncode == 143 and lines[-1] == "error: interrupted (SIGTERM)" and "Traceback" not in err.decode()
        )
        assert _gone_within(workers, 5.0) == set()
        rows = read_classify_output(out)  # every finished video is there; the interrupted one is left for --resume
        assert len(rows) >= 3 and all(r["status"] == "ok" for r in rows)
        assert "HANG.mp4" not in {Path(r["path"]).name for r in rows}
    finally:
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
