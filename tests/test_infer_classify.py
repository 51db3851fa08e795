"""vidtok classify: one row per file in folders mixing good and bad files, oracle parity, formats, fault isolation,
kill -9 and resume, and 2-process torchrun equal to one process."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vidtok
from tests._infer_util import HOOK, PCFG, REPO, make_bad_files, make_checkpoint, make_good_videos
from tests.videos import decode_all
from vidtok.engine.infer import classify
from vidtok.engine.infer_io import find_videos, read_classify_output


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer_classify")
    good = make_good_videos(root / "videos")
    bad = make_bad_files(root / "videos", good[0])
    ckpt = make_checkpoint(root)
    return {"root": root, "videos": root / "videos", "good": good, "bad": bad, "ckpt": ckpt}


@pytest.fixture(scope="module")
def reference(job):
    """In-memory classify of the mixed folder (pyav decoder), the reference the other runs are compared to."""
    rows = classify([job["videos"]], job["ckpt"], topk=3, backend="pyav", num_workers=2, batch_size=3)
    return {r["path"]: r for r in rows}


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _same(a: dict, b: dict) -> None:
    assert a["path"] == b["path"] and a["status"] == b["status"], (a, b)
    if a["status"] == "ok":
        assert a["labels"] == b["labels"] and a["views"] == b["views"]
        np.testing.assert_allclose(a["probs"], b["probs"], atol=2e-5)
        assert a["duration"] == pytest.approx(b["duration"], abs=1e-3)
    else:
        assert a["error"] and b["error"]


def test_one_row_per_file_good_and_bad(job, reference, tmp_path):
    files = find_videos([job["videos"]])
    assert len(files) == len(job["good"]) + len(job["bad"])  # README.txt is not a video extension
    assert set(reference) == set(files)
    for p in job["good"]:
        r = reference[str(p)]
        assert r["status"] == "ok" and r["error"] == "", r
        assert r["views"] == PCFG["test_clips"] * PCFG["test_crops"]
        assert len(r["labels"]) == 3 and sorted(r["labels"]) == ["a", "b", "c"]
        assert sum(r["probs"]) == pytest.approx(1.0, abs=1e-4) and r["probs"] == sorted(r["probs"], reverse=True)
        assert r["duration"] > 0
    for kind, p in job["bad"].items():
        r = reference[str(p)]
        assert r["status"] == "error" and r["error"] and "\n" not in r["error"], (kind, r)
        assert r["labels"] == [] and r["views"] == 0

    # the same through the CLI into a CSV file, with the errors file beside it
    out = tmp_path / "preds.csv"
    from click.testing import CliRunner

    from vidtok.cli import cli

    res = CliRunner().invoke(
        cli,
        ["classify", str(job["videos"]), "-c", str(job["ckpt"]), "--topk", "3", "--out", str(out), "--backend", "pyav"],
    )
    assert res.exit_code == 0, res.output
    assert "ok" in res.output and "failed" in res.output and "errors.csv" in res.output
    with open(out, newline="") as f:
        recs = list(csv.DictReader(f))
    assert [r["path"] for r in recs] == files  # one row each, in discovery order
    rows = read_classify_output(out)
    for r in rows:
        _same(r, reference[r["path"]])
    with open(str(out) + ".errors.csv", newline="") as f:
        assert {r["path"] for r in csv.DictReader(f)} == {str(p) for p in job["bad"].values()}
    # an existing output is never silently overwritten
    res = CliRunner().invoke(cli, ["classify", str(job["videos"]), "-c", str(job["ckpt"]), "--out", str(out)])
    assert res.exit_code != 0 and "--resume" in res.output
    # without --out the same CSV goes to stdout: same columns (index_i too), same rounding, same escaping
    args = ["classify", str(job["videos"]), "-c", str(job["ckpt"]), "--topk", "3", "--backend", "pyav", "--quiet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert res.stdout == out.read_text(encoding="utf-8")


def test_matches_independent_oracle(job):
    """Probabilities = mean over views of softmax(model(EvalTransform(frames))) on a full PyAV decode."""
    from vidtok.data.clip_sampling import uniform_clips
    from vidtok.data.transforms import EvalTransform

    path = job["good"][2]
    run = job["root"] / "run"  # a `vidtok train` run folder works as --checkpoint too
    run.mkdir(exist_ok=True)
    shutil.copy(job["ckpt"], run / "model.safetensors")
    rows = vidtok.classify([path], run, topk=3, views="3x3", backend="pyav", num_workers=1)
    assert len(rows) == 1 and rows[0]["views"] == 9
    model = vidtok.load_model(job["ckpt"])
    frames = torch.from_numpy(decode_all(path))
    tf = EvalTransform(crop_size=32, short_side=40, num_crops=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    clips = uniform_clips(len(frames), 25.0, clip_len=4, frame_stride=2, num_clips=3)
    x = torch.cat([tf(frames[c.indices]) for c in clips])  # (9, 3, 4, 32, 32)
    with torch.no_grad():
        probs = model(x).softmax(-1).mean(0)
    p, idx = probs.topk(3)
    assert rows[0]["indices"] == idx.tolist()
    np.testing.assert_allclose(rows[0]["probs"], p.numpy(), atol=1e-5)
    assert rows[0]["labels"] == [["a", "b", "c"][i] for i in idx.tolist()]


def test_cpu_streams_split_batches_same_results(job):
    """On CPU each batch is split over model threads; the rows equal a one-stream run, torch's threads are restored."""
    import threading

    model = vidtok.load_model(job["ckpt"])
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append((threading.current_thread().name, a[0].shape[0])))
    threads = torch.get_num_threads()
    kw = dict(topk=3, backend="pyav", num_workers=1, batch_size=4)
    one = classify(job["good"], model, streams=1, **kw)
    assert {n for n, _ in seen} == {threading.current_thread().name}
    seen.clear()
    three = classify(job["good"], model, streams=3, **kw)
    assert torch.get_num_threads() == threads
    assert {n for n, _ in seen} <= {f"vidtok-model_{i}" for i in range(3)} and len({n for n, _ in seen}) > 1
    assert max(b for _, b in seen) <= 2  # a batch of 4 views in parts of 2, 1, 1
    for a, b in zip(one, three, strict=True):
        _same(a, b)


