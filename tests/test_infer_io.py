"""Inference plumbing without a model: file discovery, argument parsing, tolerant readers and repair, CLI help."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vidtok.cli import cli
from vidtok.engine.infer import parse_seconds, parse_views
from vidtok.engine.infer_io import ClassifyWriter, EmbedWriter, find_videos, read_classify_output, read_embed_output
from vidtok.errors import ConfigError, VidtokError


def test_find_videos(tmp_path):
    for rel in ["b/2.MP4", "b/1.mkv", "a.webm", "c/d/e.avi", "notes.txt", "c/x.json"]:
        p = tmp_path / "root" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    root = str(tmp_path / "root")
    got = find_videos([root])
    assert got == [f"{root}/a.webm", f"{root}/b/1.mkv", f"{root}/b/2.MP4", f"{root}/c/d/e.avi"]
    assert find_videos(root, extensions=["mkv", ".AVI"]) == [f"{root}/b/1.mkv", f"{root}/c/d/e.avi"]
    # files named directly are kept whatever their extension; duplicates dropped; @list files read
    lst = tmp_path / "list.txt"
    lst.write_text(f"# a comment\n{root}/notes.txt\n\n{root}/a.webm\n")
    assert find_videos([f"{root}/a.webm", f"@{lst}", root])[:2] == [f"{root}/a.webm", f"{root}/notes.txt"]
    assert len(find_videos([f"@{lst}", root])) == 5
    with pytest.raises(VidtokError, match="no such file"):
        find_videos([f"{root}/missing"])
    with pytest.raises(ConfigError):
        find_videos(root, extensions=[])
    # one list of video extensions: the one of vidtok.io, also used by the datasets' folder searches
    from vidtok.data import datasets
    from vidtok.engine.infer_io import video_extensions
    from vidtok.io import VIDEO_EXTENSIONS

    assert video_extensions() is VIDEO_EXTENSIONS is datasets.VIDEO_EXTENSIONS
    assert video_extensions(["MP4", " .Ts "]) == (".mp4", ".ts")


def test_parse_views_and_seconds():
    assert parse_views("4x3") == (4, 3) and parse_views("10") == (10, 1) and parse_views(None) is None
    for bad in ("4x2", "0x1", "ax3"):
        with pytest.raises(ConfigError, match="views"):
            parse_views(bad)
    assert parse_seconds("2s", "window") == 2.0 and parse_seconds("500ms", "hop") == 0.5 and parse_seconds(1, "x") == 1
    for bad in ("0s", "-1", "two"):
        with pytest.raises(ConfigError, match="window"):
            parse_seconds(bad, "window")


def _row(i: int, status: str = "ok") -> dict:
    ok = status == "ok"
    return {
        "path": f'/v/{i},odd "name".mp4',
        "status": status,
        "error": "" if ok else "boom",
        "duration": 1.5 if ok else None,
        "views": 4 if ok else 0,
        "labels": ["x", "y"] if ok else [],
        "probs": [0.75, 0.25] if ok else [],
        "indices": [3, 1] if ok else [],
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_classify_part_repair(tmp_path, fmt):
    out = tmp_path / f"p.{fmt}"
    w = ClassifyWriter(out, topk=2)
    for i in range(3):
        w.write(_row(i, "ok" if i != 1 else "error"))
    w.close()
    with open(out, "a") as f:
        f.write('{"path": "/v/half' if fmt == "jsonl" else "/v/half.mp4,ok,1.0")  # killed mid-write
    rows = read_classify_output(out)
    assert rows == [_row(0), _row(1, "error"), _row(2)]
    w = ClassifyWriter(out, topk=2)
    assert w.repair() == 1 and w.repair() == 0
    w.write(_row(3))
    w.close()
    assert [r["path"] for r in read_classify_output(out)] == [_row(i)["path"] for i in range(4)]
    merged = w.merge([_row(i)["path"] for i in (3, 2, 1, 0)])
    assert [r["path"] for r in merged] == [_row(i)["path"] for i in (3, 2, 1, 0)]
    assert read_classify_output(out) == merged
    assert (tmp_path / f"p.{fmt}.errors.csv").read_text().count("boom") == 1


def test_embed_part_repair(tmp_path):
    out = tmp_path / "e.npy"
    w = EmbedWriter(out)
    vec = np.arange(12, dtype=np.float32).reshape(3, 4)
    w.write({"path": "a", "status": "ok", "error": "", "duration": 1.0, "clips": [[0, 1], [1, 2], [2, 3]]}, vec)
    w.write({"path": "b", "status": "error", "error": "bad", "duration": None, "clips": []})
    w.write({"path": "c", "status": "ok", "error": "", "duration": 1.0, "clips": [[0, 1]]}, vec[:1] + 100)
    w.close()
    part = tmp_path / "e.npy.parts" / "rank0.videos.jsonl"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # c's record half written, its bytes all there
    res = read_embed_output(out)
    assert [v["path"] for v in res["videos"]] == ["a", "b"]
    np.testing.assert_array_equal(res["embeddings"], vec)
    w = EmbedWriter(out)
    assert w.repair() == 1
    assert (tmp_path / "e.npy.parts" / "rank0.vectors.bin").stat().st_size == vec.nbytes  # orphan bytes dropped
    w.write({"path": "c", "status": "ok", "error": "", "duration": 1.0, "clips": [[0, 1]]}, vec[:1] + 100)
    w.close()
    res = w.merge(["c", "b", "a"])
    np.testing.assert_array_equal(np.load(out), np.concatenate([vec[:1] + 100, vec]))
    assert [r["row"] for r in res["index"]] == [0, 1, 2, 3] and res["index"][0]["path"] == "c"
    assert (tmp_path / "e.npy.index.csv").read_text().splitlines()[1] == "c,0.000,1.000,0"
    assert json.dumps(read_embed_output(out)["index"]) == json.dumps(res["index"])


def _write_part(out, videos, *, rank=0, world=1, dim=512, tokens=None, dtype=np.float32):
    """Append ``videos`` (name -> n_rows) to rank ``rank``'s part; returns name -> (vectors, tokens)."""
    w = EmbedWriter(out, rank=rank, world_size=world)
    got = {}
    for name, n in videos.items():
        if n == 0:
            w.write({"path": name, "status": "error", "error": "broken", "duration": None, "clips": []})
            continue
        seed = sum(map(ord, name))
        vec = np.random.default_rng(seed).standard_normal((n, dim)).astype(dtype)
        tok = None if tokens is None else np.random.default_rng(seed + 1).standard_normal((n, *tokens)).astype(dtype)
        clips = [[0.5 * i, 0.5 * i + 1.0] for i in range(n)]
        w.write({"path": name, "status": "ok", "error": "", "duration": 9.0, "clips": clips}, vec, tok)
        got[name] = (vec, tok)
    w.close()
    return got


