"""Pictures of what a model looks at, and of how training went.

- :func:`visualize` / ``vidtok viz``: TokenLearner maps (or last-block CLS attention) overlaid on a video, as a
  PNG grid or an animated GIF / MP4 (Pillow + PyAV, no matplotlib needed).
- :func:`plot_training_curves` / ``vidtok plot``: loss, lr and top-1 from a run's ``metrics.jsonl``.
- :func:`plot_confusion_matrix`: used by ``vidtok eval``.

The plots need the optional ``viz`` extra (``pip install 'vidtok[viz]'``: matplotlib), imported only when called.
Names are resolved lazily so ``import vidtok.viz`` imports neither torch nor matplotlib.
"""

from __future__ import annotations

from vidtok._lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(["visualize", "explain", "AttentionView", "draw"], "vidtok.viz.attention"),
    **dict.fromkeys(["write_run_pictures"], "vidtok.viz.summary"),
    **dict.fromkeys(["render_grid", "render_animation", "save_output"], "vidtok.viz.render"),
    **dict.fromkeys(["read_metrics", "plot_training_curves", "plot_confusion_matrix"], "vidtok.viz.plots"),
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
