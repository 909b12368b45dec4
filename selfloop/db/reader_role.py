"""PostgreSQL's read-only role: the check that refuses a role that could write or reach beyond the database (every
connection that runs a user's SQL passes it; `selfloop.db.create_reader` makes such a role)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from selfloop.errors import ReadOnlyViolation

if TYPE_CHECKING:
    from psycopg import Cursor

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


def check_reader_role(cur: Cursor[Any], role: str) -> None:
    """Refuse a role that could write or reach beyond the database, whatever a statement says."""
    cur.execute(_ROLE_CHECK, {"dangerous": list(_DANGEROUS_ROLES)})
    powerful, dangerous_member, writer = cur.fetchone() or (True, None, None)  # no row: refused as powerful
    why = ("is (or is a member of) a superuser or a role that may create roles, replicate or bypass row security"
           if powerful else
           f"is a member of {dangerous_member}, which may read or write server files, run programs or signal "
           "other sessions" if dangerous_member else
           f"is or can become role {writer}" if writer else None)
    if why:
        raise ReadOnlyViolation(
            f"role {role!r} {why}: user SQL runs only as a read-only role; create one with "
            "`selfloop db create-reader --db URL` and pass its URL (or set database.reader_url)")
