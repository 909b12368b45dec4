"""`selfloop db create-reader`: a PostgreSQL role that may read selfloop's tables and nothing else (SELECT on the
tables and views, `default_transaction_read_only`, a statement timeout), logged in once to prove it passes the
reader check (`selfloop.db.reader_role`)."""

from __future__ import annotations

import re
import secrets

from selfloop.db.engine import normalise_url
from selfloop.db.user_sql import run_readonly
from selfloop.errors import SelfloopError

READER_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def create_reader(admin_url: str, role: str = "selfloop_reader", statement_timeout_ms: int = 30000) -> str:
    """Create (or reset) a PostgreSQL role that can only read this database; return its URL.

    The role may log in and SELECT the tables and views of the public schema (including tables later
    migrations create, through default privileges of the role running this) and nothing else; its
    transactions are read-only by default and its statements time out. Run it with the role that owns
    the schema (the one `selfloop db upgrade` used); that role needs CREATEROLE. Running it again
    gives the role a new password.
    """
    import psycopg
    from psycopg import sql as pgsql

    if not READER_ROLE.fullmatch(role):
        raise SelfloopError(f"--role {role!r}: use 1-63 lowercase letters, digits or '_', not starting with a digit")
    parsed = normalise_url(admin_url)
    if parsed.get_backend_name() != "postgresql":
        raise SelfloopError("create-reader is for PostgreSQL; an SQLite database is opened read-only by `selfloop sql` itself")
    password = secrets.token_urlsafe(24)
    ident = pgsql.Identifier(role)
    conn = psycopg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True)
    try:
        with conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cur.fetchone():  # reset: only a superuser may name SUPERUSER, REPLICATION or BYPASSRLS in ALTER ROLE;
                # the login check below refuses a role that has any of them
                cur.execute(pgsql.SQL("ALTER ROLE {} LOGIN NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD {}")
                            .format(ident, pgsql.Literal(password)))
            else:
                cur.execute(pgsql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                                      "NOBYPASSRLS NOINHERIT PASSWORD {}").format(ident, pgsql.Literal(password)))
            for setting, value in (("default_transaction_read_only", "on"),
                                   ("statement_timeout", str(int(statement_timeout_ms))),
                                   ("idle_in_transaction_session_timeout", "60000")):
                cur.execute(pgsql.SQL("ALTER ROLE {} SET {} = {}").format(ident, pgsql.Identifier(setting), pgsql.Literal(value)))
            database = pgsql.Identifier(parsed.database or "")
            cur.execute(pgsql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, ident))
            cur.execute(pgsql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
            cur.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident))
            cur.execute(pgsql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(ident))
    except psycopg.Error as exc:
        raise SelfloopError(f"create-reader failed: {str(exc).strip().splitlines()[0]} (the --db role needs "
                            "CREATEROLE and must own selfloop's tables)") from None
    finally:
        conn.close()
    url = parsed.set(username=role, password=password).render_as_string(hide_password=False)
    run_readonly(url, "SELECT 1")  # log in as the new role: it connects and passes the reader check
    return url
