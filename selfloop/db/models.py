"""SQLAlchemy models of everything a loop stores.

Natural unique keys make each phase idempotent: a phase re-run after a crash inserts with
on-conflict-do-nothing and finds the rows it already committed. Constraints carry names
from one convention (SQLite migrations need them). Relationships are left out on purpose:
queries say what they join, and nothing loads lazily behind the daemon's back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    case,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON everywhere, JSONB on PostgreSQL (indexable, compact).
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The values each status-like column may hold; the database checks them (a CHECK constraint per column).
LOOP_STATUSES = ("ready", "paused", "finished", "failed")
ITERATION_STATUSES = ("running", "done", "failed")
PHASE_STATUSES = ("running", "done", "failed", "interrupted")
CHECKPOINT_STATUSES = ("ok", "deleted")
EVENT_LEVELS = ("info", "warning", "error")
EVAL_ROLES = ("candidate", "baseline")
WRITER_KINDS = ("daemon", "run", "track", "rm", "rename", "none")  # none: a lease row before its first holder
ENUMERATIONS = {  # table -> (column, allowed values)
    "loops": ("status", LOOP_STATUSES), "iterations": ("status", ITERATION_STATUSES),
    "phase_runs": ("status", PHASE_STATUSES), "checkpoints": ("status", CHECKPOINT_STATUSES),
    "events": ("level", EVENT_LEVELS), "evals": ("role", EVAL_ROLES), "eval_items": ("role", EVAL_ROLES),
    "writer_leases": ("kind", WRITER_KINDS),
}


def one_of(table: str) -> CheckConstraint:
    """The CHECK constraint of `table`'s enumerated column (named ck_<table>_<column>)."""
    column, values = ENUMERATIONS[table]
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=column)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Loop(Base):
    """A self-improvement loop: its config snapshot, seed, lineage and current policy."""

    __tablename__ = "loops"
    __table_args__ = (one_of("loops"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    parent_loop_id: Mapped[int | None] = mapped_column(ForeignKey("loops.id"))
    parent_iteration: Mapped[int | None] = mapped_column(Integer, doc="number of the parent's iteration forked from")
    start_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    current_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    base_model: Mapped[str] = mapped_column(String(500))
    config: Mapped[dict[str, Any]] = mapped_column(Json)
    config_hash: Mapped[str] = mapped_column(String(64))
    main_metric: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), default="ready")  # ready | paused | finished | failed
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class Checkpoint(Base):
    """A LoRA adapter directory; the row is written only after the directory is complete."""

    __tablename__ = "checkpoints"
    __table_args__ = (one_of("checkpoints"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str] = mapped_column(String(64), doc="sha256 of MANIFEST.json, which holds each file's sha256")
    kind: Mapped[str] = mapped_column(String(20), default="lora")
    base_model: Mapped[str] = mapped_column(String(500))
    parent_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), default="ok")  # ok | deleted
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class Iteration(Base):
    __tablename__ = "iterations"
    __table_args__ = (UniqueConstraint("loop_id", "number"), one_of("iterations"))
    id: Mapped[int] = mapped_column(primary_key=True)
    loop_id: Mapped[int] = mapped_column(ForeignKey("loops.id"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | done | failed
    phase: Mapped[str | None] = mapped_column(String(20), doc="phase running now, or the last one run")
    base_checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id"), doc="starting policy; null: the base model"
    )
    output_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    promoted: Mapped[bool | None] = mapped_column(Boolean)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class PhaseRun(Base):
    __tablename__ = "phase_runs"
    __table_args__ = (UniqueConstraint("iteration_id", "phase"), one_of("phase_runs"))
    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    phase: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # running | done | failed | interrupted
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_note: Mapped[str | None] = mapped_column(String(200), doc="what the progress counts, e.g. 'candidate on arithmetic'")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class Prompt(Base):
    """A prompt of one iteration: drawn from the task pool or synthesised by self-instruct."""

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("iteration_id", "source", "item_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    source: Mapped[str] = mapped_column(String(20))  # task | self_instruct
    item_index: Mapped[int] = mapped_column(Integer)
    task_key: Mapped[str | None] = mapped_column(String(200), doc="stable id in the task pool")
    text: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, doc="known verifiable answer, if any")
    family: Mapped[str | None] = mapped_column(
        String(40), doc="the task family whose grader checks `answer` (value, arithmetic, instructions, a plug-in's)")
    reference: Mapped[str | None] = mapped_column(Text, doc="ground-truth response, if any (SPIN)")
    messages: Mapped[list[dict[str, str]] | None] = mapped_column(
        Json, doc="a task given as a conversation: its turns up to and including the user turn `text` holds (a system "
        "turn and earlier turns, as the task file gave them); null for a plain prompt")
    parent_ids: Mapped[list[str] | None] = mapped_column(
        Json, doc="self-instruct: the examples shown in its few-shot prompt, as keys: 'seed:K' (seed task K) or "
        "'prompt:I.J' (self-instruct prompt J of iteration I of the same loop)")
    rouge_max: Mapped[float | None] = mapped_column(Float, doc="self-instruct: highest ROUGE-L against the pool")
    created_at: Mapped[datetime] = _created()


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("prompt_id", "sample_index"), Index(None, "iteration_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    sample_index: Mapped[int] = mapped_column(Integer)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    policy_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    text: Mapped[str] = mapped_column(Text)
    token_ids: Mapped[list[int]] = mapped_column(Json)
    token_logprobs: Mapped[list[float]] = mapped_column(Json, doc="sampled tokens' log-probs under the sampling distribution")
    policy_token_logprobs: Mapped[list[float] | None] = mapped_column(
        Json, doc="the same tokens' log-probs under the sampling policy itself (temperature 1, unfiltered), where the "
        "engine gives them (hf); training takes them as reference log-probs instead of a forward pass")
    token_entropies: Mapped[list[float] | None] = mapped_column(
        Json, doc="each step's next-token entropy under the sampling policy (temperature 1, unfiltered, nats), from the "
        "logits it sampled with, where the engine records them (hf): the entropy signal's input")
    token_self_certainties: Mapped[list[float] | None] = mapped_column(
        Json, doc="each step's self-certainty, logsumexp(z) - mean(z) of the same logits (KL from uniform plus log V): "
        "the self_certainty signal's input")
    num_tokens: Mapped[int] = mapped_column(Integer)
    sum_logprob: Mapped[float] = mapped_column(Float)
    mean_logprob: Mapped[float] = mapped_column(Float)
    finish_reason: Mapped[str] = mapped_column(String(10))  # stop | length
    seed: Mapped[int] = mapped_column(BigInteger)
    temperature: Mapped[float] = mapped_column(Float)
    correct: Mapped[bool | None] = mapped_column(
        Boolean, doc="checked against the prompt's known answer by its family's grader in the judge phase (null: no "
        "known answer, or not judged yet)")
    created_at: Mapped[datetime] = _created()


class Judgment(Base):
    """One self-judging signal for one sample: llm_judge (k rows), vote, confidence."""

    __tablename__ = "judgments"
    __table_args__ = (UniqueConstraint("sample_id", "kind", "judge_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    kind: Mapped[str] = mapped_column(String(20))  # llm_judge | vote | confidence
    judge_index: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float | None] = mapped_column(Float, doc="as judged; never rewritten (a reward transform writes reward)")
    parse_ok: Mapped[bool] = mapped_column(Boolean)
    raw: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, doc="vote: the extracted, normalised answer")
    details: Mapped[dict[str, Any] | None] = mapped_column(Json)
    reward_mode: Mapped[str | None] = mapped_column(String(20), doc="the judge.reward transform that set reward (verify, "
                                                    "shuffled, function or a signal); null: training reads score")
    reward: Mapped[float | None] = mapped_column(Float, doc="the transformed value training reads instead of score")
    reward_ok: Mapped[bool | None] = mapped_column(Boolean, doc="whether reward holds a value (as parse_ok for score)")
    created_at: Mapped[datetime] = _created()

    # What training reads: the transformed reward where judge.reward transformed the judgment, the judged score
    # otherwise. One definition, in Python and in SQL, so no reader picks the wrong column.
    @hybrid_property
    def trained_score(self) -> float | None:
        return self.score if self.reward_mode is None else self.reward

    @trained_score.inplace.expression
    @classmethod
    def _trained_score_sql(cls) -> ColumnElement[float | None]:
        return case((cls.reward_mode.is_(None), cls.score), else_=cls.reward)

    @hybrid_property
    def trained_ok(self) -> bool:
        return self.parse_ok if self.reward_mode is None else bool(self.reward_ok)

    @trained_ok.inplace.expression
    @classmethod
    def _trained_ok_sql(cls) -> ColumnElement[bool]:
        return case((cls.reward_mode.is_(None), cls.parse_ok), else_=func.coalesce(cls.reward_ok, False))


class Vote(Base):
    """Majority vote over one prompt's samples (Self-Consistency; TTRL's pseudo-label)."""

    __tablename__ = "votes"
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), unique=True)
    answer: Mapped[str | None] = mapped_column(Text)
    share: Mapped[float] = mapped_column(Float)
    n_valid: Mapped[int] = mapped_column(Integer)
    n_votes: Mapped[int] = mapped_column(Integer)
    tie: Mapped[bool] = mapped_column(Boolean)
    tied_answers: Mapped[list[str] | None] = mapped_column(Json)
    correct: Mapped[bool | None] = mapped_column(Boolean, doc="majority answer equals the known answer (null: unknown)")
    created_at: Mapped[datetime] = _created()


