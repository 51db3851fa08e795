"""The files of one output ``OUT``: its format, its ``OUT.parts/`` folder, atomic replacement, tolerant JSON lines,
the list of failed videos ``OUT.errors.csv``, and one row per path when rows are merged.

A crash can leave a partial last line in a part file and nothing else half-written: final files are written to a
temporary name and renamed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from vidtok.engine.infer_io.paths import _path_cell, csv_cell, decode_path
from vidtok.errors import ConfigError, VidtokError, safe_text

CLASSIFY_FORMATS = ("csv", "jsonl", "parquet")


EMBED_FORMATS = ("parquet", "npy", "safetensors")


def output_exists(out: str | os.PathLike) -> bool:
    """Whether ``out`` (or unmerged parts of it) exists: writing it needs ``--resume`` or ``--overwrite``."""
    out = Path(out)
    return out.exists() or _parts_dir(out).exists()


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


def job_path(out: Path) -> Path:
    """``OUT.job.json``: what produced OUT (see :mod:`vidtok.engine.infer_io.job`)."""
    return out.with_name(out.name + ".job.json")


class OutputFiles:
    """What the classify and embed writers share: the output, its format, this rank's place among the writers,
    whether OUT or parts of it exist, removing every file of it, and the end of a merge.

    Args:
        out: the final output; None keeps everything in memory.
        rank, world_size: this process and the number of processes writing the same output.
    """

    kind = ""  # "classify" | "embed", in errors
    formats: tuple[str, ...] = ()

    def __init__(self, out: str | os.PathLike | None, rank: int = 0, world_size: int = 1):
        self.out = Path(out) if out is not None else None
        self.fmt = _fmt_of(self.out, self.formats, self.kind) if self.out is not None else None
        self.rank, self.world_size = rank, world_size

    def exists(self) -> bool:
        return self.out is not None and output_exists(self.out)

    def side_files(self) -> list[Path]:
        """OUT and the files beside it that belong to it (a writer adds its own)."""
        assert self.out is not None
        return [self.out, _errors_path(self.out), job_path(self.out)]

    def remove(self) -> None:
        """``--overwrite``: every file of this output, its unmerged parts included."""
        if self.out is None:
            return
        for p in self.side_files():
            p.unlink(missing_ok=True)
        shutil.rmtree(_parts_dir(self.out), ignore_errors=True)

    def _merged(self, records: Iterable[dict]) -> None:
        """After OUT is written: the list of failed videos, the parts removed, the folder's entries on disk."""
        assert self.out is not None
        _write_errors(self.out, records)
        shutil.rmtree(_parts_dir(self.out), ignore_errors=True)
        _fsync_dir(self.out.parent)
