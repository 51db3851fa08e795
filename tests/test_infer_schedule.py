"""The inference scheduler without worker processes: a scripted source of decode results in, per-video callbacks
out. Batches cross video boundaries and never exceed a part, every view comes back to its own video in view order,
decode errors and videos without views become error rows at once, a model error stops the job and its threads.
The job set-up classify and embed share (discovery, --resume / --retry-failed / --overwrite, sharding, the job
record) is checked on files that are never decoded."""

from __future__ import annotations

import json
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vidtok.engine.infer_schedule import Scheduler
from vidtok.errors import ConfigError


class ScriptedSource:
    """``get`` hands out the results of the current round, then returns None once (a wait that timed out) and moves
    on to the next round. A blocking ``get`` (timeout None) must find something: the scheduler only blocks when it
    has nothing else to do, and a real pool then waits until a worker is done."""

    def __init__(self, rounds: list[list[tuple[int, str, object]]]):
        self.rounds = [list(r) for r in rounds]
        self.timeouts: list[float | None] = []

    def get(self, timeout=None):
        self.timeouts.append(timeout)
        while self.rounds and not self.rounds[0] and timeout is None:
            self.rounds.pop(0)
        if not self.rounds:
            assert timeout is not None, "blocking get with nothing left to deliver"
            return None
        if not self.rounds[0]:
            self.rounds.pop(0)
            return None
        return self.rounds[0].pop(0)


def video(tid: int, n_views: int) -> tuple[int, str, object]:
    """A decoded video whose view v is filled with the value 10 * tid + v (so every output row names its view)."""
    views = np.stack([np.full((3, 2, 4, 4), 10 * tid + v, np.uint8) for v in range(n_views)])
    return tid, f"v{tid}.mp4", ({"duration": float(tid)}, views)


class Recorder:
    def __init__(self):
        self.batches: list[int] = []
        self.rows: list[tuple[str, dict | None, dict | None, str]] = []
        self.clips = self.videos = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 2, 4, 4)
        self.batches.append(len(x))
        return {"value": x.float().mean(dim=(1, 2, 3, 4)).unsqueeze(1)}

    def on_done(self, path, info, outs, error):
        self.rows.append((path, info, outs, error))

    def add_clips(self, n):
        self.clips += n

    def video_done(self):
        self.videos += 1


def run(rounds, *, batch_size=4, streams=1, **kw) -> Recorder:
    rec = Recorder()
    total = sum(len(r) for r in rounds)
    sched = Scheduler(
        total, rec.forward, rec.on_done, device=torch.device("cpu"), batch_size=batch_size, progress=rec,
        streams=streams, **kw,
    )  # fmt: skip
    sched.run(ScriptedSource(rounds))
    return rec


def test_batches_cross_videos_and_every_view_returns_to_its_video_in_order():
    rec = run([[video(0, 3), video(1, 3), video(2, 3)]], batch_size=4)
    assert rec.batches == [4, 4, 1]  # views of videos 0+1, 1+2, then the last one
    assert [r[0] for r in rec.rows] == ["v0.mp4", "v1.mp4", "v2.mp4"]
    for tid, (_, info, outs, error) in enumerate(rec.rows):
        assert error == "" and info == {"duration": float(tid)}
        assert outs["value"].squeeze(1).tolist() == [10 * tid + v for v in range(3)]
    assert rec.clips == 9 and rec.videos == 3


def test_decode_errors_and_videos_without_views_are_error_rows_at_once():
    bad = (1, "bad.mp4", "VideoDecodeError: cannot open")
    empty = (2, "empty.mp4", ({"duration": 0.0}, np.zeros((0, 3, 2, 4, 4), np.uint8)))
    rec = run([[video(0, 2), bad, empty, video(3, 5)]], batch_size=4)
    by = {r[0]: r for r in rec.rows}
    assert by["bad.mp4"][2:] == (None, "VideoDecodeError: cannot open")
    assert by["empty.mp4"][2:] == (None, "no views")
    # the errors are reported when they arrive, before the videos still waiting for the model
    assert [r[0] for r in rec.rows] == ["bad.mp4", "empty.mp4", "v0.mp4", "v3.mp4"]
    assert by["v3.mp4"][2]["value"].squeeze(1).tolist() == [30, 31, 32, 33, 34]
    assert rec.videos == 4 and rec.clips == 7


def test_a_partial_part_runs_when_decoding_is_slow_and_full_parts_do_not_wait():
    # one video arrives, then the source has nothing for a while: its 2 views run as a partial part instead of
    # waiting for more; a blocking wait is used only when nothing is queued or running
    rec = run([[video(0, 2)], [], [video(1, 4)]], batch_size=4)
    assert rec.batches == [2, 4]
    assert [r[0] for r in rec.rows] == ["v0.mp4", "v1.mp4"]


