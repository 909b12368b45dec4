"""Evaluation fine-tuning (EFT, Self-Rewarding LMs, Yuan et al. 2024): judge-training examples from
the loop's own judgments.

Where a prompt's answer is known, each of its samples was graded by the judge phase (`samples.correct`). A judgment
agrees with that check when its verdict (the score rounded to the rubric's whole points) is above
the threshold for a correct sample, or at or below it for a wrong one. Agreeing judgments become
examples: the rubric prompt about the sample is the prompt, the judge's own justification followed by
`Score: <points>` is the target. Half come from correct samples and half from wrong ones where both
exist, in a fixed order, so a re-run selects the same ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from selfloop.db import judging
from selfloop.judging.scores import justification

if TYPE_CHECKING:
    from selfloop.config import Config

ALGORITHM = "eft"  # the examples' `algorithm`, which the train phase gives the judge's prompt


def verdict_text(raw: str | None, points: int) -> str:
    reason = justification(raw or "")
    return f"{reason}\nScore: {points}" if reason else f"Score: {points}"


def eft_examples(session: Session, iteration_id: int, config: Config) -> list[dict]:
    cfg = config.train.eft
    rows = judging.graded_verdicts(session, iteration_id)
    right: list[dict[str, Any]] = []
    wrong: list[dict[str, Any]] = []
    for score, raw, sample_id, correct, prompt_id in rows:
        if score is None:  # parse_ok: never
            continue
        points = int(round(score))
        agrees = points > cfg.threshold if correct else points <= cfg.threshold
        if agrees:
            (right if correct else wrong).append(
                {"prompt_id": prompt_id, "sample_id": sample_id, "text": verdict_text(raw, points),
                 "reward": float(points), "weight": cfg.weight})
    half = (cfg.max_examples + 1) // 2  # an odd one goes to the correct side
    take_right = min(len(right), max(half, cfg.max_examples - len(wrong)))
    take_wrong = min(len(wrong), cfg.max_examples - take_right)
    return right[:take_right] + wrong[:take_wrong]
