"""``--engine ray``: same rows / vectors as the local engine on good and bad videos, decoder hangs and crashes
isolated, a Ray worker SIGKILLed mid-job, the driver killed then ``--resume``, and Ray imported only when asked for.

One local Ray cluster (``ray.init(num_cpus=2)``, no dashboard) is shared by the module and shut down at its end; the
fault tests drive it from a second process (``ray.init(address=...)``), as a user's job on a cluster would.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests._infer_util import HOOK, REPO, make_bad_files, make_checkpoint, make_good_videos
from tests.videos import make_frames, write_video
from vidtok.engine.infer import classify, embed
from vidtok.engine.infer_io import find_videos, read_classify_output, read_embed_output
from vidtok.engine.infer_io.files import _errors_path
from vidtok.engine.infer_io.vectors import _index_path

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'vidtok[ray]')")
pytestmark = pytest.mark.xdist_group("ray")

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1"}


def _pythonpath() -> str:
    return str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer_ray")
    good = make_good_videos(root / "videos", n=3)
    bad = make_bad_files(root / "videos", good[0])
    return {"root": root, "videos": root / "videos", "good": good, "bad": bad, "ckpt": make_checkpoint(root)}


@pytest.fixture(scope="module")
def reference(job):
    rows = classify([job["videos"]], job["ckpt"], topk=3, backend="pyav", batch_size=3)
    return {r["path"]: r for r in rows}


@pytest.fixture(scope="module")
def cluster():
    """The module's local Ray cluster; yields its address for driver processes."""
    if not HAS_RAY:
        pytest.skip("Ray is not installed (pip install 'vidtok[ray]')")
    import ray

    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024**2,
        runtime_env={"env_vars": {"PYTHONPATH": _pythonpath(), "VIDTOK_INFER_FAULT_HOOK": HOOK}},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _same(a: dict, b: dict) -> None:
    assert a["path"] == b["path"] and a["status"] == b["status"], (a, b)
    assert a["error"] == b["error"] and a["views"] == b["views"], (a, b)
    if a["status"] == "ok":
        assert a["labels"] == b["labels"] and a["indices"] == b["indices"]
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-5)
        assert a["duration"] == pytest.approx(b["duration"], abs=1e-3)