def test_cpu_stream_takes_the_next_part_while_another_is_slow(job):
    """Streams do not wait for each other: while one part is slow (here: the first call sleeps), the other stream
    goes on with the next parts, and the rows still equal a one-stream run (parts come back out of order)."""
    import threading
    import time

    model = vidtok.load_model(job["ckpt"])
    kw = dict(topk=3, backend="pyav", num_workers=2, batch_size=2)
    one = classify(job["good"], model, streams=1, **kw)

    lock = threading.Lock()
    pending = {"sleep": True}
    starts, calls = {}, []  # calls: (thread name, start, end)

    def pre(m, args):
        starts[threading.current_thread().name] = time.monotonic()
        with lock:
            sleep, pending["sleep"] = pending["sleep"], False
        if sleep:
            time.sleep(1.5)

    def post(m, args, out):
        name = threading.current_thread().name
        calls.append((name, starts[name], time.monotonic()))

    hooks = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]
    two = classify(job["good"], model, streams=2, **kw)
    for h in hooks:
        h.remove()
    slow = max(calls, key=lambda c: c[2] - c[1])
    during = [c for c in calls if c[0] != slow[0] and c[1] >= slow[1] and c[2] <= slow[2]]
    assert len(during) >= 2, (slow, calls)  # with a wait for every part of a batch: at most one
    for a, b in zip(one, two, strict=True):
        _same(a, b)


def test_cpu_streams_plan(monkeypatch):
    from vidtok.engine.infer import cpu_streams

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert cpu_streams(16) == (8, 1)  # one model thread per core
    assert cpu_streams(4) == (4, 2)  # no more parts than clips in a batch; the cores go to intra-op threads
    assert cpu_streams(16, 2) == (2, 4)
    assert cpu_streams(1) == (1, 8)


