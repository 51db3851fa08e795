"""Embed outputs: each finished video's vectors (and tokens) appended to this rank's part, merged at the end.

Part files of rank r: ``rank{r}.vectors.bin`` (raw rows, appended first), ``rank{r}.tokens.bin`` (optional) and
``rank{r}.videos.jsonl``, one record per video, appended after its vectors: ``{"path", "status", "error", "duration",
"clips": [[start_s, end_s], ...], "dim", "dtype", "off" (byte offset), "tok_shape": [T', S, D] | null, "tok_off"}``.
A record is only trusted if its bytes are all in the .bin, so a killed process loses at most the last video.

::

    EmbedWriter.write ─► OUT.parts/rank{r}.{vectors,tokens}.bin + videos.jsonl
    EmbedWriter.merge ─► existing OUT + every part, one per path, discovery order ─► vectors.py sinks ─► OUT
    read_embed_output ─► vectors.py _FinalEmbed (memory-mapped) + the parts not merged yet
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidtok.engine.infer_io.files import (
    EMBED_FORMATS,
    OutputFiles,
    _dedup,
    _fmt_of,
    _merge_key,
    _parts_dir,
    _read_jsonl,
    _write_atomic,
)
from vidtok.engine.infer_io.vectors import _ArraySink, _FinalEmbed, _index_path, _ParquetSink, _tokens_npy_path
from vidtok.errors import VidtokError


class _EmbedPart:
    def __init__(self, jsonl: Path):
        self.jsonl = jsonl
        stem = jsonl.name[: -len(".videos.jsonl")]
        self.vec = jsonl.with_name(stem + ".vectors.bin")
        self.tok = jsonl.with_name(stem + ".tokens.bin")

    def records(self) -> tuple[list[dict], bool, int, int]:
        """Trusted records, whether repair is needed, and the byte lengths of the vector / token files they cover."""
        recs, dirty = _read_jsonl(self.jsonl)
        vsize = self.vec.stat().st_size if self.vec.exists() else 0
        tsize = self.tok.stat().st_size if self.tok.exists() else 0
        good, vend, tend = [], 0, 0
        for r in recs:
            if r["status"] == "ok":
                n = len(r["clips"])
                ve = r["off"] + n * r["dim"] * np.dtype(r["dtype"]).itemsize
                te = 0
                if r.get("tok_shape") is not None:
                    te = r["tok_off"] + n * math.prod(r["tok_shape"]) * np.dtype(r["dtype"]).itemsize
                if ve > vsize or te > tsize:
                    dirty = True
                    continue
                vend, tend = max(vend, ve), max(tend, te)
            good.append(r)
        if vsize != vend or tsize != tend:
            dirty = True
        return good, dirty, vend, tend

    def load(self, rec: dict) -> tuple[np.ndarray, np.ndarray | None]:
        n, dt = len(rec["clips"]), np.dtype(rec["dtype"])
        vec = np.fromfile(self.vec, dtype=dt, count=n * rec["dim"], offset=rec["off"]).reshape(n, rec["dim"])
        tok = None
        if rec.get("tok_shape") is not None:
            shape = rec["tok_shape"]
            tok = np.fromfile(self.tok, dtype=dt, count=n * math.prod(shape), offset=rec["tok_off"])
            tok = tok.reshape(n, *shape)
        return vec, tok


def _embed_items(out: Path, fmt: str, order: Sequence[str] | None) -> tuple[_FinalEmbed, list[tuple[dict, Any]]]:
    """The final output and, per path, the record that wins (an ``ok`` one over an error): ``(record, source)``
    where source is ``None`` (a row range of the final output) or the part holding its vectors. No vector is read."""
    final = _FinalEmbed(out, fmt)
    items: list[tuple[dict, Any]] = [(v, None) for v in final.videos]
    parts = _parts_dir(out)
    if parts.is_dir():
        for jp in sorted(parts.glob("*.videos.jsonl")):
            part = _EmbedPart(jp)
            items += [(r, part) for r in part.records()[0]]
    best = _dedup(items, rec=lambda it: it[0])
    keys = list(best)
    if order is not None:
        keys.sort(key=_merge_key({p: i for i, p in enumerate(order)}))
    return final, [best[k] for k in keys]


def _item_rows(final: _FinalEmbed, rec: dict, src: Any) -> tuple[np.ndarray, np.ndarray | None]:
    return final.rows(rec["start"], rec["n"]) if src is None else src.load(rec)


def _item_layout(rec: dict, src: Any, final: _FinalEmbed) -> tuple[int, str, list[int] | None]:
    """(dim, numpy dtype string, token shape or None) of one ok video's rows, without reading them."""
    if src is None:
        return final.dim, final.dtype, final.tok_shape
    return rec["dim"], rec["dtype"], rec.get("tok_shape")


