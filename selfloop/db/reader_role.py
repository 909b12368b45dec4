"""PostgreSQL's read-only role: the check that refuses a role that could write or reach beyond the database, and
`selfloop db create-reader`, which makes one (SELECT on the tables and views and nothing else,
`default_transaction_read_only`, a statement timeout)."""

from __future__ import annotations

import re
import secrets

from selfloop.db.engine import normalise_url
from selfloop.errors import ReadOnlyViolation, SelfloopError

# Membership in these lets a role read or write server files, run programs or signal other sessions.
_DANGEROUS_ROLES = ("pg_write_server_files", "pg_read_server_files", "pg_execute_server_program", "pg_signal_backend")

# Membership of any kind counts ('MEMBER', not 'USAGE'): a NOINHERIT member, as `create-reader` makes, has
# none of the role's privileges until it runs SET ROLE, and any statement can run set_config('role', ...).
_ROLE_CHECK = """
WITH member_of AS (
  SELECT m.oid, m.rolname, m.rolsuper OR m.rolcreaterole OR m.rolreplication OR m.rolbypassrls AS powerful
  FROM pg_roles m WHERE pg_has_role(current_user, m.oid, 'MEMBER')
), writable AS (
  SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg_toast%%'
)
SELECT EXISTS (SELECT 1 FROM member_of WHERE powerful) AS powerful,
       (SELECT min(rolname) FROM member_of WHERE rolname = ANY(%(dangerous)s)) AS dangerous_member,
       (SELECT min(m.rolname || ' (it can write ' || w.relname || ')') FROM member_of m JOIN writable w
         ON has_table_privilege(m.oid, w.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) AS writer
"""


def check_reader_role(cur, role: str) -> None:  # noqa: ANN001
    """Refuse a role that could write or reach beyond the database, whatever a statement says."""
    cur.execute(_ROLE_CHECK, {"dangerous": list(_DANGEROUS_ROLES)})
    powerful, dangerous_member, writer = cur.fetchone()
    why = ("is (or is a member of) a superuser or a role that may create roles, replicate or bypass row security"
           if powerful else
           f"is a member of {dangerous_member}, which may read or write server files, run programs or signal "
           "other sessions" if dangerous_member else
           f"is or can become role {writer}" if writer else None)
    if why:
        raise ReadOnlyViolation(
            f"role {role!r} {why}: user SQL runs only as a read-only role; create one with "
            "`selfloop db create-reader --db URL` and pass its URL (or set database.reader_url)")


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
            database = pgsql.Identifier(parsed.database)
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
    from selfloop.db.user_sql import run_readonly

    run_readonly(url, "SELECT 1")  # log in as the new role: it connects and passes the reader check
    return url
