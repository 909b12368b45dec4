"""No secret is stored, rendered, sent to a tracker or logged (issue 44): a PostgreSQL owner's password planted in
`database.url` and a token in `tracking.mlflow.tracking_uri` reach no table, no dashboard page, no tracker
parameter, no event and no log or error line, while the loop that was given them runs with them; stores written
before this rule are cleaned by their migration."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from selfloop import credentials
from selfloop.config import validate_config
from tests.conftest import selfloop_cli, tiny_yaml


# -- units ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "stripped"), [
    ("postgresql+psycopg://owner:pw@db.example:5432/selfloop", "postgresql+psycopg://owner@db.example:5432/selfloop"),
    ("postgresql+psycopg://owner:p%40ss@h/db?sslmode=require", "postgresql+psycopg://owner@h/db?sslmode=require"),
    ("postgresql+psycopg://owner@/db?host=/run/postgresql&password=pw", "postgresql+psycopg://owner@/db?host=/run/postgresql"),
    ("http://user:TOKEN@mlflow.example:5000", "http://mlflow.example:5000"),
    ("https://TOKEN@mlflow.example/path", "https://mlflow.example/path"),
    ("sqlite:////var/lib/selfloop/selfloop.db", "sqlite:////var/lib/selfloop/selfloop.db"),
    ("postgresql+psycopg://owner@h/db", "postgresql+psycopg://owner@h/db"),
])
def test_strip_keeps_what_connects_and_drops_the_secret(url: str, stripped: str) -> None:
    assert credentials.strip(url) == stripped


def test_redact_masks_urls_and_remembered_secrets_in_free_text() -> None:
    credentials.remember("postgresql+psycopg://owner:Zq9-remembered@h/db")
    text_ = ("API request to http://alice:tok-123@h:5000/api failed; connect to postgresql+psycopg://owner:pw1@h/db; "
             "password=hunter2&x=1; the server said Zq9-remembered")
    out = credentials.redact(text_)
    for secret in ("tok-123", "alice", "pw1", "hunter2", "Zq9-remembered"):
        assert secret not in out, out
    assert "postgresql+psycopg://owner:***@h/db" in out and "http://***@h:5000/api" in out


def test_the_config_keeps_the_secret_in_memory_and_never_dumps_it(tmp_path: Path) -> None:
    config = validate_config({"loop": {"name": "x"},
                              "database": {"url": "postgresql+psycopg://owner:pw-in-memory@h/db"},
                              "tracking": {"mlflow": {"tracking_uri": "http://u:tok-in-memory@h:5000"}}})
    assert config.database_url() == "postgresql+psycopg://owner:pw-in-memory@h/db"
    assert config.tracking.mlflow.tracking_uri == "http://u:tok-in-memory@h:5000"
    for dumped in (str(config.model_dump()), config.model_dump_json()):
        assert "pw-in-memory" not in dumped and "tok-in-memory" not in dumped


def test_a_password_file_supplies_the_password_when_connecting(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-the-file\n")
    config = validate_config({"loop": {"name": "x"}, "database": {
        "url": "postgresql+psycopg://owner@h/db", "password_file": str(secret)}})
    assert make_url(config.database_url()).password == "from-the-file"
    assert "from-the-file" not in config.model_dump_json()
    (tmp_path / "empty").write_text("")
    config = validate_config({"loop": {"name": "x"}, "database": {
        "url": "postgresql+psycopg://owner@h/db", "password_file": str(tmp_path / "empty")}})
    from selfloop.errors import ConfigError

    with pytest.raises(ConfigError, match="database.password_file .*empty"):
        config.database_url()


def test_the_migration_strips_secrets_stored_before_it(tmp_path: Path) -> None:
    """A store at revision 0015 holding a config with a password and a token, and an event naming the token."""
    from selfloop.db.engine import make_engine
    from selfloop.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url, create=True)
    upgrade(engine, "0015")
    stored = {"loop": {"name": "old"}, "database": {"url": "postgresql+psycopg://owner:old-pw-1@h/db",
                                                    "reader_url": "postgresql+psycopg://reader:old-pw-2@h/db"},
              "tracking": {"mlflow": {"tracking_uri": "http://u:old-token@h:5000"}}}
    import json

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO loops (name, base_model, config, config_hash, main_metric, seed, status, created_at) "
                          "VALUES ('old', 'tiny', :c, 'x', 'm', 0, 'ready', CURRENT_TIMESTAMP)"), {"c": json.dumps(stored)})
        conn.execute(text("INSERT INTO events (level, kind, message, created_at) VALUES ('warning', 'tracking.failed', "
                          "'mlflow: API request to http://u:old-token@h:5000/api failed', CURRENT_TIMESTAMP)"))
    upgrade(engine, "head")
    with engine.connect() as conn:
        config = json.loads(conn.execute(text("SELECT config FROM loops")).scalar())
        message = conn.execute(text("SELECT message FROM events")).scalar()
    engine.dispose()
    assert config["database"] == {"url": "postgresql+psycopg://owner@h/db", "reader_url": "postgresql+psycopg://reader@h/db"}
    assert config["tracking"]["mlflow"]["tracking_uri"] == "http://h:5000"
    assert "old-token" not in message and message.startswith("mlflow: API request to http://***@h:5000")


# -- the whole path: a loop on PostgreSQL given a password and a token ------------------------------------------
def _everything_stored(url: str) -> str:
    """Every value of every table of the store, as text."""
    engine = create_engine(url)
    out = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            out += [repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    return "\n".join(out)


@pytest.fixture
def owner_with_a_secret(postgres_superuser_url: str) -> tuple[str, str]:
    """A fresh owner role with a random password and its own database: (URL with the password, the password)."""
    password = f"pw-{secrets.token_hex(8)}"
    role, database = f"sl_owner_{uuid.uuid4().hex[:8]}", f"selfloop_s_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_superuser_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}' CREATEROLE")
        conn.exec_driver_sql(f'CREATE DATABASE "{database}" OWNER {role}')
    url = make_url(postgres_superuser_url).set(username=role, password=password, database=database)
    yield url.render_as_string(hide_password=False), password
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}_reader")
        conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
    admin.dispose()


@pytest.mark.postgres
@pytest.mark.integration
def test_a_planted_password_and_token_reach_no_table_page_tracker_event_or_log(
        tmp_path: Path, owner_with_a_secret: tuple[str, str], run_cli) -> None:
    url, password = owner_with_a_secret
    token = f"tok-{secrets.token_hex(8)}"
    log = tmp_path / "selfloop.log"
    # The tracker is a closed port: every request fails, and its failures (which name the URI) become events.
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, logging__file=str(log), tracking={
        "mlflow": {"enabled": True, "tracking_uri": f"http://tracker:{token}@127.0.0.1:9", "timeout_s": 2}})
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    # What a reader sees: the stored config holds the URL without its password, and a tracking.failed event.
    stored = _everything_stored(url)
    assert "tracking.failed" in stored and "owner" in stored
    assert password not in stored and token not in stored
    # The track command's error line, from the stored config and from the file that holds the token.
    failed = [selfloop_cli("track", "tiny", "--to", "mlflow", "--db", url),
              selfloop_cli("track", "tiny", "--to", "mlflow", "--db", url, "--config", str(config))]
    assert all(f.returncode == 1 and "failed" in f.stderr for f in failed), [f.stderr for f in failed]
    # A real MLflow store receives the loop's parameters (the config) through `selfloop track`.
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    working = tiny_yaml(tmp_path, url, name="working.yaml", tracking={"mlflow": {"tracking_uri": mlflow_uri}})
    sent = selfloop_cli("track", "tiny", "--to", "mlflow", "--config", str(working))
    assert sent.returncode == 0, sent.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    [run] = client.search_runs([client.get_experiment_by_name("selfloop").experiment_id])
    params = run.data.params
    assert params["database.url"].startswith("postgresql+psycopg://sl_owner_") and "@" in params["database.url"]
    assert not any(password in v or token in v for v in [*params.values(), *run.data.tags.values()])
    # The dashboard, as a reader (the trial's attacker): every page of the loop, the config page above all.
    from starlette.testclient import TestClient

    from selfloop.ui.app import create_app

    role = make_url(url).username
    code, reader, _ = run_cli("db", "create-reader", "--db", url, "--role", f"{role}_reader")
    reader = reader.strip().splitlines()[-1]
    assert code == 0 and reader.startswith("postgresql+psycopg://")
    client_ui = TestClient(create_app(reader), base_url="http://127.0.0.1:8765")
    pages = [client_ui.get(p) for p in ("/", "/loops/tiny", "/loops/tiny/config", "/loops/tiny/iterations/1",
                                        "/api/loops", "/api/loops/tiny")]
    assert all(p.status_code == 200 for p in pages)
    assert any("postgresql+psycopg://sl_owner_" in p.text for p in pages)  # the page shows the URL, without its password
    # Every output: the log file, every command's stderr, the pages, `selfloop sql` on the config.
    code, shown, _ = run_cli("sql", "--db", reader, "SELECT config->'database'->>'url', config FROM loops")
    assert code == 0 and "sl_owner_" in shown
    for where, text_ in [("log", log.read_text()), ("run stderr", out.stderr), ("sql", shown),
                         *[(f"track stderr {i}", f.stderr) for i, f in enumerate(failed)],
                         *[(f"page {p.url}", p.text) for p in pages]]:
        assert password not in text_ and token not in text_, where
    assert "tracking.failed" in log.read_text()
