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
    "open_video": "vidtok.io",
    "Video": "vidtok.io",
    "VideoMetadata": "vidtok.io",
    "create_model": "vidtok.models",
    "list_models": "vidtok.models",
    "load_model": "vidtok.models",
    "spacetime_attention": "vidtok.kernels",
    "classify": "vidtok.engine.infer",
    "embed": "vidtok.engine.infer",
    "Config": "vidtok.config",
    "load_config": "vidtok.config",
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
