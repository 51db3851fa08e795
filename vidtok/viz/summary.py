"""The pictures of a finished run in one call (for ``vidtok demo`` and scripts): curves + overlay of one video.

Example::

    files = write_run_pictures("demo_out/run", "demo_out/data/val/right/x.mp4", "demo_out")
    # {"curves": demo_out/curves.png, "overlay": demo_out/tokenlearner_overlay.png, "overlay_gif": ...}
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from vidtok.errors import VidtokError

__all__ = ["write_run_pictures"]


def write_run_pictures(
    run_dir: str | os.PathLike,
    video: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    gif: bool = True,
    cell: int = 96,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write ``curves.png`` (from ``run_dir/metrics.jsonl``) and the attention overlay of ``video`` into ``out_dir``.

    The overlay is ``tokenlearner_overlay.png`` (+ ``.gif``) for a model with a TokenLearner, else
    ``attention_overlay.png`` (last-block CLS attention). A picture that cannot be drawn (matplotlib missing, a model
    with no map to show) is skipped with a one-line note through ``echo`` instead of failing the caller.

    Args:
        run_dir: a training run folder (``model.safetensors`` / ``checkpoints/``, ``metrics.jsonl``).
        video: the video to overlay (e.g. one held-out clip).
        out_dir: where the pictures go.
        gif: also write the animated overlay.
        cell: panel size in pixels.
        echo: where notes go (default: nowhere).

    Returns:
        ``{"curves": path, "overlay": path, "overlay_gif": path}``, only the ones written.
    """
    from vidtok.models.hub import load_model
    from vidtok.viz.attention import draw, explain
    from vidtok.viz.plots import plot_training_curves

    note = echo or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    try:
        files["curves"] = plot_training_curves(run_dir, out / "curves.png")
    except VidtokError as e:
        note(f"curves skipped: {e}")
    try:
        view = explain(load_model(run_dir), video)  # TokenLearner maps if the model has them, else CLS attention
    except VidtokError as e:
        note(f"overlay skipped: {e}")
        return files
    name = "tokenlearner" if view.mode == "tokens" else "attention"
    files["overlay"] = draw(view, out / f"{name}_overlay.png", cell=cell)
    if gif:
        files["overlay_gif"] = draw(view, out / f"{name}_overlay.gif", cell=cell)
    return files