def _paths_in_csv(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [r["path"] for r in csv.DictReader(f)]


# --------------------------------------------------------------------------------------------------------------------
# Equality with the local engine


@needs_ray
def test_classify_ray_equals_local(job, reference, cluster, tmp_path):
    out = tmp_path / "preds.jsonl"
    rows = classify([job["videos"]], job["ckpt"], topk=3, backend="pyav", batch_size=4, out=out, engine="ray")
    files = find_videos([job["videos"]])
    assert [r["path"] for r in rows] == files  # discovery order, one row per file
    assert sum(r["status"] == "error" for r in rows) == len(job["bad"])
    for r in rows:
        _same(r, reference[r["path"]])
    assert [r["path"] for r in read_classify_output(out)] == files
    assert (tmp_path / "preds.jsonl.job.json").exists()
    # a second run with --resume finds everything done and adds nothing
    again = classify([job["videos"]], job["ckpt"], topk=3, backend="pyav", out=out, resume=True, engine="ray")
    assert [r["path"] for r in again] == files
    assert len(out.read_text().splitlines()) == len(files)


@needs_ray
def test_embed_ray_equals_local(job, cluster, tmp_path):
    kw = dict(backend="pyav", batch_size=3, window="0.4s", hop="0.3s", tokens=True)
    local = embed([job["videos"]], job["ckpt"], **kw)
    out = tmp_path / "emb.safetensors"
    res = embed([job["videos"]], job["ckpt"], out=out, engine="ray", **kw)
    assert res["index"] == local["index"] and len(res["index"]) > len(job["good"])  # several windows per video
    assert [(v["path"], v["status"], v["error"]) for v in res["videos"]] == [
        (v["path"], v["status"], v["error"]) for v in local["videos"]
    ]
    np.testing.assert_allclose(res["embeddings"], local["embeddings"], atol=1e-5)
    np.testing.assert_allclose(res["tokens"], local["tokens"], atol=1e-5)
    back = read_embed_output(out)
    np.testing.assert_array_equal(back["embeddings"], res["embeddings"])
    assert _index_path(out).exists() and _errors_path(out).exists()  # beside the output, as locally


@needs_ray
def test_decoder_hang_and_crash_are_error_rows(job, cluster, tmp_path, monkeypatch):
    folder = tmp_path / "faulty"
    folder.mkdir()
    for name in ("ok.mp4", "HANG.mp4", "CRASH.mp4", "EXIT.mp4"):
        write_video(folder / name, make_frames(12, 32, 48, seed=1), 25, "libx264", pix_fmt="yuv420p")
    kw = dict(topk=2, backend="pyav", timeout=8.0)  # room for a good file on a loaded 2-core machine; HANG waits it out
    rows = classify([folder], job["ckpt"], engine="ray", **kw)
    monkeypatch.setenv("VIDTOK_INFER_FAULT_HOOK", HOOK)
    local = classify([folder], job["ckpt"], **kw)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["ok.mp4"]["status"] == "ok", by_name["ok.mp4"]["error"]
    assert "timed out after 8 s" in by_name["HANG.mp4"]["error"]
    assert "crashed" in by_name["CRASH.mp4"]["error"] and "crashed" in by_name["EXIT.mp4"]["error"]
    for a, b in zip(rows, local, strict=True):
        _same(a, b)


# --------------------------------------------------------------------------------------------------------------------
# Faults: a Ray worker killed mid-job, the driver killed then --resume

_DRIVER = """
import sys, ray
from vidtok.engine.infer import classify
cluster, videos, ckpt, pythonpath, out, hook = sys.argv[1:]
env = {"PYTHONPATH": pythonpath, "VIDTOK_INFER_FAULT_HOOK": hook, "VIDTOK_TEST_SLOW": "2.5"}
ray.init(address=cluster, log_to_driver=False, runtime_env={"env_vars": env})
classify([videos], ckpt, topk=3, backend="pyav", batch_size=2, out=out, engine="ray")
"""


def _start_driver(cluster: str, job: dict, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=_pythonpath(), **RAY_ENV)
    args = [cluster, str(job["videos"]), str(job["ckpt"]), _pythonpath(), str(out), HOOK]
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _wait_rows(out: Path, n: int, proc: subprocess.Popen, limit: float = 120) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if out.exists() and (k := len(_paths_in_csv(out))) >= n:
            return k
        assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} rows in {out} after {limit} s")


