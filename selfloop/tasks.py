"""Task pools that rollout prompts are drawn from: the seed tasks, a user JSONL file, or a
generator's training split (arithmetic; instruction following with checkable constraints). A task may carry a verifiable answer (used for calibration
metrics and, where an algorithm asks for it, rewards) and a reference response (SPIN's ground truth)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from selfloop.config import TaskSource
from selfloop.errors import ConfigError
from selfloop.strict import StrictError, load_json


@dataclass(frozen=True)
class Task:
    key: str
    prompt: str
    answer: str | None = None
    reference: str | None = None


# Bounds on user files: a task or eval file is read whole into memory and every prompt is tokenised.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_LINES = 1_000_000
MAX_FIELD_CHARS = 32_768  # a prompt, answer or reference response


def read_user_file(path: Path, field: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A user's text file, whole; ConfigError naming the config field and the file when it cannot be used."""
    path = Path(path).expanduser()
    try:
        if not path.is_file():
            raise ConfigError(f"{field}: {path} does not exist" if not path.exists() else f"{field}: {path} is not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(f"{field}: {path} is {size} bytes, above the limit of {max_bytes}")
        data = path.read_bytes()
    except PermissionError:
        raise ConfigError(f"{field}: {path} is not readable (permission denied)") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{field}: {path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def read_jsonl_tasks(text: str, source: str, prefix: str) -> list[Task]:
    tasks = []
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise ConfigError(f"{source}: {len(lines)} lines, above the limit of {MAX_LINES}")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = load_json(line)
        except StrictError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ConfigError(f"{where}: each line needs a non-empty string 'prompt'")
        unknown = set(row) - {"prompt", "answer", "response"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected prompt, answer, response)")
        answer, response = row.get("answer"), row.get("response")
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, str | int | float)):
            raise ConfigError(f"{where}: 'answer' must be a string or a number, got {type(answer).__name__}")
        if response is not None and not isinstance(response, str):
            raise ConfigError(f"{where}: 'response' must be a string, got {type(response).__name__}")
        for key in ("prompt", "answer", "response"):
            if row.get(key) is not None and len(str(row[key])) > MAX_FIELD_CHARS:
                raise ConfigError(f"{where}: '{key}' is {len(str(row[key]))} characters, above the limit of {MAX_FIELD_CHARS}")
        tasks.append(Task(f"{prefix}:{number}", row["prompt"], None if answer is None else str(answer), response))
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
        return read_jsonl_tasks(read_user_file(path, "generation.tasks.path"), str(path), "jsonl")
    if source.kind == "instructions":
        from selfloop.evals.instructions import problems
    else:
        from selfloop.evals.arithmetic import problems
    return [Task(p.key, p.prompt, p.answer) for p in problems(source.levels, "train", source.phrasing)]
