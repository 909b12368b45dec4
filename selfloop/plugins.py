"""Plug-ins from installed packages: the entry points of a group, each naming a spec object (an algorithm's or a
task family's), checked and added after the built-in ones."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol, TypeVar


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)  # a spec: it has the name it registers under


# Entry points that failed to load, by group and entry point name: the reason, said where a config names one.
BROKEN: dict[str, dict[str, str]] = {}


def with_entry_points(group: str, kind: type[T], builtin: dict[str, T]) -> dict[str, T]:
    """`builtin` and, by entry point name, every spec the group's entry points name. A plug-in that fails to load
    (or names no spec, or clashes with a name) is left out and recorded in BROKEN with its reason in one line,
    not raised: a broken package must not stop commands that do not use it (`selfloop status` of another store).
    A config that names it is refused with that reason (`broken_plugin`)."""
    found = dict(builtin)
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        where = f"entry point {group}:{point.name} ({point.value})"
        try:
            spec = point.load()
        except Exception as exc:  # noqa: BLE001 - whatever the plug-in raises, said in one line
            BROKEN.setdefault(group, {})[point.name] = f"{where} failed to load: {type(exc).__name__}: {exc}"
            continue
        if not isinstance(spec, kind):
            BROKEN.setdefault(group, {})[point.name] = f"{where} is not a {kind.__name__}"
        elif spec.name in found:
            BROKEN.setdefault(group, {})[point.name] = f"{where}: {spec.name!r} is already defined"
        else:
            found[spec.name] = spec
    return found


def broken_plugin(name: object) -> str | None:
    """Why the plug-in `name` (an entry point's name in any group) is not available, or None."""
    for failures in BROKEN.values():
        if isinstance(name, str) and name in failures:
            return failures[name]
    return None
