"""vidtok embed: window / per-video embeddings against an independent oracle, tokens, output formats, and
kill -9 + resume of the vector journal."""

from __future__ import annotations

import csv
import os
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
from vidtok.engine.infer import embed
from vidtok.engine.infer_io import find_videos, read_embed_output
from vidtok.errors import ConfigError


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer_embed")
    good = make_good_videos(root / "videos", n=4)
    bad = make_bad_files(root / "videos", good[0])
    return {"root": root, "videos": root / "videos", "good": good, "bad": bad, "ckpt": make_checkpoint(root)}


@pytest.fixture(scope="module")
def reference(job):
    res = embed([job["videos"]], job["ckpt"], window="0.4s", hop="0.3s", backend="pyav", batch_size=7)
    return res


def _oracle(model, path, clips, *, tokens=False):
    from vidtok.data.transforms import EvalTransform

    frames = torch.from_numpy(decode_all(path))
    tf = EvalTransform(crop_size=PCFG["crop_size"], short_side=PCFG["short_side"], num_crops=1)
    x = torch.cat([tf(frames[c.indices]) for c in clips])  # (n, 3, T, 32, 32)
    with torch.no_grad():
        feats, aux = model.forward_features(x, return_aux=True)
        return model.forward_head(feats, pre_logits=True), aux["learned_tokens"]


def _by_path(res) -> dict[str, tuple[np.ndarray, list]]:
    out: dict[str, tuple[list, list]] = {}
    for r in res["index"]:
        vecs, spans = out.setdefault(r["path"], ([], []))
        vecs.append(res["embeddings"][r["row"]])
        spans.append((r["clip_start"], r["clip_end"]))
    return {p: (np.stack(v), s) for p, (v, s) in out.items()}


def test_windows_match_oracle(job, reference):
    from vidtok.data.clip_sampling import sliding_clips

    model = vidtok.load_model(job["ckpt"])
    by = _by_path(reference)
    assert set(by) == {str(p) for p in job["good"]}  # bad files have no vectors...
    bad = {v["path"] for v in reference["videos"] if v["status"] == "error"}
    assert bad == {str(p) for p in job["bad"].values()}  # ...and are listed as failed
    assert reference["embeddings"].dtype == np.float32
    assert [r["row"] for r in reference["index"]] == list(range(len(reference["embeddings"])))
    for path in job["good"][:2]:
        n = len(decode_all(path))
        clips = sliding_clips(n, 25.0, window=0.4, hop=0.3, unit="seconds", clip_len=PCFG["num_frames"])
        vecs, spans = by[str(path)]
        assert spans == [(pytest.approx(c.start_sec, abs=1e-3), pytest.approx(c.end_sec, abs=1e-3)) for c in clips]
        emb, _ = _oracle(model, path, clips)
        np.testing.assert_allclose(vecs, emb.numpy(), atol=1e-4)


def test_resume_refuses_other_windows(job, tmp_path):
    from vidtok.errors import VidtokError

    out = tmp_path / "e.npy"
    embed(job["good"][:1], job["ckpt"], out=out, window="0.4s", hop="0.3s", backend="pyav", num_workers=1)
    with pytest.raises(VidtokError, match="hop=0.3, this run has hop=0.4"):
        embed(job["good"], job["ckpt"], out=out, window="0.4s", resume=True, backend="pyav", num_workers=1)
    with pytest.raises(VidtokError, match="normalize=False"):
        embed(job["good"], job["ckpt"], out=out, window="0.4s", hop="0.3s", normalize=True, resume=True)
    res = embed(job["good"], job["ckpt"], out=out, window="0.4s", hop="0.3s", resume=True, backend="pyav")
    assert {v["path"] for v in res["videos"]} == {str(p) for p in job["good"]}


