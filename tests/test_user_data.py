"""Task data as users have it: other field names, a chat's messages, GSM8K's '#### answer', Parquet files and
local `datasets` directories, as task pools and held-out suites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfloop.config import SuiteConfig, TaskSource
from selfloop.errors import ConfigError
from selfloop.evals.suites import load_suite
from selfloop.tasks import load_pool

GSM8K = [  # the shape of openai/gsm8k's rows: the worked answer ends in '#### <number>'
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
               "in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much "
                 "did she earn?", "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 10"},
]
GSM8K_FIELDS = {"fields": {"prompt": "question", "answer": "answer"}, "answer_after": "####"}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_gsm8k_file_as_is_is_a_pool_and_a_suite(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "gsm8k.jsonl", [{**r, "id": i} for i, r in enumerate(GSM8K)])  # extra columns ignored
    pool = load_pool(TaskSource(kind="jsonl", path=path, **GSM8K_FIELDS))
    assert [(t.prompt[:16], t.answer) for t in pool] == [("Natalia sold cli", "72"), ("Weng earns $12 a", "10")]
    suite = load_suite(SuiteConfig(name="gsm8k", kind="jsonl", path=path, **GSM8K_FIELDS))
    assert [i.answer for i in suite] == ["72", "10"]
    with pytest.raises(ConfigError, match="each line needs a non-empty string 'prompt'"):  # without the mapping
        load_pool(TaskSource(kind="jsonl", path=path))
    with pytest.raises(ConfigError, match=r"gsm8k.jsonl:1: 'answer' has no '####' marker"):
        load_pool(TaskSource(kind="jsonl", path=_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "q", "answer": "4"}]),
                             **GSM8K_FIELDS))


def test_chat_messages_give_the_prompt_and_the_reference(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "chats.jsonl", [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}]}])
    [task] = load_pool(TaskSource(kind="jsonl", path=path, fields={"prompt": "question"}))
    assert (task.prompt, task.reference) == ("Capital of France?", "Paris.")
    with pytest.raises(ConfigError, match="'messages' has no user turn"):
        load_pool(TaskSource(kind="jsonl", path=_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "system", "content": "x"}]}]),
                             fields={"prompt": "question"}))


def test_parquet_and_datasets_directories(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_list(GSM8K)
    data.to_parquet(str(tmp_path / "gsm8k.parquet"))
    data.save_to_disk(str(tmp_path / "gsm8k"))
    for path in (tmp_path / "gsm8k.parquet", tmp_path / "gsm8k"):
        assert [t.answer for t in load_pool(TaskSource(kind="jsonl", path=path, **GSM8K_FIELDS))] == ["72", "10"]
        assert [i.answer for i in load_suite(SuiteConfig(name="g", kind="jsonl", path=path, **GSM8K_FIELDS))] == ["72", "10"]
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(tmp_path / "splits"))
    with pytest.raises(ConfigError, match="holds several splits"):
        load_pool(TaskSource(kind="jsonl", path=tmp_path / "splits", **GSM8K_FIELDS))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a saved `datasets` dataset"):
        load_pool(TaskSource(kind="jsonl", path=tmp_path / "empty"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        load_pool(TaskSource(kind="jsonl", path=tmp_path / "bad.parquet"))


def test_config_validate_takes_a_gsm8k_config(tmp_path: Path, run_cli) -> None:
    _jsonl(tmp_path / "train.jsonl", GSM8K)
    _jsonl(tmp_path / "test.jsonl", GSM8K)
    path = tmp_path / "gsm8k.yaml"
    path.write_text("loop: {name: gsm8k}\n"
                    "generation:\n  tasks: {kind: jsonl, path: train.jsonl, fields: {prompt: question}, answer_after: '####'}\n"
                    "eval:\n  suites: [{name: gsm8k, kind: jsonl, path: test.jsonl, fields: {prompt: question}, "
                    "answer_after: '####'}]\n  main_metric: gsm8k/greedy_accuracy\n")
    code, out, err = run_cli("config", "validate", str(path))
    assert code == 0 and "valid" in out, err


def test_parquet_and_datasets_rows_with_nul_or_nan_are_refused_with_their_row(tmp_path: Path) -> None:
    """Rows of Parquet files and datasets directories do not pass through the strict JSON reader: a NUL in a text
    field (which PostgreSQL cannot store: every rollout of such a loop failed) and a NaN answer (a missing value,
    which read as the answer "nan") are refused, naming the row, for task pools and suites alike."""
    datasets = pytest.importorskip("datasets")
    for name, rows, message in (
            ("nul", [GSM8K[0], {**GSM8K[1], "question": "a\x00b"}], r":2: 'prompt' is not storable text \(a NUL"),
            ("nan", [{"question": "a", "answer": 1.0}, {"question": "b", "answer": float("nan")}], r":2: 'answer' is nan")):
        data = datasets.Dataset.from_list(rows)
        data.to_parquet(str(tmp_path / f"{name}.parquet"))
        data.save_to_disk(str(tmp_path / name))
        fields = {"fields": {"prompt": "question", "answer": "answer"}}
        for path in (tmp_path / f"{name}.parquet", tmp_path / name):
            with pytest.raises(ConfigError, match=message):
                load_pool(TaskSource(kind="jsonl", path=path, **fields))
            with pytest.raises(ConfigError, match=message):
                load_suite(SuiteConfig(name="g", kind="jsonl", path=path, **fields))


def test_a_small_parquet_file_that_expands_beyond_the_bound_is_refused_before_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed Parquet file of a few kB can expand to gigabytes (the trial's 1.1 kB file: 4.5 GB); the
    bound applies to what it expands to as it is read (a dictionary-encoded column hides the repetition from the
    metadata's sizes), not to its size on disk. The bound is lowered here to 1 MB so the file stays small: 2,000
    rows of one 2,000-character prompt, 4 MB read, a few kB on disk."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from selfloop import tasks

    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"prompt": ["x" * 2000] * 2000, "answer": ["1"] * 2000}), path, compression="zstd")
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(tasks, "MAX_FILE_BYTES", 1_000_000)
    with pytest.raises(ConfigError, match=r"bomb.parquet expands to more than 1000000 bytes or 1000000 rows when read \(at row \d+\)"):
        load_pool(TaskSource(kind="jsonl", path=path))
    monkeypatch.setattr(tasks, "MAX_FILE_BYTES", 10_000_000)
    assert len(load_pool(TaskSource(kind="jsonl", path=path))) == 2000


SYSTEM = {"role": "system", "content": "You are a terse assistant. Answer with a number."}
CHATS = [  # TRL's conversational forms, with a system turn and earlier turns
    {"messages": [SYSTEM, {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "And 3 + 3?"}, {"role": "assistant", "content": "6"}]},
    {"prompt": [SYSTEM, {"role": "user", "content": "What is 5 + 1?"}],
     "completion": [{"role": "assistant", "content": "6"}]},
    {"prompt": [{"role": "user", "content": "What is 7 + 1?"}], "chosen": [{"role": "assistant", "content": "8"}],
     "rejected": [{"role": "assistant", "content": "9"}]},
    {"prompt": [{"role": "user", "content": "What is 1 + 1?"}]},
]


def test_trls_conversational_rows_load_whole_with_the_default_fields(tmp_path: Path) -> None:
    """They were refused ("unknown key(s) messages"), and with a mapping the system turn and earlier turns were
    dropped silently. What is kept: the conversation up to its last user turn, and the reply after it."""
    pool = load_pool(TaskSource(kind="jsonl", path=_jsonl(tmp_path / "chats.jsonl", CHATS)))
    assert [t.prompt for t in pool] == ["And 3 + 3?", "What is 5 + 1?", "What is 7 + 1?", "What is 1 + 1?"]
    assert [t.reference for t in pool] == ["6", "6", "8", None]
    assert pool[0].chat == tuple(CHATS[0]["messages"][:4]) and pool[0].chat[0] == SYSTEM
    assert pool[1].chat == tuple(CHATS[1]["prompt"]) and pool[3].chat == tuple(CHATS[3]["prompt"])
    suite = load_suite(SuiteConfig(name="chats", kind="jsonl", path=_jsonl(tmp_path / "answers.jsonl", [
        {**CHATS[0], "answer": "6"}, {**CHATS[1], "answer": "6"}])))
    assert [(i.prompt, i.answer, i.chat[0]) for i in suite] == [("And 3 + 3?", "6", SYSTEM), ("What is 5 + 1?", "6", SYSTEM)]


@pytest.mark.parametrize(("row", "fields", "message"), [
    ({"question": "q", "answer": "1"}, {"prompt": "question", "answer": "solution"}, r"fields.answer names 'solution', which no row has"),
    ({"text": "q"}, {"prompt": "question"}, r":1: no key 'question' \(fields.prompt\) and no 'messages' list"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "x"}]}, None, r"messages\[1\] must be a turn"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, None, r"must end with the user turn"),
    ({"messages": [{"role": "system", "content": "x"}]}, None, r"'messages' has no user turn"),
])
def test_a_mapping_or_a_conversation_that_does_not_fit_the_rows_is_refused(tmp_path: Path, row: dict, fields, message: str) -> None:
    source = {"kind": "jsonl", "path": _jsonl(tmp_path / "rows.jsonl", [row]), **({"fields": fields} if fields else {})}
    with pytest.raises(ConfigError, match=message):
        load_pool(TaskSource(**source))


@pytest.mark.integration
def test_a_conversation_is_what_the_policy_is_asked_and_what_export_gives(tmp_path: Path) -> None:
    """The system turn and the earlier turns of a TRL conversational file reach the model: stored with the prompt,
    rendered in the rollout's chat (the tiny model's samples differ from those of the last user turn alone),
    and exported in TRL's conversational form."""
    from sqlalchemy import create_engine, text

    from tests.conftest import selfloop_cli, tiny_yaml

    tasks = _jsonl(tmp_path / "chats.jsonl", [{**c, "answer": a} for c, a in zip(CHATS, ["6", "6", "8", "2"])])
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, loop__phases=["rollout", "judge"],
                       generation__tasks={"kind": "jsonl", "path": str(tasks), "family": "value"},
                       generation__prompts_per_iteration=4)
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT text, messages FROM prompts WHERE source = 'task' ORDER BY text")).all()
    engine.dispose()
    by_text = {t: json.loads(m) if isinstance(m, str) else m for t, m in stored}
    assert by_text["And 3 + 3?"] == CHATS[0]["messages"][:4] and by_text["What is 1 + 1?"] == CHATS[3]["prompt"]
    exported = selfloop_cli("export", "tiny", "--what", "samples", "--db", url)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    asked = {r["prompt"][-1]["content"]: r["prompt"] for r in rows}
    assert asked["And 3 + 3?"] == CHATS[0]["messages"][:4] and asked["What is 5 + 1?"][0] == SYSTEM
