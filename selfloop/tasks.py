"""Task pools that rollout prompts are drawn from: the seed tasks, a user file, or a task family's training
split. A task may carry a verifiable answer, checked by its family's grader (for calibration metrics and, where an
algorithm asks for it, rewards), and a reference response (SPIN's ground truth)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from selfloop.config import FieldMap, TaskSource
from selfloop.errors import ConfigError
from selfloop.families import generated
from selfloop.strict import StrictError, load_json, unicode_problem
from selfloop.user_files import MAX_FILE_BYTES, read_user_file


@dataclass(frozen=True)
class Task:
    key: str
    prompt: str  # the (last) user turn
    answer: str | None = None
    reference: str | None = None
    family: str = "value"  # the task family whose grader checks `answer`
    # A row given as a conversation: every turn up to and including the last user turn (a system turn and earlier
    # turns kept as given); None for a plain prompt.
    chat: tuple[dict[str, str], ...] | None = None


# Bounds on user files: a task or eval file is read whole into memory and every prompt is tokenised.
MAX_LINES = 1_000_000
MAX_FIELD_CHARS = 32_768  # a prompt, answer or reference response


def read_jsonl_tasks(text: str, source: str, prefix: str, fields: FieldMap | None = None,
                     answer_after: str | None = None) -> list[Task]:
    """Tasks from JSON Lines text (one object a line; blank lines skipped)."""
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise ConfigError(f"{source}: {len(lines)} lines, above the limit of {MAX_LINES}")

    def rows() -> Iterator[tuple[int, Any]]:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield number, load_json(line)
                except StrictError as exc:
                    raise ConfigError(f"{source}:{number}: {exc}") from None

    return tasks_from_rows(rows(), source, prefix, fields, answer_after)


# Keys a row may have with the default field map: ours, and TRL's dataset forms (conversational or standard).
DEFAULT_KEYS = ("prompt", "answer", "response", "messages", "completion", "chosen", "rejected")
ROLES = ("system", "user", "assistant")


def tasks_from_rows(rows: Iterable[tuple[int, Any]], source: str, prefix: str, fields: FieldMap | None = None,
                    answer_after: str | None = None) -> list[Task]:
    """Tasks from (row number, row) pairs. A row holds its prompt as text under `fields.prompt`, or as a
    conversation as TRL's datasets have them: `messages` (a chat whose last user turn is the prompt and whose
    assistant turn after it, if any, the reference response), or `fields.prompt` as a list of turns with an
    optional `completion` (prompt-completion) or `chosen` (preference; `rejected` is not used). A conversation's
    system turn and earlier turns are kept with the prompt (`Task.chat`) and are what the policy is asked.
    With the default keys a row's other keys are errors (a typo is not ignored); with a user's mapping they are the
    dataset's own columns and ignored, but a mapped key that no row has is refused."""
    fields = fields or FieldMap()
    strict = fields == FieldMap()
    tasks = []
    seen: set[str] = set()
    for number, row in rows:
        where = f"{source}:{number}"
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: each row must be an object with a {fields.prompt!r}")
        seen |= set(row)
        prompt, chat, response = _prompt_of(row, fields, where, strict)
        if strict:
            unknown = set(row) - set(DEFAULT_KEYS)
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected prompt, answer, "
                                  "response, or TRL's messages, completion, chosen, rejected; `fields` maps other "
                                  "names, and then other keys are ignored)")
        response = row.get(fields.response) if row.get(fields.response) is not None else response
        answer = row.get(fields.answer)
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, str | int | float)):
            raise ConfigError(f"{where}: {fields.answer!r} must be a string or a number, got {type(answer).__name__}")
        if isinstance(answer, float) and not math.isfinite(answer):
            raise ConfigError(f"{where}: {fields.answer!r} is {answer}, not an answer (a missing value in a Parquet "
                              "or datasets column reads as NaN: drop the row or give its answer)")
        if answer is not None and answer_after is not None:
            text = str(answer)
            if answer_after not in text:
                raise ConfigError(f"{where}: {fields.answer!r} has no {answer_after!r} marker (answer_after)")
            answer = text.rsplit(answer_after, 1)[1].strip()
        if response is not None and not isinstance(response, str):
            raise ConfigError(f"{where}: {fields.response!r} must be a string, got {type(response).__name__}")
        texts = [("prompt", prompt), ("answer", answer), ("response", response),
                 *((f"messages[{i}]", turn["content"]) for i, turn in enumerate(chat or ()))]
        for key, value in texts:
            if value is not None and len(str(value)) > MAX_FIELD_CHARS:
                raise ConfigError(f"{where}: '{key}' is {len(str(value))} characters, above the limit of {MAX_FIELD_CHARS}")
            problem = unicode_problem(value) if isinstance(value, str) else None
            if problem:  # rows of Parquet and datasets files do not pass through the strict JSON reader
                raise ConfigError(f"{where}: '{key}' is {problem}")
        tasks.append(Task(f"{prefix}:{number}", prompt, None if answer is None else str(answer), response, chat=chat))
    if not tasks:
        raise ConfigError(f"{source}: no tasks")
    if not strict:
        for name in ("answer", "response"):
            key = getattr(fields, name)
            if key != getattr(FieldMap(), name) and key not in seen:
                raise ConfigError(f"{source}: fields.{name} names {key!r}, which no row has (keys: "
                                  f"{', '.join(sorted(seen))})")
    return tasks


