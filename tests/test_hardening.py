"""Bounds on every size, inputs checked before anything is written, one-line errors, cleanup only
under the lock, and checkpoints whose manifests are reproducible."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfloop.config import validate_config
from selfloop.errors import ConfigError
from tests.conftest import REPO, FinishedStore, make_config, selfloop_cli, tiny_yaml


@pytest.mark.parametrize(("key", "value", "field"), [
    ("generation.samples_per_prompt", 10**9, "generation.samples_per_prompt"),
    ("generation.prompts_per_iteration", 10**9, "generation.prompts_per_iteration"),
    ("generation.max_new_tokens", 10**9, "generation.max_new_tokens"),
    ("train.lora.rank", 10**9, "train.lora.rank"),
    ("loop.seed", 2**64, "loop.seed"),
    ("loop.seed", -1, "loop.seed"),
    ("judge.llm_judge.k", 10**6, "judge.llm_judge.k"),
    ("train.batch_size", 10**7, "train.batch_size"),
    ("generation.system_prompt", "x" * 100_000, "generation.system_prompt"),
])
def test_sizes_are_bounded_at_validation(key: str, value: object, field: str) -> None:
    section, _, rest = key.partition(".")
    data: dict = {"loop": {"name": "x"}}
    node = data.setdefault(section, {})
    *parents, last = rest.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    assert f"  {field}: " in str(info.value)


def test_sizes_are_checked_against_the_model(tmp_path: Path, sqlite_url: str) -> None:
    """The tiny model's context is 2048 tokens and its hidden size 96; refused before the loop row exists."""
    from selfloop.runner import run_loop
    from selfloop.signals import StopFlag

    for sections, message in (({"generation": {"max_new_tokens": 4096}}, "generation.max_new_tokens: 4096 is not below the context length"),
                              ({"train": {"lora": {"rank": 128, "alpha": 8}}}, "train.lora.rank: 128 is above the hidden size")):
        config = make_config(tmp_path, sqlite_url, **sections)
        with pytest.raises(ConfigError, match=message):
            run_loop(config, 1, StopFlag())
        from tests.conftest import table_counts

        assert table_counts(sqlite_url)["loops"] == 0