def test_resume_refuses_rows_made_another_way(job, tmp_path):
    """OUT.job.json records weights, preprocessing and views; --resume with other settings is a one-line error."""
    from click.testing import CliRunner

    from vidtok.cli import cli
    from vidtok.errors import ConfigError, VidtokError

    out = tmp_path / "p.jsonl"
    kw = dict(topk=3, out=out, backend="pyav", num_workers=1)
    classify(job["good"][:2], job["ckpt"], views="2x1", **kw)
    rec = json.loads((tmp_path / "p.jsonl.job.json").read_text())
    assert rec["command"] == "classify" and rec["views"] == "2x1" and len(rec["weights_sha256"]) == 64
    assert rec["short_side"] == PCFG["short_side"] and rec["crop_size"] == PCFG["crop_size"]
    with pytest.raises(VidtokError, match=r"views='2x1', this run has views='3x1'"):
        classify(job["good"], job["ckpt"], views="3x1", resume=True, **kw)
    other = make_checkpoint(tmp_path, "vivit_ti16x2")
    with pytest.raises(VidtokError, match="weights_sha256"):
        classify(job["good"], other, views="2x1", resume=True, **kw)
    assert len(read_classify_output(out)) == 2  # refused runs wrote nothing
    r = CliRunner().invoke(
        cli, ["classify", *map(str, job["good"]), "-c", str(job["ckpt"]), "-o", str(out), "--resume", "--quiet"]
    )  # the checkpoint's default views (2x1) match: the job continues
    assert r.exit_code == 0, r.output
    assert len(read_classify_output(out)) == len(job["good"])
    args = ["classify", str(job["good"][0]), "-c", str(job["ckpt"]), "-o", str(out), "--resume", "--topk", "2"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and r.output.startswith("error: --resume:") and r.output.count("\n") == 1, r.output
    classify(job["good"][:1], job["ckpt"], views="3x1", overwrite=True, **kw)  # --overwrite starts a new record
    assert json.loads((tmp_path / "p.jsonl.job.json").read_text())["views"] == "3x1"
    # where the clips sit is part of the record; a record from before the option is read as the default, uniform
    path = tmp_path / "p.jsonl.job.json"
    assert json.loads(path.read_text())["sampler"] == "uniform"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "sampler"}))
    with pytest.raises(VidtokError, match=r"sampler='uniform', this run has sampler='mmaction2'"):
        classify(job["good"], job["ckpt"], views="3x1", resume=True, sampler="mmaction2", **kw)
    classify(job["good"][:1], job["ckpt"], views="3x1", overwrite=True, sampler="pyslowfast", **kw)
    assert json.loads(path.read_text())["sampler"] == "pyslowfast"
    with pytest.raises(VidtokError, match=r"sampler='pyslowfast', this run has sampler='uniform'"):
        classify(job["good"], job["ckpt"], views="3x1", resume=True, **kw)
    with pytest.raises(ConfigError, match=r"--sampler: unknown value 'slowfast'"):
        classify(job["good"], job["ckpt"], sampler="slowfast", **kw)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_output_formats_agree(job, reference, tmp_path, fmt):
    out = tmp_path / f"preds.{fmt}"
    rows = classify([job["videos"]], job["ckpt"], topk=3, out=out, backend="pyav", batch_size=5)
    assert [r["path"] for r in rows] == find_videos([job["videos"]])
    back = read_classify_output(out)
    assert len(back) == len(rows)
    for r in back:
        _same(r, reference[r["path"]])
    if fmt == "jsonl":
        assert all(json.loads(line)["path"] for line in out.read_text().splitlines())
    else:
        import pyarrow.parquet as pq

        t = pq.read_table(out)
        assert t.num_rows == len(rows) and {"path", "labels", "probs", "status", "error"} <= set(t.column_names)
    assert not Path(str(out) + ".parts").exists()


def test_hanging_and_crashing_decoders_cost_one_file(job, tmp_path, monkeypatch):
    folder = tmp_path / "faults"
    folder.mkdir()
    src = job["good"][0]
    names = ["a_ok.mp4", "b_HANG.mp4", "c_ok.mp4", "d_CRASH.mp4", "e_EXIT.mp4", "f_ok.mp4"]
    for n in names:
        shutil.copy(src, folder / n)
    monkeypatch.setenv("VIDTOK_INFER_FAULT_HOOK", HOOK)
    t0 = time.monotonic()
    out = tmp_path / "preds.jsonl"
    rows = classify([folder], job["ckpt"], topk=1, out=out, backend="pyav", num_workers=2, timeout=3.0)
    assert time.monotonic() - t0 < 60
    by = {Path(r["path"]).name: r for r in rows}
    assert sorted(by) == names
    assert "timed out" in by["b_HANG.mp4"]["error"]
    assert "crashed" in by["d_CRASH.mp4"]["error"] and "-11" in by["d_CRASH.mp4"]["error"]
    assert "crashed" in by["e_EXIT.mp4"]["error"]
    ok = [by[n] for n in names if "ok" in n]
    assert all(r["status"] == "ok" for r in ok)
    assert ok[0]["probs"] == ok[1]["probs"] == ok[2]["probs"]  # same file, same answer, whichever worker did it

    # the decoder is fixed: --resume --retry-failed redoes only the failed files and replaces their rows
    monkeypatch.delenv("VIDTOK_INFER_FAULT_HOOK")
    (folder / "a_ok.mp4").unlink()  # proves ok rows are not redone: a redo would turn this row into an error
    rows = classify([folder], job["ckpt"], topk=1, out=out, backend="pyav", resume=True, retry_failed=True)
    assert [Path(r["path"]).name for r in rows] == names[1:] + ["a_ok.mp4"]  # a_ok is no longer found, kept last
    assert all(r["status"] == "ok" and r["probs"] == ok[0]["probs"] for r in rows)
    assert len(out.read_text().splitlines()) == len(names)


def _wait_rows(path: Path, n: int, proc: subprocess.Popen, limit: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if path.exists() and path.read_text().count("\n") >= n + 1:  # header + n rows
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"{path}: fewer than {n} rows after {limit} s")


