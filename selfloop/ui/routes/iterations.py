"""Pages inside an iteration: the iteration (prompts, suites, rewards, curation), its held-out answers, a prompt."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from selfloop.ui import views
from selfloop.ui.site import Site, choice, integer, path_int


def routes(site: Site) -> list[BaseRoute]:
    def iteration(request: Request) -> Response:
        name, number = request.path_params["name"], path_int(request, "number")
        source = choice(request, "source", ("task", "self_instruct"))
        with site.reading() as s:
            loop = views.get_loop(s, name)
            it = views.get_iteration(s, loop, number)
            prompts = views.iteration_prompts(s, it, source, integer(request, "page", 1))
            suites = views.eval_suites(s, it)
            rewards = views.reward_summary(s, it)
            judged = views.judges_with_llm(s, [name])
            curation = views.curation_steps(s, it)
        return site.page(request, "iteration.html", loop_name=name, iteration=it, prompts=prompts, suites=suites,
                         source=source, rewards=rewards, judged=judged, curation=curation)

    def evals(request: Request) -> Response:
        name, number = request.path_params["name"], path_int(request, "number")
        suite = request.query_params.get("suite") or ""
        role = choice(request, "role", ("candidate", "baseline")) or "candidate"
        outcome = choice(request, "outcome", tuple(views.OUTCOMES))
        with site.reading() as s:
            loop = views.get_loop(s, name)
            it = views.get_iteration(s, loop, number)
            suites = views.eval_suites(s, it)
            if suite not in {x.suite for x in suites}:
                raise LookupError(f"iteration {number} of {name!r} has no held-out suite {suite!r}")
            items = views.eval_items(s, it, suite, role, outcome, integer(request, "page", 1))
        return site.page(request, "evals.html", loop_name=name, iteration=it, suite=suite, role=role, outcome=outcome,
                         items=items, suites=suites)

    def prompt(request: Request) -> Response:
        with site.reading() as s:
            detail = views.prompt_detail(s, path_int(request, "id"), integer(request, "page", 1))
        return site.page(request, "prompt.html", d=detail)

    return [site.route("/loops/{name}/iterations/{number:int}", iteration),
            site.route("/loops/{name}/iterations/{number:int}/evals", evals),
            site.route("/prompts/{id:int}", prompt)]
