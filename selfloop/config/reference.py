"""docs/configuration.md's reference table, generated from the section models (`make reference`; a test keeps the
two in step)."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from selfloop.config.sections import Config, section_type


def config_reference() -> str:
    """docs/configuration.md's reference, generated from the models (a test keeps them in step)."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            sub = section_type(ann)
            path = f"{prefix}{name}"
            if sub is not None:
                # A section's description, or its docstring's first paragraph as one line.
                doc = field.description or " ".join((sub.__doc__ or "").strip().split("\n\n")[0].split())
                lines.append(f"| **`{path}`** | section | | {doc} |")
                walk(sub, path + ".")
                continue
            default = "required" if field.is_required() else _show_default(field.get_default(call_default_factory=True))
            type_name = _type_name(Annotated[(ann, *field.metadata)] if field.metadata else ann)
            lines.append(f"| `{path}` | {type_name} | {default} | {field.description or ''} |")
            item = section_type(get_args(ann)[0]) if get_origin(ann) is list else None
            if item is not None:
                walk(item, path + "[].")

    walk(Config, "")
    head = "| key | type | default | meaning |\n|---|---|---|---|\n"
    return head + "\n".join(lines) + "\n"


def _type_name(ann: Any) -> str:
    origin, args = get_origin(ann), get_args(ann)
    if origin is Annotated:
        lo = next((m.ge for m in args[1:] if getattr(m, "ge", None) is not None), None)
        hi = next((m.le for m in args[1:] if getattr(m, "le", None) is not None), None)
        bounds = f" {lo}..{hi}" if lo is not None and hi is not None and args[0] is int else ""
        return _type_name(args[0]) + bounds
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of ({_type_name(args[0])})" if get_origin(args[0]) is Literal else f"list of {_type_name(args[0])}"
    if section_type(ann) is not None:
        return "section"
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path"}.get(
        getattr(ann, "__name__", ""), getattr(ann, "__name__", str(ann))
    )


def _show_default(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.model_dump(mode="json", exclude_defaults=True) for v in value]
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"`{text}`".replace("|", "\\|")
