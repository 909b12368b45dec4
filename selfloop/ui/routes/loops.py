"""Pages about loops: the list of loops and labs, one loop, its config, and a comparison of loops."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from selfloop.db.queries import loop_states
from selfloop.ui import views
from selfloop.ui.site import Site

MAX_COMPARED = 8  # loops on one comparison


def compared(request: Request) -> list[str]:
    """The loops named by ?loop=A&loop=B (2 to MAX_COMPARED different ones)."""
    names = list(dict.fromkeys(n for n in request.query_params.getlist("loop") if n))
    if not 2 <= len(names) <= MAX_COMPARED:
        raise ValueError(f"compare: give 2 to {MAX_COMPARED} different loops (?loop=A&loop=B)")
    return names


def routes(site: Site) -> list[BaseRoute]:
    def home(request: Request) -> Response:
        with site.reading() as s:
            states = loop_states(s)
            writers = views.writers(s)
            labs = sorted(views.lab_pieces(s))
        return site.page(request, "loops.html", tree=views.loop_tree(states), states=states, writers=writers, labs=labs)

    def loop(request: Request) -> Response:
        name = request.path_params["name"]
        with site.reading() as s:
            states = loop_states(s)
            state = views.find_state(states, name)
            columns, rows = views.iteration_table(s, name)
            events = views.loop_events(s, name)
        others = [x.name for x in states if x.name != name]
        return site.page(request, "loop.html", state=state, columns=columns, rows=rows, events=events, others=others,
                         charts_url=f"/api/loops/{quote(name)}/charts", charts=None)

    def config(request: Request) -> Response:
        name = request.path_params["name"]
        with site.reading() as s:
            fields = views.config_fields(s, name)
        return site.page(request, "config.html", loop_name=name, config=fields)

    def compare(request: Request) -> Response:
        names = compared(request)
        with site.reading() as s:
            for n in names:
                views.get_loop(s, n)
        query = "&".join(f"loop={quote(n)}" for n in names)
        return site.page(request, "compare.html", names=names, charts_url=f"/api/compare?{query}", charts=None)

    return [site.route("/", home), site.route("/loops/{name}", loop), site.route("/loops/{name}/config", config),
            site.route("/compare", compare)]
