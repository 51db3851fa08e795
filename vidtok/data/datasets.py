"""Labelled video clip datasets: official Kinetics CSVs, "path label" lists, and class folders.

All three formats become one :class:`VideoClipDataset` over ``(path, label)`` pairs::

    annotations ──► parse_* ──► [(path, label)] (missing files dropped, counted, reported once)
    dataset[i]  ──► sampler (random | uniform views) ──► open_video(path).get_frames ──► transform
                ──► {"video": (C,T,H,W) float32 | (V,C,T,H,W), "label": int, "index": int, "path": str}

Formats:
    * ``kinetics``: the official CSV (``label,youtube_id,time_start,time_end,split``; extra columns ignored). The file
      of a row is ``{youtube_id}_{time_start:06d}_{time_end:06d}.<ext>`` (or ``{youtube_id}.<ext>``) anywhere under
      the root: ``<root>/<split>/<label>/``, ``<root>/<split>/`` or flat — the video tree is indexed once.
    * ``list``: one ``path label`` per line, separated by whitespace or a comma (pytorchvideo, mmaction2, PySlowFast);
      the label is a class index or a class name; relative paths are under the root; ``#`` comments are skipped.
    * ``folder``: ``<root>/<class name>/*.<video ext>``.

Bad files never stop a run: a clip that fails to decode is logged, appended as one line ``path<TAB>reason`` to the
bad-files file (workers are separate processes; appends are atomic single writes) and replaced by another index
drawn from the sample's generator, at most ``max_retries`` times.

Every random choice of a sample comes from a generator seeded by ``(seed, epoch, index)``, so augmentation is
reproducible whatever worker decodes it; :class:`vidtok.data.loader.EpochSampler` passes the epoch with the index.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import torch

from vidtok.config import read_text
from vidtok.data.clip_sampling import eval_clips, random_clip
from vidtok.data.loader import sample_seed
from vidtok.errors import ConfigError, VideoDecodeError, VidtokError, exception_line, one_line, safe_text
from vidtok.io.metadata import VIDEO_EXTENSIONS

__all__ = [
    "VideoClipDataset",
    "build_dataset",
    "read_classes",
    "parse_kinetics_csv",
    "parse_list_file",
    "parse_class_folders",
    "read_bad_files",
]

log = logging.getLogger("vidtok.data")

_BUILTIN_CLASSES = {"k400": "classes_k400.txt", "k600": "classes_k600.txt", "k700": "classes_k700.txt"}
_SHOW = 5  # paths shown when reporting missing files


def _norm(name: str) -> str:
    """Class-name key tolerant to the usual spellings: case, quotes, underscores vs spaces."""
    return " ".join(name.strip().strip("\"'").replace("_", " ").lower().split())


def read_classes(spec: str | os.PathLike) -> list[str]:
    """Class names, index = position.

    Args:
        spec: ``"k400"``, ``"k600"``, ``"k700"`` (shipped lists) or a text file with one class name per line.

    Raises:
        ConfigError: the file is missing or empty, or a name repeats.
    """
    spec = os.fspath(spec)
    if spec.lower() in _BUILTIN_CLASSES:
        text = resources.files("vidtok.data").joinpath("classes", _BUILTIN_CLASSES[spec.lower()]).read_text()
    else:
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"class list not found: {spec} (use k400 | k600 | k700 or a file)", key="data.classes")
        text = read_text(p, key="data.classes", what="class list")
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise ConfigError(f"class list {spec} is empty", key="data.classes")
    seen: dict[str, str] = {}
    for n in names:
        if _norm(n) in seen:
            raise ConfigError(f"class list {spec}: {n!r} appears twice", key="data.classes")
        seen[_norm(n)] = n
    return names


# --------------------------------------------------------------------------------------------------------------------
# Annotation parsers: each returns [(path, label_token)] (label as written) and the missing paths.


def _index_videos(root: Path) -> dict[str, list[str]]:
    """stem -> paths of every video file under ``root`` (one directory walk)."""
    index: dict[str, list[str]] = {}
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in VIDEO_EXTENSIONS:
                index.setdefault(stem, []).append(os.path.join(dirpath, f))
    return index


def _pick(paths: list[str], split: str, label: str) -> str:
    if len(paths) == 1:
        return paths[0]

    def score(p: str) -> int:
        parts = {_norm(x) for x in Path(p).parts}
        return int(_norm(split) in parts) * 2 + int(_norm(label) in parts)

    return max(paths, key=score)


def parse_kinetics_csv(csv_path: str | os.PathLike, root: str | os.PathLike | None = None):
    """Rows of an official Kinetics CSV matched to files under ``root`` (default: the CSV's folder).

    Returns:
        ``(items, missing)``: ``items`` = [(path, label)] for rows whose file exists, ``missing`` = expected file
        names of the rest.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ConfigError(f"annotation file not found: {csv_path}")
    root = Path(root) if root else csv_path.parent
    if not root.is_dir():
        raise ConfigError(f"video root is not a folder: {root}", key="data.root")
    with io.StringIO(read_text(csv_path, key="data", what="annotation file"), newline="") as f:
        reader = csv.DictReader(f)
        fields = {(k or "").strip() for k in reader.fieldnames or []}
        need = {"label", "youtube_id", "time_start", "time_end"}
        if not need <= fields:
            raise ConfigError(
                f"{csv_path}: not a Kinetics CSV, needs columns {sorted(need)} (has {sorted(fields)})",
                key="data.format",
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    index = _index_videos(root)
    items, missing = [], []
    for i, r in enumerate(rows):
        try:
            start, end = int(float(r["time_start"])), int(float(r["time_end"]))
        except ValueError:
            raise ConfigError(
                f"{csv_path}: row {i + 2}: bad time_start/time_end {r['time_start']!r}/{r['time_end']!r}"
            ) from None
        stem = f"{r['youtube_id']}_{start:06d}_{end:06d}"
        paths = index.get(stem) or index.get(r["youtube_id"])
        if paths:
            items.append((_pick(paths, r.get("split", ""), r["label"]), r["label"]))
        else:
            missing.append(str(Path(r.get("split", "")) / r["label"] / f"{stem}.mp4"))
    return items, missing


def parse_list_file(list_path: str | os.PathLike, root: str | os.PathLike | None = None):
    """``path label`` lines (whitespace- or comma-separated; label = index or class name).

    The label is what follows the last comma if the line has one, else the last whitespace-separated token, so
    paths may contain spaces in comma files and class names may contain spaces after a comma.

    Returns:
        ``(items, missing)`` as :func:`parse_kinetics_csv`; relative paths are joined to ``root`` (default: the
        list file's folder).
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise ConfigError(f"annotation file not found: {list_path}")
    root = Path(root) if root else list_path.parent
    items, missing = [], []
    for n, raw in enumerate(read_text(list_path, key="data", what="annotation file").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "," in line:
            path, label = (s.strip() for s in line.rsplit(",", 1))
        else:
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise ConfigError(f"{list_path}: line {n}: expected 'path label', got {raw!r}")
            path, label = parts
        if not path or not label:
            raise ConfigError(f"{list_path}: line {n}: expected 'path label', got {raw!r}")
        p = Path(path) if os.path.isabs(path) else root / path
        if p.is_file():
            items.append((str(p), label))
        else:
            missing.append(str(p))
    return items, missing


def parse_class_folders(folder: str | os.PathLike):
    """``<folder>/<class>/*`` video files -> ([(path, class name)], []); classes in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"class-folder root not found: {folder}")
    items = []
    for cls in sorted(d for d in folder.iterdir() if d.is_dir()):
        for dirpath, _, files in os.walk(cls, followlinks=True):
            for f in sorted(files):
                if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS:
                    items.append((os.path.join(dirpath, f), cls.name))
    return items, []


def _labels_to_indices(items, class_names: list[str] | None, source: str) -> tuple[list[tuple[str, int]], list[str]]:
    """Map label tokens to indices; derive the class list when none is given."""
    tokens = [lab for _, lab in items]
    numeric = bool(tokens) and all(t.lstrip("-").isdigit() for t in tokens)
    if class_names is None:
        if numeric:
            class_names = [str(i) for i in range(max(int(t) for t in tokens) + 1)]
        else:
            class_names = sorted(set(tokens))
    lookup = {_norm(c): i for i, c in enumerate(class_names)}
    out, unknown = [], []
    for path, tok in items:
        if tok.lstrip("-").isdigit() and _norm(tok) not in lookup:
            idx = int(tok)
            if not 0 <= idx < len(class_names):
                raise ConfigError(f"{source}: label index {idx} out of range for {len(class_names)} classes ({path})")
        elif _norm(tok) in lookup:
            idx = lookup[_norm(tok)]
        else:
            unknown.append(tok)
            continue
        out.append((path, idx))
    if unknown:
        shown = ", ".join(repr(u) for u in sorted(set(unknown))[:_SHOW])
        raise ConfigError(f"{source}: {len(unknown)} rows have labels not in the class list (e.g. {shown})")
    return out, class_names


# --------------------------------------------------------------------------------------------------------------------


def read_bad_files(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, reason) pairs from a bad-files file (empty if it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_bytes().splitlines():  # paths as their bytes (os.fsencode), so any file name round-trips
        if line.strip():
            path_, _, reason = line.partition(b"\t")
            out.append((os.fsdecode(path_), reason.decode("utf-8", "backslashreplace")))
    return out


class VideoClipDataset(torch.utils.data.Dataset):
    """Clips of labelled videos, decoded with :func:`vidtok.io.open_video` and transformed.

    Args:
        samples: (path, label index) pairs.
        class_names: index -> name.
        train: True: one random window per item (``repeated_aug`` of them from one decode); False: ``test_clips``
            windows placed by ``test_sampler``, each through the (multi-crop) eval transform, stacked to
            ``(V, C, T, H, W)``.
        transform: ``TrainTransform`` / ``EvalTransform`` (or any callable ``(frames, generator) -> tensor``);
            None returns uint8 ``(T, H, W, 3)`` frames.
        num_frames: frames per clip.
        frame_stride: distance between sampled frames.
        test_clips: temporal views in test mode.
        test_sampler: where they sit (:func:`~vidtok.data.clip_sampling.eval_clips`): ``uniform`` (vidtok, ViViT) or
            a peer's convention, ``mmaction2``, ``pytorchvideo``, ``pyslowfast``.
        repeated_aug: clips per decoded video in train mode (> 1 returns a list of dicts; use ``collate_clips``).
        backend: video backend for ``open_video``.
        max_retries: replacement attempts for a sample that fails to decode before giving up.
        seed: base seed of the per-sample generators.
        bad_files: file the failures are appended to (None: only logged).
        missing: paths dropped at build time because the file does not exist (kept for reporting).
    """

    takes_epoch = True  # ds[(index, epoch)]: the loader's SeededDataset passes the epoch through

    def __init__(
        self,
        *,
        samples: Sequence[tuple[str, int]],
        class_names: Sequence[str],
        train: bool,
        transform: Callable | None,
        num_frames: int = 16,
        frame_stride: int = 2,
        test_clips: int = 1,
        test_sampler: str = "uniform",
        repeated_aug: int = 1,
        backend: str = "auto",
        stream: int = 0,
        max_retries: int = 10,
        seed: int = 0,
        bad_files: str | os.PathLike | None = None,
        missing: Sequence[str] = (),
    ):
        if num_frames < 1 or frame_stride < 1 or test_clips < 1 or repeated_aug < 1 or max_retries < 0 or stream < 0:
            raise ValueError(
                f"need num_frames, frame_stride, test_clips, repeated_aug >= 1 and max_retries, stream >= 0; got "
                f"{num_frames}, {frame_stride}, {test_clips}, {repeated_aug}, {max_retries}, {stream}"
            )
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.train = train
        self.transform = transform
        self.num_frames, self.frame_stride = num_frames, frame_stride
        self.test_clips, self.repeated_aug = test_clips, repeated_aug
        self.test_sampler = test_sampler
        self.backend = backend
        self.stream = stream
        self.max_retries = max_retries
        self.seed = seed
        self.bad_files = str(bad_files) if bad_files is not None else None
        self.missing = list(missing)
        self.num_failures = 0  # in this process; with workers the bad-files file is the total

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        mode = "train" if self.train else f"test x{self.test_clips}"
        return (
            f"VideoClipDataset({len(self)} videos, {len(self.class_names)} classes, {mode}, "
            f"{self.num_frames}x{self.frame_stride}, missing={len(self.missing)})"
        )

    def _record_failure(self, path: str, reason: str) -> None:
        self.num_failures += 1
        reason = one_line(reason)
        log.warning("skipping unreadable video %s: %s", safe_text(path), safe_text(reason))
        if self.bad_files is not None:
            line = os.fsencode(path) + b"\t" + reason.encode("utf-8", "backslashreplace") + b"\n"
            os.makedirs(os.path.dirname(os.path.abspath(self.bad_files)), exist_ok=True)
            fd = os.open(self.bad_files, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write on an O_APPEND file: lines from several workers do not interleave
            finally:
                os.close(fd)

    def load(self, index: int, generator: torch.Generator) -> dict | list[dict]:
        """Decode and transform one item (raises VideoDecodeError on a bad file)."""
        from vidtok.io import open_video

        path, label = self.samples[index]
        with open_video(path, self.backend, stream=self.stream) as video:
            meta = video.metadata
            fps = meta.fps if meta.fps and meta.fps > 0 else 25.0
            n = meta.num_frames
            if n < 1:
                raise VideoDecodeError(path, "no frames")
            if self.train:
                clips = [
                    random_clip(n, fps, clip_len=self.num_frames, frame_stride=self.frame_stride, generator=generator)
                    for _ in range(self.repeated_aug)
                ]
            else:
                clips = eval_clips(
                    self.test_sampler,
                    n,
                    fps,
                    clip_len=self.num_frames,
                    frame_stride=self.frame_stride,
                    num_clips=self.test_clips,
                )
            frames = video.get_frames(torch.cat([c.indices for c in clips]))  # one pass for all clips
        frames = frames.split([len(c) for c in clips])
        views = [self.transform(f, generator) for f in frames] if self.transform is not None else list(frames)
        if not self.train:
            # EvalTransform gives (crops, C, T, H, W) per clip -> (clips * crops, C, T, H, W), clip-major
            video_out = torch.cat(views) if views[0].ndim == 5 else torch.stack(views)
            return {"video": video_out, "label": label, "index": index, "path": path}
        out = [{"video": v, "label": label, "index": index, "path": path} for v in views]
        return out[0] if self.repeated_aug == 1 else out

    def __getitem__(self, key: int | tuple[int, int]) -> dict | list[dict]:
        # plain index (epoch 0) or the (index, epoch) pair EpochSampler yields; numpy / tensor ints work too
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        tried = []
        for _ in range(self.max_retries + 1):
            try:
                return self.load(index, g)
            except (VideoDecodeError, OSError) as e:  # bad file; anything else is a bug and propagates
                path = self.samples[index][0]
                self._record_failure(path, e.reason if isinstance(e, VideoDecodeError) else exception_line(e))
                tried.append(path)
                if len(self.samples) < 2:
                    break
                index = int(torch.randint(len(self.samples), (1,), generator=g))
        raise VidtokError(
            f"{len(tried)} videos in a row failed to decode (max_retries={self.max_retries}); first: {tried[0]}"
        )


def _annotation(data_cfg, split: str) -> str:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    ann = getattr(data_cfg, split)
    if data_cfg.root and not Path(data_cfg.root).is_dir():
        raise ConfigError(f"data.root: no such folder: {data_cfg.root}", key="data.root")
    if not ann and data_cfg.format == "folder" and data_cfg.root:
        ann = str(Path(data_cfg.root) / split)
    if not ann and data_cfg.format == "kinetics" and data_cfg.root and (Path(data_cfg.root) / f"{split}.csv").is_file():
        ann = str(Path(data_cfg.root) / f"{split}.csv")
    if not ann:
        raise ConfigError(f"no {split} annotations: set data.{split}", key=f"data.{split}")
    return ann


def _parse(data_cfg, split: str):
    ann = _annotation(data_cfg, split)
    fmt = data_cfg.format
    if fmt == "kinetics":
        return parse_kinetics_csv(ann, data_cfg.root or None), ann
    if fmt == "list":
        return parse_list_file(ann, data_cfg.root or None), ann
    if fmt == "folder":
        return parse_class_folders(ann), ann
    raise ConfigError(f"unknown data.format {fmt!r} (kinetics | list | folder)", key="data.format")


def resolve_classes(data_cfg) -> list[str]:
    """The run's class list: ``data.classes`` if set, else ``<data.root>/classes.txt`` if there is one, else derived
    from the training annotations (else val's): sorted class names, or ``"0".."max"`` for integer labels."""
    if data_cfg.classes:
        return read_classes(data_cfg.classes)
    if data_cfg.root and (Path(data_cfg.root) / "classes.txt").is_file():  # e.g. written by `vidtok synth`
        return read_classes(Path(data_cfg.root) / "classes.txt")
    try:
        (items, _), ann = _parse(data_cfg, "train")
    except ConfigError:
        (items, _), ann = _parse(data_cfg, "val")
    if data_cfg.format == "folder":
        return sorted(p.name for p in Path(ann).iterdir() if p.is_dir())
    return _labels_to_indices(items, None, ann)[1]


def build_dataset(
    data_cfg,
    split: str,
    *,
    train: bool | None = None,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    bad_files: str | os.PathLike | None = None,
    transform: Callable | None | str = "default",
) -> VideoClipDataset:
    """The dataset a :class:`~vidtok.config.DataConfig` describes for ``split`` ("train" or "val").

    Args:
        data_cfg: the data section of the run config.
        split: which annotations to read.
        train: training mode (random clips + train transform); default ``split == "train"``.
        class_names: the class list (default: :func:`resolve_classes`, so train and val agree).
        seed: base seed for per-sample augmentation.
        bad_files: file that unreadable videos are appended to (e.g. ``RUN/bad_files.txt``).
        transform: ``"default"`` builds it from the config; None yields raw uint8 frames.

    Missing files are dropped and reported once here (count + first few paths), not per item.
    """
    from vidtok.data.transforms import build_transforms

    train = (split == "train") if train is None else train
    if class_names is None:
        class_names = resolve_classes(data_cfg)
    (items, missing), ann = _parse(data_cfg, split)
    samples, class_names = _labels_to_indices(items, list(class_names), ann)
    if missing:
        shown = ", ".join(missing[:_SHOW])
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        total = len(missing) + len(samples)
        log.warning("%s", safe_text(f"{ann}: {len(missing)} of {total} videos are missing: {shown}{more}"))
    if not samples:
        raise ConfigError(f"{ann}: no videos found ({len(missing)} listed files missing)", key=f"data.{split}")
    if transform == "default":
        transform = build_transforms(data_cfg, train)
    return VideoClipDataset(
        samples=samples,
        class_names=class_names,
        train=train,
        transform=transform,
        num_frames=data_cfg.num_frames,
        frame_stride=data_cfg.frame_stride,
        test_clips=data_cfg.test_clips,
        test_sampler=data_cfg.test_sampler,
        repeated_aug=data_cfg.repeated_aug if train else 1,
        backend=data_cfg.backend,
        stream=data_cfg.stream,
        max_retries=data_cfg.max_retries,
        seed=seed,
        bad_files=bad_files,
        missing=missing,
    )
