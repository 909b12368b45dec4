"""Hostile configs and task files: each is refused by `config validate` and by `run` with one line and
exit 2, before anything is written (no database file appears). Run in-process: these fail long before
a model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_yaml

ALIAS_BOMB = "bomb:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))


def _append(text: str):
    return lambda path, tmp: path.write_text(path.read_text() + text)


def _replace(old: str, new: str):
    def edit(path: Path, _tmp: Path) -> None:
        body = path.read_text()
        assert old in body, old
        path.write_text(body.replace(old, new, 1))
    return edit


def _tasks(line: str):
    """Point the task pool at a JSONL file whose second line is `line`."""
    def edit(path: Path, tmp: Path) -> None:
        import yaml

        tasks = tmp / "tasks.jsonl"
        tasks.write_text('{"prompt": "What is 2 + 2?", "answer": "4"}\n' + line + "\n")
        data = yaml.safe_load(path.read_text())
        data["generation"]["tasks"] = {"kind": "jsonl", "path": str(tasks)}
        path.write_text(yaml.safe_dump(data))
    return edit


def _set(key: str, value: str):
    """Set `key` (a.b) to raw YAML `value`, appended as a section of its own after removing the old one."""
    def edit(path: Path, _tmp: Path) -> None:
        import yaml

        data = yaml.safe_load(path.read_text())
        section, field = key.split(".")
        data.setdefault(section, {}).pop(field, None)
        body = yaml.safe_dump({k: v for k, v in data.items() if k != section})
        inner = yaml.safe_dump(data[section]).rstrip("\n").replace("\n", "\n  ") if data[section] else ""
        path.write_text(body + f"{section}:\n  {field}: {value}\n" + (f"  {inner}\n" if inner else ""))
    return edit


CASES = [
    ("alias bomb", _append(ALIAS_BOMB), "YAML aliases (*name) are not allowed"),
    ("nested lists in yaml", _append("deep: " + "[" * 5000 + "]" * 5000 + "\n"), "nested more than 64 levels deep"),
    ("nested lists in a task line", _tasks('{"prompt": ' + "[" * 5000 + "]" * 5000 + "}"), "nested more than 64 levels deep"),
    ("lone surrogate", _set("loop.name", '"\\ud800"'), "lone surrogate"),
    ("lone surrogate in a task", _tasks('{"prompt": "\\ud800 what?"}'), "lone surrogate"),
    ("no suites", _set("eval.suites", "[]"), "eval.suites is empty"),
    ("missing model path", _set("model.base", "/nonexistent/selfloop-model"), "model.base: /nonexistent/selfloop-model does not exist"),
    ("model url", _set("model.base", "https://example.invalid/model"), "model.base: a URL is not a model"),
    ("state dir is a file", lambda path, tmp: (tmp / "state").write_text("x"), "is not a directory"),
    ("duplicate yaml keys", _append("loop:\n  name: other\n"), "the key 'loop' is given twice"),
    ("duplicate json keys", _tasks('{"prompt": "a", "prompt": "b"}'), "the key 'prompt' is given twice"),
    ("nan answer", _tasks('{"prompt": "a", "answer": NaN}'), "NaN is not a JSON number"),
    ("no signals", _set("judge.signals", "[]"), "judge.signals: no signal given"),
    ("nan learning rate", _set("train.learning_rate", ".nan"), "train.learning_rate"),
    # NUL passed the checks and failed every rollout on PostgreSQL ("text fields cannot contain NUL").
    ("nul in a task", _tasks('{"prompt": "a\\u0000b", "answer": "1"}'), "tasks.jsonl:2: 'prompt': not storable text (a NUL"),
    ("nul in a config string", _set("loop.name", '"a\\0b"'), "a NUL character"),
    # A 5000-digit integer: Python refuses to convert it from text, which surfaced as "unexpected error".
    ("5000-digit answer", _tasks('{"prompt": "a", "answer": ' + "9" * 5000 + "}"), "tasks.jsonl:2: an integer of 5000 digits"),
    ("5000-digit config field", _set("loop.seed", "9" * 5000), "an integer of 5000 digits"),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_config_is_one_line_before_anything_is_written(tmp_path: Path, run_cli, edit, message: str) -> None:
    db = tmp_path / "out" / "selfloop.db"
    config = tiny_yaml(tmp_path, f"sqlite:///{db}")
    edit(config, tmp_path)
    for command in (["config", "validate", str(config)], ["run", "--config", str(config)]):
        code, _, err = run_cli(*command)
        lines = [line for line in err.strip().splitlines() if not line.startswith(("20", "{"))]  # log lines aside
        assert code == 2 and message in err, (command, err)
        assert len(lines) <= 2 and "Traceback" not in err and "unexpected error" not in err, err
        assert not db.exists(), "nothing may be written for a bad input"


def test_a_gpu_config_on_a_cpu_machine_is_refused_before_anything_is_written(tmp_path: Path, run_cli) -> None:
    """The user trial: configs/gpu-dpo.yaml with the packaged model on a CPU machine printed "unexpected error:
    ValidationError: 1 validation error for ModelConfig" from inside vLLM, after the loop was written."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: sleep mode can run here")
    db = tmp_path / "out" / "selfloop.db"
    config = tiny_yaml(tmp_path, f"sqlite:///{db}", engine={"kind": "vllm", "enable_sleep_mode": True})
    # `config validate` says so (the file is valid: it is meant for another machine); `run` refuses it.
    code, out, err = run_cli("config", "validate", str(config))
    assert code == 0 and "valid" in out and "cannot run on this machine: engine.enable_sleep_mode: needs a CUDA GPU" in err
    code, _, err = run_cli("run", "--config", str(config))
    assert code == 2 and "engine.enable_sleep_mode: needs a CUDA GPU and none is visible here" in err, err
    assert "--set engine.kind=hf" in err and "unexpected error" not in err
    assert not db.exists()


def test_vllms_own_errors_are_said_in_one_line_with_the_fix() -> None:
    from pydantic import BaseModel, field_validator

    from selfloop.runtime import _reason

    class ModelConfig(BaseModel):  # what vLLM raises: its config's ValidationError, the reason in its first error
        sleep: bool

        @field_validator("sleep")
        @classmethod
        def _platform(cls, v: bool) -> bool:
            raise ValueError("Sleep mode is not supported on current platform.")

    try:
        ModelConfig(sleep=True)
    except Exception as exc:  # noqa: BLE001
        assert _reason(exc) == "Sleep mode is not supported on current platform."
    assert _reason(RuntimeError("no CUDA\nmore")) == "RuntimeError: no CUDA"
