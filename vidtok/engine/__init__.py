"""Training, evaluation, checkpoints and distributed set-up. Inference (classify / embed) lives in ``infer``.

Submodules are imported on use (``from vidtok.engine.train import train``) so importing this package is cheap.
"""

from __future__ import annotations

from vidtok._lazy import lazy_exports

_LAZY = {
    "train": "vidtok.engine.train",
    "NonFiniteLossError": "vidtok.engine.train",
    "evaluate": "vidtok.engine.evaluate",
    "format_report": "vidtok.engine.evaluate",
    "write_report": "vidtok.engine.evaluate",
    "build_optimizer": "vidtok.engine.optim",
    "cosine_lr": "vidtok.engine.optim",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
