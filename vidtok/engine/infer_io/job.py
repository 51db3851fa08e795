"""The job record ``OUT.job.json``: what produced an output, so that ``--resume`` never mixes rows made with another
checkpoint, views or decoder; after a merge also the digest of OUT and its index, so that an index that does not
belong to its data is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from vidtok.engine.infer_io.files import _write_atomic, job_path
from vidtok.errors import VidtokError

# Settings recorded since a later version, with the value every output written before then was made with (a record
# without the key); other keys a record lacks are not compared.
_BEFORE: dict[str, Any] = {"sampler": "uniform"}


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
        was = old.get(key, _BEFORE.get(key, new))  # a setting newer than the record: what every output had then
        if was != json.loads(json.dumps(new)):  # compare as JSON (tuples are lists there)
            raise VidtokError(
                f"--resume: {out} was made with {key}={was!r}, this run has {key}={new!r}; "
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