@pytest.mark.parametrize("fmt", ["npy", "safetensors", "parquet"])
def test_embed_merge_streams_with_bounded_memory(tmp_path, fmt, monkeypatch):
    """Merging (and resuming onto a merged output) reads a video, or a parquet row group, at a time: the peak of
    traced allocations stays far below the output's size, and --resume's done_paths reads no vector at all."""
    import tracemalloc

    import vidtok.engine.infer_io.vectors as vectors

    monkeypatch.setattr(vectors, "_PARQUET_GROUP_BYTES", 1 << 18)  # a merge holds ~2.5 row groups
    warm = tmp_path / "warm" / f"w.{fmt}"  # imports (pyarrow: MBs) happen outside the measurements
    _write_part(warm, {"w": 2}, tokens=(2, 3, 8))
    EmbedWriter(warm).merge(["w"])
    read_embed_output(warm)
    out = tmp_path / f"e.{fmt}"
    names = [f"v{i:03d}" for i in range(60)]
    first = {n: (0 if i % 17 == 5 else 20) for i, n in enumerate(names[:40])}  # 20 rows of 2048 floats = 160 KB
    rank0 = _write_part(out, dict(list(first.items())[::2]), rank=0, world=2, dim=2048, tokens=(2, 3, 8))
    rank1 = _write_part(out, dict(list(first.items())[1::2]), rank=1, world=2, dim=2048, tokens=(2, 3, 8))
    payload = sum(v.nbytes + t.nbytes for v, t in (rank0 | rank1).values())
    assert payload > 5_000_000

    tracemalloc.start()
    res = EmbedWriter(out).merge(names, load=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < payload / 5, (peak, payload)
    assert res["embeddings"] is None and [v["path"] for v in res["videos"]] == list(first)

    # a resumed run adds 20 videos; the merge reads the old output lazily
    later = _write_part(out, dict.fromkeys(names[40:], 20), dim=2048, tokens=(2, 3, 8))
    tracemalloc.start()
    assert EmbedWriter(out).done_paths() == set(names)
    peak_done = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    EmbedWriter(out).merge(names, load=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak_done < payload / 20 and peak < payload / 4, (peak_done, peak, payload)

    ok = [n for n in names if first.get(n, 20)]
    expect = rank0 | rank1 | later
    back = read_embed_output(out)
    np.testing.assert_array_equal(back["embeddings"], np.concatenate([expect[n][0] for n in ok]))
    np.testing.assert_array_equal(back["tokens"], np.concatenate([expect[n][1] for n in ok]))
    assert [r["row"] for r in back["index"]] == list(range(20 * len(ok)))
    assert [v["path"] for v in back["videos"] if v["status"] == "ok"] == ok
    assert {v["path"] for v in back["videos"] if v["status"] == "error"} == set(names) - set(ok) != set()
    assert back["index"][21] == {"path": ok[1], "clip_start": 0.5, "clip_end": 1.5, "row": 21}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.ParquetFile(out).num_row_groups > 3  # written a group at a time
    elif fmt == "safetensors":
        from safetensors import safe_open
        from safetensors.numpy import load_file

        lib = load_file(str(out))  # the streamed file is a valid safetensors file
        np.testing.assert_array_equal(lib["embeddings"], back["embeddings"])
        np.testing.assert_array_equal(lib["tokens"], back["tokens"])
        with safe_open(str(out), framework="numpy") as f:
            assert f.metadata() == {"format": "vidtok-embeddings", "index": "e.safetensors.index.csv"}
    if fmt != "parquet":
        assert isinstance(back["embeddings"], np.memmap)  # merged outputs come back mapped, not read
        back["embeddings"][0] = 0  # copy-on-write: the file is not changed
        assert read_embed_output(out)["embeddings"][0, 0] == expect[ok[0]][0][0, 0] != 0


@pytest.mark.parametrize("fmt", ["npy", "safetensors", "parquet"])
def test_embed_merge_edge_cases(tmp_path, fmt):
    out = tmp_path / f"e.{fmt}"
    _write_part(out, {"bad": 0})
    res = EmbedWriter(out).merge(["bad"])  # nothing succeeded: an empty output that reads back
    assert res["embeddings"].shape[0] == 0 and res["videos"][0]["status"] == "error"
    assert read_embed_output(out)["embeddings"].shape[0] == 0
    vec = _write_part(out, {"a": 3}, dtype=np.float16)["a"][0]
    res = EmbedWriter(out).merge(["a", "bad"])
    assert res["embeddings"].dtype == np.float16
    np.testing.assert_array_equal(res["embeddings"], vec)
    before = out.read_bytes()
    _write_part(out, {"b": 2}, dim=64)  # another model's vectors: a one-line error, the output untouched
    with pytest.raises(VidtokError, match=r"b has 64-dim float32 vectors, others 512-dim float16.*--overwrite"):
        EmbedWriter(out).merge(["a", "b"])
    assert out.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_embed_resume_onto_a_safetensors_file_written_by_the_library(tmp_path):
    """Outputs written by safetensors' own save_file (vidtok's earlier merges) are read by the mapped reader and
    merged with new parts."""
    from safetensors.numpy import save_file

    out = tmp_path / "e.safetensors"
    old = np.arange(3 * 8 * 4, dtype=np.float32).reshape(3, 8, 4)
    tok = -old.reshape(3, 1, 8, 4)
    save_file({"tokens": tok, "embeddings": old.reshape(3, 32)}, str(out), metadata={"format": "vidtok-embeddings"})
    rows = ["path,clip_start,clip_end,row", "a,0.000,1.000,0", "a,1.000,2.000,1", "b,0.000,1.000,2"]
    (tmp_path / "e.safetensors.index.csv").write_text("\n".join(rows) + "\n")
    back = read_embed_output(out)
    np.testing.assert_array_equal(back["embeddings"], old.reshape(3, 32))
    np.testing.assert_array_equal(back["tokens"], tok)
    assert [v["path"] for v in back["videos"]] == ["a", "b"]
    new = _write_part(out, {"c": 2}, dim=32, tokens=(1, 8, 4))["c"]
    res = EmbedWriter(out).merge(["c", "a", "b"])
    np.testing.assert_array_equal(res["embeddings"], np.concatenate([new[0], old.reshape(3, 32)]))
    np.testing.assert_array_equal(res["tokens"], np.concatenate([new[1], tok]))
    assert [r["path"] for r in res["index"]] == ["c", "c", "a", "a", "b"]


@pytest.mark.parametrize("fmt", ["npy", "safetensors", "parquet"])
def test_embed_unreadable_output_is_a_one_line_error(tmp_path, fmt):
    """A damaged final output (here: cut in half) is a VidtokError naming the file, for reading it back and for
    --resume (done_paths); the file is left as it is."""
    out = tmp_path / f"e.{fmt}"
    _write_part(out, {"a": 3, "b": 2})
    EmbedWriter(out).merge(["a", "b"])
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    for call in (lambda: read_embed_output(out), lambda: EmbedWriter(out).done_paths()):
        with pytest.raises(VidtokError, match=rf"e\.{fmt}: cannot read this output \(.+\); remove it") as e:
            call()
        assert "\n" not in str(e.value)
    assert out.read_bytes() == data[: len(data) // 2]


def test_cli_help_and_errors(tmp_path):
    for cmd in ("classify", "embed"):
        r = CliRunner().invoke(cli, [cmd, "--help"])
        assert r.exit_code == 0 and "Examples:" in r.output and "--resume" in r.output
    (tmp_path / "v.mp4").write_bytes(b"x")
    r = CliRunner().invoke(cli, ["classify", str(tmp_path / "v.mp4"), "-c", str(tmp_path / "nope.safetensors")])
    assert r.exit_code != 0 and r.output.startswith("error:") and "nope.safetensors" in r.output
    (tmp_path / "x").write_bytes(b"x")
    r = CliRunner().invoke(cli, ["embed", str(tmp_path), "-c", str(tmp_path / "x"), "--out", str(tmp_path / "e.txt")])
    assert r.exit_code == 2 and "format" in r.output


def test_cli_rejects_bad_numbers_before_work(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    for opt in (["--workers", "0"], ["--timeout", "0"], ["--batch-size", "0"], ["--streams", "-1"]):
        r = CliRunner().invoke(cli, ["classify", str(tmp_path), "-c", str(tmp_path / "v.mp4"), *opt])
        assert r.exit_code == 2 and r.output.startswith("error:") and opt[0] in r.output, r.output
