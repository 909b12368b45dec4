"""What the dashboard and the static report show: the pages' composition (the loop tree, the iteration table,
the config view, the lab comparison) over the query functions of `selfloop.db.dashboard`.

Each function takes a session (the caller owns it; the dashboard's are read-only) and returns plain data for the
templates and `selfloop.ui.charts`; no SQL is written here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from selfloop.db.curation import curation_summary
from selfloop.db.dashboard import (
    OUTCOMES,
    PAGE_SIZE,
    Page,
    compared_segments,
    eval_items,
    eval_suites,
    get_iteration,
    get_loop,
    iteration_prompts,
    lab_pieces,
    loop_configs,
    loop_events,
    loop_segments,
    loop_snapshot,
    parent_loop,
    prompt_detail,
    reward_summary,
)
from selfloop.db.models import Iteration
from selfloop.db.queries import LoopState, iteration_summary, loop_writers, metrics_of
from selfloop.render import select_columns

# The page queries live in selfloop.db.dashboard; the routes reach them through this module, with the composition.
__all__ = ["OUTCOMES", "PAGE_SIZE", "Page", "compared_segments", "eval_items", "eval_suites", "get_iteration",
           "get_loop", "iteration_prompts", "lab_pieces", "loop_events", "loop_segments", "prompt_detail",
           "reward_summary"]


# -- loops ----------------------------------------------------------------------------------------
@dataclass
class TreeNode:
    state: LoopState
    children: list[TreeNode] = field(default_factory=list)


def loop_tree(states: list[LoopState]) -> list[TreeNode]:
    """Roots in name order, each fork under its parent, ordered by fork iteration then name."""
    nodes = {s.name: TreeNode(s) for s in states}
    roots: list[TreeNode] = []
    for s in sorted(states, key=lambda s: (s.parent_iteration or 0, s.name)):
        (nodes[s.parent].children if s.parent in nodes else roots).append(nodes[s.name])
    return sorted(roots, key=lambda n: n.state.name)


def state_json(state: LoopState) -> dict[str, Any]:
    return {**asdict(state), "progress": state.progress}


def judges_with_llm(session: Session, names: list[str]) -> bool:
    """Whether any of these loops' configs has the LLM judge among its signals (else no judge-score chart)."""
    from selfloop.config import stored_config

    return any("llm_judge" in stored_config(snapshot, name).judge.signals for name, snapshot in loop_configs(session, names))


def writers(session: Session) -> dict[str, str]:
    """Who runs each loop now (`queries.loop_writers`), by loop name: "daemon pid 12 on host"."""
    return {loop: f"{kind} pid {pid} on {host}" for loop, kind, pid, host, _ in loop_writers(session)}


def find_state(states: list[LoopState], name: str) -> LoopState:
    for state in states:
        if state.name == name:
            return state
    raise LookupError(f"no loop named {name!r}")


# -- a loop's table -------------------------------------------------------------------------------
TABLE_COLUMNS = ("iteration", "status", "phase", "prompts", "samples", "mean_judge_score", "vote_share",
                 "label_accuracy", "mean_response_tokens", "train_loss", "baseline_metric", "main_metric",
                 "promoted", "warnings", "finished_at")
JUDGE_COLUMNS = ("mean_judge_score", "judge_auc", "judge_pair_accuracy")


def iteration_table(session: Session, name: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The `iteration_summary` view (what `selfloop history` prints), the columns that fit a page; a loop without an
    LLM judge shows no judge column (one with a judge does, even where no score parsed: that is news)."""
    columns, rows = iteration_summary(session, name)
    keep = [c for c in TABLE_COLUMNS if c in columns and (c not in JUDGE_COLUMNS or judges_with_llm(session, [name]))]
    return select_columns(columns, rows, ",".join(keep))


# -- an iteration's curation ----------------------------------------------------------------------
@dataclass
class CurationStep:
    filter: str
    seen: int
    kept: int
    seconds: float | None


def curation_steps(session: Session, iteration: Iteration) -> list[CurationStep]:
    """What each curate filter of the iteration saw, kept and cost, in the order they ran."""
    seconds = metrics_of(session, iteration.id, "curate.")
    return [CurationStep(name, seen, kept, seconds.get(f"curate.{name}.seconds"))
            for name, seen, kept in curation_summary(session, iteration.id)]


# -- a loop's config ------------------------------------------------------------------------------
@dataclass
class ConfigField:
    key: str  # section.field
    value: Any
    default: bool  # the value is the default
    parent: Any = None  # a fork's parent's value, where it differs


@dataclass
class ConfigView:
    fields: list[ConfigField]  # non-default first, then the defaults; the models' order within each
    parent: str | None = None  # a fork's parent
    changed: list[ConfigField] = field(default_factory=list)  # a fork's differences from its parent

    @property
    def set(self) -> list[ConfigField]:
        return [f for f in self.fields if not f.default]

    @property
    def defaults(self) -> list[ConfigField]:
        return [f for f in self.fields if f.default]


# What every loop holds differently and says nothing about a fork's choices.
NOT_A_CHOICE = ("loop.name", "database.", "loop.state_dir")


def config_fields(session: Session, name: str) -> ConfigView:
    """A loop's stored config, validated (a field added since the loop was stored shows its default): the fields
    set to other values than the defaults first, then the defaults, and a fork's differences from its parent."""
    from selfloop.config import Config, LoopConfig, stored_config
    from selfloop.render import flat

    loop = get_loop(session, name)
    mine = flat(stored_config(loop.config, name).model_dump(mode="json"))
    defaults = flat(Config(loop=LoopConfig(name=name)).model_dump(mode="json"))
    fields = [ConfigField(k, v, k in defaults and defaults[k] == v) for k, v in mine.items()]
    fields.sort(key=lambda f: f.default)  # stable: the models' order within each group
    view = ConfigView(fields)
    if loop.parent_loop_id is not None:
        parent = parent_loop(session, loop)
        if parent is not None:
            theirs = flat(stored_config(parent.config, parent.name).model_dump(mode="json"))
            view.parent = parent.name
            view.changed = [ConfigField(f.key, f.value, f.default, theirs.get(f.key)) for f in fields
                            if theirs.get(f.key) != f.value and not f.key.startswith(NOT_A_CHOICE)]
            view.changed.sort(key=lambda f: list(mine).index(f.key))
    return view


# -- labs ------------------------------------------------------------------------------------------------------


def lab_comparison(session: Session, name: str) -> dict[str, Any]:
    """The lab report's comparison, from the store's finished loops of the lab (what `selfloop lab report` computes
    from the results lines)."""
    from selfloop.db.lab import loop_outcome
    from selfloop.lab.report import compare, outcome_line
    from selfloop.lab.spec import ROLES

    pieces = lab_pieces(session, name).get(name)
    if not pieces:
        raise LookupError(f"no lab named {name!r} in this store")
    lines = []
    for piece in pieces:
        outcome = loop_outcome(session, piece["loop"])
        if outcome is None or outcome["status"] != "finished":
            continue
        suites = loop_snapshot(session, piece["loop"])["eval"]["suites"]
        lines.append(outcome_line(outcome, piece["arm"], piece["seed"], suites))
    # The latest piece's roles (a lab file edited since its first pieces ran says so there; older events lack some).
    roles: dict[str, Any] = {role: pieces[-1].get(role) for role in ROLES}
    result = compare(lines, **roles)
    result["pieces"] = [{"arm": p["arm"], "seed": p["seed"], "loop": p["loop"]} for p in pieces]
    result["finished"] = len(lines)
    return result
