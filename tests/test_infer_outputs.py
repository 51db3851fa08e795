"""Batch outputs lose nothing and mislead no one: side files named from the full output name and checked against
their data, file names that are not UTF-8 written losslessly and recognised on --resume, one row per file however
it is spelled, CSV cells that a spreadsheet will not run, and the decoder recorded in OUT.job.json."""

from __future__ import annotations

import csv
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from tests._infer_util import make_checkpoint, make_good_videos
from vidtok.engine.infer import classify, embed
from vidtok.engine.infer_io import (
    csv_cell,
    csv_uncell,
    decode_path,
    encode_path,
    find_videos,
    read_classify_output,
    read_embed_output,
)
from vidtok.errors import VidtokError

pytestmark = pytest.mark.xdist_group("infer_outputs")

LATIN1 = os.fsdecode(b"caf\xe9")  # a Latin-1 byte: not UTF-8, decoded by Python with a surrogate escape
FORMULA = "=cmd|calc"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    good = make_good_videos(d / "src", n=2)
    videos = d / "videos"
    videos.mkdir()
    names = [f"{LATIN1}.mp4", f"{FORMULA}.mp4", "plain.mp4"]
    for name, src in zip(names, [good[0], good[1], good[0]], strict=True):
        shutil.copy(src, videos / name)
    return {"dir": d, "videos": videos, "ckpt": make_checkpoint(d), "names": names}


def test_path_escape_round_trips():
    for p in ["a.mp4", f"{LATIN1}.mp4", '"quoted".mp4', 'a\\b"' + os.fsdecode(b"\xff\xfe"), "ünïcode ok.mp4"]:
        enc = encode_path(p)
        enc.encode("utf-8")  # always writable as UTF-8
        assert decode_path(enc) == p and os.fsencode(decode_path(enc)) == os.fsencode(p)
    assert encode_path("ünïcode ok.mp4") == "ünïcode ok.mp4"  # valid names are written as they are
    assert encode_path(f"{LATIN1}.mp4") == '"caf\\xe9.mp4"'
    for cell in ["=1+1", "+x", "-x", "@x", "'=x", "''+x", "\tx", "plain", "'plain"]:
        esc = csv_cell(cell)
        assert not esc.startswith(("=", "+", "-", "@", "\t")) and csv_uncell(esc) == cell


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_classify_non_utf8_and_formula_names_round_trip_and_resume(job, tmp_path, fmt, monkeypatch):
    out = tmp_path / f"preds.{fmt}"
    monkeypatch.chdir(job["videos"])  # files named directly: the path cell starts with the name itself
    rows = classify(job["names"], job["ckpt"], out=out, num_workers=1, backend="pyav", device="cpu")
    assert {r["path"] for r in rows} == set(job["names"]) and all(r["status"] == "ok" for r in rows)
    if fmt == "csv":
        with open(out, newline="", encoding="utf-8") as f:
            cells = [r[0] for r in csv.reader(f)][1:]
        assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
        assert f"'{FORMULA}.mp4" in cells and '"caf\\xe9.mp4"' in cells
    assert {r["path"] for r in read_classify_output(out)} == {r["path"] for r in rows}
    # --resume recognises every file (nothing is decoded again: the files are now garbage, so a re-decode would
    # turn their rows into errors)
    saved = {p: p.read_bytes() for p in job["videos"].iterdir()}
    try:
        for p in job["videos"].iterdir():
            p.write_bytes(b"garbage")
        again = classify(job["names"], job["ckpt"], out=out, resume=True, num_workers=1, backend="pyav", device="cpu")
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
    assert sorted((r["path"], r["status"]) for r in again) == sorted((r["path"], r["status"]) for r in rows)


@pytest.mark.parametrize("fmt", ["npy", "safetensors", "parquet"])
def test_embed_non_utf8_names_round_trip(job, tmp_path, fmt):
    out = tmp_path / f"emb.{fmt}"
    res = embed(job["videos"], job["ckpt"], out=out, per_video=True, num_workers=1, backend="pyav", device="cpu")
    back = read_embed_output(out)
    assert [e["path"] for e in back["index"]] == [e["path"] for e in res["index"]]
    assert {os.path.basename(e["path"]) for e in back["index"]} == set(job["names"])
    again = embed(job["videos"], job["ckpt"], out=out, resume=True, per_video=True, num_workers=1, backend="pyav")
    assert len(again["index"]) == 3  # recognised, not added twice


