"""What a phase gets: the iteration it works on, the store, the runtime, and a few helpers.

A phase is a function `run(ctx)` that reads rows, does its work in batches and writes rows with
on-conflict-do-nothing on natural keys. It marks itself done (`ctx.mark_done(session)`) in the same
transaction as its last rows, so a crash leaves either "not done" (re-run, nothing duplicated) or
"done" with every row present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from selfloop.adapters import Adapter
from selfloop.config import Config
from selfloop.db import iteration
from selfloop.db.engine import Database
from selfloop.errors import Interrupted
from selfloop.faults import failpoint
from selfloop.runtime import Runtime
from selfloop.seeding import derive_seed


@dataclass
class PhaseContext:
    db: Database
    config: Config
    runtime: Runtime
    loop_id: int
    iteration_id: int
    number: int  # the iteration's number in its loop
    phase: str
    phase_run_id: int
    policy: Adapter | None  # the iteration's starting policy (None: the base model)
    stop_requested: Callable[[], bool] = field(default=lambda: False)
    offset: int = 0  # iterations the loop's lineage ran before its first (a fork at N: N, plus its parent's offset)

    @property
    def step(self) -> int:
        """The iteration's place in its lineage: a fork at N continues at N + 1, so its draw, samples and
        curriculum are those its parent's next iteration would have had."""
        return self.offset + self.number

    def seed(self, *parts: object) -> int:
        """A seed for (this loop's seed, this iteration's place in its lineage, *parts): identical on every re-run,
        and a fork's iteration 1 after N gets the seeds of its parent's iteration N + 1."""
        return derive_seed(self.config.loop.seed, self.step, *parts)

    def check_stop(self) -> None:
        """Between batches: stop here (committed rows stay) when a stop was requested."""
        if self.stop_requested():
            raise Interrupted(f"stop requested during {self.phase}")

    def failpoint(self, name: str) -> None:
        failpoint(f"{self.phase}.{name}")

    def mark_done(self, session: Session) -> None:
        iteration.mark_phase_done(session, self.phase_run_id)

    def set_progress(self, done: int, total: int, note: str | None = None) -> None:
        """Record how far the phase is (`selfloop status`, /metrics); `note` says what is counted."""
        values = {"progress_done": done, "progress_total": total} | ({"progress_note": note} if note else {})
        with self.db.session() as session:
            iteration.set_phase_progress(session, self.phase_run_id, **values)