def _title(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return ""


def _ray_workers(name: str, cluster: str) -> list[int]:
    """pids of the Ray worker processes of ``cluster`` (children of its raylet) whose title mentions ``name``."""
    pids = []
    for d in Path("/proc").iterdir():
        title = _title(d.name) if d.name.isdigit() else ""
        if title.startswith("ray::") and name in title and f"--gcs-address={cluster}" in _title(_ppid(d.name)):
            pids.append(int(d.name))
    return pids


def _kill_one(name: str, cluster: str, forked: bool = False, limit: float = 60) -> list[int]:
    """SIGKILL one Ray worker of ``cluster`` running ``name`` (``forked``: once it has started a decode process);
    returns the pids of the processes it had forked."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for pid in _ray_workers(name, cluster):
            children = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and _ppid(d.name) == str(pid)]
            if children or not forked:
                os.kill(pid, signal.SIGKILL)
                return children
        time.sleep(0.05)
    raise AssertionError(f"no Ray worker running {name}")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _check_complete(out: Path, job: dict, reference: dict) -> None:
    files = find_videos([job["videos"]])
    assert sorted(_paths_in_csv(out)) == sorted(files)  # every file exactly once
    for r in read_classify_output(out):
        _same(r, reference[r["path"]])


@needs_ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray workers through /proc")
def test_ray_worker_sigkill_mid_job(job, reference, cluster, tmp_path):
    out = tmp_path / "preds.csv"
    proc = _start_driver(cluster, job, out)
    try:
        forked = _kill_one("_decode", cluster, forked=True)  # a decode task while decoding: Ray runs it again
        _wait_rows(out, 1, proc)
        _kill_one("_Replica", cluster)  # the model replica: Ray restarts it and retries its batch
        log = proc.communicate(timeout=180)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-3000:]
    _check_complete(out, job, reference)
    assert not [p for p in forked if _alive(p)]  # the killed task's decode process died with it
    # Ray Data's own lines (execution plan, "execution finished", progress-bar notice) are kept off the terminal
    assert "execution finished" not in log and "Progress bars" not in log, log[-3000:]


@needs_ray
def test_driver_killed_then_resume(job, reference, cluster, tmp_path):
    from click.testing import CliRunner

    from vidtok.cli import cli

    out = tmp_path / "preds.csv"
    proc = _start_driver(cluster, job, out)
    try:
        done = _wait_rows(out, 2, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    kept = set(_paths_in_csv(out))
    assert len(kept) >= done and len(kept) < len(reference)
    args = ["classify", str(job["videos"]), "-c", str(job["ckpt"]), "--topk", "3", "--backend", "pyav", "--out"]
    res = CliRunner().invoke(cli, [*args, str(out), "--resume", "--engine", "ray"])
    assert res.exit_code == 0, res.output
    assert f"{len(kept)} skipped" in res.stderr, res.stderr
    _check_complete(out, job, reference)


# --------------------------------------------------------------------------------------------------------------------
# Ray only when asked for


def test_ray_imported_only_for_engine_ray(job):
    code = (
        "import sys\n"
        "import vidtok, vidtok.cli, vidtok.engine.infer\n"
        "from vidtok.cli import cli\n"
        "from click.testing import CliRunner\n"
        "CliRunner().invoke(cli, ['classify', '--help'])\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
        "sys.modules['ray'] = None  # as if the extra were not installed\n"
        f"r = CliRunner().invoke(cli, ['classify', {str(job['videos'])!r}, '-c', {str(job['ckpt'])!r}, "
        "'--engine', 'ray'])\n"
        "print(r.exit_code, r.stderr)\n"
    )
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    code_, _, msg = res.stdout.strip().partition(" ")
    assert code_ != "0" and msg.count("\n") == 0 and msg.startswith("error: "), res.stdout
    assert "pip install 'vidtok[ray]'" in msg, msg


def test_engine_options_checked():
    from vidtok.engine.infer_ray import parse_replicas, plan_replicas
    from vidtok.errors import ConfigError

    assert parse_replicas("2") == (2, 2) and parse_replicas("1:4") == (1, 4) and parse_replicas(None) is None
    for bad in ("0", "3:2", "x"):
        with pytest.raises(ConfigError, match="--replicas"):
            parse_replicas(bad)
    # the pool the cluster's resources give: a GPU (and one CPU) per replica up to one per GPU, else CPU replicas
    assert plan_replicas({"CPU": 96, "GPU": 8}, "auto", None) == (True, (1, 8), 1.0)
    # CPU replicas of 2 CPUs (1 on a 2-CPU cluster), up to half the CPUs: the model and decoding cost about the same
    assert plan_replicas({"CPU": 96, "GPU": 8}, "cpu", None) == (False, (1, 24), 2.0)
    assert plan_replicas({"CPU": 2}, "auto", None) == (False, (1, 1), 1.0)
    assert plan_replicas({"CPU": 8}, "auto", None) == (False, (1, 2), 2.0)
    assert plan_replicas({"CPU": 2}, "auto", (1, 2)) == (False, (1, 2), 1.0)
    with pytest.raises(ConfigError, match="no GPU"):
        plan_replicas({"CPU": 8}, "cuda", None)
    with pytest.raises(ConfigError, match="--device"):
        plan_replicas({"CPU": 8}, "tpu", None)
    from vidtok.engine.infer_ray import _check_reachable
    from vidtok.errors import VidtokError

    with pytest.raises(ConfigError, match="HOST:PORT"):
        _check_reachable("nowhere")
    with pytest.raises(VidtokError, match="nothing answers"):
        _check_reachable("127.0.0.1:1")  # port 1: refused at once
    with pytest.raises(ConfigError, match="--engine"):
        classify(["nowhere"], "nothing.safetensors", engine="spark")
    with pytest.raises(ConfigError, match="go with --engine ray"):
        classify(["nowhere"], "nothing.safetensors", address="auto")