def _jsonl(tmp_path: Path, body: bytes, name: str = "tasks.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


@pytest.mark.parametrize(("body", "message"), [
    (None, "generation.tasks.path: {path} does not exist"),
    (b'{"prompt": "a"}\n{"prompt": "b\xff"}\n', "generation.tasks.path: {path}:2: not UTF-8 text"),
    (b'{"prompt": "a"}\n\n{"prompt": 3}\n', "{path}:3: each line needs a non-empty string 'prompt'"),
    (b'{"prompt": "a"}\nnot json\n', "{path}:2: not valid JSON"),
    (b'{"prompt": "a", "answer": [1]}\n', "{path}:1: 'answer' must be a string or a number"),
    (b'{"prompt": "a", "extra": 1}\n', "{path}:1: unknown key(s) extra"),
    (b'{"prompt": "' + b"x" * 10_000_000 + b'"}\n', "{path}:1: 'prompt' is 10000000 characters, above the limit"),
    (b"\n\n", "{path}: no tasks"),
])
def test_bad_task_files_are_found_before_anything_is_written(tmp_path: Path, run_cli, body: bytes | None,
                                                            message: str) -> None:
    """In-process (the CLI's own main): these fail long before a model is loaded."""
    path = tmp_path / "tasks.jsonl" if body is None else _jsonl(tmp_path, body)
    url = f"sqlite:///{tmp_path / 'state' / 'selfloop.db'}"
    config = tiny_yaml(tmp_path, url, generation__tasks={"kind": "jsonl", "path": str(path)})
    code, _, err = run_cli("config", "validate", str(config))
    assert code == 2 and message.format(path=path) in err, err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli("run", "--config", str(config))
    assert code == 2 and message.format(path=path) in err, err
    assert not (tmp_path / "state" / "selfloop.db").exists(), "nothing may be written for a bad input"


def test_bad_eval_file_is_named_with_its_suite(tmp_path: Path, run_cli) -> None:
    path = _jsonl(tmp_path, b'{"prompt": "2+2?", "answer": "4"}\n{"prompt": "no answer"}\n', "eval.jsonl")
    config = tiny_yaml(tmp_path, f"sqlite:///{tmp_path / 'x.db'}",
                       eval={"suites": [{"name": "mine", "kind": "jsonl", "path": str(path)}], "main_metric": "mine/greedy_accuracy"})
    code, _, err = run_cli("config", "validate", str(config))
    assert code == 2 and "every eval line needs an 'answer'" in err and "eval:2" in err


@pytest.mark.parametrize(("args", "message"), [
    (["status", "--db", "foo://bar"], "--db 'foo://bar': database 'foo' is not supported"),
    (["status", "--db", "no-such-dir/x.db"], "no database at"),  # a plain path is an SQLite store
    (["history", "--db", "mysql://u@h/db"], "--db 'mysql://u@h/db': database 'mysql' is not supported"),
    (["sql", "--db", "sqlite://", "SELECT 1"], "an SQLite URL needs a file path"),
    (["status", "--db", "sqlite:///:memory:"], "an SQLite URL needs a file path"),
    (["run", "--config", "{config}", "--db", "foo://bar"], "--db 'foo://bar': database 'foo' is not supported"),
    (["run", "--config", "{config}", "--db", "sqlite:///:memory:"], "an SQLite URL needs a file path"),
    (["run", "--config", "{config}", "--db", "sqlite:////proc/selfloop/x.db"], "cannot"),
    (["run", "--config", "{config}", "--set", "loop.seed=18446744073709551616"], "loop.seed: 18446744073709551616"),
])
def test_bad_input_is_one_line(tmp_path: Path, run_cli, args: list[str], message: str) -> None:
    config = tiny_yaml(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    code, _, err = run_cli(*[a.format(config=config) for a in args])
    assert code != 0
    lines = [line for line in err.strip().splitlines() if not line.startswith(("20", "{"))]  # log lines aside
    assert len(lines) <= 2 and message in err and "Traceback" not in err, err
    assert "unexpected error" not in err and "[SQL:" not in err
    assert not (tmp_path / "state.db").exists() or "seed" not in message


def test_upgrade_to_an_unknown_revision_is_one_line(tmp_path: Path, run_cli) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert run_cli("db", "upgrade", "--db", url)[0] == 0
    code, _, err = run_cli("db", "upgrade", "--db", url, "--revision", "9999")
    assert code == 3 and err.startswith("selfloop: error: cannot migrate to '9999'") and len(err.strip().splitlines()) == 1


def test_unexpected_errors_lose_their_sql_and_name_a_full_disk() -> None:
    from sqlalchemy.exc import OperationalError

    from selfloop.cli import one_line

    exc = OperationalError("INSERT INTO samples (text) VALUES (?)", ("secret sample text",), Exception("database or disk is full"))
    assert one_line(exc) == "the database's disk is full: free some space, then resume"
    exc = OperationalError("SELECT x FROM t WHERE a = ?", ("secret",), Exception("no such column: x"))
    assert one_line(exc) == "database error: no such column: x"
    assert "free some space" in one_line(OSError(errno.ENOSPC, "No space left on device", "/state/checkpoints/x"))


@pytest.mark.integration
def test_a_refused_process_leaves_the_holders_unfinished_checkpoint_alone(tmp_path: Path, sqlite_url: str) -> None:
    from selfloop.db.engine import open_database
    from selfloop.lock import LoopLock

    config = tiny_yaml(tmp_path, sqlite_url)
    db = open_database(sqlite_url, init=True)
    unfinished = tmp_path / "state" / "checkpoints" / "tiny" / ".tmp-iteration-0001-abcd1234"
    unfinished.mkdir(parents=True)
    (unfinished / "adapter_model.safetensors").write_bytes(b"being written")
    other_loop = tmp_path / "state" / "checkpoints" / "other" / ".tmp-iteration-0003-abcd1234"
    other_loop.mkdir(parents=True)
    with LoopLock(db, "tiny", "daemon"):
        out = selfloop_cli("run", "--config", str(config))
        assert out.returncode == 4 and "loop 'tiny' is in use by daemon" in out.stderr
        assert unfinished.is_dir(), "a process refused by the lock must not clean the holder's directory"
    db.dispose()
    # The next holder of the loop cleans its own loop's leftovers, and only those.
    from selfloop.config import load_config
    from selfloop.runner import prepare, take_loop

    loaded = load_config(config)
    db = prepare(loaded)
    take_loop(db, loaded, "run").release()
    db.dispose()
    assert not unfinished.exists() and other_loop.is_dir()


@pytest.mark.integration
def test_identical_trainings_give_identical_manifests(tmp_path: Path, tiny_model) -> None:
    """peft keeps target_modules in a set: with different hash seeds its order used to differ."""
    script = (
        "import sys, torch\n"
        "from peft import LoraConfig, get_peft_model\n"
        "from transformers import AutoModelForCausalLM\n"
        "from pathlib import Path\n"
        "from selfloop.training.checkpoint import save_adapter\n"
        "torch.manual_seed(0)\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], use_safetensors=True)\n"
        "p = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj']))\n"
        "print(save_adapter(p, Path(sys.argv[2])).sha256)\n"
    )
    shas = []
    for seed in ("1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", script, str(tiny_model.path), str(tmp_path / seed)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONHASHSEED": seed}, cwd=REPO, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        shas.append(out.stdout.strip().splitlines()[-1])
    assert len(set(shas)) == 1
    config = json.loads((tmp_path / "1" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])


@pytest.mark.integration
def test_the_store_checkpoints_and_logs_are_owner_only_and_what_is_shared_follows_the_umask(tmp_path: Path,
                                                                                             sqlite_url: str) -> None:
    """A report, an export and a merged model are made to share: the user's umask (022 here) decides. The store,
    the checkpoints and the logs stay owner-only whatever it is."""
    config = tiny_yaml(tmp_path, sqlite_url, loop__max_iterations=1, logging__file=str(tmp_path / "logs" / "selfloop.log"))
    old = os.umask(0o022)
    try:
        out = selfloop_cli("run", "--config", str(config))
        assert out.returncode == 0, out.stderr[-2000:]
        for args in (["report", "tiny", "--out", str(tmp_path / "report")],
                     ["export", "tiny", "--what", "samples", "--out", str(tmp_path / "shared" / "samples.jsonl")],
                     ["merge", "tiny", "--out", str(tmp_path / "shared" / "merged"), "--config", str(config)]):
            out = selfloop_cli(*args, "--db", sqlite_url)
            assert out.returncode == 0, out.stderr[-2000:]
    finally:
        os.umask(old)
    private = [tmp_path / "selfloop.db", *(tmp_path / "state" / "checkpoints").rglob("*"), *(tmp_path / "logs").rglob("*")]
    assert all(p.stat().st_mode & 0o077 == 0 for p in private), [(p, oct(p.stat().st_mode)) for p in private]
    shared = [*(tmp_path / "report").rglob("*"), *(tmp_path / "shared").rglob("*")]
    wrong = {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in shared
             if p.stat().st_mode & 0o077 != (0o055 if p.is_dir() else 0o044)}
    assert len(shared) > 5 and not wrong, wrong


@pytest.mark.integration
def test_a_healthy_tiny_run_warns_about_nothing(finished_tiny: FinishedStore) -> None:
    """configs/tiny.yaml as shipped (the session's finished tiny run): a user should act on every warning printed,
    so a healthy run prints none (it printed 10: a random model's zero accuracies and unreadable judge scores,
    every iteration)."""
    assert "tiny iteration 2: " in finished_tiny.stderr, finished_tiny.stderr[-2000:]
    warnings = [line for line in finished_tiny.stderr.splitlines() if " WARNING " in line or "Warning" in line]
    assert not warnings, warnings
