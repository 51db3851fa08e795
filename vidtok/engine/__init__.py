"""Training, evaluation, checkpoints and distributed set-up. Inference (classify / embed) lives in ``infer``.

Submodules are imported on use (``from vidtok.engine.train import train``) so importing this package is cheap.
"""

from __future__ import annotations

from vidtok._lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(["train", "NonFiniteLossError"], "vidtok.engine.train"),
    **dict.fromkeys(["evaluate", "format_report", "write_report"], "vidtok.engine.evaluate"),
    **dict.fromkeys(["build_optimizer", "cosine_lr"], "vidtok.engine.optim"),
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
