"""The Python API drives the tiny loop and reads its history: what a notebook does (docs/python.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

import selfloop
from selfloop.errors import ConfigError, SelfloopError
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_a_notebook_runs_the_tiny_loop_and_reads_it_back(tmp_path: Path) -> None:
    store = selfloop.open_store(tmp_path / "runs" / "selfloop.db")  # a path is an SQLite store
    assert store.url == f"sqlite:///{tmp_path / 'runs' / 'selfloop.db'}"
    config = selfloop.load_config(REPO / "configs" / "tiny.yaml",
                                  overrides=[f"loop.state_dir={tmp_path / 'state'}", "loop.name=nb"])
    phases: list[tuple[str, int, str]] = []
    finished: list[int] = []
    outcomes = store.run(config, iterations=1, on_phase=lambda *p: phases.append(p),
                         on_iteration=lambda o: finished.append(o.iteration))
    assert [o.iteration for o in outcomes] == finished == [1]
    assert [p for _, _, p in phases] == list(config.loop.phases) and {(loop, n) for loop, n, _ in phases} == {("nb", 1)}

    history = store.history("nb")
    assert [row["iteration"] for row in history] == [1] and "main_metric" in history.columns
    assert history[0]["status"] == "done" and history[0]["samples"] >= 6 * 4  # 6 task prompts, 4 samples each, and self-instruct's
    samples = store.samples("nb", 1)
    assert len(samples) == history[0]["samples"] and {"prompt", "completion", "judge_score"} <= set(samples.columns)
    evals = store.evals("nb")
    assert {row["suite"] for row in evals} == {"arithmetic", "units"}
    assert store.sql("SELECT count(*) AS n FROM samples").to_pandas()["n"].tolist() == [len(samples)]
    loops = store.loops()
    assert [(row["loop"], row["iterations_done"]) for row in loops] == [("nb", 1)]

    # What a loop does not have is explained, as `selfloop export` explains it (RLSC trains on rewarded examples).
    with pytest.raises(SelfloopError, match=r"loop 'nb' has no pairs .*rewarded examples.*use --what examples"):
        store.pairs("nb")
    # resume continues it; fork starts another loop from its checkpoint, with its own callbacks
    assert [o.iteration for o in store.resume("nb", iterations=1)] == [2]
    assert store.fork("nb", at=1, name="nb-lr", overrides=["train.learning_rate=2e-3"]) == "nb-lr"
    assert store.stored_config("nb-lr").train.learning_rate == 2e-3
    assert [o.iteration for o in store.resume("nb-lr", iterations=1)] == [1]
    assert [row["loop"] for row in store.suites()] and len(store.history()) == 3


def test_the_api_refuses_what_the_cli_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loop.seed"):
        selfloop.load_config({"loop": {"name": "x", "seed": -1}})
    with pytest.raises(SelfloopError, match="not a database URL|is not supported"):
        selfloop.open_store("mysql://u@h/db")
    store = selfloop.open_store(tmp_path / "none.db")
    with pytest.raises(SelfloopError, match="no database at"):
        store.history()
    with pytest.raises(SelfloopError, match="iterations=0"):
        store.run({"loop": {"name": "x"}}, iterations=0)


def test_the_package_is_typed() -> None:
    """PEP 561: the marker is in the package and ships in its wheel (the package data names it), so a user's type
    checker reads selfloop's annotations (what it then sees: the next test)."""
    import tomllib

    assert (Path(selfloop.__file__).parent / "py.typed").is_file()
    shipped = tomllib.loads((Path(selfloop.__file__).parent.parent / "pyproject.toml").read_text())
    assert "py.typed" in shipped["tool"]["setuptools"]["package-data"]["selfloop"]
    assert selfloop.Store is selfloop.api.Store


def test_the_top_level_names_are_listed_and_typed(tmp_path: Path) -> None:
    """`dir(selfloop)` was empty (no tab completion) and mypy typed `selfloop.open_store` as Any (the names came
    from a module __getattr__). A user's file checked by mypy sees each name's real type."""
    import subprocess
    import sys

    assert {"Rows", "SelfloopError", "Store", "load_config", "open_store"} <= set(dir(selfloop))
    assert selfloop.SelfloopError is SelfloopError
    user = tmp_path / "notebook.py"
    user.write_text("import selfloop\nreveal_type(selfloop.open_store)\nreveal_type(selfloop.load_config)\n"
                    "store = selfloop.open_store('x.db')\nstore.history(3)\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / ".mypy"), str(user)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert 'Revealed type is "def (where: builtins.str | pathlib.Path | None =) -> selfloop.api.Store"' in out.stdout \
        or "-> selfloop.api.Store" in out.stdout, out.stdout[-3000:]
    assert "selfloop.config.sections.Config" in out.stdout, out.stdout[-3000:]
    assert 'Argument 1 to "history" of "Store" has incompatible type "int"' in out.stdout, out.stdout[-3000:]


def test_the_library_is_quiet_until_asked(tmp_path: Path) -> None:
    """In library use, loguru printed selfloop's lines with its module:function:line prefix on stderr."""
    import subprocess
    import sys

    script = ("import selfloop\n"
              "from loguru import logger\n"
              "store = selfloop.open_store({db!r})\n"
              "logger.info('before')\n"
              "from selfloop.db.engine import open_database\n"
              "from selfloop.db.queries import add_event\n"
              "db = open_database(store.url, init=True)\n"
              "with db.session() as s: add_event(s, None, None, 'test.quiet', 'an event')\n"
              "from selfloop.log import setup_logging\n"
              "setup_logging('INFO')\n"
              "with db.session() as s: add_event(s, None, None, 'test.loud', 'another event')\n")
    out = subprocess.run([sys.executable, "-c", script.format(db=str(tmp_path / "s.db"))], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test.quiet" not in out.stderr and "selfloop.db.queries:add_event" not in out.stderr
    assert "test.loud: another event" in out.stderr  # asked for: the CLI's lines
