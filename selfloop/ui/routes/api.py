"""The JSON the pages poll for their live parts: loop states and charts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from selfloop.db.queries import loop_states
from selfloop.ui import views
from selfloop.ui.charts import loop_charts
from selfloop.ui.routes.loops import compared
from selfloop.ui.site import Site


def routes(site: Site) -> list[BaseRoute]:
    def loops(request: Request) -> Response:
        with site.reading() as s:
            writers = views.writers(s)
            return JSONResponse([{**views.state_json(x), "writer": writers.get(x.name, "")} for x in loop_states(s)])

    def state(request: Request) -> Response:
        with site.reading() as s:
            return JSONResponse(views.state_json(views.find_state(loop_states(s), request.path_params["name"])))

    def charts(request: Request) -> Response:
        name = request.path_params["name"]
        with site.reading() as s:
            found = loop_charts(views.loop_segments(s, name), views.judges_with_llm(s, [name]))
        return JSONResponse(found)

    def compare(request: Request) -> Response:
        names = compared(request)
        with site.reading() as s:
            found = loop_charts(views.compared_segments(s, names), views.judges_with_llm(s, names), compare=True)
        return JSONResponse(found)

    return [site.route("/loops", loops), site.route("/loops/{name}", state), site.route("/loops/{name}/charts", charts),
            site.route("/compare", compare)]
