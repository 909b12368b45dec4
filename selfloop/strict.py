"""Reading a user's YAML and JSON text strictly, so that a hostile file fails in one line before anything
is written (configs, `--set` values, task and eval lines).

What the standard parsers accept and a config must not:
- YAML aliases (`*name`): a handful of them expands to billions of nodes (the "billion laughs"), and a
  config has no use for them;
- a key given twice in one mapping (YAML and JSON both keep the last one silently: a second `loop:`
  would replace the first section);
- nesting deeper than `MAX_DEPTH` (the YAML composer recurses: thousands of `[` end in RecursionError);
- a string that is not valid Unicode (a lone surrogate such as "\\ud800" parses, then fails when the
  database encodes it), or that holds a NUL character (PostgreSQL refuses it in text);
- an integer of more digits than Python converts from text (its ValueError would surface as "unexpected error");
- NaN and Infinity in JSON (not JSON at all, though Python's parser takes them).
Each raises `StrictError` with a message that names where (a line, or a key path).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_DEPTH = 64  # mappings and lists inside one another


class StrictError(ValueError):
    """The text is refused; the message says why. `where`: ':line:column' in YAML text, else ''."""

    def __init__(self, problem: str, where: str = "") -> None:
        super().__init__(problem)
        self.where = where


MAX_DIGITS = 4300  # Python's own limit on converting an integer from text (sys.get_int_max_str_digits)


def unicode_problem(text: str) -> str | None:
    """Why `text` is not text a store can hold (a lone surrogate; a NUL character, which PostgreSQL refuses in
    text columns), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid Unicode text (a lone surrogate {text[exc.start]!r} at character {exc.start + 1})"
    if "\x00" in text:
        return f"not storable text (a NUL character at character {text.index(chr(0)) + 1})"
    return None


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("+-"))
    if digits > MAX_DIGITS:
        raise StrictError(f"an integer of {digits} digits (at most {MAX_DIGITS})")
    return int(text)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases, duplicate keys, deep nesting or invalid strings."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise ComposerError(None, None, "YAML aliases (*name) are not allowed here: write the value out",
                                self.peek_event().start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: PyYAML's own error follows
                break
            if duplicate:
                raise ConstructorError(None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = len(str(node.value).replace("_", "").lstrip("+-"))
        if digits > MAX_DIGITS:
            raise ConstructorError(None, None, f"an integer of {digits} digits (at most {MAX_DIGITS})", node.start_mark)
        return super().construct_yaml_int(node)

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value = super().construct_yaml_str(node)
        problem = unicode_problem(value)
        if problem:
            raise ConstructorError(None, None, f"a string is {problem}", node.start_mark)
        return value


_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_yaml_str)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def load_yaml(text: str) -> Any:
    """Parse YAML text strictly; a StrictError's `where` is ':line:column' (from the text's start)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, (yaml.scanner.ScannerError, yaml.parser.ParserError)):
            problem = f"YAML syntax error: {problem}"
        raise StrictError(problem, where) from None
    except RecursionError:  # not reached below MAX_DEPTH; kept for the parser's own recursion
        raise StrictError(f"nested more than {MAX_DEPTH} levels deep") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise StrictError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise StrictError(f"{text} is too large for a number")
    return value


def load_json(text: str) -> Any:
    """Parse one JSON document strictly (no duplicate keys, NaN, Infinity, deep nesting or lone surrogates)."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite,
                           parse_int=_bounded_int)
    except RecursionError:
        raise StrictError(f"nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise StrictError(f"not valid JSON ({exc.msg})") from None
    problem = _walk(value, "", 0)
    if problem:
        raise StrictError(problem)
    return value


def _walk(value: Any, path: str, depth: int) -> str | None:
    """The first problem in a parsed value: too deep, or a string (key or value) that is not valid Unicode."""
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, str):
        problem = unicode_problem(value)
        return f"{path or 'a value'}: {problem}" if problem else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if path and isinstance(key, str) else f"{path}[{key}]" if path else f"{key!r}"
        if isinstance(key, str) and unicode_problem(key):
            return f"the key {where}: {unicode_problem(key)}"
        problem = _walk(item, where, depth + 1)
        if problem:
            return problem
    return None
