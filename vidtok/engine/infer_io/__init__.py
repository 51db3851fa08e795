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

Modules (each imports only those above it)::

    paths.py         encode_path / decode_path, csv_cell / csv_uncell
    discovery.py     find_videos
    files.py         formats, OUT.parts/, atomic replace, tolerant JSON lines, OUT.errors.csv, one row per path
    job.py           OUT.job.json: check_job / write_job, the output's digest
    classify_out.py  ClassifyWriter, read_classify_output, the CSV schema (csv_header / csv_row)
    vectors.py       the memory-mapped .npy / .safetensors writer and reader, the parquet sink
    embed_out.py     EmbedWriter, read_embed_output, read_embed_videos
"""

from vidtok.engine.infer_io.classify_out import ClassifyWriter, csv_header, csv_row, read_classify_output
from vidtok.engine.infer_io.discovery import find_videos, video_extensions
from vidtok.engine.infer_io.embed_out import EmbedWriter, read_embed_output, read_embed_videos
from vidtok.engine.infer_io.files import CLASSIFY_FORMATS, EMBED_FORMATS, job_path, output_exists
from vidtok.engine.infer_io.job import check_job, write_job
from vidtok.engine.infer_io.paths import csv_cell, csv_uncell, decode_path, encode_path

__all__ = [
    "find_videos",
    "video_extensions",
    "ClassifyWriter",
    "EmbedWriter",
    "read_classify_output",
    "read_embed_output",
    "read_embed_videos",
    "CLASSIFY_FORMATS",
    "EMBED_FORMATS",
    "check_job",
    "job_path",
    "write_job",
    "encode_path",
    "decode_path",
    "csv_cell",
    "csv_uncell",
    "csv_header",
    "csv_row",
    "output_exists",
]
