"""Write the review page of classify and embed outputs: a static folder that opens from disk, with no server and no
network.

Dataflow::

    preds.csv|.jsonl|.parquet ─► read_classify_output ─► rows ──┬─► per-class summary, error list
    emb.npy|.safetensors|.parquet ─► read_embed_output ─► (N, D) ┼─► PCA (or t-SNE) ─► 2-D map
                                                                 └─► cosine top-k neighbours
    video paths ─► vidtok.report.thumbs (open_video + Pillow) ─► thumbs/ (posters, previews, clip frames)
    --checkpoint with a TokenLearner ─► vidtok.viz explain + draw ─► overlays/
    everything ─► data/report-data.js (``window.VIDTOK_REPORT = {...}``) + assets/ + index.html

The data is a script, not a JSON file, because a page opened from ``file://`` may not fetch files next to it; a
``<script src>`` is allowed everywhere. The page (assets/report.js) pages the card grid and draws the map on one
canvas, so 10,000 videos stay responsive; only the shown page's pictures are requested.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidtok.errors import ConfigError, VidtokError, one_line

__all__ = [
    "MAP_METHODS",
    "REPORT_ENTRIES",
    "write_report",
    "load_outputs",
    "check_input",
    "check_out",
    "class_summary",
    "pca_2d",
    "cosine_neighbours",
]

MAP_METHODS = ("pca", "tsne")
REPORT_ENTRIES = ("index.html", "assets", "data", "thumbs", "overlays")  # what --overwrite replaces, nothing else
ASSETS = Path(__file__).resolve().parent / "assets"
_CLASSIFY_EXTS = (".csv", ".jsonl")
_EMBED_EXTS = (".npy", ".safetensors")


# --------------------------------------------------------------------------------------------------------------------
# Inputs


def _output_kind(path: Path) -> str:
    """``classify`` or ``embed``, from the extension (parquet: from its columns, or its parts)."""
    ext = path.suffix.lower()
    if ext in _CLASSIFY_EXTS:
        return "classify"
    if ext in _EMBED_EXTS:
        return "embed"
    check_input(path)
    if not path.exists():  # only unmerged parts: embed parts hold vectors beside their records
        parts = path.with_name(path.name + ".parts")
        return "embed" if any(parts.glob("*.videos.jsonl")) else "classify"
    from vidtok.engine.infer_io.files import _pyarrow_parquet

    try:
        names = _pyarrow_parquet().read_schema(path).names
    except Exception as e:  # pyarrow raises its own types for a file that is not parquet
        raise VidtokError(f"{path}: cannot read parquet ({one_line(str(e), 200)})") from None
    if "embedding" in names:
        return "embed"
    if "labels" in names and "status" in names:
        return "classify"
    raise VidtokError(f"{path}: parquet with neither 'labels' (classify) nor 'embedding' (embed) columns")


def check_input(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is an existing classify / embed output (or one with unmerged parts), by extension.

    Raises:
        ConfigError: one line naming the file.
    """
    path = Path(path)
    if path.suffix.lower() not in (*_CLASSIFY_EXTS, *_EMBED_EXTS, ".parquet"):
        raise ConfigError(
            f"{path}: not a classify (.csv, .jsonl, .parquet) or embed (.npy, .safetensors, .parquet) output",
            key="inputs",
        )
    if not path.exists() and not path.with_name(path.name + ".parts").is_dir():
        raise ConfigError(f"{path}: no such file", key="inputs")


def check_out(out: str | os.PathLike, overwrite: bool) -> None:
    """Raise if the report folder ``out`` cannot be written: a file, or a folder with something in it (unless
    ``overwrite``).

    Raises:
        ConfigError: one line naming the folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder", key="out")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: folder is not empty; pass --overwrite to replace the report in it", key="out")


def _resolve(p: str, base: Path) -> str:
    """A video path as recorded (relative to where the job ran) made absolute; the output's folder is the fallback."""
    if os.path.isabs(p) or os.path.lexists(p) or not os.path.lexists(base / p):
        return os.path.abspath(p)
    return os.path.abspath(base / p)