def _prompt_of(row: dict[str, Any], fields: FieldMap, where: str,
               strict: bool) -> tuple[str, tuple[dict[str, str], ...] | None, str | None]:
    """(the prompt's text, its conversation or None, a reference response the conversation holds or None)."""
    given = row.get(fields.prompt)
    if given is None and isinstance(row.get("messages"), list):
        return _from_messages(row["messages"], where, "messages")
    if isinstance(given, list):  # TRL's conversational prompt (prompt-only, prompt-completion, preference)
        text, chat, _ = _from_messages(given, where, fields.prompt, needs_last_user=True)
        after = row.get("completion", row.get("chosen"))
        response = _assistant_text(after, where) if after is not None else None
        return text, chat, response
    if not isinstance(given, str) or not given.strip():
        if given is None and not strict:
            raise ConfigError(f"{where}: no key {fields.prompt!r} (fields.prompt) and no 'messages' list: the mapping "
                              f"names a key this row does not have (its keys: {', '.join(sorted(row))})")
        raise ConfigError(f"{where}: each line needs a non-empty string {fields.prompt!r} or a 'messages' list"
                          + ("" if strict else " (generation.tasks.fields / eval.suites[].fields name the keys)"))
    after = row.get("completion", row.get("chosen"))  # TRL's standard prompt-completion and preference forms
    return given, None, _assistant_text(after, where) if after is not None else None