class Example(Base):
    """A training example: a pair (sample_id chosen, rejected_sample_id), one rewarded sample, or a ranking of K
    candidates of one prompt (rows of `example_candidates`; sample_id is the top-ranked one)."""

    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("iteration_id", "item_index"), Index(None, "prompt_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    item_index: Mapped[int] = mapped_column(Integer)
    algorithm: Mapped[str] = mapped_column(String(40), doc="the algorithm (a registry name: up to 40 characters)")
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    sample_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id"), doc="the completion (a pair's chosen)")
    text: Mapped[str | None] = mapped_column(Text, doc="completion text when it is no stored sample (SPIN's ground truth)")
    rejected_sample_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id"))
    reward: Mapped[float | None] = mapped_column(Float)
    weight: Mapped[float | None] = mapped_column(Float, doc="advantage or loss weight")
    ref_logp: Mapped[float | None] = mapped_column(Float, doc="reference log-prob of the completion (summed)")
    sampling_logp: Mapped[float | None] = mapped_column(
        Float, doc="the completion's log-prob under the distribution it was sampled from (RLSC's p_old), summed")
    ref_rejected_logp: Mapped[float | None] = mapped_column(Float)
    ref_token_logps: Mapped[list[float] | None] = mapped_column(Json, doc="per-token reference log-probs")
    data: Mapped[dict[str, Any] | None] = mapped_column(
        Json, doc="what the algorithm keeps on the example beyond these columns, as its spec's `data` model says "
        "(CUT and CoIN: `context`, a second prompt for the same completion)")
    created_at: Mapped[datetime] = _created()


class Curation(Base):
    """One score or decision of the curate phase's filters: per prompt, the filter's score and whether the prompt
    stays (kept false: dropped here, with the reason; a dropped prompt is not trained on in its iteration); per
    sample (sample_id set, kept null), a score the prompt's score was made from."""

    __tablename__ = "curations"
    __table_args__ = (UniqueConstraint("iteration_id", "position", "prompt_id", "sample_id"), Index(None, "prompt_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    position: Mapped[int] = mapped_column(Integer, doc="the filter's place in curate.filters (the budget: after the last)")
    filter: Mapped[str] = mapped_column(String(40), doc="ifd, deita, mods, band, budget or a plug-in filter")
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    sample_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id"), doc="set on a per-sample score row")
    score: Mapped[float | None] = mapped_column(Float, doc="the filter's score (IFD, complexity x quality, vote share...)")
    kept: Mapped[bool | None] = mapped_column(Boolean, doc="the decision on the prompt (null on a per-sample row)")
    reason: Mapped[str | None] = mapped_column(Text, doc="why, in words")
    created_at: Mapped[datetime] = _created()


class ExampleCandidate(Base):
    """One candidate of a ranked example (list-wise methods such as RRHF): its rank within the example, best first."""

    __tablename__ = "example_candidates"
    __table_args__ = (UniqueConstraint("example_id", "rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    example_id: Mapped[int] = mapped_column(ForeignKey("examples.id"))
    rank: Mapped[int] = mapped_column(Integer, doc="0 for the best candidate")
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    score: Mapped[float | None] = mapped_column(Float, doc="the score the ranking was made by (higher is better)")
    created_at: Mapped[datetime] = _created()


class TrainStep(Base):
    __tablename__ = "train_steps"
    __table_args__ = (UniqueConstraint("iteration_id", "step"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    step: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float] = mapped_column(Float)
    learning_rate: Mapped[float] = mapped_column(Float)
    grad_norm: Mapped[float] = mapped_column(Float)
    tokens_per_s: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = _created()


class Eval(Base):
    """A held-out metric of a policy: the iteration's candidate or the policy it started from."""

    __tablename__ = "evals"
    __table_args__ = (UniqueConstraint("iteration_id", "role", "suite", "metric"), one_of("evals"))
    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    role: Mapped[str] = mapped_column(String(20))  # candidate | baseline
    checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"), doc="null: the base model")
    suite: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created()


class EvalItem(Base):
    """One held-out problem answered by one policy; the suite metrics are computed from these rows."""

    __tablename__ = "eval_items"
    __table_args__ = (UniqueConstraint("iteration_id", "role", "suite", "item_index"), one_of("eval_items"))
    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    role: Mapped[str] = mapped_column(String(20))
    suite: Mapped[str] = mapped_column(String(100))
    item_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text, doc="the greedy response")
    predicted: Mapped[str | None] = mapped_column(Text)
    correct: Mapped[bool] = mapped_column(Boolean)
    majority_correct: Mapped[bool | None] = mapped_column(Boolean)
    majority_answer: Mapped[str | None] = mapped_column(
        Text, doc="the majority of the k sampled answers (majority_k > 0, families with value answers): with predicted, "
        "the label-free self_consistency")
    num_tokens: Mapped[int] = mapped_column(Integer)
    parts: Mapped[list[bool] | None] = mapped_column(
        Json, doc="the per-part verdicts of the suite's family (instruction following: one per constraint), graded with "
        "`correct` (null: a family without parts, or a row stored before 2026-12-07)")
    created_at: Mapped[datetime] = _created()


class Metric(Base):
    """A per-iteration figure: calibration, drift monitors, selection and synthesis counts."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("iteration_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id"))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = _created()


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index(None, "loop_id", "created_at"), one_of("events"))
    id: Mapped[int] = mapped_column(primary_key=True)
    loop_id: Mapped[int | None] = mapped_column(ForeignKey("loops.id"))
    iteration_id: Mapped[int | None] = mapped_column(ForeignKey("iterations.id"))
    level: Mapped[str] = mapped_column(String(10))  # info | warning | error
    kind: Mapped[str] = mapped_column(String(50))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = _created()


class WriterLease(Base):
    """Who writes a loop now: one row per loop name, whose token grows by one at every take-over.

    The lock (a file lock next to SQLite, an advisory lock on PostgreSQL) keeps a second writer out;
    the token fences one that lost its lock without noticing (a killed lock connection, a deleted lock
    file): every write transaction of a writer checks that the row still holds its token before it
    commits, and stops with `LockLost` when another process has taken over since.
    """

    __tablename__ = "writer_leases"
    __table_args__ = (one_of("writer_leases"),)
    loop_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20), doc="daemon | run (a foreground run or resume) | track | rm | rename | none (never held)")
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="null while held")
    lock_key: Mapped[int | None] = mapped_column(
        Integer, doc="PostgreSQL: the advisory lock's second key when a reader held the one derived from the "
        "loop's name and the writer took a fresh one (null: the derived key)")
    created_at: Mapped[datetime] = _created()


class TrackerRun(Base):
    """A loop's run in an experiment tracker (MLflow, W&B) and how far the store has been sent to it."""

    __tablename__ = "tracker_runs"
    __table_args__ = (UniqueConstraint("loop_id", "backend"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    loop_id: Mapped[int] = mapped_column(ForeignKey("loops.id"))
    backend: Mapped[str] = mapped_column(String(20), doc="mlflow | wandb")
    run_id: Mapped[str] = mapped_column(String(200))
    steps_logged: Mapped[int] = mapped_column(Integer, doc="training steps sent (the tracker's global step axis)")
    steps_through: Mapped[int] = mapped_column(Integer, doc="iterations whose training steps were sent")
    iterations_logged: Mapped[int] = mapped_column(Integer, doc="iterations whose figures were sent")
    last_event_id: Mapped[int] = mapped_column(Integer, doc="events up to this id were sent")
    live_attempt: Mapped[int] = mapped_column(Integer, server_default="0", doc="the attempt of the next iteration's "
                                              "train phase whose steps are being sent while it runs (0: none)")
    live_steps: Mapped[int] = mapped_column(Integer, server_default="0", doc="how many of that attempt's steps were sent")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_at: Mapped[datetime] = _created()