def load_outputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[dict] | None, dict[str, Any] | None]:
    """Read classify and embed outputs with vidtok's own readers; several of a kind are joined.

    Returns:
        ``(rows, embed)``: classify rows (one per video, the ``ok`` one when a video is in two outputs) or None;
        the embed result of :func:`~vidtok.engine.infer_io.read_embed_output` with rows stacked, or None. Paths
        are absolute.

    Raises:
        ConfigError: an input that is not a classify or embed output (by extension), or does not exist.
        VidtokError: an input that cannot be read, or embeddings of different sizes.
    """
    from vidtok.engine.infer_io import read_classify_output, read_embed_output
    from vidtok.engine.infer_io.files import _dedup

    if not inputs:
        raise ConfigError("no classify or embed output given", key="inputs")
    rows: list[dict] = []
    embeds: list[tuple[Path, dict]] = []
    kinds = set()
    for raw in inputs:
        path = Path(raw)
        kind = _output_kind(path)
        kinds.add(kind)
        base = path.resolve().parent
        if kind == "classify":
            for r in read_classify_output(path):
                rows.append(dict(r, path=_resolve(r["path"], base)))
        else:
            res = read_embed_output(path)
            for entry in (*res["index"], *res["videos"]):
                entry["path"] = _resolve(entry["path"], base)
            embeds.append((path, res))
    classify = list(_dedup(rows).values()) if "classify" in kinds else None
    if not embeds:
        return classify, None
    dims = {p: int(r["embeddings"].shape[1]) for p, r in embeds if len(r["index"])}
    (p0, d0), *rest = list(dims.items()) or [(None, 0)]
    for p1, d1 in rest:
        if d1 != d0:
            raise VidtokError(f"{p1}: {d1}-dim embeddings, but {p0} has {d0}-dim ones; give outputs of one model")
    dim = d0
    vecs, index, videos = [], [], []
    for _, r in embeds:
        if len(r["index"]):
            vecs.append(np.asarray(r["embeddings"], dtype=np.float32))
        index += r["index"]
        videos += r["videos"]
    emb = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    return classify, {"embeddings": emb, "index": index, "videos": videos}


# --------------------------------------------------------------------------------------------------------------------
# Maps and neighbours


def _eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh`` on one thread: LAPACK's threads wait on each other at every step, so on a busy machine a
    threaded 768 x 768 eigh took 22 s against 1.2 s on one thread (2 cores, load 9)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        w, v = torch.linalg.eigh(torch.from_numpy(np.ascontiguousarray(a)))
    finally:
        torch.set_num_threads(threads)
    return w.numpy(), v.numpy()


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The first two principal components of the rows of ``x`` (N, D).

    Returns:
        ``(coords (N, 2) float32, explained variance ratio of each)``. The sign of each component is fixed so its
        largest loading is positive, so the map is the same from run to run; missing components are zeros.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    out = np.zeros((n, 2), np.float32)
    if n < 2 or d == 0:
        return out, [0.0, 0.0]
    xc = x - x.mean(0)
    w, v = _eigh(xc.T @ xc)  # ascending eigenvalues of the scatter matrix (D, D)
    k = min(2, d)
    order = np.argsort(w)[::-1][:k]
    comps = v[:, order]  # (D, k)
    signs = np.sign(comps[np.abs(comps).argmax(0), np.arange(k)])
    comps = comps * np.where(signs == 0, 1.0, signs)
    out[:, :k] = xc @ comps
    total = float(w.clip(min=0).sum())
    ratio = [float(max(w[i], 0.0) / total) if total > 0 else 0.0 for i in order] + [0.0] * (2 - k)
    return out, ratio


def _tsne_2d(x: np.ndarray) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise VidtokError("--map tsne needs scikit-learn: pip install 'vidtok[report]'") from None
    n = len(x)
    if n < 3:
        return pca_2d(x)[0]
    tsne = TSNE(n_components=2, perplexity=float(min(30, n - 1)), metric="cosine", init="pca", random_state=0)
    return tsne.fit_transform(np.asarray(x, np.float32)).astype(np.float32)


