"""`selfloop ui`: a read-only web dashboard over the store (Starlette, Jinja2 templates, Plotly charts).

Read-only three times over: every connection is one that cannot write whatever the statement says
(`selfloop.db.reader_engine`), no route writes, and any method but GET and HEAD is refused
with 405 before it reaches a route. Bound to 127.0.0.1 by default (and then only answers requests
addressed to a loopback name, against DNS rebinding); any other address needs a token
($SELFLOOP_UI_TOKEN), given once as `?token=` (kept in an HttpOnly cookie) or as `Authorization: Bearer`.
All JavaScript is served from here: Plotly from the installed `plotly` package, no CDN.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy.orm import sessionmaker

from selfloop.errors import SelfloopError
from selfloop.hosts import LOOPBACK_NAMES, host_name, is_loopback
from selfloop.plots import lab_figures, plotly_js

if TYPE_CHECKING:
    from jinja2 import Environment
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

HERE = Path(__file__).resolve().parent
TOKEN_ENV = "SELFLOOP_UI_TOKEN"  # noqa: S105 - the variable's name, not its value
COOKIE = "selfloop_ui_token"
REFRESH_MS = 3000  # how often open pages poll for live progress
MAX_COMPARED = 8  # loops on one comparison
MAX_ROW_ID = 2**63 - 1  # the largest id or number a row can have
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def templates() -> Environment:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from selfloop.render import cell_text

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["cell"] = lambda v: cell_text(v, None)
    env.filters["short"] = lambda v, n=160: cell_text(v, n)
    env.filters["num"] = lambda v, fmt="{:.3f}": "" if v is None else fmt.format(v)
    return env


def create_app(url: str, *, token: str | None = None, statement_timeout_ms: int = 30000) -> Starlette:
    """The dashboard over the store at `url` (opened read-only now: a bad URL or writer role fails here)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from selfloop.db.engine import refuse_schema, schema_revision
    from selfloop.db.queries import loop_states
    from selfloop.db.reader_engine import reader_engine
    from selfloop.ui import views
    from selfloop.ui.charts import loop_charts

    engine = reader_engine(url, timeout_ms=statement_timeout_ms)
    try:
        refuse_schema(url, schema_revision(engine)[0])
    except Exception:
        engine.dispose()
        raise
    factory = sessionmaker(engine)
    env = templates()

    @contextmanager
    def reading() -> Any:
        # Closing the session ends its (read-only) transaction; loaded rows stay readable by the template.
        with factory() as session:
            yield session

    def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = env.get_template(template).render(request=request, refresh_ms=REFRESH_MS, static="/static",
                                                 live=True, **context)
        return HTMLResponse(body, status_code=status)

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
        value = request.path_params[name]
        if value > MAX_ROW_ID:
            raise LookupError(f"no {name} {value}")
        return value

    def choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
        raw = request.query_params.get(name) or None
        if raw is not None and raw not in allowed:
            raise ValueError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
        return raw

    # -- pages --------------------------------------------------------------------------------------
    def _home(request: Request) -> Response:
        with reading() as s:
            states = loop_states(s)
            writers = views.writers(s)
            labs = sorted(views.lab_pieces(s))
        return page(request, "loops.html", tree=views.loop_tree(states), states=states, writers=writers, labs=labs)

    def _loop(request: Request) -> Response:
        name = request.path_params["name"]
        with reading() as s:
            states = loop_states(s)
            state = views.find_state(states, name)
            columns, rows = views.iteration_table(s, name)
            events = views.loop_events(s, name)
        others = [x.name for x in states if x.name != name]
        return page(request, "loop.html", state=state, columns=columns, rows=rows, events=events, others=others,
                    charts_url=f"/api/loops/{quote(name)}/charts", charts=None)

    def _config(request: Request) -> Response:
        name = request.path_params["name"]
        with reading() as s:
            config = views.config_fields(s, name)
        return page(request, "config.html", loop_name=name, config=config)

    def compared(request: Request) -> list[str]:
        names = list(dict.fromkeys(n for n in request.query_params.getlist("loop") if n))
        if not 2 <= len(names) <= MAX_COMPARED:
            raise ValueError(f"compare: give 2 to {MAX_COMPARED} different loops (?loop=A&loop=B)")
        return names

    def _compare(request: Request) -> Response:
        names = compared(request)
        with reading() as s:
            for n in names:
                views.get_loop(s, n)
        query = "&".join(f"loop={quote(n)}" for n in names)
        return page(request, "compare.html", names=names, charts_url=f"/api/compare?{query}", charts=None)

    def _iteration(request: Request) -> Response:
        name, number = request.path_params["name"], path_int(request, "number")
        source = choice(request, "source", ("task", "self_instruct"))
        with reading() as s:
            loop = views.get_loop(s, name)
            it = views.get_iteration(s, loop, number)
            prompts = views.iteration_prompts(s, it, source, integer(request, "page", 1))
            suites = views.eval_suites(s, it)
            rewards = views.reward_summary(s, it)
            judged = views.judges_with_llm(s, [name])
            curation = views.curation_steps(s, it)
        return page(request, "iteration.html", loop_name=name, iteration=it, prompts=prompts, suites=suites, source=source,
                    rewards=rewards, judged=judged, curation=curation)

    def _lab(request: Request) -> Response:
        name = request.path_params["name"]
        with reading() as s:
            try:
                result = views.lab_comparison(s, name)
            except LookupError as exc:
                return _error(request, 404, str(exc))
        return page(request, "lab.html", name=name, result=result, charts=lab_figures(result))

    def _prompt(request: Request) -> Response:
        with reading() as s:
            detail = views.prompt_detail(s, path_int(request, "id"), integer(request, "page", 1))
        return page(request, "prompt.html", d=detail)

    def _evals(request: Request) -> Response:
        name, number = request.path_params["name"], path_int(request, "number")
        suite = request.query_params.get("suite") or ""
        role = choice(request, "role", ("candidate", "baseline")) or "candidate"
        outcome = choice(request, "outcome", tuple(views.OUTCOMES))
        with reading() as s:
            loop = views.get_loop(s, name)
            it = views.get_iteration(s, loop, number)
            suites = views.eval_suites(s, it)
            if suite not in {x.suite for x in suites}:
                raise LookupError(f"iteration {number} of {name!r} has no held-out suite {suite!r}")
            items = views.eval_items(s, it, suite, role, outcome, integer(request, "page", 1))
        return page(request, "evals.html", loop_name=name, iteration=it, suite=suite, role=role, outcome=outcome,
                    items=items, suites=suites)

    # -- JSON for the pages' live parts -----------------------------------------------------------
    def _api_loops(request: Request) -> Response:
        with reading() as s:
            writers = views.writers(s)
            return JSONResponse([{**views.state_json(x), "writer": writers.get(x.name, "")} for x in loop_states(s)])

    def _api_state(request: Request) -> Response:
        with reading() as s:
            return JSONResponse(views.state_json(views.find_state(loop_states(s), request.path_params["name"])))

    def _api_charts(request: Request) -> Response:
        name = request.path_params["name"]
        with reading() as s:
            charts = loop_charts(views.loop_segments(s, name), views.judges_with_llm(s, [name]))
        return JSONResponse(charts)

    def _api_compare(request: Request) -> Response:
        names = compared(request)
        with reading() as s:
            charts = loop_charts(views.compared_segments(s, names), views.judges_with_llm(s, names), compare=True)
        return JSONResponse(charts)

    async def _sync(request: Request, handler: Callable[..., Response]) -> Response:
        """Run a blocking handler in the thread pool; a bad parameter is 400, a missing row 404."""
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(handler, request)
        except (ValueError, SelfloopError) as exc:
            return _error(request, 400, str(exc))
        except LookupError as exc:
            return _error(request, 404, str(exc))
        except Exception as exc:  # noqa: BLE001 - logged here, one line to the browser
            from loguru import logger

            logger.opt(exception=exc).error("ui: {} {} failed", request.method, request.url.path)
            return _error(request, 500, f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def _error(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return page(request, "error.html", status=status, message=message)

    def route(path: str, handler: Callable[..., Response]) -> Route:
        async def endpoint(request: Request) -> Response:
            return await _sync(request, handler)

        return Route(path, endpoint, methods=["GET", "HEAD"])

    async def plotly(_request: Request) -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    async def favicon(_request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        route("/", _home),
        route("/loops/{name}", _loop),
        route("/loops/{name}/config", _config),
        route("/compare", _compare),
        route("/loops/{name}/iterations/{number:int}", _iteration),
        route("/loops/{name}/iterations/{number:int}/evals", _evals),
        route("/prompts/{id:int}", _prompt),
        route("/labs/{name}", _lab),
        route("/api/loops", _api_loops),
        route("/api/loops/{name}", _api_state),
        route("/api/loops/{name}/charts", _api_charts),
        route("/api/compare", _api_compare),
        Route("/static/plotly.min.js", plotly, methods=["GET", "HEAD"]),
        Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    class Guard:
        """Refuse writes, check the token and the Host header, add the security headers."""

        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            request = Request(scope)
            refusal = self.refuse(request)
            if refusal is not None:
                return await refusal(scope, receive, send)

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = message.setdefault("headers", [])
                    headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                                (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
                await send(message)

            if token and request.query_params.get("token"):
                # The token given in the address once: keep it in a cookie and drop it from the address bar.
                response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return await response(scope, receive, send_with_headers)
            return await self.app(scope, receive, send_with_headers)

        def refuse(self, request: Request) -> Response | None:
            if request.method not in ("GET", "HEAD"):
                return PlainTextResponse(f"{request.method} refused: the dashboard is read-only\n", status_code=405,
                                         headers={"Allow": "GET, HEAD"})
            if loopback_only:
                host = host_name(request.headers.get("host") or "")
                if host not in LOOPBACK_NAMES:
                    return PlainTextResponse(f"host {host!r} refused: the dashboard answers 127.0.0.1 and localhost\n",
                                             status_code=421)
            if token:
                given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
                auth = request.headers.get("authorization") or ""
                if auth.lower().startswith("bearer "):
                    given = auth[7:].strip()
                if not hmac.compare_digest(given.encode(), token.encode()):
                    return PlainTextResponse("a token is required: open the address with ?token=... once "
                                             f"(the value of ${TOKEN_ENV} where `selfloop ui` runs)\n", status_code=401)
            return None

    loopback_only = not token
    app = Starlette(routes=routes, middleware=[Middleware(Guard)])
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