def _video_entries(items: list[tuple[dict, Any]]) -> list[dict]:
    return [
        {"path": r["path"], "status": r["status"], "error": r.get("error", ""), "duration": r.get("duration")}
        for r, _ in items
    ]


def _index_entries(items: list[tuple[dict, Any]]) -> list[dict]:
    index, row = [], 0
    for r, _ in items:
        if r["status"] == "ok":
            for s, e in r["clips"]:
                index.append({"path": r["path"], "clip_start": float(s), "clip_end": float(e), "row": row})
                row += 1
    return index


def _layout(out: Path, final: _FinalEmbed, items: list[tuple[dict, Any]]) -> tuple[int, int, str, list[int] | None]:
    """(rows, dim, dtype, token shape) of the merged output; one-line errors for outputs that cannot be merged."""
    n, first = 0, None
    for rec, src in items:
        if rec["status"] != "ok":
            continue
        lay = _item_layout(rec, src, final)
        if first is None:
            first = lay
        elif (lay[2] is None) != (first[2] is None):
            raise VidtokError(f"{out}: some videos have tokens and others not (mixed --tokens runs); use --overwrite")
        elif lay != first:
            raise VidtokError(
                f"{out}: {rec['path']} has {lay[0]}-dim {np.dtype(lay[1]).name} vectors, others {first[0]}-dim "
                f"{np.dtype(first[1]).name} (another model or --fp16); use --overwrite"
            )
        n += len(rec["clips"])
    if first is None:
        return 0, 0, "<f4", None
    return n, first[0], first[1], first[2]


def read_embed_output(out: str | os.PathLike) -> dict[str, Any]:
    """Everything recorded for an embed output (final file + unmerged parts), one entry per video (tolerant).

    A merged ``.npy`` / ``.safetensors`` output is returned memory-mapped (copy-on-write: nothing is read until used,
    and changing the arrays never changes the file); parquet, and outputs with unmerged parts, are read into memory.

    Returns:
        {"embeddings": (N, D) array, "tokens": (N, T', S, D) array or None, "index": [{"path", "clip_start",
        "clip_end", "row"}], "videos": [{"path", "status", "error", "duration"}]} in the order of the final file,
        then parts.
    """
    out = Path(out)
    fmt = _fmt_of(out, EMBED_FORMATS, "embed")
    final, items = _embed_items(out, fmt, order=None)
    n, dim, dtype, tok_shape = _layout(out, final, items)
    if n == 0:
        emb, tok = np.zeros((0, 0), np.float32), None
    elif final.vectors is not None and all(src is None for _, src in items):  # merged: the maps themselves
        emb, tok = final.vectors, final.tokens
    else:
        emb = np.empty((n, dim), dtype)
        tok = np.empty((n, *tok_shape), dtype) if tok_shape is not None else None
        row = 0
        for rec, src in items:
            if rec["status"] == "ok":
                v, t = _item_rows(final, rec, src)
                emb[row : row + len(v)] = v
                if tok is not None:
                    tok[row : row + len(v)] = t
                row += len(v)
    return {"embeddings": emb, "tokens": tok, "index": _index_entries(items), "videos": _video_entries(items)}


def read_embed_videos(out: str | os.PathLike) -> list[dict]:
    """The per-video records of an embed output (``read_embed_output(out)["videos"]``) without reading a vector."""
    out = Path(out)
    return _video_entries(_embed_items(out, _fmt_of(out, EMBED_FORMATS, "embed"), None)[1])


