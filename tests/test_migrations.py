"""Migrations are code with tests: up, down, up again with rows present; no drift from the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from selfloop.db.engine import make_engine, open_database, schema_revision
from selfloop.db.migrate import downgrade, head_revision, upgrade
from selfloop.db.models import Base
from selfloop.errors import SchemaError

VIEWS = {"iteration_summary", "loop_lineage", "sample_signals"}


def _drift(engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def test_migrations_match_models(db_url: str) -> None:
    engine = make_engine(db_url, create=True)
    upgrade(engine)
    assert _drift(engine) == []
    with engine.connect() as conn:
        names = set(inspect(conn).get_view_names())
    assert names >= VIEWS
    engine.dispose()


def test_up_down_up_with_rows(db_url: str) -> None:
    engine = make_engine(db_url, create=True)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO loops (name, base_model, config, config_hash, main_metric, seed, status) "
            "VALUES ('l1', 'tiny', '{}', 'h', 'a/b', 0, 'ready')"
        ))
        conn.execute(text("INSERT INTO iterations (loop_id, number, status) SELECT id, 0, 'running' FROM loops"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT loop, iteration FROM iteration_summary")).all() == [("l1", 0)]
    downgrade(engine, "base")
    with engine.connect() as conn:
        assert [t for t in inspect(conn).get_table_names() if t != "alembic_version"] == []
    upgrade(engine)
    assert schema_revision(engine) == (head_revision(), True)
    assert _drift(engine) == []
    engine.dispose()


def test_older_schema_is_refused_with_the_upgrade_command(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, create=True)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'zzzz'"))
    engine.dispose()
    with pytest.raises(SchemaError, match="newer than this selfloop"):
        open_database(sqlite_url)
    engine = make_engine(sqlite_url)
    downgrade_target = "base"
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE alembic_version SET version_num = '{head_revision()}'"))
    downgrade(engine, downgrade_target)
    # Simulate an older schema: a table exists, the revision row is missing.
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE loops (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="run `selfloop db upgrade"):
        open_database(sqlite_url, init=True)


def test_fresh_database_is_initialised_only_when_asked(sqlite_url: str, tmp_path) -> None:
    from selfloop.errors import SelfloopError

    with pytest.raises(SelfloopError, match="no database at"):
        open_database(sqlite_url)
    db = open_database(sqlite_url, init=True)
    assert schema_revision(db.engine)[0] == head_revision()
    db.dispose()
    path = tmp_path / "selfloop.db"
    assert path.stat().st_mode & 0o077 == 0, "the database file must be owner-only"


def test_sqlite_connection_settings(sqlite_url: str) -> None:
    db = open_database(sqlite_url, init=True)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    # Foreign keys are enforced: an iteration of a missing loop is refused.
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO iterations (loop_id, number, status) VALUES (999, 0, 'running')"))
    db.dispose()


def test_summary_view_revision_goes_down_and_up_with_rows(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, create=True)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO loops (name, base_model, config, config_hash, main_metric, seed, status) "
            "VALUES ('l1', 'tiny', '{}', 'h', 'a/b', 0, 'ready')"
        ))
        conn.execute(text("INSERT INTO iterations (loop_id, number, status) SELECT id, 1, 'done' FROM loops"))
        conn.execute(text("INSERT INTO metrics (iteration_id, name, value) SELECT id, 'judge.vote_share', 0.75 FROM iterations"))

    def columns() -> list[str]:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT * FROM iteration_summary")).keys())

    assert {"vote_share", "train_loss", "warnings"} <= set(columns())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT vote_share FROM iteration_summary")).scalar() == 0.75
    downgrade(engine, "0001")
    assert "vote_share" not in columns() and "main_metric" in columns()
    upgrade(engine)
    assert "vote_share" in columns() and _drift(engine) == []
    engine.dispose()


ROWS_AT_0008 = [
    "INSERT INTO loops (id, name, base_model, config, config_hash, main_metric, seed, status) VALUES "
    "(1, 'l1', 'tiny', '{\"judge\": {\"vote\": {\"extractors\": [\"last_number\"]}}}', 'h', 'a/greedy_accuracy', 0, 'ready')",
    "INSERT INTO checkpoints (id, path, sha256, kind, base_model, size_bytes, status) VALUES (1, 'c1', 'x', 'lora', 'tiny', 1, 'ok')",
    "INSERT INTO iterations (id, loop_id, number, status, base_checkpoint_id) VALUES (1, 1, 1, 'done', 1)",
    "INSERT INTO phase_runs (iteration_id, phase, status, attempts, progress_done, progress_total) VALUES (1, 'judge', 'done', 1, 0, 0)",
    "INSERT INTO prompts (id, iteration_id, source, item_index, task_key, text, answer) VALUES "
    "(1, 1, 'task', 0, 'arith:1:add:2:3', 'What is 2 + 3?', '5'), "
    "(2, 1, 'self_instruct', 0, NULL, 'Write about tea. Use only lowercase letters.', '{\"follow\": [[\"lowercase\", null]]}'), "
    "(3, 1, 'task', 1, 'seed:4', 'Name a colour.', NULL), "
    "(4, 1, 'task', 2, 'jsonl:1', 'Capital of France?', 'paris')",
    "INSERT INTO samples (id, prompt_id, sample_index, iteration_id, text, token_ids, token_logprobs, num_tokens, "
    "sum_logprob, mean_logprob, finish_reason, seed, temperature) VALUES "
    "(1, 1, 0, 1, 'It is 5.', '[1]', '[-1.0]', 1, -1.0, -1.0, 'stop', 0, 1.0), "
    "(2, 1, 1, 1, 'It is 6.', '[1]', '[-1.0]', 1, -2.0, -2.0, 'stop', 1, 1.0), "
    "(3, 2, 0, 1, 'tea is warm', '[1]', '[-1.0]', 1, -1.0, -1.0, 'stop', 0, 1.0), "
    "(4, 3, 0, 1, 'Blue', '[1]', '[-1.0]', 1, -1.0, -1.0, 'stop', 0, 1.0), "
    "(5, 4, 0, 1, 'The answer is Paris.', '[1]', '[-1.0]', 1, -1.0, -1.0, 'stop', 0, 1.0)",
    "INSERT INTO judgments (sample_id, kind, judge_index, score, parse_ok) VALUES (1, 'vote', 0, 1.0, true)",
    "INSERT INTO votes (prompt_id, answer, share, n_valid, n_votes, tie, correct) VALUES (1, '5', 0.5, 2, 2, true, true)",
    "INSERT INTO examples (iteration_id, item_index, algorithm, prompt_id, sample_id, ref_logp) VALUES "
    "(1, 0, 'rlsc', 1, 1, -1.0), (1, 1, 'dpo', 1, 1, -3.0)",
    "INSERT INTO train_steps (iteration_id, step, loss, learning_rate, grad_norm, tokens_per_s) VALUES (1, 1, 0.5, 0.1, 1.0, 9.0)",
    "INSERT INTO evals (iteration_id, role, suite, metric, value, n) VALUES (1, 'candidate', 'a', 'greedy_accuracy', 0.5, 2)",
    "INSERT INTO eval_items (iteration_id, role, suite, item_index, prompt, answer, response, correct, num_tokens) "
    "VALUES (1, 'candidate', 'a', 0, 'What is 1 + 1?', '2', '2', true, 1)",
    "INSERT INTO metrics (iteration_id, name, value) VALUES (1, 'judge.vote_share', 0.5)",
    "INSERT INTO events (loop_id, iteration_id, level, kind, message) VALUES (1, 1, 'info', 'x', 'y')",
    "INSERT INTO daemons (host, pid) VALUES ('h', 1)",
    "INSERT INTO writer_leases (loop_name, token, host, pid, kind) VALUES ('l1', 1, 'h', 1, 'run')",
    "INSERT INTO tracker_runs (loop_id, backend, run_id, steps_logged, steps_through, iterations_logged, last_event_id) "
    "VALUES (1, 'mlflow', 'r', 1, 1, 1, 1)",
]


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar()
                for t in inspect(conn).get_table_names() if t != "alembic_version"}


def test_families_and_correctness_migrate_with_rows_in_every_table(db_url: str) -> None:
    engine = make_engine(db_url, create=True)
    upgrade(engine, "0008")
    with engine.begin() as conn:
        for statement in ROWS_AT_0008:
            conn.execute(text(statement))
    before = _counts(engine)
    assert all(before.values()), f"a table without rows: {before}"
    upgrade(engine, "0009")
    with engine.connect() as conn:
        families = dict(conn.execute(text("SELECT id, family FROM prompts")).all())
        correct = dict(conn.execute(text("SELECT id, correct FROM samples")).all())
        logps = conn.execute(text("SELECT algorithm, ref_logp, sampling_logp FROM examples ORDER BY item_index")).all()
        signals = dict(conn.execute(text("SELECT sample_id, correct FROM sample_signals")).all())
    assert families == {1: "arithmetic", 2: "instructions", 3: None, 4: "value"}
    # graded by each prompt's family with the loop's extractors (last_number only: 'Paris' is not read)
    correct = {k: v if v is None else bool(v) for k, v in correct.items()}
    assert correct == {1: True, 2: False, 3: True, 4: None, 5: False}
    assert [(a, r, s) for a, r, s in logps] == [("rlsc", None, -1.0), ("dpo", -3.0, None)]
    assert {k: v if v is None else bool(v) for k, v in signals.items()} == correct
    downgrade(engine, "0008")
    assert _counts(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ref_logp FROM examples WHERE algorithm = 'rlsc'")).scalar() == -1.0
    upgrade(engine)  # 0011 drops the unused daemons table, rows and all
    assert _counts(engine) == {**{k: v for k, v in before.items() if k != "daemons"}, "example_candidates": 0,
                               "curations": 0}
    with engine.begin() as conn:  # a ranked example, then down past its table and up again
        conn.execute(text("INSERT INTO example_candidates (example_id, rank, sample_id, score) VALUES (1, 0, 1, 2.0), (1, 1, 2, 1.0)"))
    with engine.begin() as conn:  # and a curation decision
        conn.execute(text("INSERT INTO curations (iteration_id, position, filter, prompt_id, score, kept, reason) "
                          "VALUES (1, 0, 'band', 1, 0.5, false, 'vote share 0.50 is not above 0.50')"))
    assert all(_counts(engine).values())
    downgrade(engine, "0014")
    assert "curations" not in _counts(engine) and all(_counts(engine).values())
    downgrade(engine, "0009")
    assert "example_candidates" not in _counts(engine)
    upgrade(engine)
    assert schema_revision(engine) == (head_revision(), True)
    assert _drift(engine) == []
    engine.dispose()


def test_status_columns_are_enumerations_the_database_checks(db_url: str) -> None:
    """A status no code writes (a typo in a hand-made UPDATE) is refused by the database itself."""
    from sqlalchemy.exc import IntegrityError

    from selfloop.db.models import ENUMERATIONS

    engine = make_engine(db_url, create=True)
    upgrade(engine)
    with engine.begin() as conn:
        for statement in ROWS_AT_0008:
            if "daemons" not in statement:
                conn.execute(text(statement))
    for table, (column, values) in ENUMERATIONS.items():
        with engine.begin() as conn:  # every allowed value is taken
            for value in values:
                conn.execute(text(f"UPDATE {table} SET {column} = :v"), {"v": value})
        with pytest.raises(IntegrityError, match=rf"(?i)ck_{table}_{column}|CHECK constraint failed"):
            with engine.begin() as conn:
                conn.execute(text(f"UPDATE {table} SET {column} = 'finsihed'"))
    engine.dispose()


def test_a_transformed_reward_moves_beside_the_judged_score(db_url: str) -> None:
    """0021: a judgment a reward transform rewrote (the judged value in details) gets its judged score back in
    score and parse_ok, the reward in the new columns; down restores the old shape; an untouched judgment stays."""
    import json

    engine = make_engine(db_url, create=True)
    upgrade(engine, "0008")
    with engine.begin() as conn:
        for statement in ROWS_AT_0008:
            conn.execute(text(statement))
    upgrade(engine, "0020")
    cast = "CAST(:d AS JSONB)" if engine.dialect.name == "postgresql" else ":d"
    shuffled = {"reward": "shuffled", "judged_score": 3.0, "judged_parse_ok": True, "from_sample": 2}
    with engine.begin() as conn:  # sample 1's vote took another sample's value 0; sample 2 judged, untouched
        conn.execute(text(f"UPDATE judgments SET score = 0.0, details = {cast} WHERE sample_id = 1"),
                     {"d": json.dumps(shuffled)})
        conn.execute(text("INSERT INTO judgments (sample_id, kind, judge_index, score, parse_ok) "
                          "VALUES (2, 'llm_judge', 0, 4.0, true)"))

    def judgments() -> dict:
        with engine.connect() as conn:
            return {sid: (score, bool(ok), json.loads(d) if isinstance(d, str) else d) for sid, score, ok, d in conn.execute(
                text("SELECT sample_id, score, parse_ok, details FROM judgments ORDER BY sample_id"))}

    before = judgments()
    upgrade(engine, "0021")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT sample_id, score, parse_ok, reward_mode, reward, reward_ok, details "
                                 "FROM judgments ORDER BY sample_id")).all()
    (_, score, ok, mode, reward, reward_ok, details), untouched = rows  # sample 1, then sample 2
    assert (score, bool(ok), mode, reward, bool(reward_ok)) == (3.0, True, "shuffled", 0.0, True)
    assert (json.loads(details) if isinstance(details, str) else details) == {"from_sample": 2}
    assert tuple(untouched[1:6]) == (4.0, True, None, None, None)
    with engine.connect() as conn:  # the view: the reward training read, the judge's own score
        view = dict(conn.execute(text("SELECT sample_id, vote_reward FROM sample_signals WHERE sample_id = 1")).all())
        judge = conn.execute(text("SELECT judge_score FROM sample_signals WHERE sample_id = 2")).scalar()
    assert view == {1: 0.0} and judge == 4.0
    downgrade(engine, "0020")
    assert judgments() == before
    upgrade(engine)
    assert _drift(engine) == []
    engine.dispose()