def test_default_window_per_video_normalize_fp16_tokens(job):
    from vidtok.data.clip_sampling import sliding_clips, uniform_clips

    model = vidtok.load_model(job["ckpt"])
    path = job["good"][3]
    n = len(decode_all(path))
    # default window: the model's own clip (num_frames every frame_stride), back to back
    res = embed([path], job["ckpt"], backend="pyav", tokens=True)
    span = (PCFG["num_frames"] - 1) * PCFG["frame_stride"] + 1
    clips = sliding_clips(n, 25.0, window=span, hop=span, clip_len=PCFG["num_frames"])
    emb, tok = _oracle(model, path, clips)
    np.testing.assert_allclose(res["embeddings"], emb.numpy(), atol=1e-4)
    assert res["tokens"].shape == tuple(tok.shape) and tok.ndim == 4  # (rows, T', S, D)
    np.testing.assert_allclose(res["tokens"], tok.numpy(), atol=1e-4)

    res = embed([path], job["ckpt"], backend="pyav", per_video=True, normalize=True, fp16=True)
    assert res["embeddings"].shape == (1, emb.shape[1]) and res["embeddings"].dtype == np.float16
    assert res["index"] == [
        {"path": str(path), "clip_start": 0.0, "clip_end": pytest.approx(n / 25, abs=1e-3), "row": 0}
    ]
    clips = uniform_clips(n, 25.0, clip_len=PCFG["num_frames"], frame_stride=PCFG["frame_stride"], num_clips=2)
    want = torch.nn.functional.normalize(_oracle(model, path, clips)[0].mean(0), dim=0)
    np.testing.assert_allclose(res["embeddings"][0].astype(np.float32), want.numpy(), atol=2e-3)
    assert np.linalg.norm(res["embeddings"][0].astype(np.float32)) == pytest.approx(1.0, abs=2e-3)

    plain = make_checkpoint(job["root"], name="vivit_ti16x2")  # no TokenLearner
    with pytest.raises(ConfigError, match="TokenLearner"):
        embed([path], plain, backend="pyav", tokens=True)
    with pytest.raises(ConfigError, match="exclude"):
        embed([path], job["ckpt"], per_video=True, window="2s")


@pytest.mark.parametrize("fmt", ["parquet", "npy", "safetensors"])
def test_output_formats(job, reference, tmp_path, fmt):
    out = tmp_path / f"emb.{fmt}"
    res = embed([job["videos"]], job["ckpt"], out=out, window="0.4s", hop="0.3s", backend="pyav")
    back = read_embed_output(out)
    for r in (res, back):
        np.testing.assert_allclose(r["embeddings"], reference["embeddings"], atol=1e-5)
        assert r["index"] == [
            dict(
                x, clip_start=pytest.approx(x["clip_start"], abs=1e-3), clip_end=pytest.approx(x["clip_end"], abs=1e-3)
            )
            for x in reference["index"]
        ]
    if fmt != "parquet":
        with open(tmp_path / f"emb.{fmt}.index.csv", newline="") as f:
            assert [r["path"] for r in csv.DictReader(f)] == [r["path"] for r in reference["index"]]
    with open(tmp_path / f"emb.{fmt}.errors.csv", newline="") as f:
        assert {r["path"] for r in csv.DictReader(f)} == {str(p) for p in job["bad"].values()}
    assert not Path(str(out) + ".parts").exists()


@pytest.mark.slow
def test_kill9_then_resume(job, reference, tmp_path):
    out = tmp_path / "emb.npy"
    journal = Path(str(out) + ".parts") / "rank0.videos.jsonl"
    cmd = [sys.executable, "-m", "vidtok.cli", "embed", str(job["videos"]), "-c", str(job["ckpt"]), "--out", str(out)]
    cmd += ["--window", "0.4s", "--hop", "0.3s", "--backend", "pyav", "--workers", "1", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO), VIDTOK_INFER_FAULT_HOOK=HOOK, VIDTOK_TEST_SLOW="0.4")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while not (journal.exists() and journal.read_text().count("\n") >= 3):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 120
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # what a kill in the middle of writing the next video would leave: some of its bytes, half its record
    with open(journal.with_name("rank0.vectors.bin"), "ab") as f:
        f.write(b"\0" * 100)
    with open(journal, "a") as f:
        f.write('{"path": "half')
    partial = read_embed_output(out)  # still readable
    assert 3 <= len(partial["videos"]) < len(reference["videos"])
    ref = _by_path(reference)
    for p, (vecs, _) in _by_path(partial).items():
        np.testing.assert_allclose(vecs, ref[p][0], atol=1e-5)

    res = embed([job["videos"]], job["ckpt"], out=out, window="0.4s", hop="0.3s", backend="pyav", resume=True)
    assert [v["path"] for v in res["videos"]] == find_videos([job["videos"]])  # each once, in order
    np.testing.assert_allclose(res["embeddings"], reference["embeddings"], atol=1e-5)
    np.testing.assert_allclose(np.load(out), reference["embeddings"], atol=1e-5)
    assert [r["path"] for r in res["index"]] == [r["path"] for r in reference["index"]]
