"""The final embed output on disk: the memory-mapped writer and reader of ``.npy`` / ``.safetensors`` (+ the
``OUT.index.csv`` of every vector) and the row-group writer and reader of ``.parquet``.

Merging streams: the final output is written (and an existing one read) a video at a time, so a merge holds one
video's vectors (parquet: one row group) in memory, not the whole output. ``--resume`` reads only the index.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidtok.engine.infer_io.files import _errors_path, _pyarrow_parquet
from vidtok.engine.infer_io.job import _check_output, _record_output
from vidtok.engine.infer_io.paths import _cell_path, _path_cell, csv_uncell, decode_path, encode_path
from vidtok.errors import VidtokError, exception_reason

# Merging streams: the final output is written (and an existing one read) a video at a time, so a merge holds one
# video's vectors (parquet: one row group) in memory, not the whole output. ``--resume`` reads only the index.
_PARQUET_GROUP_BYTES = 64 << 20  # parquet: one row group per ~64 MB of vectors


def _index_path(out: Path) -> Path:
    return out.with_name(out.name + ".index.csv")


def _tokens_npy_path(out: Path) -> Path:
    return out.with_name(out.name + ".tokens.npy")


# safetensors files are written and read here through the format itself (8-byte little-endian header length, a JSON
# header of dtype / shape / data_offsets per tensor, then the raw little-endian bytes; see the safetensors README):
# the library writes only whole in-memory tensors, and a merge fills the file a video at a time. Tests check the
# files against safetensors.numpy.load_file / safe_open.
_ST_DTYPE = {"<f4": "F32", "<f2": "F16"}


_ST_NUMPY = {v: k for k, v in _ST_DTYPE.items()}


def _safetensors_allocate(path: Path, tensors: dict[str, tuple[np.dtype, tuple[int, ...]]], meta: dict[str, str]):
    """Create ``path`` holding zero-filled tensors of these dtypes / shapes; return a writable array for each."""
    header: dict[str, Any] = {"__metadata__": meta}
    off = 0
    for name, (dt, shape) in tensors.items():
        nbytes = dt.itemsize * math.prod(shape)
        header[name] = {"dtype": _ST_DTYPE[dt.str], "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the data starts 8-byte aligned, as the library writes it
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        f.truncate(8 + len(h) + off)  # sparse until filled
    return _safetensors_arrays(path, mode="r+")


def _safetensors_arrays(path: Path, mode: str = "c") -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, memory-mapped (``mode="c"``: copy-on-write, the file is never changed)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise VidtokError(f"{path}: not a safetensors file ({e})") from None
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        if info["dtype"] not in _ST_NUMPY:
            raise VidtokError(f"{path}: tensor {name!r} has dtype {info['dtype']}, expected F32 or F16")
        a, b = info["data_offsets"]
        dt, shape = np.dtype(_ST_NUMPY[info["dtype"]]), tuple(info["shape"])
        out[name] = np.memmap(path, dt, mode, offset=8 + n + a, shape=shape) if b > a else np.zeros(shape, dt)
    return out


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="c")
    except ValueError:  # an empty array cannot be mapped
        return np.load(path)


def _fixed_lists(col: Any, shape: Sequence[int]) -> np.ndarray:
    """A parquet fixed-size-list column as one ``(rows, *shape)`` array."""
    flat = col.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, *shape)


class _FinalEmbed:
    """A finished embed output, read lazily: the per-video records come from its index; rows are read on demand
    (``.npy`` / ``.safetensors``: memory-mapped; ``.parquet``: one row group at a time)."""

    def __init__(self, out: Path, fmt: str):
        self.out, self.fmt = out, fmt
        self.videos: list[dict] = []  # {"path", "status", "error", "clips", "start", "n"} per video
        self.n_rows, self.dim, self.dtype, self.tok_shape = 0, 0, "<f4", None
        self.vectors: np.ndarray | None = None
        self.tokens: np.ndarray | None = None
        self._pf: Any = None
        self._group = (-1, None, None)
        if not out.exists():
            return
        try:
            self._load()
        except VidtokError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:  # pyarrow's ArrowInvalid is a ValueError
            reason = exception_reason(e, 200)
            raise VidtokError(f"{out}: cannot read this output ({reason}); remove it or use --overwrite") from None

    def _load(self) -> None:
        out, fmt = self.out, self.fmt
        if fmt == "parquet":
            pq = _pyarrow_parquet()
            self._pf = pf = pq.ParquetFile(out)
            t = pf.read(columns=["path", "clip_start", "clip_end"])
            index = zip(
                [decode_path(p) for p in t.column("path").to_pylist()],
                t.column("clip_start").to_pylist(),
                t.column("clip_end").to_pylist(),
                strict=True,
            )
            schema = pf.schema_arrow
            emb = schema.field("embedding").type
            self.dim, self.dtype = emb.list_size, np.dtype(emb.value_type.to_pandas_dtype()).str
            if "tokens" in schema.names:
                self.tok_shape = json.loads(schema.metadata[b"vidtok_tokens_shape"])
            self.n_rows = pf.metadata.num_rows
            self._starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        else:
            if fmt == "npy":
                self.vectors = _load_npy(out)
                tp = _tokens_npy_path(out)
                self.tokens = _load_npy(tp) if tp.exists() else None
            else:
                arrays = _safetensors_arrays(out)
                self.vectors, self.tokens = arrays["embeddings"], arrays.get("tokens")
            self.n_rows = len(self.vectors)
            self.dim = self.vectors.shape[1] if self.vectors.ndim == 2 else 0
            self.dtype = self.vectors.dtype.str
            self.tok_shape = list(self.tokens.shape[1:]) if self.tokens is not None else None
            index = []
            ip = _index_path(out)
            if ip.exists():
                with open(ip, newline="", encoding="utf-8") as f:
                    index = [
                        (_cell_path(r["path"]), float(r["clip_start"]), float(r["clip_end"])) for r in csv.DictReader(f)
                    ]
                _check_output(out, self.n_rows, ip)
        row = -1
        for row, (path, s, e) in enumerate(index):  # consecutive rows of one path = one video
            if self.videos and self.videos[-1]["path"] == path:
                self.videos[-1]["clips"].append([s, e])
                self.videos[-1]["n"] += 1
            else:
                self.videos.append({"path": path, "status": "ok", "error": "", "clips": [[s, e]], "start": row, "n": 1})
        if row + 1 != self.n_rows:
            raise VidtokError(f"{out}: index has {row + 1} rows but there are {self.n_rows} vectors")
        ep = _errors_path(out)
        if ep.exists():
            with open(ep, newline="", encoding="utf-8") as f:
                for rec in csv.DictReader(f):
                    err = csv_uncell(rec["error"])
                    self.videos.append({"path": _cell_path(rec["path"]), "status": "error", "error": err, "clips": []})

    def rows(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Vectors (and tokens) of rows ``start .. start + n``."""
        if self._pf is None:
            assert self.vectors is not None
            tok = self.tokens[start : start + n] if self.tokens is not None else None
            return self.vectors[start : start + n], tok
        vecs, toks = [], []
        g = int(np.searchsorted(self._starts, start, side="right")) - 1
        while n > 0:
            vec, tok = self._row_group(g)
            a = start - int(self._starts[g])
            k = min(n, len(vec) - a)
            vecs.append(vec[a : a + k])
            if tok is not None:
                toks.append(tok[a : a + k])
            start, n, g = start + k, n - k, g + 1
        vec = vecs[0] if len(vecs) == 1 else np.concatenate(vecs)
        tok = None if not toks else toks[0] if len(toks) == 1 else np.concatenate(toks)
        return vec, tok

    def close(self) -> None:
        self.vectors = self.tokens = self._pf = None
        self._group = (-1, None, None)

    def _row_group(self, g: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self._group[0] != g:  # rows are read in order, so one cached row group serves a merge
            cols = ["embedding"] + (["tokens"] if self.tok_shape is not None else [])
            t = self._pf.read_row_group(g, columns=cols)
            vec = _fixed_lists(t.column("embedding"), [self.dim])
            tok = _fixed_lists(t.column("tokens"), self.tok_shape) if self.tok_shape is not None else None
            self._group = (g, vec, tok)
        return self._group[1], self._group[2]


class _ArraySink:
    """The merged ``.npy`` (+ ``.tokens.npy``) or ``.safetensors`` output, pre-sized and filled a video at a time,
    with its index CSV; ``commit`` moves the finished files into place."""

    def __init__(self, out: Path, fmt: str, n: int, dim: int, dtype: str, tok_shape: list[int] | None):
        self.out, self.fmt, self.row = out, fmt, 0
        dt = np.dtype(dtype)
        self.moves: list[tuple[Path, Path]] = []
        shape_v = (n, dim)
        shape_t = (n, *tok_shape) if tok_shape is not None else None
        if fmt == "npy":
            self.vec = self._npy(out, dt, shape_v)
            self.tok = self._npy(_tokens_npy_path(out), dt, shape_t) if shape_t is not None else None
        else:
            tmp = self._tmp(out)
            tensors = {"embeddings": (dt, shape_v)}
            if shape_t is not None:
                tensors["tokens"] = (dt, shape_t)
            maps = _safetensors_allocate(tmp, tensors, {"format": "vidtok-embeddings", "index": _index_path(out).name})
            self.vec, self.tok = maps["embeddings"], maps.get("tokens")
        self._index = open(self._tmp(_index_path(out)), "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._index, lineterminator="\n")
        self._csv.writerow(["path", "clip_start", "clip_end", "row"])

    def _tmp(self, path: Path) -> Path:
        tmp = path.with_name(path.name + ".tmp")
        self.moves.append((tmp, path))
        return tmp

    def _npy(self, path: Path, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        tmp = self._tmp(path)
        if math.prod(shape) == 0:  # an empty array cannot be mapped
            _np_save(tmp, np.zeros(shape, dt))
            return np.zeros(shape, dt)
        return np.lib.format.open_memmap(tmp, mode="w+", dtype=dt, shape=shape)

    def add(self, rec: dict, vec: np.ndarray, tok: np.ndarray | None) -> None:
        r, k = self.row, len(vec)
        self.vec[r : r + k] = vec
        if self.tok is not None:
            self.tok[r : r + k] = tok
        for i, (s, e) in enumerate(rec["clips"]):
            self._csv.writerow([_path_cell(rec["path"]), f"{float(s):.3f}", f"{float(e):.3f}", r + i])
        self.row += k

    def commit(self) -> None:
        for a in (self.vec, self.tok):
            if isinstance(a, np.memmap):
                a.flush()
        had_tokens = self.tok is not None
        self.vec = self.tok = None  # unmap before the files move
        self._index.close()
        for tmp, dst in self.moves:
            os.replace(tmp, dst)
        if self.fmt == "npy" and not had_tokens:  # no stale tokens beside an output without them
            _tokens_npy_path(self.out).unlink(missing_ok=True)
        _record_output(self.out, self.row, _index_path(self.out))


class _ParquetSink:
    """The merged ``.parquet`` output (index columns + ``embedding`` [+ ``tokens``]), one row group per
    ~``_PARQUET_GROUP_BYTES`` of vectors."""

    def __init__(self, out: Path, n: int, dim: int, dtype: str, tok_shape: list[int] | None):
        pq = _pyarrow_parquet()
        import pyarrow as pa

        self.pa, self.out, self.row = pa, out, 0
        self.dim, self.tok_shape = dim, tok_shape
        value = pa.from_numpy_dtype(np.dtype(dtype))
        fields = [
            pa.field("path", pa.string()),
            pa.field("clip_start", pa.float64()),
            pa.field("clip_end", pa.float64()),
            pa.field("row", pa.int64()),
            pa.field("embedding", pa.list_(value, dim) if dim else pa.list_(pa.float32(), 1)),
        ]
        meta = None
        if tok_shape is not None:
            fields.append(pa.field("tokens", pa.list_(value, math.prod(tok_shape))))
            meta = {b"vidtok_tokens_shape": json.dumps(list(tok_shape)).encode()}
        self.schema = pa.schema(fields, metadata=meta)
        self.tmp = out.with_name(out.name + ".tmp")
        self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self._buf: list[tuple[dict, np.ndarray, np.ndarray | None]] = []
        self._bytes = 0

    def add(self, rec: dict, vec: np.ndarray, tok: np.ndarray | None) -> None:
        self._buf.append((rec, vec, tok))
        self._bytes += vec.nbytes + (tok.nbytes if tok is not None else 0)
        if self._bytes >= _PARQUET_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        pa = self.pa
        paths, starts, ends, rows = [], [], [], []
        for rec, _, _ in self._buf:
            for s, e in rec["clips"]:
                paths.append(encode_path(rec["path"]))
                starts.append(float(s))
                ends.append(float(e))
                rows.append(self.row)
                self.row += 1
        vec = np.concatenate([v for _, v, _ in self._buf])
        cols = [
            pa.array(paths, pa.string()),
            pa.array(starts, pa.float64()),
            pa.array(ends, pa.float64()),
            pa.array(rows, pa.int64()),
            pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), self.dim),
        ]
        if self.tok_shape is not None:
            tok = np.concatenate([t for _, _, t in self._buf])
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(tok.reshape(-1)), math.prod(self.tok_shape)))
        self.writer.write_table(pa.Table.from_arrays(cols, schema=self.schema))
        self._buf, self._bytes = [], 0

    def commit(self) -> None:
        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.out)


def _np_save(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(str) would append ".npy" to the temporary name
        np.save(f, arr)
