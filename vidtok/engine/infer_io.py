"""Inputs and outputs of batch inference: video discovery, crash-safe row / vector writers, resume and merging.

Every finished video is appended to a *part* file and flushed at once, so an interrupted job (Ctrl-C, ``kill -9``,
a lost node) loses only the videos in flight. Layout for ``--out OUT``::

    OUT                      the final output (csv / jsonl / parquet, or npy / safetensors / parquet for embed)
    OUT.parts/rank{r}.*      what rank r has finished and not yet merged (one process: csv / jsonl append to OUT)
    OUT.job.json             what produced OUT (checkpoint digest, views / windows, preprocessing, decoder):
                             ``--resume`` refuses to add rows made another way; after a merge also the digest of
                             OUT and its index, so an index that does not belong to its data is refused
    OUT.index.csv            (embed .npy / .safetensors) path, clip_start, clip_end, row of every vector
    OUT.errors.csv           every failed video with its error

Side files are named from OUT's full name (``emb.npy`` -> ``emb.npy.index.csv``), so two outputs in one folder
never share one. Paths are written as given; one that is not valid UTF-8 (or that starts with ``"``) is written as
a double-quoted C-style string (``"caf\\xe9.mp4"``: ``\\xHH`` per byte, ``\\\\`` and ``\\"``) and read back to the same
file. In CSV files a cell starting with ``= + - @``, tab or CR gets a leading ``'`` (no spreadsheet formulas).

At the end, rank 0 merges the existing OUT with every part in a deterministic order (the discovery order of the
inputs), writes OUT atomically and removes the parts. ``--resume`` reads OUT and the parts (tolerating a truncated
last line), repairs the part it appends to, and skips every video found there, so nothing is done twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidtok.errors import ConfigError, VidtokError, safe_text

__all__ = [
    "DEFAULT_EXTENSIONS",
    "find_videos",
    "ClassifyWriter",
    "EmbedWriter",
    "read_classify_output",
    "read_embed_output",
    "read_embed_videos",
    "CLASSIFY_FORMATS",
    "EMBED_FORMATS",
    "check_job",
    "write_job",
    "encode_path",
    "decode_path",
    "csv_cell",
    "csv_uncell",
    "safe_text",
    "output_exists",
]

DEFAULT_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")
CLASSIFY_FORMATS = ("csv", "jsonl", "parquet")
EMBED_FORMATS = ("parquet", "npy", "safetensors")


# --------------------------------------------------------------------------------------------------------------------
# Writing paths and text losslessly and safely


def encode_path(path: str) -> str:
    """``path`` as written into an output: unchanged, unless it is not valid UTF-8 (a Latin-1 name from an old archive,
    decoded by Python with surrogate escapes) or starts with ``"``; then a double-quoted C-style string with
    ``\\xHH`` for each byte that is not UTF-8 and ``\\\\`` / ``\\"`` for backslash and quote. Inverse:
    :func:`decode_path`."""
    try:
        path.encode("utf-8")
        if not path.startswith('"'):
            return path
    except UnicodeEncodeError:
        pass
    out = ['"']
    for ch in os.fsencode(path).decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in '\\"':
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def decode_path(text: str) -> str:
    """The path :func:`encode_path` wrote (a str that ``open()`` / ``os.fsencode`` map back to the same bytes)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    raw = bytearray()
    i, body = 0, text[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\" and body[i + 1 : i + 2] == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2 : i + 4]):
            raw.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif ch == "\\" and i + 1 < len(body):
            raw += body[i + 1].encode("utf-8")
            i += 2
        else:
            raw += ch.encode("utf-8")
            i += 1
    return os.fsdecode(bytes(raw))


_FORMULA = re.compile(r"^'*[=+\-@\t\r]")


def csv_cell(s: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula: a leading ``'`` before ``= + - @``, tab or CR (and
    before a cell that already starts with quotes then one of those, so that :func:`csv_uncell` is exact)."""
    return "'" + s if _FORMULA.match(s) else s


def csv_uncell(s: str) -> str:
    return s[1:] if s.startswith("'") and _FORMULA.match(s) else s


def _path_cell(path: str) -> str:
    return csv_cell(encode_path(path))


def _cell_path(cell: str) -> str:
    return decode_path(csv_uncell(cell))


def output_exists(out: str | os.PathLike) -> bool:
    """Whether ``out`` (or unmerged parts of it) exists: writing it needs ``--resume`` or ``--overwrite``."""
    out = Path(out)
    return out.exists() or _parts_dir(out).exists()


# --------------------------------------------------------------------------------------------------------------------
# Discovery


def _norm_exts(extensions: Iterable[str]) -> tuple[str, ...]:
    exts = []
    for e in extensions:
        e = e.strip().lower()
        if e:
            exts.append(e if e.startswith(".") else "." + e)
    if not exts:
        raise ConfigError("extensions: the list of video file extensions is empty", key="extensions")
    return tuple(exts)


def find_videos(paths: str | os.PathLike | Sequence[str | os.PathLike], extensions=DEFAULT_EXTENSIONS) -> list[str]:
    """Video files under ``paths``, in a deterministic order.

    A folder is searched recursively for files whose extension (case-insensitive) is in ``extensions``, sorted by
    name at every level. A file named directly is taken whatever its extension (a bad one becomes an error row),
    and ``@list.txt`` reads one path per line. The same file named twice (``x.mp4``, ``./x.mp4``, ``A/../A/x.mp4``,
    a symlink) is taken once, under the spelling met first.

    Raises:
        VidtokError: a path does not exist.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    exts = _norm_exts(extensions)
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(p)

    for raw in paths:
        raw = os.fspath(raw)
        if raw.startswith("@") and not os.path.exists(raw):
            listing = Path(raw[1:])
            if not listing.is_file():
                raise VidtokError(f"{listing}: list file not found")
            for line in os.fsdecode(listing.read_bytes()).splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    add(line.strip())
            continue
        if os.path.isdir(raw):
            for root, dirs, files in os.walk(raw, followlinks=True):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in exts:
                        add(os.path.join(root, name))
        elif os.path.lexists(raw):
            add(raw)
        else:
            raise VidtokError(f"{raw}: no such file or directory")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Tolerant line readers (a crash can leave a partial last line; nothing else is ever half-written)


def _read_jsonl(path: Path) -> tuple[list[dict], bool]:
    """Records of a JSON-lines file and whether it needs repair (a partial or invalid line)."""
    if not path.exists():
        return [], False
    data = path.read_bytes()
    rows, dirty = [], False
    lines = data.split(b"\n")
    if lines and lines[-1] != b"":
        dirty = True  # partial last line (no newline): written by a killed process
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            dirty = True
            continue
        if isinstance(rec, dict) and isinstance(rec.get("path"), str):
            rec["path"] = decode_path(rec["path"])
            rows.append(rec)
        else:
            dirty = True
    return rows, dirty


def _write_atomic(path: Path, write_fn) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write_fn(tmp)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------------------------
# The job record: what produced an output, so that --resume never mixes rows made with another checkpoint or views


def job_path(out: Path) -> Path:
    return out.with_name(out.name + ".job.json")


def check_job(out: str | os.PathLike, job: dict[str, Any]) -> None:
    """Raise if ``OUT.job.json`` says OUT was produced differently from ``job`` (outputs without a record pass).

    Raises:
        VidtokError: one line naming the first setting that differs, its recorded and its new value.
    """
    path = job_path(Path(out))
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        raise VidtokError(f"--resume: cannot read {path} ({e}); remove it to resume without the check") from None
    for key, new in job.items():
        if key in old and old[key] != json.loads(json.dumps(new)):  # compare as JSON (tuples are lists there)
            raise VidtokError(
                f"--resume: {out} was made with {key}={old[key]!r}, this run has {key}={new!r}; "
                "use another --out, or --overwrite to start again"
            )


def _read_job(out: Path) -> dict[str, Any]:
    try:
        rec = json.loads(job_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def write_job(out: str | os.PathLike, job: dict[str, Any]) -> None:
    """Write ``OUT.job.json`` (keeping the digest of a merged output already recorded there)."""
    job = dict(job)
    old = _read_job(Path(out))
    if "output" in old and "output" not in job:
        job["output"] = old["output"]
    text = json.dumps(job, indent=1, sort_keys=True) + "\n"
    _write_atomic(job_path(Path(out)), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _digest(path: Path, whole: bool) -> str:
    """sha256 of a file (``whole=False``: its size and first / last 64 KiB, cheap for GB-sized vector files)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    k = 1 << 16
    with open(path, "rb") as f:
        if whole or size <= 2 * k:
            for chunk in iter(lambda: f.read(k), b""):
                h.update(chunk)
        else:
            h.update(f.read(k))
            f.seek(size - k)
            h.update(f.read(k))
    return h.hexdigest()[:32]


def _record_output(out: Path, rows: int, index: Path | None) -> None:
    """After a merge: record which data file and which index belong together in ``OUT.job.json``."""
    rec = _read_job(out)
    rec["output"] = {"rows": rows, "data": _digest(out, whole=False)}
    if index is not None:
        rec["output"]["index"] = _digest(index, whole=True)
    text = json.dumps(rec, indent=1, sort_keys=True) + "\n"
    _write_atomic(job_path(out), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _check_output(out: Path, rows: int, index: Path) -> None:
    """Refuse an index that does not belong to its vectors (another run's, or a replaced data file)."""
    rec = _read_job(out).get("output")
    if not isinstance(rec, dict):
        return
    if rec.get("rows") != rows or rec.get("data") != _digest(out, whole=False):
        raise VidtokError(
            f"{out}: the file is not the one recorded in {job_path(out).name} (replaced or changed after it was "
            "written); its index cannot be trusted: write it again with --overwrite"
        )
    if "index" in rec and rec["index"] != _digest(index, whole=True):
        raise VidtokError(
            f"{index}: does not belong to {out.name} (another run wrote it); write the output again with --overwrite"
        )


# --------------------------------------------------------------------------------------------------------------------
# Classification rows
#
# A row: {"path", "status" ("ok" | "error"), "error" ("" when ok), "duration" (s, None if unknown), "views",
#         "labels" [top-k], "probs" [top-k], "indices" [top-k class indices]}

_CSV_FIXED = ("path", "status", "duration", "views")


def _csv_header(topk: int) -> list[str]:
    cols = list(_CSV_FIXED)
    for i in range(1, topk + 1):
        cols += [f"label_{i}", f"prob_{i}", f"index_{i}"]
    return [*cols, "error"]


def _row_to_csv(row: dict, topk: int) -> list[str]:
    dur = row.get("duration")
    out = [_path_cell(row["path"]), row["status"], "" if dur is None else f"{dur:.3f}", str(row.get("views", 0))]
    labels, probs, idx = row.get("labels") or [], row.get("probs") or [], row.get("indices") or []
    for i in range(topk):
        if i < len(labels):
            out += [csv_cell(safe_text(labels[i])), f"{probs[i]:.6f}", str(idx[i])]
        else:
            out += ["", "", ""]
    return [*out, csv_cell(safe_text(row.get("error") or ""))]


def _csv_to_row(rec: dict) -> dict:
    labels, probs, idx = [], [], []
    i = 1
    while f"label_{i}" in rec:
        if rec[f"label_{i}"] != "" or rec.get(f"prob_{i}", "") != "":
            labels.append(csv_uncell(rec[f"label_{i}"]))
            probs.append(float(rec[f"prob_{i}"]))
            idx.append(int(rec[f"index_{i}"]) if rec.get(f"index_{i}", "") != "" else -1)
        i += 1
    dur = rec.get("duration", "")
    return {
        "path": _cell_path(rec["path"]),
        "status": rec["status"],
        "error": csv_uncell(rec.get("error", "") or ""),
        "duration": float(dur) if dur not in ("", None) else None,
        "views": int(rec.get("views") or 0),
        "labels": labels,
        "probs": probs,
        "indices": idx,
    }


def _read_csv_rows(path: Path) -> tuple[list[dict], bool]:
    if not path.exists():
        return [], False
    data = path.read_bytes()
    dirty = not data.endswith(b"\n") and len(data) > 0
    text = data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace")  # everything vidtok writes is UTF-8
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], dirty
    if not header or header[0] != "path":
        raise VidtokError(f"{path}: not a vidtok classify CSV (first column is not 'path'); refusing to overwrite it")
    rows = []
    for fields in reader:
        if len(fields) != len(header):
            dirty = True
            continue
        try:
            rows.append(_csv_to_row(dict(zip(header, fields, strict=True))))
        except (ValueError, KeyError):
            dirty = True
    return rows, dirty


def _read_parquet_rows(path: Path) -> list[dict]:
    pq = _pyarrow_parquet()
    try:
        table = pq.read_table(path)
    except Exception as e:  # an unreadable final file is never produced by us (written atomically)
        raise VidtokError(f"{path}: cannot read parquet output ({e}); move it away or pass --overwrite") from e
    rows = table.to_pylist()
    for r in rows:
        r["path"] = decode_path(r["path"])
        r["error"] = r.get("error") or ""
    return rows


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise VidtokError("parquet output needs pyarrow: pip install 'vidtok[parquet]' (or pip install pyarrow)") from e
    return pq


def _fmt_of(path: Path, formats: Sequence[str], what: str) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in formats:
        raise ConfigError(
            f"--out {path}: unknown {what} output format {path.suffix!r} (use one of: {', '.join(formats)})",
            key="out",
        )
    return fmt


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _merge_key(order: dict[str, int]):
    big = len(order)
    return lambda path: (order.get(path, big), path)


def _dedup(rows: Iterable[Any], rec: Callable[[Any], dict] = lambda r: r) -> dict[str, Any]:
    """One row per path; an ``ok`` row wins over an error row (e.g. a retried video), otherwise the later one.
    ``rec`` gets the record out of an item (embed items are ``(record, source)`` pairs)."""
    best: dict[str, Any] = {}
    for r in rows:
        old = best.get(rec(r)["path"])
        if old is None or rec(r)["status"] == "ok" or rec(old)["status"] != "ok":
            best[rec(r)["path"]] = r
    return best


def read_classify_output(out: str | os.PathLike) -> list[dict]:
    """Every row recorded for ``out``: the final file plus any unmerged parts, one row per path (tolerant)."""
    out = Path(out)
    fmt = _fmt_of(out, CLASSIFY_FORMATS, "classify")
    rows: list[dict] = []
    if out.exists():
        if fmt == "csv":
            rows += _read_csv_rows(out)[0]
        elif fmt == "jsonl":
            rows += _read_jsonl(out)[0]
        else:
            rows += _read_parquet_rows(out)
    parts = _parts_dir(out)
    if parts.is_dir():
        for p in sorted(parts.iterdir()):
            if p.suffix == ".csv":
                rows += _read_csv_rows(p)[0]
            elif p.suffix == ".jsonl":
                rows += _read_jsonl(p)[0]
    return list(_dedup(rows).values())


class ClassifyWriter:
    """Appends one row per finished video to this rank's part (flushed at once) and merges the parts at the end.

    Args:
        out: final output path (``.csv``, ``.jsonl`` or ``.parquet``); None keeps rows in memory only.
        topk: labels per row (CSV columns).
        rank, world_size: this process and the number of processes writing the same output.
    """

    def __init__(self, out: str | os.PathLike | None, *, topk: int, rank: int = 0, world_size: int = 1):
        self.out = Path(out) if out is not None else None
        self.topk = topk
        self.rank, self.world_size = rank, world_size
        self.rows: list[dict] = []  # rows written by this process in this run
        self._fh = None
        self.fmt = _fmt_of(self.out, CLASSIFY_FORMATS, "classify") if self.out is not None else None
        if self.out is None:
            self.part = None
        elif self.world_size == 1 and self.fmt in ("csv", "jsonl"):
            self.part = self.out  # one process: append straight to the output so `tail -f` shows progress
        else:
            ext = "csv" if self.fmt == "csv" else "jsonl"
            self.part = _parts_dir(self.out) / f"rank{rank}.{ext}"

    # -- set-up ------------------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.out is not None and output_exists(self.out)

    def remove(self) -> None:
        if self.out is None:
            return
        for p in (self.out, self.out.with_name(self.out.name + ".tmp"), _errors_path(self.out), job_path(self.out)):
            p.unlink(missing_ok=True)
        shutil.rmtree(_parts_dir(self.out), ignore_errors=True)

    def repair(self) -> int:
        """Rewrite this rank's part without a partial / invalid trailing line. Returns the rows dropped (0 or 1)."""
        if self.part is None or not self.part.exists():
            return 0
        rows, dirty = self._read_part()
        if dirty:
            _write_atomic(self.part, lambda tmp: self._write_rows(tmp, rows, self.part.suffix == ".csv"))
        return int(dirty)

    def _read_part(self) -> tuple[list[dict], bool]:
        if self.part.suffix == ".csv":
            return _read_csv_rows(self.part)
        return _read_jsonl(self.part)

    def done_paths(self, include_failed: bool = True) -> set[str]:
        if self.out is None:
            return set()
        return {r["path"] for r in read_classify_output(self.out) if include_failed or r["status"] == "ok"}

    # -- writing -----------------------------------------------------------------------------------------------------
    def _write_rows(self, path: Path, rows: list[dict], csv_format: bool) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            if csv_format:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(_csv_header(self.topk))
                for r in rows:
                    w.writerow(_row_to_csv(r, self.topk))
            else:
                for r in rows:
                    f.write(_json_row(r))

    def _open(self) -> None:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        new = not self.part.exists() or self.part.stat().st_size == 0
        self._fh = open(self.part, "a", newline="", encoding="utf-8")  # noqa: SIM115 (kept open across rows)
        if new and self.part.suffix == ".csv":
            csv.writer(self._fh, lineterminator="\n").writerow(_csv_header(self.topk))
            self._fh.flush()

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if self.part is None:
            return
        if self._fh is None:
            self._open()
        if self.part.suffix == ".csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(_row_to_csv(row, self.topk))
            line = buf.getvalue()
        else:
            line = _json_row(row)
        self._fh.write(line)  # one write per row: a crash leaves at most one partial line
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def merge(self, order: Sequence[str]) -> list[dict]:
        """(rank 0, after every rank closed) final output = existing output + all parts, sorted by ``order``."""
        key = _merge_key({p: i for i, p in enumerate(order)})
        if self.out is None:
            return sorted(self.rows, key=lambda r: key(r["path"]))
        rows = read_classify_output(self.out)
        rows.sort(key=lambda r: key(r["path"]))
        if self.fmt == "parquet":
            pq = _pyarrow_parquet()
            import pyarrow as pa

            schema = pa.schema(
                [
                    ("path", pa.string()),
                    ("status", pa.string()),
                    ("error", pa.string()),
                    ("duration", pa.float64()),
                    ("views", pa.int32()),
                    ("labels", pa.list_(pa.string())),
                    ("probs", pa.list_(pa.float32())),
                    ("indices", pa.list_(pa.int32())),
                ]
            )
            cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
            cols["path"] = [encode_path(p) for p in cols["path"]]
            cols["error"] = [safe_text(e or "") for e in cols["error"]]
            table = pa.table(cols, schema=schema)
            _write_atomic(self.out, lambda tmp: pq.write_table(table, tmp))
        else:
            _write_atomic(self.out, lambda tmp: self._write_rows(tmp, rows, self.fmt == "csv"))
        _write_errors(self.out, rows)
        shutil.rmtree(_parts_dir(self.out), ignore_errors=True)
        _fsync_dir(self.out.parent)
        return rows


def _json_row(row: dict) -> str:
    """One JSON line of a classify row (paths as :func:`encode_path` writes them; readable UTF-8 otherwise)."""
    rec = dict(row, path=encode_path(row["path"]), error=safe_text(row.get("error") or ""))
    return json.dumps(rec, ensure_ascii=False) + "\n"


def _errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.csv")


def _write_errors(out: Path, rows: Iterable[dict]) -> Path | None:
    """``OUT.errors.csv`` (path, error) listing every failed video, or no file when none failed."""
    bad = [r for r in rows if r["status"] != "ok"]
    path = _errors_path(out)
    if not bad:
        path.unlink(missing_ok=True)
        return None

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["path", "error"])
            for r in bad:
                w.writerow([_path_cell(r["path"]), csv_cell(safe_text(r.get("error") or ""))])

    _write_atomic(path, write)
    return path


# --------------------------------------------------------------------------------------------------------------------
# Embeddings
#
# Part files of rank r: rank{r}.vectors.bin (raw rows, appended first), rank{r}.tokens.bin (optional) and
# rank{r}.videos.jsonl, one record per video, appended after its vectors:
#   {"path", "status", "error", "duration", "clips": [[start_s, end_s], ...], "dim", "dtype", "off" (byte offset),
#    "tok_shape": [T', S, D] | null, "tok_off"}
# A record is only trusted if its bytes are all in the .bin, so a killed process loses at most the last video.


# Merging streams: the final output is written (and an existing one read) a video at a time, so a merge holds one
# video's vectors (parquet: one row group) in memory, not the whole output. ``--resume`` reads only the index.
_PARQUET_GROUP_BYTES = 64 << 20  # parquet: one row group per ~64 MB of vectors


def _index_path(out: Path) -> Path:
    return out.with_name(out.name + ".index.csv")


def _tokens_npy_path(out: Path) -> Path:
    return out.with_name(out.name + ".tokens.npy")


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
            reason = " ".join(str(e).split())[:200] or type(e).__name__
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


class EmbedWriter:
    """Appends each finished video's vectors (and tokens) to this rank's part and merges the parts at the end.

    Args:
        out: ``.parquet``, ``.npy`` or ``.safetensors``; None keeps everything in memory.
        rank, world_size: this process and the number of processes writing the same output.
    """

    def __init__(self, out: str | os.PathLike | None, *, rank: int = 0, world_size: int = 1):
        self.out = Path(out) if out is not None else None
        self.fmt = _fmt_of(self.out, EMBED_FORMATS, "embed") if self.out is not None else None
        self.rank, self.world_size = rank, world_size
        self.records: list[dict] = []  # this run's video records
        self._mem: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._fh = self._vf = self._tf = None
        if self.out is not None:
            self.part = _EmbedPart(_parts_dir(self.out) / f"rank{rank}.videos.jsonl")

    def exists(self) -> bool:
        return self.out is not None and output_exists(self.out)

    def remove(self) -> None:
        if self.out is None:
            return
        out = self.out
        for p in (out, _index_path(out), _tokens_npy_path(out), _errors_path(out), job_path(out)):
            p.unlink(missing_ok=True)
        shutil.rmtree(_parts_dir(self.out), ignore_errors=True)

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
        _write_errors(out, videos)
        shutil.rmtree(_parts_dir(out), ignore_errors=True)
        _fsync_dir(out.parent)
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


def _np_save(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(str) would append ".npy" to the temporary name
        np.save(f, arr)