def test_two_embed_outputs_in_one_folder_keep_their_own_index(job, tmp_path):
    kw = dict(per_video=True, num_workers=1, backend="pyav", device="cpu")
    a, b = tmp_path / "emb.npy", tmp_path / "emb.safetensors"
    embed(job["videos"], job["ckpt"], out=a, **kw)
    two = [job["videos"] / n for n in job["names"][:2]]
    embed(two, job["ckpt"], out=b, **kw)
    assert (tmp_path / "emb.npy.index.csv").is_file() and (tmp_path / "emb.safetensors.index.csv").is_file()
    assert len(read_embed_output(a)["index"]) == 3 and len(read_embed_output(b)["index"]) == 2
    embed(two, job["ckpt"], out=b, overwrite=True, **kw)  # --overwrite of one leaves the other's files alone
    assert len(read_embed_output(a)["index"]) == 3

    # an index that does not belong to its data is refused, not silently mapped to the wrong files
    ia = (tmp_path / "emb.npy.index.csv").read_text(encoding="utf-8").splitlines()
    swapped = [ia[0], ia[2].replace(",1", ",0"), ia[1].replace(",0", ",1"), ia[3]]
    (tmp_path / "emb.npy.index.csv").write_text("\n".join(swapped) + "\n", encoding="utf-8")
    with pytest.raises(VidtokError, match=r"emb\.npy\.index\.csv: does not belong to emb\.npy") as e:
        read_embed_output(a)
    assert "\n" not in str(e.value)
    (tmp_path / "emb.npy.index.csv").write_text("\n".join(ia) + "\n", encoding="utf-8")
    vec = np.load(a)
    np.save(a, vec[::-1].copy())  # the data replaced by other vectors of the same shape
    with pytest.raises(VidtokError, match="not the one recorded"):
        read_embed_output(a)


def test_same_file_under_different_spellings_is_one_row(job, tmp_path, monkeypatch):
    monkeypatch.chdir(job["videos"].parent)
    spellings = ["videos/plain.mp4", "./videos/plain.mp4", "videos/../videos/plain.mp4"]
    assert find_videos(spellings) == ["videos/plain.mp4"]  # the user's first spelling is kept
    os.symlink(job["videos"] / "plain.mp4", tmp_path / "link.mp4")
    assert find_videos([str(job["videos"]), str(tmp_path / "link.mp4")]) == find_videos([str(job["videos"])])
    out = tmp_path / "p.csv"
    rows = classify(spellings, job["ckpt"], out=out, num_workers=1, backend="pyav", device="cpu")
    assert [r["path"] for r in rows] == ["videos/plain.mp4"]
    again = classify(
        ["./videos/plain.mp4"], job["ckpt"], out=out, resume=True, num_workers=1, backend="pyav", device="cpu"
    )
    assert [r["path"] for r in again] == ["videos/plain.mp4"]  # resumed under another spelling: still one row


def test_job_record_holds_the_decoder_and_resume_refuses_another(job, tmp_path):
    out = tmp_path / "p.jsonl"
    one = [job["videos"] / "plain.mp4"]
    classify(one, job["ckpt"], out=out, num_workers=1, backend="pyav", device="cpu")
    rec_path = tmp_path / "p.jsonl.job.json"
    rec = json.loads(rec_path.read_text())
    assert rec["backend"] == "pyav"
    rec["backend"] = "decord"  # as if the first run had decoded with decord
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(VidtokError, match=r"made with backend='decord', this run has backend='pyav'"):
        classify(one, job["ckpt"], out=out, resume=True, num_workers=1, backend="pyav", device="cpu")


def test_training_records_a_non_utf8_bad_file(tmp_path, caplog):
    from vidtok.data.datasets import VideoClipDataset, read_bad_files

    bad_files = tmp_path / "bad_files.txt"
    ds = SimpleNamespace(num_failures=0, bad_files=str(bad_files))
    path = str(tmp_path / f"{LATIN1}.mp4")
    VideoClipDataset._record_failure(ds, path, f"{path}: cannot open")
    assert read_bad_files(bad_files)[0][0] == path and ds.num_failures == 1
    [msg] = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert "caf\\xe9.mp4" in msg and msg.encode("utf-8")  # the log line is UTF-8 text: bad bytes as \xHH
