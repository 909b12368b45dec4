"""What the dashboard's pages read from the store: query functions over a session, each returning rows or small
dataclasses the templates and charts draw; lists that grow with the store are paged (PAGE_SIZE) along unique
indexes. The pages' composition (the loop tree, the config view, the lab comparison) is selfloop.ui.views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, and_, cast, func, select
from sqlalchemy.orm import Session, aliased

from selfloop.db.curation import prompt_curation
from selfloop.db.models import (
    Curation,
    Eval,
    EvalItem,
    Event,
    Example,
    ExampleCandidate,
    Iteration,
    Judgment,
    Loop,
    Metric,
    Prompt,
    Sample,
    TrainStep,
    Vote,
)
from selfloop.db.queries import loop_by_name, no_loop, row
from selfloop.errors import SelfloopError
from selfloop.families.answers import DEFAULT_CHAIN, answer_span, normalise

PAGE_SIZE = 50


MAX_LOSS_POINTS = 5000  # training steps drawn per loop; longer histories are thinned evenly


MAX_EVENTS = 500


@dataclass
class Page:
    rows: list[Any]
    page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def _page(page: int) -> int:
    if page < 1:
        raise SelfloopError(f"page {page}: pages start at 1")
    return page


def get_loop(session: Session, name: str) -> Loop:
    loop = loop_by_name(session, name)
    if loop is None:
        raise LookupError(no_loop(session, name))
    return loop


def get_iteration(session: Session, loop: Loop, number: int) -> Iteration:
    it = session.scalars(select(Iteration).where(Iteration.loop_id == loop.id, Iteration.number == number)).one_or_none()
    if it is None:
        raise LookupError(f"loop {loop.name!r} has no iteration {number}")
    return it


@dataclass
class EvalPoint:
    iteration: int  # the segment's own iteration number; 0: the starting policy (baseline of iteration 1)
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass
class Segment:
    """One loop's part of a curve: all of it, or an ancestor's up to the fork point (`until`)."""

    loop: str
    shift: int  # x = iteration + shift, so every segment of a chart shares one axis
    until: int | None
    own: bool
    iterations: list[int] = field(default_factory=list)
    promoted: dict[int, bool | None] = field(default_factory=dict)
    evals: dict[str, list[EvalPoint]] = field(default_factory=dict)  # "suite/metric" -> points
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name -> (iteration, value)
    steps: list[tuple[int, int, float]] = field(default_factory=list)  # (iteration, step, loss)
    total_steps: int = 0  # before thinning


def lineage(session: Session, loop: Loop) -> list[tuple[Loop, int | None]]:
    """[(root, its child's fork point), ..., (loop, None)]."""
    chain: list[tuple[Loop, int | None]] = [(loop, None)]
    while (parent_id := chain[0][0].parent_loop_id) is not None:
        chain.insert(0, (row(session, Loop, parent_id), chain[0][0].parent_iteration))
    return chain


def root_offset(chain: list[tuple[Loop, int | None]]) -> tuple[int, int]:
    """From a loop's `lineage`: (root loop id, iterations of the ancestors before the loop's first iteration)."""
    return chain[0][0].id, sum(until or 0 for _, until in chain[:-1])


def _segment(session: Session, loop: Loop, shift: int, until: int | None, own: bool) -> Segment:
    seg = Segment(loop.name, shift, until, own)
    keep = Iteration.loop_id == loop.id
    if until is not None:
        keep = and_(keep, Iteration.number <= until)
    for number, promoted in session.execute(select(Iteration.number, Iteration.promoted).where(keep).order_by(Iteration.number)):
        seg.iterations.append(number)
        seg.promoted[number] = promoted
    rows = session.execute(
        select(Iteration.number, Eval.role, Eval.suite, Eval.metric, Eval.value, Eval.ci_low, Eval.ci_high, Eval.n)
        .join(Iteration, Iteration.id == Eval.iteration_id).where(keep).order_by(Iteration.number, Eval.suite, Eval.metric))
    for number, role, suite, metric, value, low, high, n in rows:
        key = f"{suite}/{metric}"
        if role == "candidate":
            seg.evals.setdefault(key, []).append(EvalPoint(number, value, low, high, n))
        elif number == seg.iterations[0]:  # the policy the loop started from, before any training
            seg.evals.setdefault(key, []).insert(0, EvalPoint(number - 1, value, low, high, n))
    for number, name, value in session.execute(
            select(Iteration.number, Metric.name, Metric.value).join(Iteration, Iteration.id == Metric.iteration_id)
            .where(keep).order_by(Iteration.number)):
        seg.metrics.setdefault(name, []).append((number, value))
    seg.total_steps = session.scalar(select(func.count()).select_from(TrainStep)
                                     .join(Iteration, Iteration.id == TrainStep.iteration_id).where(keep)) or 0
    stride = max(1, -(-seg.total_steps // MAX_LOSS_POINTS))
    steps = select(Iteration.number, TrainStep.step, TrainStep.loss).join(Iteration, Iteration.id == TrainStep.iteration_id)
    if stride > 1:
        steps = steps.where(TrainStep.step % stride == 0)
    seg.steps = [(number, step, loss) for number, step, loss in
                 session.execute(steps.where(keep).order_by(Iteration.number, TrainStep.step))]
    return seg


def loop_segments(session: Session, name: str) -> list[Segment]:
    """The loop's curve with its ancestors' up to each fork point, on the loop's own iteration axis:
    an ancestor's iterations sit at x <= 0, its fork point at 0 (the fork's starting policy)."""
    loop = get_loop(session, name)
    chain = lineage(session, loop)
    _, own_offset = root_offset(chain)
    segments, offset = [], 0
    for member, until in chain:
        segments.append(_segment(session, member, offset - own_offset, until, member.id == loop.id))
        offset += until or 0
    return segments


def compared_segments(session: Session, names: list[str]) -> list[Segment]:
    """Several loops on one axis: the first loop's iterations; a loop of the same lineage is placed
    where it forked (by iterations since their common root), any other starts at 0 too."""
    loops = [get_loop(session, n) for n in names]
    offsets = [root_offset(lineage(session, loop)) for loop in loops]
    root0, offset0 = offsets[0]
    return [_segment(session, loop, (offset - offset0) if root == root0 else 0, None, True)
            for loop, (root, offset) in zip(loops, offsets)]


@dataclass
class EventRow:
    created_at: Any
    level: str
    kind: str
    message: str
    iteration: int | None

    @property
    def decision(self) -> bool:
        return self.kind.startswith("promote.") or self.kind in ("loop.paused", "loop.unpaused", "loop.forked")


def loop_events(session: Session, name: str, limit: int = MAX_EVENTS) -> list[EventRow]:
    """The loop's events, newest first: warnings, errors and decisions (promotions, pauses) included."""
    loop = get_loop(session, name)
    rows = session.execute(
        select(Event.created_at, Event.level, Event.kind, Event.message, Iteration.number)
        .outerjoin(Iteration, Iteration.id == Event.iteration_id)
        .where(Event.loop_id == loop.id).order_by(Event.id.desc()).limit(limit))
    return [EventRow(*r) for r in rows]


@dataclass
class PromptRow:
    id: int
    source: str
    item_index: int
    text: str
    answer: str | None
    samples: int
    vote_answer: str | None
    vote_share: float | None
    vote_correct: bool | None
    mean_judge_score: float | None
    examples: int
    dropped_by: str | None = None  # the curate filter that dropped it (None: kept, or not curated)


def iteration_prompts(session: Session, iteration: Iteration, source: str | None = None, page: int = 1) -> Page:
    """One page of an iteration's prompts (task pool then self-instruct, by index), with each one's
    sample count, vote and mean judge score."""
    keep = Prompt.iteration_id == iteration.id
    if source is not None:
        keep = and_(keep, Prompt.source == source)
    total = session.scalar(select(func.count()).select_from(Prompt).where(keep)) or 0
    n_samples = select(func.count()).where(Sample.prompt_id == Prompt.id).scalar_subquery()
    judge = (select(func.avg(Judgment.score)).join(Sample, Sample.id == Judgment.sample_id)  # as judged, not the reward
             .where(Sample.prompt_id == Prompt.id, Judgment.kind == "llm_judge", Judgment.parse_ok).scalar_subquery())
    n_examples = select(func.count()).where(Example.prompt_id == Prompt.id).scalar_subquery()
    dropped_by = (select(Curation.filter).where(Curation.prompt_id == Prompt.id, Curation.kept.is_(False))
                  .order_by(Curation.position).limit(1).scalar_subquery())
    rows = session.execute(
        select(Prompt.id, Prompt.source, Prompt.item_index, Prompt.text, Prompt.answer, n_samples,
               Vote.answer, Vote.share, Vote.correct, judge, n_examples, dropped_by)
        .outerjoin(Vote, Vote.prompt_id == Prompt.id).where(keep)
        .order_by(Prompt.source, Prompt.item_index).limit(PAGE_SIZE).offset((_page(page) - 1) * PAGE_SIZE))
    return Page([PromptRow(*r) for r in rows], page, total)


@dataclass
class JudgmentRow:
    kind: str
    judge_index: int
    score: float | None
    parse_ok: bool
    raw: str | None
    answer: str | None
    details: dict[str, Any] | None
    reward_mode: str | None = None  # the judge.reward transform whose value training read instead of score
    reward: float | None = None
    reward_ok: bool | None = None


@dataclass
class SampleRow:
    id: int
    index: int
    text: str
    num_tokens: int
    finish_reason: str
    mean_logprob: float
    correct: bool | None = None  # checked against the prompt's known answer (None: no answer known)
    judgments: list[JudgmentRow] = field(default_factory=list)
    span: tuple[int, int] | None = None  # where the loop's extractors found the answer in `text`

    @property
    def parts(self) -> tuple[str, str, str] | None:
        """The text before the extracted answer, the answer as written, the text after (the page marks it)."""
        return (self.text[:self.span[0]], self.text[self.span[0]:self.span[1]], self.text[self.span[1]:]) if self.span else None

    @property
    def extracted(self) -> str | None:
        return normalise(self.text[self.span[0]:self.span[1]]) if self.span else None

    def signal(self, kind: str) -> list[JudgmentRow]:
        return [j for j in self.judgments if j.kind == kind]

    @property
    def voted(self) -> str | None:
        """The answer the vote read (stored), else the one the loop's extractors read now."""
        votes = self.signal("vote")
        return votes[0].answer if votes else self.extracted

    @property
    def mean_judge_score(self) -> float | None:
        scores = [j.score for j in self.signal("llm_judge") if j.parse_ok and j.score is not None]
        return sum(scores) / len(scores) if scores else None


@dataclass
class ExampleRow:
    id: int
    item_index: int
    algorithm: str
    sample_index: int | None
    rejected_index: int | None
    text: str | None
    reward: float | None
    weight: float | None
    ranking: list[tuple[int, float | None]] = field(default_factory=list)  # (sample index, score), best first


@dataclass
class CurationRow:
    filter: str
    score: float | None
    kept: bool
    reason: str | None


@dataclass
class PromptDetail:
    prompt: Prompt
    loop: str
    iteration: int
    vote: Vote | None
    samples: Page  # of SampleRow
    examples: list[ExampleRow]
    curation: list[CurationRow] = field(default_factory=list)  # the curate filters' decisions, in the order they ran


def prompt_detail(session: Session, prompt_id: int, page: int = 1) -> PromptDetail:
    """A prompt with one page of its samples, each with every judgment, its vote and the training
    examples built from the prompt (chosen/rejected given as sample indexes)."""
    prompt = session.get(Prompt, prompt_id)
    if prompt is None:
        raise LookupError(f"no prompt {prompt_id}")
    loop, number = session.execute(select(Loop.name, Iteration.number).join(Iteration, Iteration.loop_id == Loop.id)
                                           .where(Iteration.id == prompt.iteration_id)).one()
    total = session.scalar(select(func.count()).select_from(Sample).where(Sample.prompt_id == prompt_id)) or 0
    samples = [SampleRow(*r) for r in session.execute(  # correctness as the judge phase graded it
        select(Sample.id, Sample.sample_index, Sample.text, Sample.num_tokens, Sample.finish_reason, Sample.mean_logprob,
               Sample.correct)
        .where(Sample.prompt_id == prompt_id).order_by(Sample.sample_index)
        .limit(PAGE_SIZE).offset((_page(page) - 1) * PAGE_SIZE))]
    by_id = {s.id: s for s in samples}
    if by_id:
        for sample_id, *rest in session.execute(
                select(Judgment.sample_id, Judgment.kind, Judgment.judge_index, Judgment.score, Judgment.parse_ok,
                       Judgment.raw, Judgment.answer, Judgment.details, Judgment.reward_mode, Judgment.reward, Judgment.reward_ok)
                .where(Judgment.sample_id.in_(by_id)).order_by(Judgment.sample_id, Judgment.kind, Judgment.judge_index)):
            by_id[sample_id].judgments.append(JudgmentRow(*rest))
    chosen, rejected = Sample.__table__.alias("chosen"), Sample.__table__.alias("rejected")
    examples = [ExampleRow(*r) for r in session.execute(
        select(Example.id, Example.item_index, Example.algorithm, chosen.c.sample_index, rejected.c.sample_index,
               Example.text, Example.reward, Example.weight)
        .outerjoin(chosen, chosen.c.id == Example.sample_id).outerjoin(rejected, rejected.c.id == Example.rejected_sample_id)
        .where(Example.prompt_id == prompt_id).order_by(Example.item_index).limit(PAGE_SIZE * 4))]
    by_example = {e.id: e for e in examples}
    if by_example:  # a ranked example's candidates, best first
        for example_id, index, score in session.execute(
                select(ExampleCandidate.example_id, Sample.sample_index, ExampleCandidate.score)
                .join(Sample, Sample.id == ExampleCandidate.sample_id)
                .where(ExampleCandidate.example_id.in_(by_example)).order_by(ExampleCandidate.example_id, ExampleCandidate.rank)):
            by_example[example_id].ranking.append((index, score))
    vote = session.scalars(select(Vote).where(Vote.prompt_id == prompt_id)).one_or_none()
    chain = answer_extractors(session, loop, prompt.family)
    for sample in samples if chain else ():
        sample.span = answer_span(sample.text, chain)
    return PromptDetail(prompt, loop, number, vote, Page(samples, page, total), examples,
                        [CurationRow(*r) for r in prompt_curation(session, prompt_id)])


def answer_extractors(session: Session, name: str, family_name: str | None) -> tuple[str, ...]:
    """The loop's answer extractors (judge.vote.extractors) where the prompt's answers are values read from the
    text; () for a family whose grade is no extracted value (instructions) or that is not installed here."""
    from selfloop.families import family

    try:
        if not family(family_name or "value").votable:
            return ()
    except LookupError:
        return ()
    # Read as stored, not validated: a plug-in's loop whose algorithm is not installed here still has its chain;
    # a snapshot without one ran with the default (the config's default is DEFAULT_CHAIN).
    snapshot = loop_snapshot(session, name)
    return tuple(snapshot.get("judge", {}).get("vote", {}).get("extractors") or DEFAULT_CHAIN)


@dataclass
class SuiteRow:
    role: str
    suite: str
    items: int
    right: int


def eval_suites(session: Session, iteration: Iteration) -> list[SuiteRow]:
    rows = session.execute(
        select(EvalItem.role, EvalItem.suite, func.count(), func.sum(cast(EvalItem.correct, Integer)))
        .where(EvalItem.iteration_id == iteration.id).group_by(EvalItem.role, EvalItem.suite)
        .order_by(EvalItem.suite, EvalItem.role))
    return [SuiteRow(role, suite, n, int(right or 0)) for role, suite, n, right in rows]


# outcome -> (this policy right?, the other policy right? or None for either): "gained" and "lost" are the items
# that flipped between the policy the iteration started from and its candidate.
OUTCOMES = {"right": (True, None), "wrong": (False, None), "gained": (True, False), "lost": (False, True)}


def eval_items(session: Session, iteration: Iteration, suite: str, role: str = "candidate",
               outcome: str | None = None, page: int = 1) -> Page:
    """One page of a suite's held-out items answered by the candidate (or the baseline), by index; `outcome`
    keeps the right or wrong ones, or those this policy got right and the other wrong ("gained") or the
    reverse ("lost")."""
    keep = and_(EvalItem.iteration_id == iteration.id, EvalItem.role == role, EvalItem.suite == suite)
    if outcome is not None:
        mine, theirs = OUTCOMES[outcome]
        keep = and_(keep, EvalItem.correct == mine)
        if theirs is not None:
            other = aliased(EvalItem)
            keep = and_(keep, select(other.id).where(
                other.iteration_id == EvalItem.iteration_id, other.suite == EvalItem.suite,
                other.item_index == EvalItem.item_index, other.role != EvalItem.role, other.correct == theirs).exists())
    total = session.scalar(select(func.count()).select_from(EvalItem).where(keep)) or 0
    rows = session.scalars(select(EvalItem).where(keep).order_by(EvalItem.item_index)
                           .limit(PAGE_SIZE).offset((_page(page) - 1) * PAGE_SIZE)).all()
    return Page(list(rows), page, total)


@dataclass
class RewardCell:
    rewarded: bool
    right: bool | None  # None: the prompt has no checkable answer
    samples: int = 0
    prompt_ids: list[int] = field(default_factory=list)  # up to 3 examples, one click away


def reward_summary(session: Session, iteration: Iteration) -> list[RewardCell]:
    """What the loop rewarded this iteration: its vote rewards (TTRL's label agreement) against the samples'
    checked correctness, as counts with example prompts; empty when the iteration has no vote judgments."""
    rows = session.execute(select(Judgment.trained_score, Sample.correct, Sample.prompt_id).join(
        Sample, Sample.id == Judgment.sample_id).where(Sample.iteration_id == iteration.id, Judgment.kind == "vote")
        .order_by(Sample.prompt_id, Sample.sample_index)).all()
    cells: dict[tuple[bool, bool | None], RewardCell] = {}
    for score, right, prompt_id in rows:
        key = (bool(score and score > 0), None if right is None else bool(right))
        cell = cells.setdefault(key, RewardCell(*key))
        cell.samples += 1
        if len(cell.prompt_ids) < 3 and prompt_id not in cell.prompt_ids:
            cell.prompt_ids.append(prompt_id)
    order = [(True, True), (True, False), (False, True), (False, False), (True, None), (False, None)]
    return [cells[k] for k in order if k in cells]


def lab_pieces(session: Session, name: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Lab name -> its pieces (the 'lab.piece' events `selfloop lab run` records: arm, seed and the roles), each
    with its loop's name."""
    labs: dict[str, list[dict[str, Any]]] = {}
    for loop, data in session.execute(select(Loop.name, Event.data).join(Event, Event.loop_id == Loop.id)
                                      .where(Event.kind == "lab.piece").order_by(Event.id)):
        if isinstance(data, dict) and (name is None or data.get("lab") == name):
            labs.setdefault(data["lab"], []).append({**data, "loop": loop})
    return labs


def loop_configs(session: Session, names: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(name, stored config snapshot) of each of these loops that exists."""
    return [(name, config) for name, config in session.execute(select(Loop.name, Loop.config).where(Loop.name.in_(names)))]


def loop_snapshot(session: Session, name: str) -> dict[str, Any]:
    """A loop's stored config as stored (not validated); {} for no such loop."""
    return session.scalar(select(Loop.config).where(Loop.name == name)) or {}


def parent_loop(session: Session, loop: Loop) -> Loop | None:
    """The loop a fork started from (None: a root, or a parent since removed)."""
    return session.get(Loop, loop.parent_loop_id) if loop.parent_loop_id is not None else None
