"""Named models: tiny entry functions registered with :func:`register_model` (timm / torchvision style).

Each entry function takes keyword overrides and returns a built model (the built-in ones are written out in
:mod:`vidtok.models.zoo`); :func:`create_model` checks the overrides against the signature of the class the entry
builds, then records the name and the exact overrides on the model (``model.model_name``, ``model.model_kwargs``), so
``create_model(model.model_name, **model.model_kwargs)`` rebuilds the architecture (that is what checkpoints
store).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vidtok.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model", "model_entrypoint", "check_model_name"]

_MODEL_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_MODEL_MODULES = ("vidtok.models.zoo",)  # modules whose import registers the built-in models

# The names vidtok.models.zoo registers, known without importing it (and torch): a typo in `model.name` or
# `vidtok info --model` is refused before anything heavy loads. tests/test_models_registry.py checks it against the zoo.
BUILTIN_MODELS = (
    *("vivit_ti16x2", "vivit_s16x2", "vivit_b16x2", "vivit_l16x2"),
    *("vivit_b16x2_fe", "vivit_b16x2_fsa", "vivit_b16x2_fdp", "vivit_b16x2_tl8"),
    *("videomae_b16x2", "timesformer_b16"),
    *("tokshift_ti16", "tokshift_s16", "tokshift_b16"),
    *("vidtok_ti", "vidtok_s", "vidtok_b"),
)


def register_model(fn: Callable[..., nn.Module] | None = None, *, model_class: type | None = None) -> Any:
    """Decorator: register ``fn`` under its ``__name__``; registering a name twice is an error.

    ``@register_model(model_class=C)``: ``fn(**overrides)`` builds a ``C``, so :func:`create_model` checks the
    override names against ``C``'s constructor (without it, against ``fn``'s own signature).
    """
    if fn is None:
        return lambda f: register_model(f, model_class=model_class)
    name = fn.__name__
    if name in _MODEL_ENTRYPOINTS:
        raise ValueError(f"model {name!r} is already registered (by {_MODEL_ENTRYPOINTS[name].__module__})")
    fn.model_class = model_class  # type: ignore[attr-defined]
    _MODEL_ENTRYPOINTS[name] = fn
    return fn


def _check_overrides(name: str, fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    """ConfigError naming the first override the entry's model class (or the entry itself) does not take."""
    target = getattr(fn, "model_class", None) or fn
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(k for k in kwargs if k not in params or k == "self")
    if unknown:
        raise ConfigError(
            f"model {name!r} has no argument {unknown[0]!r} (the arguments: {target.__module__}.{target.__qualname__})",
            key=f"model.extra.{unknown[0]}",
        )


def _ensure_builtin() -> None:
    for mod in _MODEL_MODULES:
        importlib.import_module(mod)


def list_models(pattern: str = "") -> list[str]:
    """Sorted registered names containing ``pattern``."""
    _ensure_builtin()
    return sorted(n for n in _MODEL_ENTRYPOINTS if pattern in n)


def is_model(name: str) -> bool:
    _ensure_builtin()
    return name in _MODEL_ENTRYPOINTS


def check_model_name(name: str) -> None:
    """ConfigError naming the known models if ``name`` is neither built in nor registered; imports nothing."""
    if name not in BUILTIN_MODELS and name not in _MODEL_ENTRYPOINTS:
        known = ", ".join(sorted({*BUILTIN_MODELS, *_MODEL_ENTRYPOINTS}))
        raise ConfigError(f"unknown model {name!r} (known: {known})", key="model.name")


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The entry function registered as ``name`` (ConfigError naming the known models if there is none)."""
    _ensure_builtin()
    check_model_name(name)
    return _MODEL_ENTRYPOINTS[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword overrides of its architecture arguments.

    Common overrides: ``num_classes``, ``num_frames``, ``img_size``, ``attn_backend``, ``drop_path_rate``,
    ``dropout``; any constructor argument of :class:`~vidtok.models.vivit.ViViT` (e.g. ``depth=2``,
    ``token_reducer_kwargs={"num_tokens": 16}``) works too.

    Raises:
        ConfigError: unknown name, an override the architecture does not take (checked against the constructor's
            signature), or a value it rejects (its ValueError). Other errors raised while building propagate.
    """
    fn = model_entrypoint(name)
    _check_overrides(name, fn, kwargs)
    try:
        model = fn(**kwargs)
    except ValueError as e:
        raise ConfigError(f"model {name!r}: {e}", key="model") from e
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model
