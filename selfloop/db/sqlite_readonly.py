"""SQLite connections that cannot write, whatever a statement says: the file opened read-only (`mode=ro`) with
`PRAGMA query_only`, an authorizer that allows reading tables, the functions in `SQLITE_FUNCTIONS` and the reading
pragmas and refuses everything else (writes, ATTACH and so VACUUM INTO, transactions, unknown functions such as
fts3_tokenizer or load_extension), bounded value and statement sizes, and a deadline checked by a progress
handler. User SQL (`selfloop.db.user_sql`) and the readers' engines (`selfloop.db.reader_engine`) use them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from selfloop.db.engine import read_only_uri
from selfloop.errors import SelfloopError

MAX_VALUE_BYTES = 16 * 1024 * 1024  # the largest string or blob a statement may build (SQLite)
MAX_SQL_BYTES = 1024 * 1024  # the longest statement

# PRAGMAs that only read; those in the second set take an argument (a table or index name).
_READ_PRAGMAS = {
    "table_list", "database_list", "user_version", "schema_version", "application_id", "page_count",
    "page_size", "freelist_count", "journal_mode", "integrity_check", "quick_check", "compile_options",
    "function_list", "pragma_list", "collation_list", "module_list", "encoding", "foreign_keys", "busy_timeout",
    "read_uncommitted",  # SQLAlchemy reads it to learn the isolation level
}
_READ_PRAGMAS_WITH_ARGUMENT = {
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "foreign_key_check", "integrity_check", "quick_check",
}

# The SQL functions a reading statement may call: SQLite's core, aggregate, window, date, math and
# JSON functions. Anything else (fts3_tokenizer, load_extension, functions of extensions) is refused.
SQLITE_FUNCTIONS = frozenset("""
    abs char coalesce concat concat_ws format glob hex ifnull iif instr length like likelihood likely lower
    ltrim max min nullif octet_length printf quote random randomblob replace round rtrim sign soundex
    sqlite_version substr substring trim typeof unhex unicode unlikely upper zeroblob
    avg count group_concat string_agg sum total median
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
    date time datetime julianday unixepoch strftime timediff
    acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi pow
    power radians sin sinh sqrt tan tanh trunc
    json json_array json_array_length json_extract json_insert json_object json_patch json_remove json_replace
    json_set json_type json_valid json_quote json_group_array json_group_object json_each json_tree
    jsonb jsonb_array jsonb_extract jsonb_insert jsonb_object jsonb_patch jsonb_remove jsonb_replace jsonb_set
    jsonb_group_array jsonb_group_object json_error_position json_pretty
""".split())

_ACTION_NAMES = {getattr(sqlite3, name): name.removeprefix("SQLITE_").replace("_", " ") for name in (
    "SQLITE_CREATE_INDEX", "SQLITE_CREATE_TABLE", "SQLITE_CREATE_TEMP_INDEX", "SQLITE_CREATE_TEMP_TABLE",
    "SQLITE_CREATE_TEMP_TRIGGER", "SQLITE_CREATE_TEMP_VIEW", "SQLITE_CREATE_TRIGGER", "SQLITE_CREATE_VIEW",
    "SQLITE_DELETE", "SQLITE_DROP_INDEX", "SQLITE_DROP_TABLE", "SQLITE_DROP_TEMP_INDEX", "SQLITE_DROP_TEMP_TABLE",
    "SQLITE_DROP_TEMP_TRIGGER", "SQLITE_DROP_TEMP_VIEW", "SQLITE_DROP_TRIGGER", "SQLITE_DROP_VIEW",
    "SQLITE_INSERT", "SQLITE_PRAGMA", "SQLITE_READ", "SQLITE_SELECT", "SQLITE_TRANSACTION", "SQLITE_UPDATE",
    "SQLITE_ATTACH", "SQLITE_DETACH", "SQLITE_ALTER_TABLE", "SQLITE_REINDEX", "SQLITE_ANALYZE",
    "SQLITE_CREATE_VTABLE", "SQLITE_DROP_VTABLE", "SQLITE_FUNCTION", "SQLITE_SAVEPOINT", "SQLITE_RECURSIVE",
)}


class Authorizer:
    """Allows reading; remembers the first refused action so the error can name it."""

    def __init__(self) -> None:
        self.refused: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in SQLITE_FUNCTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if (arg2 is None and name in _READ_PRAGMAS) or (arg2 is not None and name in _READ_PRAGMAS_WITH_ARGUMENT):
                return sqlite3.SQLITE_OK
        # Building a table-valued function (pragma_table_info, json_each) asks for these; the file is
        # opened read-only with query_only, so no change to the schema table can happen.
        if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
            return sqlite3.SQLITE_OK
        if self.refused is None:
            if arg1 in ("sqlite_master", "sqlite_temp_master"):  # SQLite's bookkeeping of a CREATE, DROP or ALTER
                self.refused = "a schema change"
            else:
                what = _ACTION_NAMES.get(action, f"action {action}")
                self.refused = f"{what} {arg2 if action == sqlite3.SQLITE_FUNCTION else arg1 or ''}".strip()
        return sqlite3.SQLITE_DENY


def _hard_heap_limit() -> Callable[[int], int] | None:  # a ctypes function
    """sqlite3_hard_heap_limit64 of the SQLite library Python's sqlite3 module uses (looked up through the
    module's own shared object, which links it or holds it), or None."""
    import _sqlite3
    import ctypes

    try:
        function = ctypes.CDLL(_sqlite3.__file__).sqlite3_hard_heap_limit64
    except (OSError, AttributeError):
        return None
    function.restype, function.argtypes = ctypes.c_int64, [ctypes.c_int64]
    return function


class ReadOnlyConnection(sqlite3.Connection):
    """A connection whose progress handler stops a statement once `deadline` (monotonic) has passed."""

    deadline = float("inf")

    def set_heap_limit(self, limit: int) -> int | None:
        """Set SQLite's hard heap limit (process-wide; 0: none) and return the one before, or None where it
        cannot be set (it is then left alone). Through sqlite3_hard_heap_limit64 itself: the pragma of the same
        name can only lower it, so it could never be put back."""
        set_limit = _hard_heap_limit()
        return None if set_limit is None else int(set_limit(int(limit)))


def connect_sqlite_readonly(path: Path, busy_timeout_s: float) -> tuple[ReadOnlyConnection, Authorizer]:
    """A connection to `path` that cannot write: opened `mode=ro` with `query_only`, bounded value and
    statement sizes, no ATTACH, and the authorizer; set `.deadline` before each statement."""
    if not path.exists():
        raise SelfloopError(f"no database at {path}")
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=busy_timeout_s, isolation_level=None,
                               factory=ReadOnlyConnection, check_same_thread=False)
    except sqlite3.Error as exc:
        raise SelfloopError(f"cannot open {path} read-only: {exc}") from None
    authorizer = Authorizer()
    conn.execute("PRAGMA query_only = ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(authorizer)
    conn.set_progress_handler(lambda: int(time.monotonic() > conn.deadline), 10_000)  # nonzero ends the statement
    return conn, authorizer
