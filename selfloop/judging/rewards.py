"""The reward training reads, for the lab's controls and ceilings (`judge.reward`).

'verify' (the oracle): each LLM-judge and vote judgment's score becomes the task family's verdict on the sample
(`samples.correct`, graded once by the judge phase): 1 or 0 for a vote, 5 or 0 points for the judge (the rubric's
ends); a sample without a known answer gets no score (parse_ok false), so no algorithm trains on it.
'shuffled' (the spurious-reward control): within each prompt and signal, the samples' judgments are permuted among
the samples (a sample takes all of another's judgments, judge index by judge index), by a seeded permutation
(loop seed, iteration, prompt, signal): every prompt keeps the same multiset of values, each sample loses the
information its own values carried.
'function': a user's Python function (`judge.reward_function`, TRL's reward-function form) scores each sample
from 0 to 1; its judgments take that reward (x1 for a vote, x5 points for the judge).
Either way the judged value stays where it was judged (`judgments.score`, `parse_ok`): the transform is stored
beside it (`reward`, `reward_ok`, and `reward_mode` naming the transform), so a judgment is transformed at most
once (a re-run or a signal added later only transforms what is new), and `Judgment.trained_score` is what training
reads. Every algorithm that reads these scores (DPO, RRHF, RSO, RAFT, CUT through the LLM judge; TTRL,
ReST-EM, CoIN through the vote) trains on the transformed reward without knowing it.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

from sqlalchemy.orm import Session

from selfloop.db import judging
from selfloop.db.models import Judgment
from selfloop.judging.intrinsic import INTRINSIC

KINDS = judging.TRANSFORMED
TOP = {"llm_judge": 5.0, "vote": 1.0}  # the verdict "right" in each signal's units


def permutation(n: int, seed: str) -> list[int]:
    """A seeded permutation of range(n): sample i takes the values of sample perm[i]."""
    order = list(range(n))
    random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")).shuffle(order)
    return order


def transform(session: Session, iteration_id: int, mode: str, loop_seed: int, number: int,
              function: str | None = None) -> int:
    """Apply `mode` ('verify', 'shuffled' or 'function') to the iteration's untransformed LLM-judge and vote
    judgments; the number of judgments changed."""
    if mode == "function":
        return _by_function(session, iteration_id, function or "")
    if mode in INTRINSIC:
        return _by_signal(session, iteration_id, mode)
    fresh = judging.to_transform(session, iteration_id)
    if mode == "verify":
        for r in fresh:
            score = None if r.correct is None else (TOP[r.Judgment.kind] if r.correct else 0.0)
            _set(r.Judgment, mode, score, score is not None)
        return len(fresh)
    groups: dict[tuple, dict[int, list[Judgment]]] = defaultdict(lambda: defaultdict(list))
    keys = {}
    for r in fresh:
        kind = r.Judgment.kind
        groups[(r.prompt_id, kind)][r.sample_index].append(r.Judgment)
        keys[(r.prompt_id, kind)] = f"{loop_seed}:shuffled:{number}:{r.source}:{r.item_index}:{kind}"
    for group, by_sample in groups.items():
        samples = sorted(by_sample)
        values = {i: [(j.score, j.parse_ok) for j in by_sample[i]] for i in samples}  # as judged
        for i, k in zip(samples, permutation(len(samples), keys[group])):
            given = values[samples[k]]
            for n, judgment in enumerate(by_sample[i]):
                score, ok = given[n] if n < len(given) else (None, False)
                _set(judgment, mode, score, ok, from_sample=samples[k])
    return len(fresh)


def _by_signal(session: Session, iteration_id: int, signal: str) -> int:
    """A label-free signal as the reward: each sample's score of that signal (judging/intrinsic.py), on 0 to 1 (the
    signals without a scale of their own min-max within the prompt), becomes its LLM-judge and vote judgments' score
    in their units (x5 points, x1). A sample without a score (no answer, no paraphrase) gets none: no algorithm
    trains on it."""
    from selfloop.judging.intrinsic import per_prompt_unit

    scored = judging.signal_scores(session, iteration_id, signal)
    by_prompt: dict[int, list[tuple[int, float | None]]] = defaultdict(list)
    for sample_id, prompt_id, score, ok in scored:
        by_prompt[prompt_id].append((sample_id, score if ok else None))
    reward: dict[int, float | None] = {}
    for rows in by_prompt.values():
        values = [v for _, v in rows]
        unit = per_prompt_unit(values) if signal in ("self_certainty", "entropy") else values
        reward |= {sample_id: r for (sample_id, _), r in zip(rows, unit)}
    fresh = [r.Judgment for r in judging.to_transform(session, iteration_id)]
    for judgment in fresh:
        r = reward.get(judgment.sample_id)
        _set(judgment, signal, None if r is None else r * TOP[judgment.kind], r is not None)
    return len(fresh)


def _by_function(session: Session, iteration_id: int, function: str) -> int:
    """'function': the user's function scores each sample once (0 to 1); each of its judgments takes that reward in
    its signal's units (x1 for a vote, x5 points for the judge)."""
    from selfloop.judging.reward_function import rewards

    fresh = judging.to_transform(session, iteration_id, texts=True)
    samples = {r.Judgment.sample_id: (r.prompt_text, r.sample_text, r.answer) for r in fresh}
    if not samples:
        return 0
    ids = list(samples)
    values = dict(zip(ids, rewards(function, [samples[i][0] for i in ids], [samples[i][1] for i in ids],
                                   [samples[i][2] for i in ids]), strict=True))
    for r in fresh:
        _set(r.Judgment, "function", values[r.Judgment.sample_id] * TOP[r.Judgment.kind], True)
    return len(fresh)


def _set(judgment: Judgment, mode: str, reward: float | None, ok: bool, **extra: int) -> None:
    judgment.reward_mode, judgment.reward, judgment.reward_ok = mode, reward, ok
    if extra:
        judgment.details = {**(judgment.details or {}), **extra}
