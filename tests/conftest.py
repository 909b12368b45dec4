"""Shared fixtures: real SQLite files and, when a server is configured, real PostgreSQL databases.

PostgreSQL: SELFLOOP_TEST_POSTGRES_URL names a role that may create databases (tests/support/services.sh
starts one and prints it); each test gets a fresh database, dropped afterwards. Without the variable
those tests skip, unless SELFLOOP_REQUIRE_POSTGRES=1 (CI) turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Models converted or built by tests (the tiny model, SmolLM2 as safetensors) are cached here between
# runs; a fresh clone starts empty. Tests never touch the user's own ~/.cache/selfloop.
CACHE = Path(os.environ.get("SELFLOOP_TEST_CACHE_DIR", REPO / ".cache"))
os.environ["SELFLOOP_CACHE_DIR"] = str(CACHE)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist (`make test` runs TEST_JOBS workers) each worker's torch, and every loop it starts,
# gets one thread: two workers of two threads each on the 2-core machine slow each other far more than 2x.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

TIERS = ("integration", "slow", "vllm", "gpu")  # a test with none of these markers is a unit test


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most costly tests run first, unit modules last (a SmolLM2 or vLLM test weighs
    five integration tests: each loads a real model or starts a server).

    `make test` hands whole modules to its workers in collection order (--dist loadfile,
    --no-loadscope-reorder): with the long modules first, the run ends on short unit modules and
    neither worker waits alone on a minute-long module at the end (xdist's own reorder, by test
    count, put the few-test, minute-long modules last). The order within a module is unchanged."""
    costly: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        weight = 5 if any(item.get_closest_marker(m) for m in ("slow", "vllm")) else 1 if any(
            item.get_closest_marker(m) for m in TIERS) else 0
        costly[module] = costly.get(module, 0) + weight
    first_seen = {module: i for i, module in enumerate(dict.fromkeys(costly))}
    items.sort(key=lambda item: (-costly[item.nodeid.split("::", 1)[0]], first_seen[item.nodeid.split("::", 1)[0]]))