def _turns(messages: Any, where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: {key!r} must be a non-empty list of turns")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ConfigError(f"{where}: {key}[{i}] must be a turn {{\"role\": system|user|assistant, \"content\": "
                              f"text}}, got {str(m)[:80]!r}")
        turns.append({"role": m["role"], "content": m["content"]})
    return turns


def _from_messages(messages: Any, where: str, key: str,
                   needs_last_user: bool = False) -> tuple[str, tuple[dict[str, str], ...], str | None]:
    """A conversation split at its last user turn: (that turn's text, the turns up to it, the assistant turn right
    after it or None). A prompt list must end with its user turn."""
    turns = _turns(messages, where, key)
    users = [i for i, m in enumerate(turns) if m["role"] == "user"]
    if not users:
        raise ConfigError(f"{where}: {key!r} has no user turn")
    last = users[-1]
    if needs_last_user and last != len(turns) - 1:
        raise ConfigError(f"{where}: {key!r} must end with the user turn the policy answers")
    after = [m["content"] for m in turns[last + 1:] if m["role"] == "assistant"]
    if not turns[last]["content"].strip():
        raise ConfigError(f"{where}: the last user turn of {key!r} is empty")
    return turns[last]["content"], tuple(turns[: last + 1]), after[0] if after else None


def _assistant_text(value: Any, where: str) -> str:
    """A completion as TRL gives it: text, or a list of turns whose first assistant turn is the answer."""
    if isinstance(value, str):
        return value
    turns = _turns(value, where, "completion")
    said = [m["content"] for m in turns if m["role"] == "assistant"]
    if not said:
        raise ConfigError(f"{where}: 'completion' has no assistant turn")
    return said[0]


def read_user_tasks(path: Path, field: str, prefix: str, fields: FieldMap | None = None,
                    answer_after: str | None = None) -> list[Task]:
    """A user's task or eval file: JSON Lines, a Parquet file (.parquet) or a local `datasets` directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        rows = _dataset_rows(path, field)
    elif path.suffix == ".parquet":
        rows = _parquet_rows(path, field)
    else:
        return read_jsonl_tasks(read_user_file(path, field), str(path), prefix, fields, answer_after)
    return tasks_from_rows(rows, str(path), prefix, fields, answer_after)


def _parquet_rows(path: Path, field: str) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{field}: {path} is Parquet, which needs pyarrow: pip install 'selfloop[export]'") from None
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{field}: {path} is {path.stat().st_size} bytes, above the limit of {MAX_FILE_BYTES}")
    # A small file can hold a large table (compression, repeated values): its rows and uncompressed bytes are
    # bounded from its metadata before anything is read, and again as it is read (metadata can lie).
    try:
        parquet = pq.ParquetFile(path)
        meta = parquet.metadata
        expands_to = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if meta.num_rows > MAX_LINES:
            raise ConfigError(f"{field}: {path}: {meta.num_rows} rows, above the limit of {MAX_LINES}")
        if expands_to > MAX_FILE_BYTES:
            raise ConfigError(f"{field}: {path} expands to {expands_to} bytes when read, above the limit of "
                              f"{MAX_FILE_BYTES}")
        rows: list[dict[str, Any]] = []
        read = 0
        # Small batches: a dictionary-encoded column repeats one value in every row, which the metadata's sizes
        # do not show, so what the rows expand to is counted as they are read.
        for batch in parquet.iter_batches(batch_size=64):
            read += batch.nbytes
            if read > MAX_FILE_BYTES or len(rows) + batch.num_rows > MAX_LINES:
                raise ConfigError(f"{field}: {path} expands to more than {MAX_FILE_BYTES} bytes or {MAX_LINES} "
                                  f"rows when read (at row {len(rows) + batch.num_rows})")
            rows += batch.to_pylist()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow's own errors, in one line
        raise ConfigError(f"{field}: {path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return enumerate(rows, start=1)


def _dataset_rows(path: Path, field: str) -> Iterator[tuple[int, Any]]:
    """A directory written by `datasets.Dataset.save_to_disk` (its Arrow files, read by `datasets` itself)."""
    if not any((path / name).is_file() for name in ("state.json", "dataset_info.json", "dataset_dict.json")):
        raise ConfigError(f"{field}: {path} is a directory but not a saved `datasets` dataset (no state.json)")
    try:
        from datasets import Dataset, load_from_disk
    except ImportError:
        raise ConfigError(f"{field}: {path} is a `datasets` directory, which needs the datasets package: "
                          "pip install datasets") from None
    size = sum(f.stat().st_size for f in path.rglob("*.arrow") if f.is_file())  # Arrow files are not compressed
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"{field}: {path} holds {size} bytes of Arrow data, above the limit of {MAX_FILE_BYTES}")
    data = load_from_disk(str(path))
    if not isinstance(data, Dataset):
        raise ConfigError(f"{field}: {path} holds several splits ({', '.join(data)}): name one split's directory")
    if data.num_rows > MAX_LINES:
        raise ConfigError(f"{field}: {path}: {data.num_rows} rows, above the limit of {MAX_LINES}")
    return enumerate(data, start=1)


def seed_tasks() -> list[Task]:
    entry = files("selfloop.prompts") / "seed_tasks.jsonl"
    return read_jsonl_tasks(entry.read_text(), "prompts/seed_tasks.jsonl", "seed")


def load_pool(source: TaskSource) -> list[Task]:
    if source.kind == "seed":
        return seed_tasks()
    if source.kind == "jsonl":
        if source.path is None:
            raise ConfigError("generation.tasks: kind 'jsonl' needs a path")
        tasks = read_user_tasks(source.path, "generation.tasks.path", "jsonl", source.fields, source.answer_after)
        return [replace(t, family=source.family) for t in tasks]
    return [Task(p.key, p.prompt, p.answer, family=source.kind)
            for p in generated(source.kind, source.levels, "train", source.phrasing)]
