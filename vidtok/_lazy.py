"""PEP 562 lazy re-exports, shared by the packages whose ``import`` must stay cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``names`` (name -> defining module) is imported
    on first access and cached in ``namespace`` (the package's ``globals()``), so later lookups skip ``__getattr__``.

    Usage, in a package's ``__init__.py``: ``__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)``.
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