def test_views_taken_ahead_of_the_model_are_bounded():
    # decoded videos beyond max_views stay in the source (whose back-pressure then stops decoding)
    queued_before_part, received = [], []
    rec = Recorder()

    def forward(x):
        queued_before_part.append(sched.queued_views + len(x))
        received.append(sched.received)
        return rec.forward(x)

    sched = Scheduler(
        6, forward, rec.on_done, device=torch.device("cpu"), batch_size=2, progress=rec, streams=1, max_views=4
    )
    sched.run(ScriptedSource([[video(i, 4) for i in range(6)]]))
    assert max(queued_before_part) <= 4 + 4 - 1  # under the cap when the last video was taken, plus that video
    assert received[0] == 1 and received == sorted(received)  # taken one by one as the model makes room
    assert len(rec.rows) == 6 and rec.batches == [2] * 12


def test_streams_split_batches_and_keep_each_video_in_view_order():
    rec = run([[video(i, 5) for i in range(5)]], batch_size=4, streams=2)
    assert max(rec.batches) == 2 and sum(rec.batches) == 25
    assert sorted(r[0] for r in rec.rows) == [f"v{i}.mp4" for i in range(5)]
    for path, _, outs, _ in rec.rows:
        tid = int(path[1])
        assert outs["value"].squeeze(1).tolist() == [10 * tid + v for v in range(5)]


@pytest.mark.parametrize("streams", [1, 2])
def test_a_model_error_stops_the_job_and_its_threads(streams):
    before = threading.active_count()
    threads = torch.get_num_threads()
    calls = []

    def forward(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return {"value": x.float().mean(dim=(1, 2, 3, 4)).unsqueeze(1)}

    rows = []
    sched = Scheduler(
        4, forward, lambda *a: rows.append(a), device=torch.device("cpu"), batch_size=2, progress=Recorder(),
        streams=streams,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        sched.run(ScriptedSource([[video(i, 2) for i in range(4)]]))
    assert threading.active_count() == before and torch.get_num_threads() == threads
    assert len(rows) <= 1  # at most the video whose part ran before the error


def test_no_videos_is_no_work():
    rec = run([])
    assert rec.rows == [] and rec.batches == []


# --------------------------------------------------------------------------------------------------------------------
# The job set-up both commands share: discovery, resume bookkeeping, sharding, the job record (no decoding)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from tests._infer_util import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


def open_job(ckpt, folder, out, rank_world=(0, 1), **opts):
    from vidtok.engine.infer import InferJob, JobOptions
    from vidtok.engine.infer_io import CLASSIFY_FORMATS, ClassifyWriter

    job = InferJob("classify", ckpt, out, CLASSIFY_FORMATS, JobOptions(device="cpu", backend="pyav", **opts))
    rank, world = rank_world  # the shard this rank would take: a stand-in for the process group
    job.dist = SimpleNamespace(rank=rank, world=world, barrier=lambda: None)
    writer = ClassifyWriter(out, topk=1, rank=job.dist.rank, world_size=job.dist.world)
    job.open([folder], writer, lambda: job.record(views="1x1", topk=1))
    return job


def test_job_setup_resumes_retries_and_shards_without_decoding(ckpt, tmp_path):
    from vidtok.engine.infer_io import ClassifyWriter, job_path
    from vidtok.errors import VidtokError

    folder = tmp_path / "videos"
    folder.mkdir()
    names = [f"{c}.mp4" for c in "abcde"]
    for n in names:
        (folder / n).write_bytes(b"not decoded here")
    out = tmp_path / "preds.csv"
    job = open_job(ckpt, folder, out)
    assert [os.path.basename(p) for p in job.todo] == names and job.skipped == 0
    record = json.loads(job_path(out).read_text())
    assert record["command"] == "classify" and record["views"] == "1x1" and len(record["weights_sha256"]) == 64

    # a run that stopped after two videos: one ok, one failed
    w = ClassifyWriter(out, topk=1)
    row = dict(error="", duration=1.0, views=1, labels=["a"], probs=[1.0], indices=[0])
    w.write({"path": str(folder / "a.mp4"), "status": "ok", **row})
    w.write({"path": str(folder / "b.mp4"), "status": "error", **row, "error": "boom", "labels": [], "probs": []})
    w.close()
    with pytest.raises(VidtokError, match="exists; pass --resume"):
        open_job(ckpt, folder, out)
    job = open_job(ckpt, folder, out, resume=True)
    assert [os.path.basename(p) for p in job.todo] == ["c.mp4", "d.mp4", "e.mp4"] and job.skipped == 2
    job = open_job(ckpt, folder, out, resume=True, retry_failed=True)
    assert [os.path.basename(p) for p in job.todo] == ["b.mp4", "c.mp4", "d.mp4", "e.mp4"] and job.skipped == 1
    # rank 1 of 2 takes every second video still to do
    job = open_job(ckpt, folder, out, resume=True, rank_world=(1, 2))
    assert [os.path.basename(p) for p in job.todo] == ["d.mp4"]
    job = open_job(ckpt, folder, out, overwrite=True)
    assert len(job.todo) == 5 and not out.exists()
    with pytest.raises(ConfigError, match="--resume and --overwrite"):
        open_job(ckpt, folder, out, resume=True, overwrite=True)
