"""vidtok report: the generator against independent oracles (SVD for the PCA map, scikit-learn's brute-force
cosine neighbours, PyAV's full decode for the posters), every input format, the CLI's refusals and one-line errors.
The page itself is tested in a real browser in test_report_browser.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests._report_util import make_job, read_data
from tests.videos import decode_all
from vidtok.cli import cli
from vidtok.engine.infer_io import read_classify_output, read_embed_output
from vidtok.errors import VidtokError
from vidtok.report.build import class_summary, cosine_neighbours, load_outputs, pca_2d, write_report
from vidtok.report.thumbs import PREVIEW_FRAMES, thumb_key

pytestmark = pytest.mark.xdist_group("report")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("report_job"))


@pytest.fixture(scope="module")
def report(job, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r"
    r = CliRunner().invoke(
        cli, ["report", str(job["preds"]), str(job["emb"]), "-c", str(job["ckpt"]), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    return {"out": out, "output": r.output, "data": read_data(out)}


def test_pca_matches_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)) @ np.diag(np.linspace(5, 0.1, 16)) + 3.0
    xy, ratio = pca_2d(x)
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)  # oracle: SVD of the centred data
    ref = xc @ vt[:2].T
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ratio, (s[:2] ** 2) / (s**2).sum(), rtol=1e-6)
    for c in range(2):  # the sign convention: each component's largest loading is positive
        assert vt[c][np.abs(vt[c]).argmax()] * np.sign((xy[:, c] * ref[:, c]).sum()) > 0
    assert pca_2d(x[:1])[0].shape == (1, 2) and pca_2d(x[:, :1])[0][:, 1].tolist() == [0.0] * 200


def test_cosine_neighbours_match_sklearn():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    x = rng.normal(size=(53, 8)).astype(np.float32)
    idx, sim = cosine_neighbours(x, 5, chunk=7)  # several chunks, the last one short
    nn = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(x)
    dist, ref = nn.kneighbors(x)
    assert (ref[:, 0] == np.arange(53)).all()
    np.testing.assert_array_equal(idx, ref[:, 1:])
    np.testing.assert_allclose(sim, 1 - dist[:, 1:], atol=1e-5)
    assert cosine_neighbours(x[:3], 10)[0].shape == (3, 2) and cosine_neighbours(x[:1], 10)[0].shape == (1, 0)


def test_classify_view_data(job, report):
    data, out = report["data"], report["out"]
    rows = read_classify_output(job["preds"])
    c = data["classify"]
    assert len(c["rows"]) == len(rows) == 10
    by_name = {r["n"]: r for r in c["rows"]}
    for row in rows:
        r = by_name[row["path"].split("/videos/", 1)[1]]
        if row["status"] == "ok":
            assert [c["classes"][i] for i in r["l"]] == row["labels"] and r["p"] == pytest.approx(
                row["probs"], abs=1e-4
            )
            assert (out / "thumbs" / r["t"]).is_file() and (out / "overlays" / r["o"]).is_file()
        else:
            assert r["s"] == 0 and r["e"] == row["error"] and r["t"] is None
    summary = {c["classes"][i]: (n, m) for i, n, m in c["summary"]}
    ok = [r for r in rows if r["status"] == "ok"]
    assert sum(n for n, _ in summary.values()) == len(ok) == 5
    for lab, (n, m) in summary.items():
        mine = [r["probs"][0] for r in ok if r["labels"][0] == lab]
        assert n == len(mine) and m == pytest.approx(np.mean(mine), abs=1e-4)
    assert summary == {s["label"]: (s["count"], pytest.approx(s["mean_conf"], abs=1e-4)) for s in class_summary(rows)}
    # a file that fails in both outputs is listed once, with both outputs named
    errs = {e["n"]: e for e in data["errors"]}
    assert set(errs) == {p.name for p in job["bad"].values()}
    assert all(e["src"] == "classify, embed" and e["e"] for e in errs.values())
    assert "5 TokenLearner overlays" in report["output"] and "wrote " + str(out / "index.html") in report["output"]


def test_pictures_are_the_videos_frames(job, report):
    out = report["out"]
    video = job["good"][2]
    frames = decode_all(video)  # oracle: a full sequential PyAV decode
    poster = np.asarray(Image.open(out / "thumbs" / f"{thumb_key(video)}.jpg").convert("RGB"), np.float32)

    def diff(i: int) -> float:
        ref = Image.fromarray(frames[i]).resize(poster.shape[1::-1], Image.Resampling.BILINEAR)
        return float(np.abs(np.asarray(ref, np.float32) - poster).mean())

    mid = len(frames) // 2  # JPEG on these noisy frames costs ~9 levels; the neighbouring frames differ by 30+
    assert diff(mid) < 12 and diff(mid) < min(diff(mid - 1), diff(mid + 1), diff(0)) / 3
    with Image.open(out / "thumbs" / f"{thumb_key(video)}.webp") as anim:
        assert anim.format == "WEBP" and anim.n_frames == PREVIEW_FRAMES and anim.is_animated
    with Image.open(out / "overlays" / f"{thumb_key(video)}.jpg") as ov:
        assert ov.format == "JPEG" and ov.width > 200


def test_embed_view_data(job, report):
    e, out = report["data"]["embed"], report["out"]
    ref = read_embed_output(job["emb"])
    x = np.asarray(ref["embeddings"], np.float32)
    assert len(e["v"]) == len(ref["index"]) == len(x) > 10 and e["dim"] == x.shape[1] and e["method"] == "PCA"
    np.testing.assert_allclose(np.asarray(e["xy"]).reshape(-1, 2), pca_2d(x)[0], atol=1e-4)
    idx, sim = cosine_neighbours(x, 10)
    assert e["k"] == 10 and e["nn"] == idx.reshape(-1).tolist()
    np.testing.assert_allclose(e["sim"], sim.reshape(-1), atol=1e-4)
    for i, entry in enumerate(ref["index"]):
        assert e["t0"][i] == pytest.approx(entry["clip_start"]) and e["t1"][i] == pytest.approx(entry["clip_end"])
        assert e["videos"][e["v"][i]] == entry["path"].split("/videos/", 1)[1]
        assert (out / "thumbs" / e["th"][i]).is_file()
    # points are coloured by the classify output's top-1 label of their video
    c = report["data"]["classify"]
    top1 = {r["n"]: r["l"][0] for r in c["rows"] if r["s"]}
    assert [top1[e["videos"][v]] for v in e["v"]] == e["c"]


def test_out_folder_is_not_overwritten_without_flag(job, report, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "mine.txt").write_text("user's work")
    args = ["report", str(job["preds"]), "--out", str(out), "--no-thumbnails"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and r.output.startswith("error: --out") and "--overwrite" in r.output
    assert len(r.output.strip().splitlines()) == 1 and sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    r = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    (out / "thumbs").mkdir()
    (out / "thumbs" / "stale.jpg").write_bytes(b"x")
    r = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (out / "mine.txt").read_text() == "user's work" and not (out / "thumbs" / "stale.jpg").exists()
    assert read_data(out)["embed"] is None and len(read_data(out)["classify"]["rows"]) == 10


@pytest.mark.parametrize(
    "name, content, code, message",
    [
        ("preds.txt", "x", 2, "not a classify (.csv, .jsonl, .parquet) or embed"),
        ("missing.csv", None, 2, "missing.csv: no such file"),
        ("other.parquet", "parquet-no-labels", 1, "neither 'labels' (classify) nor 'embedding' (embed)"),
        ("broken.parquet", "not parquet at all", 1, "broken.parquet: cannot read parquet"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, name, content, code, message):
    path = tmp_path / name
    if content == "parquet-no-labels":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"path": ["a.mp4"]}), path)
    elif content is not None:
        path.write_text(content)
    r = CliRunner().invoke(cli, ["report", str(path), "--out", str(tmp_path / "r")])
    assert r.exit_code == code, r.output
    assert r.output.startswith("error: ") and message in r.output and len(r.output.strip().splitlines()) == 1


def test_every_output_format_reads_alike(job, tmp_path):
    """Parquet / JSONL classify and parquet / safetensors embed outputs give the rows the CSV / NPY ones give."""
    from vidtok.engine.infer import classify, embed

    videos = job["root"] / "videos"
    outs = {}
    for ext in ("jsonl", "parquet"):
        outs[ext] = tmp_path / f"preds.{ext}"
        classify([videos], job["ckpt"], topk=3, out=outs[ext], num_workers=1, backend="pyav")
    for ext in ("parquet", "safetensors"):
        outs["emb_" + ext] = tmp_path / f"emb.{ext}"
        embed([videos], job["ckpt"], out=outs["emb_" + ext], window="0.4s", num_workers=1, backend="pyav")
    rows, emb = load_outputs([job["preds"], job["emb"]])
    for a, b in (("jsonl", "emb_parquet"), ("parquet", "emb_safetensors")):
        rows2, emb2 = load_outputs([outs[a], outs[b]])
        key = lambda rs: {r["path"]: (r["status"], r["labels"]) for r in rs}  # noqa: E731
        assert key(rows2) == key(rows)
        np.testing.assert_allclose(emb2["embeddings"], emb["embeddings"], atol=1e-5)
        assert [(i["path"], i["clip_start"]) for i in emb2["index"]] == [
            (i["path"], i["clip_start"]) for i in emb["index"]
        ]
    # two embed outputs are stacked; two classify outputs of the same videos give one row per video
    rows3, emb3 = load_outputs([job["preds"], outs["jsonl"], job["emb"], outs["emb_parquet"]])
    assert len(rows3) == len(rows) and len(emb3["embeddings"]) == 2 * len(emb["embeddings"])


def test_tsne_map_and_model_without_tokenlearner(job, tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn missing: pip install 'vidtok[report]'")
    from threadpoolctl import threadpool_limits

    from tests._infer_util import make_checkpoint

    ckpt = make_checkpoint(tmp_path, "vivit_ti16x2")
    notes: list[str] = []
    with threadpool_limits(1):  # OpenMP threads spinning beside the other test worker make t-SNE ~10x slower
        res = write_report(
            [job["preds"], job["emb"]],
            tmp_path / "r",
            checkpoint=ckpt,
            map_method="tsne",
            thumbnails=False,
            echo=notes.append,
        )
    data = read_data(tmp_path / "r")
    assert data["embed"]["method"] == "t-SNE" and len(data["embed"]["xy"]) == 2 * res["embed_rows"]
    assert np.isfinite(data["embed"]["xy"]).all() and np.ptp(np.asarray(data["embed"]["xy"])) > 0
    assert res["overlays"] == 0 and any("has no TokenLearner" in n for n in notes), notes
    assert all(r["o"] is None and r["t"] is None for r in data["classify"]["rows"])


def test_cli_import_stays_light():
    heavy = ("numpy", "PIL", "playwright", "sklearn", "torch")
    code = f"import json, sys, vidtok.cli, vidtok.report; print(json.dumps([m for m in {heavy} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_relative_paths_and_an_embed_only_report(job, tmp_path, monkeypatch):
    """A path recorded relative to the output's folder is found from elsewhere; an embed output alone is a map
    coloured by video."""
    rel = job["preds"].parent / "rel.jsonl"
    row = {"path": "videos/good0.mp4", "status": "ok", "error": "", "duration": 0.8, "views": 1}
    rel.write_text(json.dumps({**row, "labels": ["a"], "probs": [0.9], "indices": [0]}) + "\n")
    monkeypatch.chdir(tmp_path)
    res = write_report([rel], tmp_path / "r")
    (r,) = read_data(tmp_path / "r")["classify"]["rows"]
    assert res["videos"] == 1 and r["t"] == f"{thumb_key(job['good'][0])}.jpg" and r["n"] == "good0.mp4"
    write_report([job["emb"]], tmp_path / "e", thumbnails=False)
    data = read_data(tmp_path / "e")
    assert data["classify"] is None and set(data["embed"]["c"]) == {-1} and len(data["errors"]) == 5
    assert all(e["src"] == "embed" for e in data["errors"])


def test_embed_outputs_of_two_sizes_are_refused(tmp_path):
    from vidtok.engine.infer_io import EmbedWriter

    for name, dim in (("a.npy", 8), ("b.npy", 16)):
        w = EmbedWriter(tmp_path / name)
        rec = {"path": f"/v/{name}.mp4", "status": "ok", "error": "", "duration": 1.0, "clips": [[0.0, 1.0]]}
        w.write(rec, np.ones((1, dim), np.float32))
        w.close()
        w.merge([rec["path"]])
    with pytest.raises(VidtokError, match=r"b\.npy: 16-dim embeddings, but .*a\.npy has 8-dim ones"):
        load_outputs([tmp_path / "a.npy", tmp_path / "b.npy"])