@pytest.fixture(autouse=True)
def _unit_tests_stay_units(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test (no tier marker) may not start a process or run a loop's iteration: that is what keeps
    `make test-fast` fast and the markers true. A test that must do either is marked integration."""
    if any(request.node.get_closest_marker(m) for m in TIERS):
        return
    import subprocess

    import selfloop.loop
    import selfloop.runner

    def refuse(what: str):
        def refused(*_args: object, **_kwargs: object) -> None:
            pytest.fail(f"{request.node.nodeid} is a unit test but {what}: mark it @pytest.mark.integration")
        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a process"))
    from tests.support import warm

    monkeypatch.setattr(warm.WarmProcess, "__init__", refuse("starts a process"))
    monkeypatch.setattr(selfloop.loop, "run_iteration", refuse("runs a loop iteration"))
    monkeypatch.setattr(selfloop.runner, "run_iteration", refuse("runs a loop iteration"))


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny random model (built once per cache)."""
    from selfloop.models.resolve import resolve_model

    return resolve_model("tiny", CACHE)


@dataclasses.dataclass(frozen=True)
class FinishedStore:
    """A finished loop's store as tests read it: its directory (the state directory is `root / "state"`), its
    database URL and what the run printed on stderr."""

    root: Path
    url: str
    stderr: str


def _fingerprint(store: FinishedStore) -> dict[str, str]:
    """The store's content: every row of its database (as SQLite reads it, write-ahead log included) and the
    bytes of every file under its state directory."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{store.url.removeprefix('sqlite:///')}?mode=ro", uri=True)) as conn:
        rows = hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    files = sorted(p for p in (store.root / "state").rglob("*") if p.is_file())
    return {"database rows": rows, **{str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}}


@pytest.fixture(scope="session")
def finished_tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedStore]:
    """One finished two-iteration loop on the tiny model (configs/tiny.yaml as shipped, loop "tiny", SQLite), run
    once per test session and shared by every xdist worker: the first worker to ask runs it under a file lock, the
    others wait and read it. Tests only read it (a test that writes builds its own): each worker checks at its end
    that the database's rows and the checkpoint files are as the run left them."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "finished-tiny"
    url = f"sqlite:///{root / 'selfloop.db'}"
    with open(shared / "finished-tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "stderr.txt").exists():
            root.mkdir(exist_ok=True)
            out = selfloop_cli("run", "--config", str(tiny_yaml(root, url)))
            assert out.returncode == 0, out.stderr[-3000:]
            (root / "stderr.txt").write_text(out.stderr)  # written last: its presence says the run finished
    store = FinishedStore(root, url, (root / "stderr.txt").read_text())
    before = _fingerprint(store)
    yield store
    after = _fingerprint(store)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test wrote to the shared finished store (build your own to write): {changed}"


def make_config(tmp_path: Path, db_url: str | None = None, **sections):
    """A validated config on the tiny model with small sizes; sections override (dicts are merged)."""
    from selfloop.config import validate_config

    data = {
        "loop": {"name": "test", "state_dir": str(tmp_path / "state"), "seed": 7},
        "model": {"base": "tiny"},
        "engine": {"batch_size": 8},
        "generation": {"prompts_per_iteration": 6, "samples_per_prompt": 3, "max_new_tokens": 12,
                       "tasks": {"kind": "arithmetic"}},
        "self_instruct": {"num_prompts": 2, "max_rounds": 2, "max_new_tokens": 24},
        "judge": {"llm_judge": {"k": 2, "max_new_tokens": 16}},
        "train": {"algorithm": "rlsc", "batch_size": 4, "max_length": 128, "learning_rate": 1e-3,
                  "lora": {"rank": 4, "alpha": 8}, "rlsc": {"steps": 2}},
        "eval": {"suites": [{"name": "arithmetic", "kind": "arithmetic", "size": 8, "max_new_tokens": 8}]},
        "database": {"url": db_url},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate_config(data)


@pytest.fixture
def config_factory(tmp_path: Path):
    def factory(db_url: str | None = None, **sections):
        return make_config(tmp_path, db_url, **sections)

    return factory


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'selfloop.db'}"


def _postgres_base() -> str | None:
    url = os.environ.get("SELFLOOP_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("SELFLOOP_REQUIRE_POSTGRES") == "1":
            pytest.fail("SELFLOOP_REQUIRE_POSTGRES=1 but SELFLOOP_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server configured (set SELFLOOP_TEST_POSTGRES_URL; see tests/support/services.sh)")
    return url


@pytest.fixture
def postgres_url() -> str:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    base = _postgres_base()
    name = f"selfloop_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    # A read-only role's backend may still be exiting after its client closed; FORCE may only end
    # sessions of roles the dropping role belongs to, so wait for such stragglers briefly.
    import time

    from sqlalchemy.exc import ProgrammingError

    for attempt in range(50):
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            break
        except ProgrammingError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test against a SQLite file and a PostgreSQL database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def postgres_superuser_url(postgres_url: str) -> str:
    """The test database reached as the server's superuser `selfloop_test_su` (tests/support/services.sh)."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    url = url.set(username="selfloop_test_su", password="selfloop_test_su").render_as_string(hide_password=False)
    import psycopg

    try:
        psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)).close()
    except psycopg.Error:
        if os.environ.get("SELFLOOP_REQUIRE_POSTGRES") == "1":
            pytest.fail("no superuser selfloop_test_su on the test server (tests/support/services.sh creates it)")
        pytest.skip("no superuser selfloop_test_su on the test server")
    return url


def _reader(db_url: str, request: pytest.FixtureRequest):
    """The schema, then where user SQL runs: the SQLite file itself, or a fresh read-only role of the
    PostgreSQL test database made by `selfloop db create-reader` (dropped afterwards)."""
    from selfloop.db.engine import make_engine
    from selfloop.db.migrate import upgrade

    engine = make_engine(db_url, create=True)
    upgrade(engine)
    engine.dispose()
    if db_url.startswith("sqlite"):
        yield db_url
        return
    from sqlalchemy import create_engine

    from selfloop.db.create_reader import create_reader

    superuser = request.getfixturevalue("postgres_superuser_url")
    role = f"selfloop_r_{uuid.uuid4().hex[:10]}"
    yield create_reader(db_url, role)
    admin = create_engine(superuser, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
    admin.dispose()


@pytest.fixture
def reader_url(db_url: str, request: pytest.FixtureRequest):
    """For each database of `db_url`: a URL that can only read it (the schema is created first)."""
    yield from _reader(db_url, request)


@pytest.fixture
def postgres_reader_url(postgres_url: str, request: pytest.FixtureRequest):
    yield from _reader(postgres_url, request)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run the selfloop CLI in-process; returns (exit code, stdout, stderr)."""
    from selfloop.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def make_adapter(model_dir: Path, out: Path, seed: int = 0, std: float = 0.3, checkpoint_id: int = 1, rank: int = 4):
    """A LoRA checkpoint on the tiny model with random (non-zero) B matrices, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from selfloop.adapters import Adapter
    from selfloop.training.checkpoint import save_adapter

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=modules))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(std=std)
    saved = save_adapter(peft, out)
    return Adapter(checkpoint_id, saved.path, saved.sha256)


def store_samples(db, config, prompts: list[tuple[str, str | None, list[str]]], family: str = "value") -> int:
    """Create the config's loop, iteration 1 and the given (prompt, answer, sample texts) rows, the prompts with an
    answer of the given task family, and grade the samples as the judge phase does.

    Returns the iteration id. Samples get made-up token ids and log-probs (4 tokens each, -0.5/token)
    unless a test overwrites them; phases after rollout only read what is stored.
    """
    from selfloop.db.models import Iteration, Prompt, Sample
    from selfloop.judging.correctness import grade_iteration
    from selfloop.loop import open_loop

    loop = open_loop(db, config)
    with db.session() as s:
        it = Iteration(loop_id=loop.id, number=1, status="running")
        s.add(it)
        s.flush()
        for i, (text, answer, samples) in enumerate(prompts):
            p = Prompt(iteration_id=it.id, source="task", item_index=i, text=text, answer=answer,
                       family=family if answer is not None else None)
            s.add(p)
            s.flush()
            for j, body in enumerate(samples):
                s.add(Sample(prompt_id=p.id, sample_index=j, iteration_id=it.id, text=body, token_ids=[5, 6, 7, 2],
                             token_logprobs=[-0.5] * 4, num_tokens=4, sum_logprob=-2.0, mean_logprob=-0.5,
                             finish_reason="stop", seed=j, temperature=1.0))
        s.flush()
        grade_iteration(s, it.id)
        return it.id


def tiny_yaml(tmp_path: Path, db_url: str, name: str = "tiny.yaml", **overrides) -> Path:
    """configs/tiny.yaml with a state dir under tmp_path, the given database and `key.path=value` overrides."""
    import yaml

    from selfloop.config import apply_overrides, read_yaml

    data = read_yaml(REPO / "configs" / "tiny.yaml")
    def flow(value: object) -> str:
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()

    data = apply_overrides(data, [f"loop.state_dir={tmp_path / 'state'}", f"database.url={db_url}",
                                  *[f"{k.replace('__', '.')}={flow(v)}" for k, v in overrides.items()]])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def selfloop_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600, fresh: bool = False,
                 cwd: Path | None = None):
    """Run `python -m selfloop ARGS` in a process of its own (what a user or systemd runs), to its end; returns
    what subprocess.run(capture_output=True, text=True) returns. The process is forked from a warm interpreter
    that has imported torch and transformers once (tests/support/warm.py); `fresh` starts a new interpreter
    instead, for what happens at start-up (PYTHONPATH, say)."""
    import subprocess
    import sys

    if not fresh:
        from tests.support import warm

        return warm.run(*args, env=env, timeout=timeout, cwd=cwd)
    return subprocess.run([sys.executable, "-m", "selfloop", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def selfloop_process(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                     start_new_session: bool = False):
    """Start `python -m selfloop ARGS` (forked from the warm interpreter, as `selfloop_cli`) and return it at once:
    a process object with Popen's pid, poll, wait, send_signal, kill and communicate, its output in files."""
    from tests.support import warm

    return warm.WarmProcess(list(args), env=env, cwd=cwd, start_new_session=start_new_session)


def table_counts(url: str) -> dict[str, int]:
    from sqlalchemy import inspect, text

    from selfloop.db.engine import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        tables = [t for t in inspect(conn).get_table_names() if t not in ("alembic_version",)]
        counts = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() for t in tables}
    engine.dispose()
    return counts
