"""Correctness, graded once: each sample of a prompt with a known answer, checked by the grader of the prompt's
task family and stored in `samples.correct`, which calibration, EFT, the dashboard and export read."""

from __future__ import annotations

from sqlalchemy.orm import Session

from selfloop.db.queries import set_correct, ungraded_samples
from selfloop.families import family


def grade_iteration(session: Session, iteration_id: int) -> int:
    """Grade the iteration's samples not graded yet, each by its family's own rule (not the loop's vote
    extractors: the signal may change, the grading may not); how many were."""
    rows = ungraded_samples(session, iteration_id)
    set_correct(session, {r.id: family(r.family or "value").check(r.text, r.answer).correct for r in rows})
    return len(rows)
