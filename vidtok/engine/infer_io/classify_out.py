"""Classify outputs: one row per video in ``.csv``, ``.jsonl`` or ``.parquet``, appended as videos finish.

A row: ``{"path", "status" ("ok" | "error"), "error" ("" when ok), "duration" (s, None if unknown), "views",
"labels" [top-k], "probs" [top-k], "indices" [top-k class indices]}``. The CSV schema (:func:`csv_header`,
:func:`csv_row`) is the one of the file and of ``vidtok classify`` without ``--out`` (stdout)::

    path, status, duration, views, label_1, prob_1, index_1, ..., label_k, prob_k, index_k, error

One process appends to OUT itself (csv / jsonl); several (torchrun) append to ``OUT.parts/rank{r}.*`` and rank 0
merges them into OUT in discovery order.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from vidtok.engine.infer_io.files import (
    CLASSIFY_FORMATS,
    OutputFiles,
    _dedup,
    _fmt_of,
    _merge_key,
    _parts_dir,
    _pyarrow_parquet,
    _read_jsonl,
    _write_atomic,
)
from vidtok.engine.infer_io.paths import _cell_path, _path_cell, csv_cell, csv_uncell, decode_path, encode_path
from vidtok.errors import VidtokError, safe_text

_CSV_FIXED = ("path", "status", "duration", "views")


def csv_header(topk: int) -> list[str]:
    """The columns of a classify CSV with ``topk`` labels (the file's and ``vidtok classify``'s stdout)."""
    cols = list(_CSV_FIXED)
    for i in range(1, topk + 1):
        cols += [f"label_{i}", f"prob_{i}", f"index_{i}"]
    return [*cols, "error"]


def csv_row(row: dict, topk: int) -> list[str]:
    """The cells of one row under :func:`csv_header`: duration to the ms, probabilities to 6 decimals, paths and
    text escaped (:func:`~vidtok.engine.infer_io.paths.encode_path`, :func:`~vidtok.engine.infer_io.paths.csv_cell`).
    """
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


class ClassifyWriter(OutputFiles):
    """Appends one row per finished video to this rank's part (flushed at once) and merges the parts at the end.

    Args:
        out: final output path (``.csv``, ``.jsonl`` or ``.parquet``); None keeps rows in memory only.
        topk: labels per row (CSV columns).
        rank, world_size: this process and the number of processes writing the same output.
    """

    kind, formats = "classify", CLASSIFY_FORMATS

    def __init__(self, out: str | os.PathLike | None, *, topk: int, rank: int = 0, world_size: int = 1):
        super().__init__(out, rank, world_size)
        self.topk = topk
        self.rows: list[dict] = []  # rows written by this process in this run
        self._fh = None
        if self.out is None:
            self.part = None
        elif self.world_size == 1 and self.fmt in ("csv", "jsonl"):
            self.part = self.out  # one process: append straight to the output so `tail -f` shows progress
        else:
            ext = "csv" if self.fmt == "csv" else "jsonl"
            self.part = _parts_dir(self.out) / f"rank{rank}.{ext}"

    # -- set-up ------------------------------------------------------------------------------------------------------
    def side_files(self) -> list[Path]:
        return [*super().side_files(), self.out.with_name(self.out.name + ".tmp")]

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
                w.writerow(csv_header(self.topk))
                for r in rows:
                    w.writerow(csv_row(r, self.topk))
            else:
                for r in rows:
                    f.write(_json_row(r))

    def _open(self) -> None:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        new = not self.part.exists() or self.part.stat().st_size == 0
        self._fh = open(self.part, "a", newline="", encoding="utf-8")  # noqa: SIM115 (kept open across rows)
        if new and self.part.suffix == ".csv":
            csv.writer(self._fh, lineterminator="\n").writerow(csv_header(self.topk))
            self._fh.flush()

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if self.part is None:
            return
        if self._fh is None:
            self._open()
        if self.part.suffix == ".csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(csv_row(row, self.topk))
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
        self._merged(rows)
        return rows


def _json_row(row: dict) -> str:
    """One JSON line of a classify row (paths as :func:`encode_path` writes them; readable UTF-8 otherwise)."""
    rec = dict(row, path=encode_path(row["path"]), error=safe_text(row.get("error") or ""))
    return json.dumps(rec, ensure_ascii=False) + "\n"
