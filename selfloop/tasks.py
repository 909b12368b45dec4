"""Task pools that rollout prompts are drawn from: the seed tasks, a user JSONL file, or the
arithmetic generator's training split. A task may carry a verifiable answer (used for calibration
metrics and, where an algorithm asks for it, rewards) and a reference response (SPIN's ground truth)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from selfloop.config import TaskSource
from selfloop.errors import ConfigError


@dataclass(frozen=True)
class Task:
    key: str
    prompt: str
    answer: str | None = None
    reference: str | None = None


def read_jsonl_tasks(text: str, source: str, prefix: str) -> list[Task]:
    tasks = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ConfigError(f"{where}: each line needs a non-empty string 'prompt'")
        unknown = set(row) - {"prompt", "answer", "response"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected prompt, answer, response)")
        answer = row.get("answer")
        tasks.append(Task(f"{prefix}:{number}", row["prompt"], None if answer is None else str(answer), row.get("response")))
    if not tasks:
        raise ConfigError(f"{source}: no tasks")
    return tasks


def seed_tasks() -> list[Task]:
    entry = files("selfloop.prompts") / "seed_tasks.jsonl"
    return read_jsonl_tasks(entry.read_text(), "prompts/seed_tasks.jsonl", "seed")


def load_pool(source: TaskSource) -> list[Task]:
    if source.kind == "seed":
        return seed_tasks()
    if source.kind == "jsonl":
        path = Path(source.path).expanduser()  # type: ignore[arg-type]
        if not path.is_file():
            raise ConfigError(f"generation.tasks.path: {path} does not exist")
        return read_jsonl_tasks(path.read_text(), str(path), "jsonl")
    from selfloop.evals.arithmetic import problems

    return [Task(p.key, p.prompt, p.answer) for p in problems(source.levels, "train")]
