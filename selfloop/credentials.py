"""Secrets inside URLs: never stored, rendered, sent to a tracker or logged.

A database URL may carry its user's password (`postgresql+psycopg://owner:PW@host/db`) and a tracking URI
its credentials (`http://user:TOKEN@host`). A process may use them as given, but what it keeps or shows goes
through here first: `strip` removes the secret from a URL (what the config snapshot stores, what the
dashboard, `config show` and the trackers see), `redact` masks it in free text (log lines, events, error
lines), and `remember` registers a secret this process has seen, so that `redact` also masks it where it
appears outside a URL (a driver's or a tracker's error message).

Where the secret comes from instead: PostgreSQL's own `PGPASSWORD`, `PGPASSFILE` or `~/.pgpass` (libpq reads
them for a URL without a password), or `database.password_file`; MLflow's `MLFLOW_TRACKING_USERNAME`,
`MLFLOW_TRACKING_PASSWORD` or `MLFLOW_TRACKING_TOKEN`.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry a secret (libpq's `password`, tokens of HTTP APIs).
SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "token", "access_token", "api_key", "apikey", "secret"})
# Schemes whose user name is itself a credential (a token given as `https://TOKEN@host`).
HTTP_SCHEMES = frozenset({"http", "https"})

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/@\s'\"<>]+)@")
_QUERY_SECRET = re.compile(r"(?P<key>(?<![\w-])(?:" + "|".join(sorted(SECRET_PARAMS)) + r")=)(?P<value>[^&\s'\"<>]+)",
                           re.IGNORECASE)

_known: set[str] = set()
_known_lock = threading.Lock()


def _userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(scheme, user, password) of a URL's authority, unquoted as written."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" not in netloc:
        return parts.scheme, None, None
    info = netloc.rpartition("@")[0]
    user, sep, password = info.partition(":")
    return parts.scheme, user, password if sep else None


def secrets_of(url: str) -> list[str]:
    """The secrets a URL carries: its password, an HTTP URL's user name (a token), secret query values."""
    try:
        scheme, user, password = _userinfo(url)
        query = urlsplit(url).query
    except ValueError:
        return []
    found = [password] if password else []
    if user and scheme.split("+")[0].lower() in HTTP_SCHEMES:
        found.append(user)
    found += [v for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() in SECRET_PARAMS and v]
    return found


def remember(url: str | None) -> None:
    """Register the secrets of a URL this process uses, so that `redact` masks them in any text."""
    if not url:
        return
    with _known_lock:
        for secret in secrets_of(url):
            _known.update(s for s in (secret, unquote(secret)) if len(s) >= 3)


def strip(url: str) -> str:
    """The URL without its secrets: a database URL keeps its user name and loses its password; an HTTP URL loses
    its whole user part; secret query parameters are removed. Anything that does not parse is masked whole."""
    try:
        parts = urlsplit(url)
        scheme, user, password = _userinfo(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        host = netloc.rpartition("@")[2]
        keep_user = user and scheme.split("+")[0].lower() not in HTTP_SCHEMES
        netloc = f"{user}@{host}" if keep_user else host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, v) for k, v in pairs if k.lower() not in SECRET_PARAMS], safe="/:,")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def strip_optional(url: str | None) -> str | None:
    return None if url is None else strip(url)


def _mask_userinfo(m: re.Match[str]) -> str:
    scheme, info = m.group("scheme"), m.group("userinfo")
    user, sep, _ = info.partition(":")
    if scheme.split("+")[0].lower().rstrip(":/") in HTTP_SCHEMES:
        return f"{scheme}{MASK}@"
    return f"{scheme}{user}:{MASK}@" if sep else m.group(0)


def redact(text: str) -> str:
    """`text` with every URL's password (an HTTP URL's whole user part), secret query values and every secret
    `remember`ed by this process replaced by ***."""
    if not text:
        return text
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    text = _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, text)
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def with_password_file(url: str, path: Path) -> str:
    """`url` with the password read from `path` (its first line), unless the URL carries one already."""
    from sqlalchemy.engine import make_url

    from selfloop.errors import ConfigError

    parsed = make_url(url)
    if parsed.password is not None or parsed.get_backend_name() == "sqlite":
        return url
    try:
        with open(path, encoding="utf-8") as handle:
            password = handle.read(4096).splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        reason = "it is empty" if isinstance(exc, IndexError) else getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"database.password_file {str(path)!r}: cannot read a password ({reason})") from None
    if not password:
        raise ConfigError(f"database.password_file {str(path)!r}: the first line is empty")
    with _known_lock:
        _known.add(password)
    return parsed.set(password=password).render_as_string(hide_password=False)


def redact_exception(exc: BaseException) -> BaseException:
    """`exc` with its secrets masked in its message (its args, and those of the exceptions it was raised from),
    for a traceback that is printed or logged. Exceptions whose message is not their args are left as they are."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        except (AttributeError, TypeError):
            pass
        current = current.__cause__ or current.__context__
    return exc
