"""Query functions over the store; each takes a session first (callers own the transaction)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Select, Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from selfloop.db.models import Iteration, Judgment, Loop, PhaseRun, Prompt, Sample

if TYPE_CHECKING:
    from selfloop.adapters import Adapter
    from selfloop.config import Config

T = TypeVar("T")


def row(session: Session, model: type[T], key: int) -> T:
    """The row of `model` with primary key `key`, which the caller knows exists (an id read from another row or a
    phase's context): a missing one is a broken store, said in one line."""
    found = session.get(model, key)
    if found is None:
        from selfloop.errors import SelfloopError

        raise SelfloopError(f"{getattr(model, '__tablename__', model.__name__)} row {key} does not exist in this store")
    return found


def iteration_summary(session: Session, loop: str | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    sql = "SELECT * FROM iteration_summary"
    params: dict[str, Any] = {}
    if loop is not None:
        sql += " WHERE loop = :loop"
        params["loop"] = loop
    result = session.execute(text(sql + " ORDER BY loop, iteration"), params)
    return list(result.keys()), [tuple(r) for r in result]


SUITE_METRICS = ("greedy_accuracy", "constraint_accuracy", "majority_accuracy")


def suite_results(session: Session, loop: str | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every held-out suite's accuracy per iteration: the policy the iteration started from and its
    candidate side by side, with the candidate's 95% interval (seen and unseen phrasings alike)."""
    sql = """
    SELECT l.name AS loop, i.number AS iteration, e.suite AS suite, e.metric AS metric, e.n AS n,
           b.value AS baseline, e.value AS candidate, e.ci_low AS ci_low, e.ci_high AS ci_high
    FROM evals e JOIN iterations i ON i.id = e.iteration_id JOIN loops l ON l.id = i.loop_id
    LEFT JOIN evals b ON b.iteration_id = e.iteration_id AND b.role = 'baseline' AND b.suite = e.suite AND b.metric = e.metric
    WHERE e.role = 'candidate' AND e.metric IN :metrics"""
    params: dict[str, Any] = {"metrics": SUITE_METRICS}
    if loop is not None:
        sql += " AND l.name = :loop"
        params["loop"] = loop
    result = session.execute(text(sql + " ORDER BY l.name, i.number, e.suite, e.metric")
                             .bindparams(bindparam("metrics", expanding=True)), params)
    return list(result.keys()), [tuple(r) for r in result]


def lineage(session: Session) -> tuple[list[str], list[tuple[Any, ...]]]:
    result = session.execute(text("SELECT * FROM loop_lineage WHERE parent_loop IS NOT NULL ORDER BY loop"))
    return list(result.keys()), [tuple(r) for r in result]


def last_iteration(session: Session, loop_id: int, done: bool = False) -> Iteration | None:
    """The loop's newest iteration (done: its newest finished one)."""
    query = select(Iteration).where(Iteration.loop_id == loop_id)
    if done:
        query = query.where(Iteration.status == "done")
    return session.scalars(query.order_by(Iteration.number.desc()).limit(1)).one_or_none()


def phase_run(session: Session, iteration_id: int, phase: str) -> PhaseRun | None:
    return session.scalars(select(PhaseRun).where(PhaseRun.iteration_id == iteration_id, PhaseRun.phase == phase)).one_or_none()


def loop_by_name(session: Session, name: str) -> Loop | None:
    return session.scalars(select(Loop).where(Loop.name == name)).one_or_none()


def loop_named(session: Session, name: str) -> Loop:
    """The loop `name`, which must be in the store: else the one-line error that says where it went."""
    loop = loop_by_name(session, name)
    if loop is None:
        from selfloop.errors import SelfloopError

        raise SelfloopError(no_loop(session, name))
    return loop


def no_loop(session: Session, name: str, where: str = "") -> str:
    """The message for a loop name that is not in the store: where it went, if it was renamed (and renamed again),
    as the `loop.renamed` events say, followed in the order they happened."""
    from selfloop.db.models import Event

    current = name
    for message, data in session.execute(select(Event.message, Event.data).where(Event.kind == "loop.renamed")
                                         .order_by(Event.id)):
        found = data if isinstance(data, dict) else {}
        old, new = found.get("from"), found.get("to")
        if old is None:  # events written before they carried their names
            m = re.match(r"loop (\S+) renamed to (\S+?)(?:;|$)", message or "")
            old, new = (m.group(1), m.group(2)) if m else (None, None)
        if old == current and new:
            current = new
    text = f"no loop named {name!r}{where}"
    if current != name:
        text += f": it was renamed to {current!r}" + (" (and is gone since)" if loop_by_name(session, current) is None else "")
    return text


def monitor_history(session: Session, loop_id: int, upto: int) -> list[tuple[int, dict[str, float]]]:
    """(iteration number, its label-free monitors: the drift.* metrics) of the loop's iterations up to `upto`, in
    order: what the collapse guard reads."""
    from selfloop.db.models import Iteration, Metric

    found: dict[int, dict[str, float]] = {}
    for number, name, value in session.execute(
            select(Iteration.number, Metric.name, Metric.value).join(Metric, Metric.iteration_id == Iteration.id)
            .where(Iteration.loop_id == loop_id, Iteration.number <= upto, Metric.name.like("drift.%"))
            .order_by(Iteration.number)):
        found.setdefault(number, {})[name] = value
    return sorted(found.items())


def policy_after(session: Session, loop: Loop, number: int | None) -> int | None:
    """The checkpoint that was the loop's policy after iteration `number` (None: the loop's start): its output if it
    was promoted, else the policy it started from."""
    from selfloop.db.models import Iteration

    if number is None:
        return loop.start_checkpoint_id
    it = session.scalars(select(Iteration).where(Iteration.loop_id == loop.id, Iteration.number == number)).one_or_none()
    if it is None:
        return loop.start_checkpoint_id
    return it.output_checkpoint_id if it.promoted and it.output_checkpoint_id is not None else it.base_checkpoint_id


def ancestor_ids(session: Session, loop_id: int) -> list[int]:
    """A fork's parent, its parent's parent, and so on (empty for a loop of its own)."""
    out: list[int] = []
    loop = session.get(Loop, loop_id)
    while loop is not None and loop.parent_loop_id is not None and loop.parent_loop_id not in out:
        out.append(loop.parent_loop_id)
        loop = session.get(Loop, loop.parent_loop_id)
    return out


def lineage_offset(session: Session, loop_id: int) -> int:
    """How many iterations a loop's lineage ran before its first one: 0 for a loop of its own, the fork point
    plus its parent's offset for a fork (a fork at N of a fork at M starts after M + N)."""
    offset, seen = 0, set()
    loop = session.get(Loop, loop_id)
    while loop is not None and loop.parent_loop_id is not None and loop.id not in seen:
        seen.add(loop.id)
        offset += loop.parent_iteration or 0
        loop = session.get(Loop, loop.parent_loop_id)
    return offset


def _insert(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT construct (both SQLite and PostgreSQL have ON CONFLICT)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def insert_ignore(session: Session, model: type, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING: how phases stay idempotent."""
    if rows:
        stmt = _insert(session)(model).on_conflict_do_nothing(index_elements=keys)
        session.execute(stmt, rows)  # executemany: SQLAlchemy batches the VALUES itself


def set_metric(session: Session, iteration_id: int, name: str, value: float) -> None:
    """Insert or overwrite one per-iteration metric."""
    from selfloop.db.models import Metric

    stmt = _insert(session)(Metric).values(iteration_id=iteration_id, name=name, value=float(value))
    stmt = stmt.on_conflict_do_update(index_elements=["iteration_id", "name"], set_={"value": stmt.excluded.value})
    session.execute(stmt)


def metrics_of(session: Session, iteration_id: int, prefix: str = "") -> dict[str, float]:
    from selfloop.db.models import Metric

    rows = session.execute(
        select(Metric.name, Metric.value).where(Metric.iteration_id == iteration_id, Metric.name.startswith(prefix))
    )
    return {name: value for name, value in rows}


def add_event(session: Session, loop_id: int | None, iteration_id: int | None, kind: str, message: str,
              level: str = "info", data: dict[str, Any] | None = None) -> None:
    from loguru import logger

    from selfloop.credentials import redact
    from selfloop.db.models import Event

    message = redact(message)
    session.add(Event(loop_id=loop_id, iteration_id=iteration_id, level=level, kind=kind, message=message, data=data))
    logger.log("WARNING" if level == "warning" else "ERROR" if level == "error" else "INFO", "{}: {}", kind, message)


def adapter_of(session: Session, checkpoint_id: int | None, config: Config) -> Adapter | None:
    """The checkpoint as an engine Adapter (None: the base model), its directory located by `config`
    (`Config.checkpoint_dir`); refuses a deleted checkpoint."""
    from selfloop.adapters import Adapter
    from selfloop.db.models import Checkpoint
    from selfloop.errors import CheckpointError

    if checkpoint_id is None:
        return None
    ckpt = session.get(Checkpoint, checkpoint_id)
    if ckpt is None or ckpt.status != "ok":
        raise CheckpointError(f"checkpoint {checkpoint_id} is {'missing' if ckpt is None else ckpt.status}; it cannot be used as a policy")
    return Adapter(ckpt.id, config.checkpoint_dir(ckpt.path), ckpt.sha256)


@dataclass
class LoopState:
    """A loop now: its row, the iteration it is on (or last ran) and the running phase's progress."""

    name: str
    status: str
    status_reason: str | None
    parent: str | None
    parent_iteration: int | None
    iterations_done: int
    policy: str  # the current checkpoint's path, or "base model"
    iteration: int | None = None  # the iteration running now
    phase: str | None = None
    phase_status: str | None = None
    progress_done: int = 0
    progress_total: int = 0
    progress_note: str | None = None

    @property
    def progress(self) -> str | None:
        if self.phase_status is None:
            return None
        text = f"{self.phase_status} {self.progress_done}/{self.progress_total}" if self.progress_total else self.phase_status
        return f"{text} ({self.progress_note})" if self.progress_note else text


def loop_states(session: Session) -> list[LoopState]:
    """Every loop, by name: state, current iteration and phase, the running phase's progress, policy."""
    from selfloop.db.models import Checkpoint, Iteration, PhaseRun

    names = dict(session.execute(select(Loop.id, Loop.name)).all())
    states = []
    for loop in session.scalars(select(Loop).order_by(Loop.name)):
        done = session.scalar(select(func.count()).select_from(Iteration).where(
            Iteration.loop_id == loop.id, Iteration.status == "done")) or 0
        policy = session.scalar(select(Checkpoint.path).where(Checkpoint.id == loop.current_checkpoint_id)) or "base model"
        parent = names.get(loop.parent_loop_id) if loop.parent_loop_id is not None else None
        state = LoopState(loop.name, loop.status, loop.status_reason, parent,
                          loop.parent_iteration, done, policy)
        last = session.scalars(select(Iteration).where(Iteration.loop_id == loop.id)
                               .order_by(Iteration.number.desc()).limit(1)).one_or_none()
        if last is not None and last.status == "running":
            state.iteration, state.phase = last.number, last.phase
            run = session.scalars(select(PhaseRun).where(PhaseRun.iteration_id == last.id, PhaseRun.phase == last.phase)).one_or_none()
            if run is not None:
                state.phase_status, state.progress_note = run.status, run.progress_note
                state.progress_done, state.progress_total = run.progress_done, run.progress_total
                if run.status == "failed":  # the loop stopped there: it is not "ready", whatever its row says
                    state.status = "failed"
                    state.status_reason = f"{run.phase} failed: {run.error}; `selfloop resume {loop.name}` retries it"
        states.append(state)
    return states


def loop_status(session: Session) -> tuple[list[str], list[tuple[Any, ...]]]:
    """`selfloop status`: one row per loop (see `loop_states`)."""
    columns = ["loop", "status", "iterations_done", "iteration", "phase", "progress", "policy", "note"]
    return columns, [(s.name, s.status, s.iterations_done, s.iteration, s.phase, s.progress, s.policy, s.status_reason)
                     for s in loop_states(session)]


def voted_samples(session: Session, iteration_id: int, *columns: Any) -> list[Any]:
    """`columns` of each sample of the iteration joined with its vote judgment, in prompt then sample order
    (the order TTRL's first-N_train cut and ReST-EM's per-prompt cap depend on)."""
    return list(session.execute(
        select(*columns)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .join(Judgment, (Judgment.sample_id == Sample.id) & (Judgment.kind == "vote"))
        .where(Sample.iteration_id == iteration_id)
        .order_by(Prompt.source, Prompt.item_index, Sample.sample_index)
    ).all())


@dataclass
class LoopFigures:
    """What `/metrics` reports for one loop, read from the store."""

    status: str | None = None
    iteration: int | None = None
    iterations_done: int = 0
    phase: str | None = None
    progress_done: int = 0
    progress_total: int = 0
    train_loss: float | None = None
    main_metric: float | None = None
    promotions: int = 0
    rejections: int = 0
    events: dict[str, int] = field(default_factory=dict)


def loop_figures(session: Session, name: str) -> LoopFigures:
    from selfloop.db.models import Eval, Event, Iteration, PhaseRun, TrainStep

    loop = loop_by_name(session, name)
    if loop is None:
        return LoopFigures()
    figures = LoopFigures(status=loop.status)
    last = session.scalars(select(Iteration).where(Iteration.loop_id == loop.id)
                           .order_by(Iteration.number.desc()).limit(1)).one_or_none()
    if last is not None:
        figures.iteration = last.number
        if last.status == "running" and last.phase is not None:
            figures.phase = last.phase
            run = session.scalars(select(PhaseRun).where(PhaseRun.iteration_id == last.id,
                                                         PhaseRun.phase == last.phase)).one_or_none()
            if run is not None:
                figures.progress_done, figures.progress_total = run.progress_done, run.progress_total
    counts = dict(session.execute(select(Iteration.promoted, func.count()).where(
        Iteration.loop_id == loop.id, Iteration.status == "done").group_by(Iteration.promoted)).all())
    figures.iterations_done = sum(counts.values())
    figures.promotions, figures.rejections = counts.get(True, 0), counts.get(False, 0)
    figures.train_loss = session.scalar(
        select(TrainStep.loss).join(Iteration, Iteration.id == TrainStep.iteration_id)
        .where(Iteration.loop_id == loop.id).order_by(TrainStep.id.desc()).limit(1))
    suite, _, metric = loop.main_metric.partition("/")
    figures.main_metric = session.scalar(
        select(Eval.value).join(Iteration, Iteration.id == Eval.iteration_id)
        .where(Iteration.loop_id == loop.id, Eval.role == "candidate", Eval.suite == suite, Eval.metric == metric)
        .order_by(Eval.id.desc()).limit(1))
    figures.events = dict(session.execute(select(Event.level, func.count()).where(Event.loop_id == loop.id)
                                          .group_by(Event.level)).all())
    return figures


def phase_summary(session: Session, iteration_id: int, phase: str) -> str:
    """One line of what a finished phase produced: items, tokens, loss or accuracy (for the log)."""
    from selfloop.db.models import Eval, Example, Metric, TrainStep

    if phase in ("synthesize", "rollout"):
        source = "self_instruct" if phase == "synthesize" else "task"
        prompts = session.scalar(select(func.count()).select_from(Prompt).where(
            Prompt.iteration_id == iteration_id, Prompt.source == source)) or 0
        if phase == "synthesize":
            return f"{prompts} prompts"
        n, tokens = session.execute(select(func.count(), func.sum(Sample.num_tokens)).where(
            Sample.iteration_id == iteration_id)).one()
        return f"{prompts} prompts, {n} samples, {tokens or 0} tokens"
    if phase == "judge":
        values = dict(session.execute(select(Metric.name, Metric.value).where(
            Metric.iteration_id == iteration_id, Metric.name.in_(("judge.parse_rate", "judge.vote_share")))).all())
        return ", ".join(f"{k.removeprefix('judge.')} {v:.3f}" for k, v in sorted(values.items()))
    if phase == "select":
        n = session.scalar(select(func.count()).select_from(Example).where(Example.iteration_id == iteration_id)) or 0
        return f"{n} examples"
    if phase == "train":
        steps = session.execute(select(TrainStep.loss, TrainStep.tokens_per_s).where(
            TrainStep.iteration_id == iteration_id).order_by(TrainStep.step)).all()
        if not steps:
            return "no steps"
        return (f"{len(steps)} steps, loss {steps[0][0]:.4f} -> {steps[-1][0]:.4f}, "
                f"{sum(s[1] for s in steps) / len(steps):.1f} tok/s")
    if phase == "evaluate":
        rows = session.execute(select(Eval.role, Eval.suite, Eval.metric, Eval.value).where(
            Eval.iteration_id == iteration_id, Eval.metric == "greedy_accuracy").order_by(Eval.suite, Eval.role)).all()
        return ", ".join(f"{suite} {role} {value:.3f}" for role, suite, _, value in rows)
    return ""


def unfinished_configs(session: Session) -> list[tuple[str, dict[str, Any]]]:
    """(name, stored config snapshot) of every loop not finished, by name."""
    return [(name, snapshot) for name, snapshot in session.execute(
        select(Loop.name, Loop.config).where(Loop.status != "finished").order_by(Loop.name))]


def loop_writers(session: Session) -> list[tuple[str, str, int, str, Any]]:
    """(loop, kind, pid, host, since) of every process holding a loop now. A lease left by a process that
    died without releasing it (kill -9) is left out when that process is known gone (same host, no pid)."""
    import socket

    from selfloop.db.models import WriterLease
    from selfloop.processes import alive

    here = socket.gethostname()
    writers = []
    for lease in session.scalars(select(WriterLease).where(WriterLease.released_at.is_(None)).order_by(WriterLease.loop_name)):
        if lease.host == here and not alive(lease.pid):
            continue
        writers.append((lease.loop_name, lease.kind, lease.pid, lease.host, lease.acquired_at))
    return writers


def has_results(session: Session, loop: Loop) -> bool:
    """Whether any iteration of `loop` finished or made a checkpoint (what a changed config may not discard)."""
    from selfloop.db.models import Iteration

    return session.scalar(select(Iteration.id).where(
        Iteration.loop_id == loop.id, (Iteration.status == "done") | Iteration.output_checkpoint_id.is_not(None))
        .limit(1)) is not None


def delete_iteration_rows(session: Session, loop: Loop, *, with_iterations: bool = False) -> None:
    """Delete the rows every iteration of `loop` wrote (prompts, samples, judgments, votes, examples, steps, evals,
    metrics, phase runs, their events), children first; with `with_iterations`, the iterations too. Checkpoint rows
    are left to the caller."""
    from sqlalchemy import delete

    from selfloop.db.models import (
        Curation,
        Eval,
        EvalItem,
        Event,
        Example,
        ExampleCandidate,
        Iteration,
        Metric,
        PhaseRun,
        TrainStep,
        Vote,
    )

    its = select(Iteration.id).where(Iteration.loop_id == loop.id)
    samples = select(Sample.id).where(Sample.iteration_id.in_(its))
    prompts = select(Prompt.id).where(Prompt.iteration_id.in_(its))
    session.execute(delete(Judgment).where(Judgment.sample_id.in_(samples)))
    session.execute(delete(Vote).where(Vote.prompt_id.in_(prompts)))
    session.execute(delete(ExampleCandidate).where(ExampleCandidate.example_id.in_(
        select(Example.id).where(Example.iteration_id.in_(its)))))
    for model in (Curation, Example, TrainStep, EvalItem, Eval, Metric, PhaseRun):
        session.execute(delete(model).where(model.iteration_id.in_(its)))
    session.execute(delete(Event).where(Event.iteration_id.in_(its)))
    session.execute(delete(Sample).where(Sample.iteration_id.in_(its)))
    session.execute(delete(Prompt).where(Prompt.iteration_id.in_(its)))
    if with_iterations:
        session.execute(delete(Iteration).where(Iteration.loop_id == loop.id))


def delete_loop_rows(session: Session, loop: Loop) -> list[str]:
    """Delete every row of `loop` (children first) and return the paths of the checkpoints it made.
    Refused while another loop starts from, or currently uses, one of those checkpoints."""
    from sqlalchemy import delete, or_, update

    from selfloop.db.models import Checkpoint, Event, Iteration, TrackerRun
    from selfloop.errors import SelfloopError

    own = set(session.scalars(select(Iteration.output_checkpoint_id).where(
        Iteration.loop_id == loop.id, Iteration.output_checkpoint_id.is_not(None))))
    users = session.scalars(select(Loop.name).where(Loop.id != loop.id, or_(
        Loop.start_checkpoint_id.in_(own), Loop.current_checkpoint_id.in_(own), Loop.parent_loop_id == loop.id))).all()
    if users:
        raise SelfloopError(f"loop {loop.name!r} has forks ({', '.join(sorted(users))}) that start from its checkpoints: "
                            "remove those first")
    delete_iteration_rows(session, loop)
    session.execute(delete(Event).where(Event.loop_id == loop.id))
    session.execute(delete(TrackerRun).where(TrackerRun.loop_id == loop.id))
    paths = list(session.scalars(select(Checkpoint.path).where(Checkpoint.id.in_(own))))
    session.execute(update(Loop).where(Loop.id == loop.id).values(current_checkpoint_id=None, start_checkpoint_id=None))
    session.execute(delete(Iteration).where(Iteration.loop_id == loop.id))
    # Checkpoints it made, unless another of its own made them a parent (all go together anyway).
    session.execute(update(Checkpoint).where(Checkpoint.parent_checkpoint_id.in_(own)).values(parent_checkpoint_id=None))
    session.execute(delete(Checkpoint).where(Checkpoint.id.in_(own)))
    session.execute(delete(Loop).where(Loop.id == loop.id))
    return paths


COMPLETION_COLUMNS = ["prompt", "completion", "judge_score", "vote_answer", "vote_reward", "known_answer", "correct"]


def completions(session: Session, iteration_id: int, limit: int = 64, max_chars: int = 2000) -> list[list[Any]]:
    """An iteration's first `limit` samples (by prompt, then sample) with their judgments, in COMPLETION_COLUMNS
    order, texts cut at `max_chars`: the table a tracker shows of what the loop generated and how it judged it."""
    found = session.execute(
        select(Sample.id, Prompt.text, Sample.text, Prompt.answer, Sample.correct).join(Prompt, Prompt.id == Sample.prompt_id)
        .where(Sample.iteration_id == iteration_id).order_by(Prompt.source, Prompt.item_index, Sample.sample_index)
        .limit(limit)).all()
    ids = [row[0] for row in found]
    scores: dict[int, float] = dict(session.execute(select(Judgment.sample_id, func.avg(Judgment.trained_score)).where(
        Judgment.sample_id.in_(ids), Judgment.kind == "llm_judge", Judgment.trained_ok).group_by(Judgment.sample_id)).all())
    votes = {sid: (answer, score) for sid, answer, score in session.execute(select(
        Judgment.sample_id, Judgment.answer, Judgment.trained_score).where(Judgment.sample_id.in_(ids), Judgment.kind == "vote"))}
    return [[prompt[:max_chars], text[:max_chars], None if sid not in scores else float(scores[sid]),
             votes.get(sid, (None, None))[0], votes.get(sid, (None, None))[1], answer, correct]
            for sid, prompt, text, answer, correct in found]


def ungraded_samples(session: Session, iteration_id: int) -> list[Any]:
    """(id, text, answer, family) of the iteration's samples whose prompt has a known answer and that were not
    graded yet."""
    return list(session.execute(
        select(Sample.id, Sample.text, Prompt.answer, Prompt.family).join(Prompt, Prompt.id == Sample.prompt_id)
        .where(Sample.iteration_id == iteration_id, Prompt.answer.is_not(None), Sample.correct.is_(None))
        .order_by(Sample.id)
    ).all())


def set_correct(session: Session, verdicts: dict[int, bool]) -> None:
    """Store each sample's graded correctness (sample id -> correct)."""
    if verdicts:
        table = cast(Table, Sample.__table__)  # a Core executemany: the ORM's bulk update wants whole rows by primary key
        session.execute(update(table).where(table.c.id == bindparam("sid")).values(correct=bindparam("ok")),
                        [{"sid": k, "ok": v} for k, v in verdicts.items()])


def correctness(session: Session, iteration_id: int) -> dict[int, bool]:
    """Sample id -> correct, for the iteration's samples with a checked answer."""
    return {sid: bool(ok) for sid, ok in session.execute(select(Sample.id, Sample.correct).where(
        Sample.iteration_id == iteration_id, Sample.correct.is_not(None)))}


def unjudged_query(iteration_id: int, kind: str) -> Select:
    """The iteration's samples without a judgment of `kind`, with their prompt, in judging order. NOT EXISTS on the
    (sample_id, kind, judge_index) unique index: the cost follows the iteration's samples, not every judgment of
    the kind the store holds (as NOT IN over them did)."""
    judged = select(Judgment.id).where(Judgment.sample_id == Sample.id, Judgment.kind == kind).exists()
    return (select(Sample.id, Sample.prompt_id, Sample.sample_index, Sample.text, Sample.token_ids,
                   Sample.sum_logprob, Sample.mean_logprob, Sample.num_tokens, Prompt.text.label("prompt"),
                   Prompt.messages, Prompt.source, Prompt.item_index)
            .join(Prompt, Prompt.id == Sample.prompt_id)
            .where(Sample.iteration_id == iteration_id, ~judged)
            .order_by(Prompt.source, Prompt.item_index, Sample.sample_index))


def unjudged_samples(session: Session, iteration_id: int, kind: str) -> list[Any]:
    return list(session.execute(unjudged_query(iteration_id, kind)).all())


def judged_means(session: Session, iteration_id: int) -> dict[int, list[tuple[int, float]]]:
    """Prompt id -> [(sample id, mean LLM-judge score over its valid judgments)], prompts in id order and samples in
    sample order; a sample without a valid score is absent. What the judge-ranked algorithms select from."""
    rows = session.execute(
        select(Sample.prompt_id, Sample.id, Judgment.trained_score).join(Judgment, Judgment.sample_id == Sample.id)
        .where(Sample.iteration_id == iteration_id, Judgment.kind == "llm_judge", Judgment.trained_ok.is_(True))
        .order_by(Sample.prompt_id, Sample.sample_index, Judgment.judge_index)
    ).all()
    scores: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for prompt_id, sample_id, score in rows:
        if score is not None:  # parse_ok: always
            scores[prompt_id][sample_id].append(float(score))
    return {p: [(sid, sum(v) / len(v)) for sid, v in by_sample.items()] for p, by_sample in scores.items()}
