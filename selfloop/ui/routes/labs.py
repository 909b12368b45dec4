"""A lab's page: each piece's arms against their controls, with the lab's charts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from selfloop.plots import lab_figures
from selfloop.ui import views
from selfloop.ui.site import Site


def routes(site: Site) -> list[BaseRoute]:
    def lab(request: Request) -> Response:
        name = request.path_params["name"]
        with site.reading() as s:
            result = views.lab_comparison(s, name)  # LookupError: no such lab, a 404
        return site.page(request, "lab.html", name=name, result=result, charts=lab_figures(result))

    return [site.route("/labs/{name}", lab)]
