"""LLM-as-a-Judge prompts: the additive 5-point rubric template filled with a prompt and a response."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from selfloop.engines.base import Chat
from selfloop.errors import ConfigError
from selfloop.user_files import read_user_file


@cache
def load_template(name: str) -> str:
    """A template under prompts/ by file name, or a path to a file of one's own."""
    bundled = files("selfloop.prompts") / name
    path = Path(name).expanduser()
    if bundled.is_file():
        text = bundled.read_text()
    elif path.exists():
        text = read_user_file(path, "judge.llm_judge.template", max_bytes=1024 * 1024)
    else:
        raise ConfigError(f"judge.llm_judge.template: {name!r} is neither a file under prompts/ nor a path")
    for field in ("{prompt}", "{response}"):
        if field not in text:
            raise ConfigError(f"judge.llm_judge.template: {name!r} lacks the {field} placeholder")
    return text


def judge_chat(template: str, prompt: str, response: str) -> Chat:
    # str.replace, not str.format: responses are model text full of braces.
    return [{"role": "user", "content": template.replace("{prompt}", prompt).replace("{response}", response)}]