def cosine_neighbours(x: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows most similar to each row of ``x`` (N, D) by cosine similarity, itself excluded.

    Returns:
        ``(indices (N, k') int32, similarities (N, k') float32)``, most similar first, ``k' = min(k, N - 1)``.
        Computed ``chunk`` rows at a time, so memory is ``chunk × N`` whatever N is.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    k = max(0, min(k, n - 1))
    idx, sim = np.zeros((n, k), np.int32), np.zeros((n, k), np.float32)
    if k == 0:
        return idx, sim
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sims = xn[s:e] @ xn.T  # (c, N)
        sims[np.arange(e - s), np.arange(s, e)] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (c, k) unordered
        ps = np.take_along_axis(sims, part, 1)
        order = np.lexsort((part, -ps), axis=1)  # most similar first; ties by row
        idx[s:e] = np.take_along_axis(part, order, 1)
        sim[s:e] = np.take_along_axis(ps, order, 1)
    return idx, sim


# --------------------------------------------------------------------------------------------------------------------
# The page's data


def _names(paths: Sequence[str]) -> dict[str, str]:
    """A short display name per path: relative to the folder all of them share."""
    uniq = sorted(set(paths))
    if not uniq:
        return {}
    try:
        root = os.path.commonpath([os.path.dirname(p) for p in uniq])
    except ValueError:  # different drives
        return {p: p for p in uniq}
    return {p: os.path.relpath(p, root) for p in uniq}


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


def class_summary(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """Per predicted (top-1) class over the ``ok`` rows: ``label``, ``count``, ``mean_conf`` (mean top-1
    probability), most frequent first."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("labels"):
            acc.setdefault(r["labels"][0], []).append(float(r["probs"][0]))
    out = [{"label": k, "count": len(v), "mean_conf": float(np.mean(v))} for k, v in acc.items()]
    return sorted(out, key=lambda s: (-s["count"], s["label"]))


def _classify_data(rows: list[dict], names: dict[str, str], thumbs: dict, overlays: dict[str, str]) -> dict:
    classes = sorted({lab for r in rows for lab in r.get("labels") or []})
    cid = {c: i for i, c in enumerate(classes)}
    out = []
    for r in rows:
        t = thumbs.get(r["path"])
        out.append(
            {
                "n": names[r["path"]],
                "s": 1 if r["status"] == "ok" else 0,
                "e": r.get("error") or "",
                "d": _r(r.get("duration"), 3),
                "l": [cid[lab] for lab in r.get("labels") or []],
                "p": [_r(p) for p in r.get("probs") or []],
                "t": t.poster if t is not None else None,
                "v": t.preview if t is not None else None,
                "o": overlays.get(r["path"]),
            }
        )
    summary = [[cid[s["label"]], s["count"], _r(s["mean_conf"])] for s in class_summary(rows)]
    return {"classes": classes, "rows": out, "summary": summary}


def _clip_ms(entry: dict) -> int:
    return int(round(500.0 * (float(entry["clip_start"]) + float(entry["clip_end"]))))


def _embed_data(
    emb: dict, names: dict[str, str], thumbs: dict, label_of: dict[str, int], method: str, k: int
) -> dict[str, Any]:
    x = emb["embeddings"]
    if method == "tsne":
        xy, explained = _tsne_2d(x), []
    else:
        xy, explained = pca_2d(x)
    nn, sim = cosine_neighbours(x, k)
    vid_of: dict[str, int] = {}
    for e in emb["index"]:
        vid_of.setdefault(e["path"], len(vid_of))
    th = []
    for e in emb["index"]:
        t = thumbs.get(e["path"])
        th.append(t.clips.get(_clip_ms(e)) if t is not None else None)
    return {
        "method": "t-SNE" if method == "tsne" else "PCA",
        "explained": [_r(v) for v in explained],
        "dim": int(x.shape[1]) if x.ndim == 2 else 0,
        "videos": [names[p] for p in vid_of],
        "v": [vid_of[e["path"]] for e in emb["index"]],
        "t0": [_r(e["clip_start"], 3) for e in emb["index"]],
        "t1": [_r(e["clip_end"], 3) for e in emb["index"]],
        "xy": [_r(float(v), 5) for v in xy.reshape(-1)],
        "th": th,
        "c": [label_of.get(e["path"], -1) for e in emb["index"]],
        "k": int(nn.shape[1]),
        "nn": nn.reshape(-1).tolist(),
        "sim": [_r(float(s)) for s in sim.reshape(-1)],
    }


# --------------------------------------------------------------------------------------------------------------------
# Writing


def _prepare_out(out: Path, overwrite: bool) -> None:
    check_out(out, overwrite)
    if out.is_dir():
        for name in REPORT_ENTRIES:  # only what a report writes: anything else the user put there stays
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _overlays(
    rows: list[dict], checkpoint: Any, folder: Path, limit: int, note: Callable[[str], None]
) -> dict[str, str]:
    """TokenLearner overlays (``vidtok viz``'s grid) of the ``limit`` least confident ok videos, if the model has a
    TokenLearner; path -> file name in ``folder``."""
    from vidtok.models.hub import load_model
    from vidtok.report.thumbs import thumb_key
    from vidtok.viz.attention import draw, explain

    todo = sorted((r for r in rows if r["status"] == "ok" and r.get("probs")), key=lambda r: (r["probs"][0], r["path"]))
    todo = todo[: max(0, limit)]
    if not todo:
        return {}
    model = load_model(checkpoint) if isinstance(checkpoint, str | os.PathLike) else checkpoint
    where = os.fspath(checkpoint) if isinstance(checkpoint, str | os.PathLike) else None
    folder.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    for i, r in enumerate(todo):
        try:
            view = explain(model, r["path"], mode=None if i == 0 else "tokens", checkpoint=where)
        except VidtokError as e:
            note(f"overlay of {r['path']} skipped: {e}")
            continue
        if view.mode != "tokens":  # explain picks TokenLearner maps whenever the model has them
            note(f"overlays skipped: {where or 'the model'} has no TokenLearner")
            return {}
        name = f"{thumb_key(r['path'])}.jpg"
        draw(view, folder / name, cell=72, max_rows=4)
        done[r["path"]] = name
    return done


def write_report(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    checkpoint: Any = None,
    overlays: int = 100,
    map_method: str = "pca",
    neighbours: int = 10,
    thumbnails: bool = True,
    workers: int | None = None,
    title: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the report of classify / embed outputs into the folder ``out``; open ``out/index.html``.

    Args:
        inputs: classify outputs (.csv / .jsonl / .parquet) and embed outputs (.npy / .safetensors / .parquet).
        out: the report folder; it must be empty or absent unless ``overwrite``.
        overwrite: replace a report in ``out`` (only the report's own files are removed).
        checkpoint: the model behind the classify output (a checkpoint / run folder, or a loaded model); with a
            TokenLearner its overlay is drawn for the ``overlays`` least confident videos.
        overlays: at most this many overlays.
        map_method: ``pca`` (default) or ``tsne`` (needs scikit-learn) for the embed map.
        neighbours: nearest neighbours listed for each embed row.
        thumbnails: write posters, previews and clip frames (decodes every video once).
        workers: decoding threads for the pictures.
        title: the page title (default: the input file names).
        echo: where progress notes go.

    Returns:
        ``{"index": path of index.html, "classify_rows", "embed_rows", "videos" (pictured), "seconds": {phase: s}}``.

    Raises:
        ConfigError: an unknown map method, an input that is no classify / embed output, ``out`` not empty
            without ``overwrite``.
        VidtokError: an unreadable input or checkpoint.
    """
    note = echo or (lambda _m: None)
    if map_method not in MAP_METHODS:
        raise ConfigError(f"--map {map_method!r}: choose from {', '.join(MAP_METHODS)}", key="map")
    if neighbours < 1:
        raise ConfigError(f"--neighbours {neighbours}: must be at least 1", key="neighbours")
    out = Path(out)
    secs: dict[str, float] = {}
    check_out(out, overwrite)  # refusals before any reading
    t0 = time.perf_counter()
    rows, emb = load_outputs(inputs)
    _prepare_out(out, overwrite)
    secs["read"] = time.perf_counter() - t0

    t = time.perf_counter()
    thumbs = _pictures(rows, emb, out / "thumbs", workers, note) if thumbnails else {}
    secs["thumbnails"] = time.perf_counter() - t

    t = time.perf_counter()
    made: dict[str, str] = {}
    if checkpoint is not None and rows:
        made = _overlays(rows, checkpoint, out / "overlays", overlays, note)
        if made:
            note(f"{len(made)} TokenLearner overlays -> {out / 'overlays'}")
    secs["overlays"] = time.perf_counter() - t

    t = time.perf_counter()
    data = _page_data(inputs, rows, emb, thumbs, made, title=title, map_method=map_method, neighbours=neighbours)
    secs["layout"] = time.perf_counter() - t

    t = time.perf_counter()
    _write_page(out, data)
    secs["write"] = time.perf_counter() - t
    secs["total"] = time.perf_counter() - t0
    return {
        "index": out / "index.html",
        "classify_rows": len(rows) if rows is not None else 0,
        "embed_rows": len(emb["index"]) if emb is not None else 0,
        "videos": len({v.key for v in thumbs.values() if not v.error}),
        "overlays": len(made),
        "seconds": secs,
    }


def _pictures(rows: list[dict] | None, emb: dict | None, folder: Path, workers: int | None, note) -> dict:
    """Posters and previews of the classified videos, frames of the embedded clips (``thumbs/``)."""
    cards = [r["path"] for r in rows or [] if r["status"] == "ok"]
    clips: dict[str, set[int]] = {}
    for e in (emb or {}).get("index", []):
        clips.setdefault(e["path"], set()).add(_clip_ms(e))
    if not (cards or clips):
        return {}
    from vidtok.report.thumbs import make_thumbnails

    note(f"pictures of {len(set(cards) | set(clips))} videos -> {folder}")
    thumbs = make_thumbnails(cards, clips, folder, workers=workers)
    for res in thumbs.values():
        if res.error:
            note(f"no pictures: {res.error}")
    return thumbs


def _page_data(inputs, rows, emb, thumbs, made, *, title, map_method: str, neighbours: int) -> dict[str, Any]:
    """What ``data/report-data.js`` holds: the classify and embed views and every failed file."""
    all_paths = [r["path"] for r in rows or []]
    if emb is not None:
        all_paths += [e["path"] for e in emb["index"]] + [v["path"] for v in emb["videos"]]
    names = _names(all_paths)
    data: dict[str, Any] = {
        "title": title or "vidtok report: " + ", ".join(Path(p).name for p in inputs),
        "inputs": [os.fspath(p) for p in inputs],
        "classify": None,
        "embed": None,
        "errors": [],
    }
    label_of: dict[str, int] = {}
    if rows is not None:
        data["classify"] = _classify_data(rows, names, thumbs, made)
        cid = {c: i for i, c in enumerate(data["classify"]["classes"])}
        label_of = {r["path"]: cid[r["labels"][0]] for r in rows if r["status"] == "ok" and r.get("labels")}
    failed: dict[tuple[str, str], list[str]] = {}  # (file, error) -> outputs where it failed
    for r in rows or []:
        if r["status"] != "ok":
            failed.setdefault((r["path"], r.get("error") or ""), []).append("classify")
    if emb is not None:
        data["embed"] = _embed_data(emb, names, thumbs, label_of, map_method, neighbours)
        for v in emb["videos"]:
            if v["status"] != "ok":
                failed.setdefault((v["path"], v.get("error") or ""), []).append("embed")
    data["errors"] = [{"n": names[p], "e": e, "src": ", ".join(src)} for (p, e), src in failed.items()]
    return data


def _write_page(out: Path, data: dict[str, Any]) -> None:
    (out / "data").mkdir(exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    (out / "data" / "report-data.js").write_text(f"window.VIDTOK_REPORT = {text};\n", encoding="utf-8")
    shutil.copytree(ASSETS, out / "assets", dirs_exist_ok=True, ignore=shutil.ignore_patterns("index.html"))
    shutil.copyfile(ASSETS / "index.html", out / "index.html")
