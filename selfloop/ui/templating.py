"""The dashboard's Jinja2 templates, with the filters they use; also what the static report renders with."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment

HERE = Path(__file__).resolve().parent


def templates() -> Environment:
    from jinja2 import FileSystemLoader, select_autoescape

    from selfloop.render import cell_text

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["cell"] = lambda v: cell_text(v, None)
    env.filters["short"] = lambda v, n=160: cell_text(v, n)
    env.filters["num"] = lambda v, fmt="{:.3f}": "" if v is None else fmt.format(v)
    return env