class EmbedWriter(OutputFiles):
    """Appends each finished video's vectors (and tokens) to this rank's part and merges the parts at the end.

    Args:
        out: ``.parquet``, ``.npy`` or ``.safetensors``; None keeps everything in memory.
        rank, world_size: this process and the number of processes writing the same output.
    """

    kind, formats = "embed", EMBED_FORMATS

    def __init__(self, out: str | os.PathLike | None, *, rank: int = 0, world_size: int = 1):
        super().__init__(out, rank, world_size)
        self.records: list[dict] = []  # this run's video records
        self._mem: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._fh = self._vf = self._tf = None
        if self.out is not None:
            self.part = _EmbedPart(_parts_dir(self.out) / f"rank{rank}.videos.jsonl")

    def side_files(self) -> list[Path]:
        return [*super().side_files(), _index_path(self.out), _tokens_npy_path(self.out)]

    def repair(self) -> int:
        if self.out is None or not self.part.jsonl.exists():
            return 0
        recs, dirty, vend, tend = self.part.records()
        if dirty:
            for f, end in ((self.part.vec, vend), (self.part.tok, tend)):
                if f.exists():
                    os.truncate(f, end)
            _write_atomic(self.part.jsonl, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in recs)))
        return int(dirty)

    def done_paths(self, include_failed: bool = True) -> set[str]:
        """Paths already recorded in the output or its parts (reads the index and the part records, no vectors)."""
        if self.out is None:
            return set()
        items = _embed_items(self.out, self.fmt, None)[1]
        return {r["path"] for r, _ in items if include_failed or r["status"] == "ok"}

    def write(self, rec: dict, vectors: np.ndarray | None = None, tokens: np.ndarray | None = None) -> None:
        """Record one video: ``rec`` has path, status, error, duration, clips; vectors (n_clips, D) when ok."""
        rec = dict(rec)
        self.records.append(rec)
        if self.out is None:
            self._mem.append((vectors, tokens))
            return
        if self._fh is None:
            self.part.jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._vf = open(self.part.vec, "ab")  # noqa: SIM115 (kept open across videos)
            self._tf = open(self.part.tok, "ab") if tokens is not None else None  # noqa: SIM115
            self._fh = open(self.part.jsonl, "a")  # noqa: SIM115
        if vectors is not None:
            vectors = np.ascontiguousarray(vectors)
            rec.update(dim=int(vectors.shape[1]), dtype=vectors.dtype.str, off=self._vf.tell(), tok_shape=None)
            self._vf.write(vectors.tobytes())
            self._vf.flush()
            if tokens is not None:
                if self._tf is None:
                    self._tf = open(self.part.tok, "ab")  # noqa: SIM115
                tokens = np.ascontiguousarray(tokens.astype(vectors.dtype, copy=False))
                rec.update(tok_shape=list(tokens.shape[1:]), tok_off=self._tf.tell())
                self._tf.write(tokens.tobytes())
                self._tf.flush()
        self._fh.write(json.dumps(rec) + "\n")  # after the bytes: a record is never ahead of its vectors
        self._fh.flush()

    def close(self) -> None:
        for f in (self._fh, self._vf, self._tf):
            if f is not None:
                f.close()
        self._fh = self._vf = self._tf = None

    def in_memory(self, order: Sequence[str] = ()) -> dict[str, Any]:
        key = _merge_key({p: i for i, p in enumerate(order)})
        items = sorted(zip(self.records, self._mem, strict=True), key=lambda it: key(it[0]["path"]))
        vecs = [v for r, (v, _) in items if r["status"] == "ok"]
        toks = [t for r, (_, t) in items if r["status"] == "ok" and t is not None]
        return {
            "embeddings": np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32),
            "tokens": np.concatenate(toks) if toks else None,
            "index": _index_entries(items),
            "videos": _video_entries(items),
        }

    def merge(self, order: Sequence[str], load: bool = True) -> dict[str, Any]:
        """(rank 0, after every rank closed) write the final output from the existing one + all parts, a video at a
        time, in ``order``. Returns what :func:`read_embed_output` returns (``load=False``: only ``"videos"``)."""
        if self.out is None:
            return self.in_memory(order)
        out = self.out
        items = self._write_merged(order)
        videos = _video_entries(items)
        self._merged(videos)
        if not load:
            return {"embeddings": None, "tokens": None, "index": None, "videos": videos}
        res = read_embed_output(out)
        res["videos"] = videos  # in merge order, failed videos in their place (the file lists them apart)
        return res

    def _write_merged(self, order: Sequence[str]) -> list[tuple[dict, Any]]:
        assert self.out is not None and self.fmt is not None
        final, items = _embed_items(self.out, self.fmt, order)
        n, dim, dtype, tok_shape = _layout(self.out, final, items)
        if self.fmt == "parquet":
            sink: _ArraySink | _ParquetSink = _ParquetSink(self.out, n, dim, dtype, tok_shape)
        else:
            sink = _ArraySink(self.out, self.fmt, n, dim, dtype, tok_shape)
        for rec, src in items:
            if rec["status"] == "ok":
                sink.add(rec, *_item_rows(final, rec, src))
        final.close()  # the old output is unmapped before it is replaced
        sink.commit()
        return items
