"""`selfloop ui`: a read-only web dashboard over the store (Starlette, Jinja2 templates, Plotly charts).

Read-only three times over: every connection is one that cannot write whatever the statement says
(`selfloop.db.reader_engine`), no route writes, and any method but GET and HEAD is refused
with 405 before it reaches a route. Bound to 127.0.0.1 by default (and then only answers requests
addressed to a loopback name, against DNS rebinding); any other address needs a token
($SELFLOOP_UI_TOKEN), given once as `?token=` (kept in an HttpOnly cookie) or as `Authorization: Bearer`.
All JavaScript is served from here: Plotly from the installed `plotly` package, no CDN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfloop.errors import SelfloopError
from selfloop.hosts import is_loopback
from selfloop.ui.guard import TOKEN_ENV
from selfloop.ui.templating import HERE

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["TOKEN_ENV", "create_app", "serve"]


def create_app(url: str, *, token: str | None = None, statement_timeout_ms: int = 30000) -> Starlette:
    """The dashboard over the store at `url` (opened read-only now: a bad URL or writer role fails here)."""
    from sqlalchemy.orm import sessionmaker
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from selfloop.db.engine import refuse_schema, schema_revision
    from selfloop.db.reader_engine import reader_engine
    from selfloop.plots import plotly_js
    from selfloop.ui.guard import Guard
    from selfloop.ui.routes import api, iterations, labs, loops
    from selfloop.ui.site import Site

    engine = reader_engine(url, timeout_ms=statement_timeout_ms)
    try:
        refuse_schema(url, schema_revision(engine)[0])
    except Exception:
        engine.dispose()
        raise
    site = Site(sessionmaker(engine))

    async def plotly(_request: Request) -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    async def favicon(_request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        *loops.routes(site), *iterations.routes(site), *labs.routes(site),
        Mount("/api", routes=api.routes(site)),
        Route("/static/plotly.min.js", plotly, methods=["GET", "HEAD"]),
        Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, token=token)])
    app.state.engine = engine
    return app


def serve(url: str, host: str = "127.0.0.1", port: int = 8765, *, token: str | None = None,
          statement_timeout_ms: int = 30000) -> None:
    """Run the dashboard until interrupted."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise SelfloopError(f"--host {host}: binding beyond 127.0.0.1 needs a token; set ${TOKEN_ENV} "
                            "(e.g. `export SELFLOOP_UI_TOKEN=$(openssl rand -hex 16)`), or reach it through an SSH tunnel")
    if token is not None and len(token) < 16:
        raise SelfloopError(f"${TOKEN_ENV} is {len(token)} characters: use at least 16 (e.g. `openssl rand -hex 16`)")
    app = create_app(url, token=token, statement_timeout_ms=statement_timeout_ms)
    shown = f"[{host}]" if ":" in host else host
    print(f"selfloop ui: http://{shown}:{port}/ (read-only; Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
