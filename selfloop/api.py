"""selfloop from Python: the loop and the store the CLI uses, for notebooks and scripts.

    import selfloop

    store = selfloop.open_store("runs/selfloop.db")            # a path, a URL, or None (as the CLI finds it)
    config = selfloop.load_config("configs/tiny.yaml", overrides=["loop.name=nb"])
    store.run(config, iterations=2, on_iteration=lambda o: print(o.iteration, o.status))
    store.history("nb").to_pandas()                              # one row per iteration
    store.sql("SELECT * FROM evals WHERE role = 'candidate'")    # read-only, whatever the statement says

Reading methods return `Rows`: a list of dicts (one per row) that knows its columns and becomes a pandas
DataFrame with `to_pandas()` (pandas is not a dependency of selfloop). Writing goes through the same code as
`selfloop run`, `resume` and `fork`: the loop's writer lock, its checks before anything is written, resume
after a crash. Errors are `selfloop.errors.SelfloopError` (ConfigError for a bad config) with the CLI's messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfloop.config import (
    Config,
    LoopConfig,
    apply_overrides,
    keep_secrets,
    read_config_file,
    stored_config,
    validate_config,
)
from selfloop.errors import SelfloopError

if TYPE_CHECKING:
    import pandas as pd

    from selfloop.loop import Outcome

PhaseCallback = Callable[[str, int, str], None]  # (loop, iteration, phase), as each phase starts
IterationCallback = Callable[["Outcome"], None]  # after each finished iteration


class Rows(list[dict[str, Any]]):
    """Query results: one dict per row, in order; `columns` names them even when there are none."""

    def __init__(self, columns: Iterable[str], rows: Iterable[Iterable[Any]] = ()) -> None:
        self.columns = list(columns)
        super().__init__(dict(zip(self.columns, row, strict=True)) for row in rows)

    @classmethod
    def of(cls, records: Iterable[dict[str, Any]]) -> Rows:
        records = list(records)
        out = cls(list(records[0]) if records else [])
        out.extend(records)
        return out

    def to_pandas(self) -> pd.DataFrame:
        try:
            import pandas as pd
        except ImportError:
            raise SelfloopError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(list(self), columns=self.columns)


def load_config(source: str | Path | dict[str, Any] | Config, overrides: list[str] | None = None) -> Config:
    """A validated config from a YAML file, a mapping or a Config; `overrides` as the CLI's --set key.path=value."""
    if isinstance(source, Config):
        if not overrides:
            return source.model_copy(deep=True)  # as given: a dump would drop the secrets its URLs may carry
        data = source.model_dump(mode="json")
        where = f"config of loop {source.loop.name!r}"
        return keep_secrets(validate_config(apply_overrides(data, list(overrides)), source=where), source)
    elif isinstance(source, dict):
        data, where = dict(source), "config"
    else:
        data, where = read_config_file(source), str(source)
    return validate_config(apply_overrides(data, list(overrides or [])), source=where)


def store_url(where: str | Path | None = None) -> str:
    """A database URL: a URL as given, a path as SQLite, None as the CLI finds it ($SELFLOOP_DB, else
    <state_dir>/selfloop.db)."""
    from selfloop.db.engine import as_url, check_url

    if where is None:
        where = os.environ.get("SELFLOOP_DB") or Config(loop=LoopConfig(name="default")).database_url()
    text = str(where)
    url = as_url(text)
    try:
        check_url(url)
    except ValueError as exc:
        raise SelfloopError(f"store {text!r}: {exc}") from None
    return url


def open_store(where: str | Path | None = None) -> Store:
    """The store at `where` (see `store_url`); it is opened for each call, so a Store holds no connection."""
    return Store(store_url(where))


