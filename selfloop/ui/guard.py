"""The dashboard's outer layer: refuse writes, check the token and the Host header, add the security headers."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from selfloop.hosts import LOOPBACK_NAMES, host_name

TOKEN_ENV = "SELFLOOP_UI_TOKEN"  # noqa: S105 - the variable's name, not its value
COOKIE = "selfloop_ui_token"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class Guard:
    """ASGI middleware. Without a token the dashboard answers only requests addressed to a loopback name (against
    DNS rebinding); with one, every request must carry it (`?token=` once, then a cookie, or `Authorization: Bearer`)."""

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app, self.token = app, token

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

        if self.token and request.query_params.get("token"):
            # The token given in the address once: keep it in a cookie and drop it from the address bar.
            response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return await response(scope, receive, send_with_headers)
        return await self.app(scope, receive, send_with_headers)

    def refuse(self, request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse(f"{request.method} refused: the dashboard is read-only\n", status_code=405,
                                     headers={"Allow": "GET, HEAD"})
        if not self.token:
            host = host_name(request.headers.get("host") or "")
            if host not in LOOPBACK_NAMES:
                return PlainTextResponse(f"host {host!r} refused: the dashboard answers 127.0.0.1 and localhost\n",
                                         status_code=421)
            return None
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse("a token is required: open the address with ?token=... once "
                                     f"(the value of ${TOKEN_ENV} where `selfloop ui` runs)\n", status_code=401)
        return None
