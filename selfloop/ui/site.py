"""What every dashboard route shares: a read-only session per request, the templates, the error pages, and the
parsing of query and path parameters (a bad one is a 400 naming it, a row that cannot exist a 404)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from selfloop.errors import SelfloopError
from selfloop.ui.templating import templates

REFRESH_MS = 3000  # how often open pages poll for live progress
MAX_ROW_ID = 2**63 - 1  # the largest id or number a row can have

Handler = Callable[[Request], Response]


class Site:
    """The store's sessions and the templates, handed to each page family's routes."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory, self.env = factory, templates()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        # Closing the session ends its (read-only) transaction; loaded rows stay readable by the template.
        with self.factory() as session:
            yield session

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(request=request, refresh_ms=REFRESH_MS, static="/static",
                                                      live=True, **context)
        return HTMLResponse(body, status_code=status)

    def error(self, request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return self.page(request, "error.html", status=status, message=message)

    def route(self, path: str, handler: Handler) -> Route:
        """A GET route whose blocking handler runs in the thread pool: a bad parameter is 400, a missing row 404."""
        async def endpoint(request: Request) -> Response:
            try:
                return await run_in_threadpool(handler, request)
            except (ValueError, SelfloopError) as exc:
                return self.error(request, 400, str(exc))
            except LookupError as exc:
                return self.error(request, 404, str(exc))
            except Exception as exc:  # noqa: BLE001 - logged here, one line to the browser
                from loguru import logger

                logger.opt(exception=exc).error("ui: {} {} failed", request.method, request.url.path)
                return self.error(request, 500, f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

        return Route(path, endpoint, methods=["GET", "HEAD"])


def integer(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"missing query parameter {name!r}")
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise ValueError(f"{name}={raw!r}: expected a positive whole number")
    return int(raw)


def path_int(request: Request, name: str) -> int:
    """An {x:int} path parameter; one beyond 64 bits names no row (the database could not even compare it)."""
    value: int = request.path_params[name]
    if value > MAX_ROW_ID:
        raise LookupError(f"no {name} {value}")
    return value


def choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name) or None
    if raw is not None and raw not in allowed:
        raise ValueError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
    return raw