class Store:
    """A selfloop database: its loops' history to read, and loops to run on it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __repr__(self) -> str:
        from selfloop.db.engine import safe_url

        return f"Store({safe_url(self.url)!r})"

    # -- reading ------------------------------------------------------------------------------------
    def _read(self, query: Callable[..., Any]) -> Any:
        from selfloop.db.engine import open_database

        db = open_database(self.url, deferred=True)
        try:
            with db.session() as session:
                return query(session)
        finally:
            db.dispose()

    def loops(self) -> Rows:
        """One row per loop: status, iterations done, the running iteration and phase, progress, policy."""
        from selfloop.db import queries

        return Rows(*self._read(queries.loop_status))

    def history(self, loop: str | None = None) -> Rows:
        """One row per iteration (the iteration_summary view), of one loop or all."""
        from selfloop.db import queries

        def query(session: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
            if loop is not None and queries.loop_by_name(session, loop) is None:
                raise SelfloopError(queries.no_loop(session, loop, " in this store"))
            return queries.iteration_summary(session, loop)

        return Rows(*self._read(query))

    def suites(self, loop: str | None = None) -> Rows:
        """Every held-out suite's accuracy per iteration: the starting policy and its candidate, with intervals."""
        from selfloop.db import queries

        return Rows(*self._read(lambda session: queries.suite_results(session, loop)))

    def _export(self, loop: str, what: str, iteration: int | None) -> Rows:
        """The export's rows; none is an error that says what the loop has instead, as `selfloop export` says it
        (an RLSC loop has no pairs: an empty list would read as "nothing happened")."""
        from selfloop.export import nothing_to_export, rows

        def query(session: Any) -> list[dict[str, Any]]:
            found = list(rows(session, loop, what, iteration))
            if not found:
                raise SelfloopError(nothing_to_export(session, loop, what, iteration))
            return found

        return Rows.of(self._read(query))

    def samples(self, loop: str, iteration: int | None = None) -> Rows:
        """Every sample with its prompt, judge score, vote and known answer (`selfloop export --what samples`)."""
        return self._export(loop, "samples", iteration)

    def pairs(self, loop: str, iteration: int | None = None) -> Rows:
        """Training pairs in TRL's prompt/chosen/rejected form."""
        return self._export(loop, "pairs", iteration)

    def examples(self, loop: str, iteration: int | None = None) -> Rows:
        """Rewarded training examples (TTRL, RLSC, ReST-EM) as prompt/completion with reward and weight."""
        return self._export(loop, "examples", iteration)

    def ranked(self, loop: str, iteration: int | None = None) -> Rows:
        """Ranked training examples (list-wise methods) as query, responses best first, and their scores."""
        return self._export(loop, "ranked", iteration)

    def evals(self, loop: str, iteration: int | None = None) -> Rows:
        """Held-out items: the response, the prediction and whether it was right, per policy and suite."""
        return self._export(loop, "evals", iteration)

    def sql(self, statement: str, *, max_rows: int | None = None) -> Rows:
        """One statement on a connection that cannot write (`selfloop sql`)."""
        from selfloop.db.user_sql import run_readonly

        result = run_readonly(self.url, statement, max_rows=max_rows)
        return Rows(result.columns, result.rows)

    # -- running -------------------------------------------------------------------------------------
    def run(self, config: Config | str | Path | dict[str, Any], iterations: int | None = None, *,
            on_phase: PhaseCallback | None = None, on_iteration: IterationCallback | None = None) -> list[Outcome]:
        """Create or continue `config`'s loop in this store and run up to `iterations` iterations (None: until
        it finishes); the callbacks see each phase start and each finished iteration."""
        from selfloop.runner import run_loop
        from selfloop.signals import StopFlag

        if iterations is not None and iterations < 1:
            raise SelfloopError(f"iterations={iterations}: must be at least 1")
        config = load_config(config)
        config.database.url = self.url
        return run_loop(config, iterations, StopFlag(), on_phase=on_phase, on_iteration=on_iteration)

    def stored_config(self, loop: str) -> Config:
        """The config `loop` was created (or forked) with."""
        from selfloop.db import queries

        def query(session: Any) -> dict[str, Any]:
            found = queries.loop_by_name(session, loop)
            if found is None:
                raise SelfloopError(queries.no_loop(session, loop, " in this store"))
            return found.config

        return stored_config(self._read(query), loop)

    def resume(self, loop: str, iterations: int | None = None, *, on_phase: PhaseCallback | None = None,
               on_iteration: IterationCallback | None = None) -> list[Outcome]:
        """Continue an interrupted or forked loop with its stored config."""
        return self.run(self.stored_config(loop), iterations, on_phase=on_phase, on_iteration=on_iteration)

    def fork(self, loop: str, at: int, name: str, overrides: list[str] | None = None) -> str:
        """A new loop `name` starting from iteration `at`'s checkpoint of `loop` (its stored config, with
        `overrides`); run it with `resume(name)`."""
        from selfloop.lineage import fork_loop

        return fork_loop(self.url, loop, at, name, overrides=overrides)
