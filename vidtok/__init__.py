"""vidtok: video understanding with tubelet tokens.

The public interface is re-exported here lazily (PEP 562), so ``import vidtok`` and ``vidtok --help`` stay
instant and import torch only when a name that needs it is first used.
"""

from __future__ import annotations

from vidtok._lazy import lazy_exports
from vidtok.errors import CheckpointError, ConfigError, VideoDecodeError, VidtokError

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access.
_LAZY = {
    **dict.fromkeys(["open_video", "Video", "VideoMetadata"], "vidtok.io"),
    **dict.fromkeys(["create_model", "list_models", "load_model"], "vidtok.models"),
    **dict.fromkeys(["spacetime_attention"], "vidtok.kernels"),
    **dict.fromkeys(["classify", "embed"], "vidtok.engine.infer"),
    **dict.fromkeys(["Config", "load_config"], "vidtok.config"),
}

__all__ = [
    "__version__",
    "VidtokError",
    "VideoDecodeError",
    "ConfigError",
    "CheckpointError",
    *_LAZY,
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
