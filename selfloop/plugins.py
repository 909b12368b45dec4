"""Plug-ins from installed packages: the entry points of a group, each naming a spec object (an algorithm's or a
task family's), checked and added after the built-in ones."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TypeVar

T = TypeVar("T")


def with_entry_points(group: str, kind: type[T], builtin: dict[str, T]) -> dict[str, T]:
    """`builtin` and, by entry point name, every spec the group's entry points name; a broken or clashing
    plug-in is an ImportError that names its entry point in one line."""
    found = dict(builtin)
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        where = f"entry point {group}:{point.name} ({point.value})"
        try:
            spec = point.load()
        except Exception as exc:  # noqa: BLE001 - whatever the plug-in raises, said in one line
            raise ImportError(f"{where} failed to load: {type(exc).__name__}: {exc}") from None
        if not isinstance(spec, kind):
            raise ImportError(f"{where} is not a {kind.__name__}")
        if spec.name in found:  # type: ignore[attr-defined]
            raise ImportError(f"{where}: {spec.name!r} is already defined")  # type: ignore[attr-defined]
        found[spec.name] = spec  # type: ignore[attr-defined]
    return found