@pytest.mark.slow
def test_kill9_then_resume_loses_and_duplicates_nothing(job, reference, tmp_path):
    out = tmp_path / "preds.csv"
    cmd = [sys.executable, "-m", "vidtok.cli", "classify", str(job["videos"]), "-c", str(job["ckpt"])]
    cmd += ["--topk", "3", "--out", str(out), "--backend", "pyav", "--workers", "1", "--quiet"]
    env = _env(VIDTOK_INFER_FAULT_HOOK=HOOK, VIDTOK_TEST_SLOW="0.4")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True, stderr=subprocess.PIPE)
    try:
        _wait_rows(out, 3, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with open(out, "a") as f:
        f.write(f"{job['good'][-1]},ok,1.0,2,a,0.5")  # the half-written row a crash mid-write would leave
    partial = read_classify_output(out)  # still readable
    n_done = len(partial)
    assert 3 <= n_done < len(reference)
    for r in partial:
        _same(r, reference[r["path"]])

    rows = classify([job["videos"]], job["ckpt"], topk=3, out=out, resume=True, backend="pyav")
    assert [r["path"] for r in rows] == find_videos([job["videos"]])
    with open(out, newline="") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert sorted(paths) == sorted(reference) and len(paths) == len(set(paths))  # nothing lost, nothing twice
    for r in read_classify_output(out):
        _same(r, reference[r["path"]])
    again = classify([job["videos"]], job["ckpt"], topk=3, out=out, resume=True, backend="pyav", verbose=True)
    assert len(again) == len(reference)  # a finished job resumes to a no-op


@pytest.mark.slow
def test_torchrun_two_processes_match_one(job, tmp_path):
    """classify and embed under `torchrun --nproc-per-node 2` (gloo, CPU) write what one process writes."""
    from vidtok.engine.infer import embed
    from vidtok.engine.infer_io import read_embed_output

    common = [str(job["videos"]), "-c", str(job["ckpt"]), "--backend", "pyav", "--workers", "1"]
    runs = [
        ["classify", *common, "--topk", "3", "--out", str(tmp_path / "two.csv")],
        ["embed", *common, "--window", "0.5s", "--out", str(tmp_path / "two.safetensors")],
    ]
    script = tmp_path / "both.py"
    script.write_text(
        "from vidtok.cli import cli\n"
        f"for args in {runs!r}:\n"
        "    cli.main(args=args, prog_name='vidtok', standalone_mode=False)\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    res = subprocess.run(cmd, env=_env(OMP_NUM_THREADS="1"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("two.csv", "two.safetensors"):
        assert not (tmp_path / f"{name}.parts").exists()

    one = classify([job["videos"]], job["ckpt"], topk=3, out=tmp_path / "one.csv", backend="pyav")
    two = read_classify_output(tmp_path / "two.csv")
    assert [r["path"] for r in one] == [r["path"] for r in two] == find_videos([job["videos"]])
    for x, y in zip(one, two, strict=True):
        _same(x, y)
    e1 = embed([job["videos"]], job["ckpt"], window="0.5s", out=tmp_path / "one.safetensors", backend="pyav")
    e2 = read_embed_output(tmp_path / "two.safetensors")
    assert e1["index"] == e2["index"]
    assert sorted((v["path"], v["status"]) for v in e1["videos"]) == sorted(
        (v["path"], v["status"]) for v in e2["videos"]
    )
    np.testing.assert_allclose(e1["embeddings"], e2["embeddings"], atol=1e-5)
    assert (tmp_path / "one.safetensors.index.csv").read_text() == (tmp_path / "two.safetensors.index.csv").read_text()


def test_decode_pool_back_pressure(job):
    """A consumer that stops taking results stops the workers from being given more files (bounded memory)."""
    from vidtok.engine.infer_workers import DecodePool, ViewSpec
    from vidtok.preprocessing import Preprocessing

    prep = Preprocessing(num_frames=4, frame_stride=2, crop_size=32, short_side=40)
    spec = ViewSpec(mode="uniform", prep=prep, backend="pyav")
    paths = [str(job["good"][0])] * 12
    with DecodePool(paths, spec, num_workers=1, max_buffered=2) as pool:
        first = pool.get()
        time.sleep(3)  # plenty for one worker to decode all 12 tiny files if nothing held it back
        assert pool._buffered <= 2 + 1 and len(pool._todo) >= 12 - 1 - (2 + 1) - 2
        rest = [pool.get() for _ in range(11)]
    assert sorted(r[0] for r in [first, *rest]) == list(range(12))
    assert all(r[2][1].shape == (1, 3, 4, 32, 32) for r in [first, *rest])
