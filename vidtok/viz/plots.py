"""Training curves and confusion matrices (matplotlib, the optional ``viz`` extra; imported only when used).

``metrics.jsonl`` (written by ``vidtok train`` into the run folder) holds one JSON object per line with at least
``"step"`` and some of ``loss``, ``lr``, ``train_top1``, ``val_top1``, ``val_loss``, ``epoch``. Keys this module
doesn't know are ignored, so the trainer can log more without breaking the plot.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidtok.errors import VidtokError

__all__ = ["read_metrics", "plot_training_curves", "plot_confusion_matrix"]

_INSTALL_HINT = "matplotlib is needed for plots: pip install 'vidtok[viz]' (or pip install matplotlib)"

# Panels of the curves figure: (title, y label, [(metric keys (first present wins), row kinds, legend label)]).
# The trainer tags rows with "kind": "step" (every log_every steps), "epoch" (epoch means + validation) or "error";
# rows without a kind count as step rows.
_STEP, _EPOCH, _ANY = ("step", None), ("epoch",), ("step", "epoch", None)
_PANELS: list[tuple[str, str, list[tuple[tuple[str, ...], tuple, str]]]] = [
    (
        "loss",
        "loss",
        [
            (("loss", "train_loss"), _STEP, "train"),
            (("loss", "train_loss"), _EPOCH, "train (epoch mean)"),
            (("val_loss",), _ANY, "val"),
        ],
    ),
    ("learning rate", "lr", [(("lr",), _STEP, "lr")]),
    (
        "top-1 accuracy",
        "top-1 (%)",
        [
            (("train_top1", "train_acc1"), _ANY, "train"),
            (("val_top1", "val_acc1"), _ANY, "val"),
            (("val_top5", "val_acc5"), _ANY, "val top-5"),
        ],
    ),
]


def _figure(figsize: tuple[float, float]):
    """A matplotlib Figure that draws to files only. No pyplot: no global backend or figure state is touched."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise VidtokError(_INSTALL_HINT) from e
    return Figure(figsize=figsize)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` (or a run folder containing it) into a list of dicts.

    Blank lines are skipped; a truncated last line (a run killed mid-write) is ignored; any other line that is not
    a JSON object is a one-line error naming the file and line.

    Raises:
        VidtokError: the file is missing, or a line is not a JSON object.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise VidtokError(f"{p}: no such metrics file (a run folder written by `vidtok train` has metrics.jsonl)")
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):  # the run is being written (or was killed) mid-line
                break
            raise VidtokError(f"{p}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise VidtokError(f"{p}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _series(
    rows: Sequence[dict[str, Any]], aliases: Sequence[str], kinds: Sequence[str | None]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of the first alias with finite numbers in rows of the given kinds; no step: row position."""
    for key in aliases:
        xs, ys = [], []
        for i, row in enumerate(rows):
            if row.get("kind") not in kinds:
                continue
            v = row.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            step = row.get("step", i)
            xs.append(float(step) if isinstance(step, (int, float)) else float(i))
            ys.append(float(v))
        if xs:
            return np.asarray(xs), np.asarray(ys)
    return None


def _percent(y: np.ndarray) -> np.ndarray:
    """Accuracies may be logged as fractions or percentages: show percentages."""
    return y * 100.0 if y.size and np.nanmax(np.abs(y)) <= 1.0 else y


def plot_training_curves(
    metrics: str | os.PathLike | Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Plot loss, learning rate and train / val top-1 against the optimizer step.

    Args:
        metrics: a run folder, a ``metrics.jsonl`` file, or already-read rows.
        path: output image (``.png``, ``.jpg``, ``.svg`` or ``.pdf``).
        title: figure title (default: the run folder name).
        dpi: resolution of raster outputs.

    Returns:
        The written path.

    Raises:
        VidtokError: no rows, none of the known metrics, or matplotlib is missing.
    """
    if isinstance(metrics, (str, os.PathLike)):
        src = Path(metrics)
        rows = read_metrics(src)
        if title is None:
            title = (src if src.is_dir() else src.parent).resolve().name
    else:
        src, rows = None, list(metrics)
    where = f"{src}: " if src is not None else ""
    if not rows:
        raise VidtokError(f"{where}no metrics rows to plot")
    panels = []
    for name, ylabel, specs in _PANELS:
        lines = [(label, s) for aliases, kinds, label in specs if (s := _series(rows, aliases, kinds)) is not None]
        # top-5 of a task with <= 5 classes is always 100 %: a flat line that says nothing
        lines = [(label, s) for label, s in lines if not (label == "val top-5" and np.all(_percent(s[1]) >= 99.999))]
        if lines:
            panels.append((name, ylabel, lines))
    if not panels:
        keys = sorted({k for r in rows for k in r})
        raise VidtokError(f"{where}none of loss, lr, train_top1, val_top1 found (keys: {', '.join(keys)})")
    out = Path(path)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".svg", ".pdf"):
        raise VidtokError(f"{out}: unsupported output extension '{out.suffix}' (use .png, .jpg, .svg or .pdf)")

    fig = _figure((4.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, ylabel, lines) in zip(axes[0], panels, strict=True):
        for label, (x, y) in lines:
            if name.startswith("top-1"):
                y = _percent(y)
            sparse = len(x) <= 20  # evaluation rows are few: show the points
            style = "--" if label in ("train (epoch mean)", "val top-5") else "-"
            ax.plot(x, y, style, marker="o" if sparse else None, markersize=3, linewidth=1.4, label=label)
        if name == "loss" and all((s[1] > 0).all() for _, s in lines):
            ys = np.concatenate([s[1] for _, s in lines])
            if ys.max() / max(ys.min(), 1e-12) > 30:  # a loss falling over decades reads better on a log axis
                ax.set_yscale("log")
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(lines) > 1 or lines[0][0] == "val":  # a lone validation curve still says what it is
            ax.legend(frameon=False)
    if title:
        fig.suptitle(title)
    # Fixed margins (in inches) rather than tight_layout: panels stay put whatever the tick labels are.
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.2 / w, bottom=0.55 / h, top=1 - 0.75 / h, wspace=0.32)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def plot_confusion_matrix(
    matrix: Any,
    class_names: Sequence[str] | None,
    path: str | os.PathLike,
    *,
    normalize: bool = True,
    title: str | None = None,
    max_labels: int = 40,
    dpi: int = 110,
) -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted class).

    Args:
        matrix: ``(C, C)`` counts (numpy array, tensor or nested lists).
        class_names: ``C`` names for the axes (``None``: indices).
        path: output image (``.png``, ``.jpg``, ``.svg`` or ``.pdf``).
        normalize: colour by the fraction of each true class (row) instead of raw counts.
        title: figure title (default: overall accuracy).
        max_labels: above this many classes the ticks are left unlabelled and cells unannotated (K400 has 400).
        dpi: resolution of raster outputs.

    Returns:
        The written path.
    """
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {m.shape}")
    n = m.shape[0]
    if class_names is not None and len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for a {n}x{n} confusion matrix")
    out = Path(path)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".svg", ".pdf"):
        raise VidtokError(f"{out}: unsupported output extension '{out.suffix}' (use .png, .jpg, .svg or .pdf)")
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    total = m.sum()
    acc = float(np.trace(m) / total) if total > 0 else float("nan")
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12) if normalize else m

    side = min(max(3.5, 0.42 * n + 2.0), 18.0)
    fig = _figure((side + 1.0, side))
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    if n <= max_labels:
        ax.set_xticks(range(n), [s[:24] for s in names], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), [s[:24] for s in names], fontsize=8)
        if n <= 20:
            thresh = np.nanmax(shown) / 2 if np.isfinite(shown).any() else 0.5
            for i in range(n):
                for j in range(n):
                    if m[i, j] == 0:
                        continue
                    txt = f"{shown[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                    ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > thresh else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title if title is not None else f"confusion matrix (top-1 {100 * acc:.1f}%, n={int(total)})")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
