"""Name -> class registries filled by class decorators (reward shapes, observation views, ...).

One implementation of the checks every registry wants: a usable name, a subclass of the right
base, and no silent replacement of another class under a taken name (re-registering the same
class is allowed, so module reloads do not fail).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


def registering(registry: dict[str, T], base: type, kind: str, name: str,
                forbidden: str = "") -> Callable[[T], T]:
    """The class decorator that adds a ``base`` subclass to ``registry`` as ``name``.

    It also sets the class's ``name`` attribute, so an instance knows its registry key.

    Args:
        registry: The registry to fill.
        base: The class every registered class must derive from.
        kind: What is registered, for messages (``"reward"`` -> ``register_reward(...)``).
        name: The registry key.
        forbidden: Characters a name must not contain (e.g. ``+``, which combines views).

    Raises:
        ValueError: ``name`` is empty, contains a forbidden character, or names another class.
        TypeError: the decorated object is not a ``base`` subclass.
    """
    check_name(kind, name, forbidden)

    def decorator(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"register_{kind}({name!r}) needs a {base.__name__} subclass, "
                            f"got {cls!r}")
        existing = registry.get(name)
        if existing is not None and qualified_name(existing) != qualified_name(cls):
            raise ValueError(f"{kind} {name!r} is already registered as "
                             f"{qualified_name(existing)}; register yours under another name")
        cls.name = name
        registry[name] = cls
        return cls

    return decorator


def check_name(kind: str, name: Any, forbidden: str = "") -> None:
    """Refuse a registry name that is not a non-empty string free of ``forbidden`` characters.

    Raises:
        ValueError: naming the kind and the name given.
    """
    if not isinstance(name, str) or not name or any(c in name for c in forbidden):
        without = f" without {forbidden!r}" if forbidden else ""
        raise ValueError(f"{kind} name must be a non-empty string{without}, got {name!r}")


def qualified_name(obj: Any) -> str:
    """``module.QualName`` of a class or function: it is the same one only when both match (a
    plug-in's class may share a built-in's name, and must not replace it; a plug-in module
    imported again defines the same names)."""
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
