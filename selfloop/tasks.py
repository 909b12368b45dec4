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
from selfloop.families import family
from selfloop.strict import StrictError, load_json, unicode_problem


@dataclass(frozen=True)
class Task:
    key: str
    prompt: str
    answer: str | None = None
    reference: str | None = None
    family: str = "value"  # the task family whose grader checks `answer`


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


def tasks_from_rows(rows: Iterable[tuple[int, Any]], source: str, prefix: str, fields: FieldMap | None = None,
                    answer_after: str | None = None) -> list[Task]:
    """Tasks from (row number, row) pairs, the prompt, answer and response found under `fields`' keys (a
    'messages' list gives its last user turn as the prompt and the assistant turn after it as the response).
    With the default keys a row's other keys are errors (a typo is not ignored); with a user's mapping they are
    the dataset's own columns and ignored."""
    fields = fields or FieldMap()
    strict = fields == FieldMap()
    tasks = []
    for number, row in rows:
        where = f"{source}:{number}"
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: each row must be an object with a {fields.prompt!r}")
        prompt, response = row.get(fields.prompt), row.get(fields.response)
        if prompt is None and isinstance(row.get("messages"), list):
            prompt, response = _from_messages(row["messages"], where)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{where}: each line needs a non-empty string {fields.prompt!r}"
                              + ("" if strict else " (generation.tasks.fields / eval.suites[].fields name the keys)"))
        if strict:
            unknown = set(row) - {"prompt", "answer", "response"}
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected prompt, answer, "
                                  "response; `fields` maps other names, and then other keys are ignored)")
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
        for key, value in (("prompt", prompt), ("answer", answer), ("response", response)):
            if value is not None and len(str(value)) > MAX_FIELD_CHARS:
                raise ConfigError(f"{where}: '{key}' is {len(str(value))} characters, above the limit of {MAX_FIELD_CHARS}")
            problem = unicode_problem(value) if isinstance(value, str) else None
            if problem:  # rows of Parquet and datasets files do not pass through the strict JSON reader
                raise ConfigError(f"{where}: '{key}' is {problem}")
        tasks.append(Task(f"{prefix}:{number}", prompt, None if answer is None else str(answer), response))
    if not tasks:
        raise ConfigError(f"{source}: no tasks")
    return tasks


def _from_messages(messages: list[Any], where: str) -> tuple[str | None, str | None]:
    """The last user turn of a chat (role/content dicts) and the assistant turn after it, if any."""
    turns = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    users = [i for i, m in enumerate(turns) if m.get("role") == "user"]
    if not users:
        raise ConfigError(f"{where}: 'messages' has no user turn")
    after = [m["content"] for m in turns[users[-1] + 1:] if m.get("role") == "assistant"]
    return turns[users[-1]]["content"], (after[0] if after else None)


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
        rows, read = [], 0
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
        tasks = read_user_tasks(source.path, "generation.tasks.path", "jsonl", source.fields, source.answer_after)  # type: ignore[arg-type]
        return [replace(t, family=source.family) for t in tasks]
    spec = family(source.kind)
    return [Task(p.key, p.prompt, p.answer, family=spec.name)
            for p in spec.problems(source.levels, "train", source.phrasing)]  # type: ignore[misc]
