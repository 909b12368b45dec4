"""Phase judge: every sample gets the self-judging signals the config asks for.

- confidence: the rollout's sequence and mean token log-probs (and, if asked, a re-score of the
  sample under the current policy at temperature 1) - p_old(y|x) for RLSC, exactly as sampled;
- vote: per sample the extracted answer and whether it agrees with its prompt's majority (TTRL's
  reward); per prompt the majority answer, its share, the number of valid votes and any tie;
- llm_judge: k judgments per sample by the policy itself (or a separate judge model) with the
  additive 5-point rubric; the raw text, score and parse flag of each. The score is either parsed
  from the judge's text or (scoring 'distribution') the expected points under the judge's next-token
  probabilities after its justification, stored with that distribution.
Each signal only fills what is missing, so any signal can be added later to stored samples, and a
re-run after a crash repeats nothing. First, each sample of a prompt with a known answer is graded once by its
prompt's task family (`samples.correct`, which calibration, EFT, the dashboard and export read). With
`judge.reward` 'verify' or 'shuffled' the LLM-judge and vote scores then become the lab's oracle or spurious reward
(judging/rewards.py); calibration against the verdicts, of the reward training will read, closes the phase.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from selfloop.db import judging
from selfloop.db.models import Judgment, Vote
from selfloop.db.queries import add_event, insert_ignore, set_metric, unjudged_samples
from selfloop.engines.base import Completion, FollowUp, Sampling
from selfloop.families import family
from selfloop.families.answers import extract_answer
from selfloop.judging import intrinsic
from selfloop.judging.calibration import calibrate
from selfloop.judging.correctness import grade_iteration
from selfloop.judging.judge import judge_chat, load_template
from selfloop.judging.rewards import transform
from selfloop.judging.scores import VERDICT_STOPS, expected_score, justification, parse_score, verdict_tokens
from selfloop.judging.vote import vote
from selfloop.phases.context import PhaseContext
from selfloop.progress import Progress

if TYPE_CHECKING:
    from selfloop.adapters import Adapter
    from selfloop.engines.base import Chat, Engine


def _missing(ctx: PhaseContext, kind: str) -> list:
    with ctx.db.session() as session:
        return unjudged_samples(session, ctx.iteration_id, kind)


def _confidence(ctx: PhaseContext) -> None:
    todo = _missing(ctx, "confidence")
    rescored: list[list[float] | None] = [None] * len(todo)
    if todo and ctx.config.judge.confidence.rescore:
        from selfloop.engines.chat import prompt_chat

        engine = ctx.runtime.engine()
        system = ctx.config.generation.system_prompt
        rescored = list(engine.score([prompt_chat(s.prompt, system, s.messages) for s in todo],
                                     [s.token_ids for s in todo], adapter=ctx.policy))
    rows = []
    for s, again in zip(todo, rescored):
        details = {"sum_logprob": s.sum_logprob, "mean_logprob": s.mean_logprob, "num_tokens": s.num_tokens}
        if again is not None:
            details |= {"rescored_sum_logprob": sum(again), "rescored_mean_logprob": sum(again) / max(1, len(again))}
        rows.append({"sample_id": s.id, "kind": "confidence", "judge_index": 0, "score": s.mean_logprob,
                     "parse_ok": True, "details": details})
    with ctx.db.session() as session:
        insert_ignore(session, Judgment, rows, ["sample_id", "kind", "judge_index"])


def _vote(ctx: PhaseContext) -> None:
    todo = _missing(ctx, "vote")
    chain = ctx.config.judge.vote.extractors
    by_prompt: dict[int, list] = defaultdict(list)
    for s in todo:
        by_prompt[s.prompt_id].append(s)
    if not by_prompt:
        return
    with ctx.db.session() as session:
        truths = judging.prompts(session, list(by_prompt))
    judgments, votes = [], []
    voters = ctx.config.judge.vote.voters
    for prompt_id, samples in by_prompt.items():
        answers = [extract_answer(s.text, chain) for s in samples]
        result = vote(answers[:voters] if voters else answers)  # the label; every sample is scored against it
        known = truths[prompt_id].answer
        # A family whose answers are no values (a constraint list) has no answer to vote on: the majority is
        # never right or wrong, each sample is.
        label_checkable = known is not None and family(truths[prompt_id].family or "value").votable
        votes.append({
            "prompt_id": prompt_id, "answer": result.answer, "share": result.share, "n_valid": result.n_valid,
            "n_votes": result.n_votes, "tie": result.tie, "tied_answers": list(result.tied) or None,
            # The family's grader reads the majority's answer, as it reads every sample's (samples.correct).
            "correct": (result.answer is not None and family(truths[prompt_id].family or "value").check(result.answer, known).correct)
            if label_checkable and known is not None else None,
        })
        for s, answer in zip(samples, answers):
            judgments.append({
                "sample_id": s.id, "kind": "vote", "judge_index": 0, "answer": answer, "parse_ok": answer is not None,
                "score": 1.0 if result.agrees(answer) else 0.0,
                "details": {"majority": result.answer},
            })
    with ctx.db.session() as session:
        insert_ignore(session, Vote, votes, ["prompt_id"])
        insert_ignore(session, Judgment, judgments, ["sample_id", "kind", "judge_index"])


def _llm_judge(ctx: PhaseContext) -> None:
    cfg = ctx.config.judge.llm_judge
    todo = _missing(ctx, "llm_judge")
    if not todo:
        return
    template = load_template(cfg.template)
    engine, is_policy = ctx.runtime.judge_engine()
    adapter = ctx.policy if is_policy else None
    verdict = _verdict(engine) if cfg.scoring == "distribution" else None
    stops = VERDICT_STOPS if verdict is not None else ()
    sampling = Sampling(n=cfg.k, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, stop=stops)
    per_call = max(1, 2 * ctx.config.engine.batch_size // cfg.k)
    with ctx.db.session() as session:
        samples = judging.sample_count(session, ctx.iteration_id)
    with Progress("judge", samples * cfg.k, on_update=ctx.set_progress, done=(samples - len(todo)) * cfg.k) as progress:
        for start in range(0, len(todo), per_call):
            ctx.check_stop()
            chunk = todo[start : start + per_call]
            seeds = [[ctx.seed("judge", s.source, s.item_index, s.sample_index, j) for j in range(cfg.k)] for s in chunk]
            chats = [judge_chat(template, s.prompt, s.text) for s in chunk]
            if cfg.max_new_tokens and verdict is not None:  # the verdict read where each justification ends
                outs = engine.generate_and_score(chats, sampling, verdict, seeds=seeds, adapter=adapter,
                                                 progress=progress.update)
            elif cfg.max_new_tokens:
                outs = engine.generate(chats, sampling, seeds=seeds, adapter=adapter, progress=progress.update)
            else:  # the verdict straight after the rubric prompt: no justification to write
                outs = [[Completion("", [], [], "length")] for _ in chunk]
                progress.update(len(chunk))
            if verdict is not None:
                rows = _by_distribution(engine, adapter, chunk, chats, outs, verdict)
            else:
                rows = []
                for s, judged in zip(chunk, outs):
                    for j, c in enumerate(judged):
                        score = parse_score(c.text)
                        rows.append({"sample_id": s.id, "kind": "llm_judge", "judge_index": j, "score": score,
                                     "parse_ok": score is not None, "raw": c.text})
            with ctx.db.session() as session:
                insert_ignore(session, Judgment, rows, ["sample_id", "kind", "judge_index"])
            ctx.failpoint("after_chunk")


def _verdict(engine: Engine) -> FollowUp:
    """What the distribution score reads after each justification: the justification, tokenised apart from the verdict
    line's prefix so that the prefix's tokens are exactly those `verdict_tokens` checked the values against, then the
    next-token log-probs at the score values."""
    head, values = verdict_tokens(engine.tokenizer)

    def tokens(completion: Completion) -> list[int]:
        text = justification(completion.text)
        return engine.tokenizer.encode(text + "\n" if text else "", add_special_tokens=False) + head

    return FollowUp(tokens, tuple(values))


def _by_distribution(engine: Engine, adapter: Adapter | None, chunk: Sequence[Any], chats: Sequence[Chat],
                     outs: Sequence[Sequence[Completion]], verdict: FollowUp) -> list[dict[str, Any]]:
    """Each justification continued with the verdict prefix; the score is the expected points. The engine read the
    verdicts as it decoded (generate_and_score); an empty justification (max_new_tokens 0) is read here."""
    flat = [(s, chat, j, c) for s, chat, judged in zip(chunk, chats, outs) for j, c in enumerate(judged)]
    unread = [(chat, c) for _, chat, _, c in flat if c.follow_logprobs is None]
    if unread:
        read = engine.next_token_logprobs([chat for chat, _ in unread], [verdict.tokens(c) for _, c in unread],
                                          verdict.candidates, adapter=adapter)
        for (_, c), lps in zip(unread, read, strict=True):
            c.follow_logprobs = lps
    rows = []
    for s, _, j, c in flat:
        score, mass, probs = expected_score(c.follow_logprobs or [])  # every one read by now
        rows.append({"sample_id": s.id, "kind": "llm_judge", "judge_index": j, "score": score,
                     "parse_ok": score is not None, "raw": c.text,
                     "details": {"scoring": "distribution", "probs": probs, "mass": mass}})
    return rows


def _token_stats(ctx: PhaseContext, todo: list) -> dict[int, tuple[list[float], list[float]]]:
    """Each sample's per-token entropy and self-certainty: as the rollout recorded them (the hf engine, from the
    logits it sampled with), else teacher-forced under the policy that sampled them and stored on the sample."""
    from selfloop.engines.chat import prompt_chat

    ids = [s.id for s in todo]
    with ctx.db.session() as session:
        stored = judging.token_stats(session, ids)
    out = {i: (stored[i].token_entropies, stored[i].token_self_certainties) for i in ids
           if stored[i].token_entropies is not None and stored[i].token_self_certainties is not None}
    missing = [s for s in todo if s.id not in out]
    if missing:
        engine, system = ctx.runtime.engine(), ctx.config.generation.system_prompt
        per_call = max(1, ctx.config.engine.batch_size)
        for start in range(0, len(missing), per_call):
            ctx.check_stop()
            chunk = missing[start : start + per_call]
            stats = engine.token_stats([prompt_chat(s.prompt, system, s.messages) for s in chunk],
                                       [s.token_ids for s in chunk], adapter=ctx.policy)
            rounded = {s.id: ([round(x, 5) for x in e], [round(x, 5) for x in c]) for s, (e, c) in zip(chunk, stats)}
            with ctx.db.session() as session:
                judging.store_token_stats(session, rounded)
            out |= rounded
    return out


def _per_token(ctx: PhaseContext, kind: str) -> None:
    """self_certainty (Intuitor) or entropy (EM-RL): one score per sample from its tokens' distributions."""
    todo = _missing(ctx, kind)
    if not todo:
        return
    stats = _token_stats(ctx, todo)
    rows = []
    for s in todo:
        entropies, certainties = stats[s.id]
        score = intrinsic.self_certainty(certainties) if kind == "self_certainty" else intrinsic.negative_entropy(entropies)
        rows.append({"sample_id": s.id, "kind": kind, "judge_index": 0, "score": score, "parse_ok": score is not None,
                     "details": {"tokens": len(certainties or [])}})
    with ctx.db.session() as session:
        insert_ignore(session, Judgment, rows, ["sample_id", "kind", "judge_index"])


def _self_certainty(ctx: PhaseContext) -> None:
    _per_token(ctx, "self_certainty")


def _entropy(ctx: PhaseContext) -> None:
    _per_token(ctx, "entropy")


def _semantic_entropy(ctx: PhaseContext) -> None:
    """EMPO: each sample's reward is its answer cluster's probability, on prompts whose semantic entropy is in the
    band (judging/intrinsic.py)."""
    todo = _missing(ctx, "semantic_entropy")
    cfg, chain = ctx.config.judge.semantic_entropy, ctx.config.judge.vote.extractors
    by_prompt: dict[int, list] = defaultdict(list)
    for s in todo:
        by_prompt[s.prompt_id].append(s)
    rows = []
    for samples in by_prompt.values():
        answers = [extract_answer(s.text, chain) for s in samples]
        probs, entropy = intrinsic.semantic_clusters(answers)
        kept = intrinsic.in_band(entropy, len(samples), cfg.band_low, cfg.band_high)
        for s, answer, p in zip(samples, answers, probs):
            rows.append({"sample_id": s.id, "kind": "semantic_entropy", "judge_index": 0, "answer": answer,
                         "score": p if kept else 0.0, "parse_ok": answer is not None,
                         "details": {"cluster_probability": p, "semantic_entropy": entropy, "in_band": kept}})
    with ctx.db.session() as session:
        insert_ignore(session, Judgment, rows, ["sample_id", "kind", "judge_index"])


def _cross_view(ctx: PhaseContext) -> None:
    """Co-rewarding: each prompt is asked again in another training wording; a sample's reward is its agreement
    with the majority of the paraphrase's own samples (judging/intrinsic.py)."""
    from selfloop.engines.chat import user_chat
    from selfloop.families.paraphrase import paraphrases

    todo = _missing(ctx, "cross_view")
    if not todo:
        return
    cfg, chain = ctx.config.judge.cross_view, ctx.config.judge.vote.extractors
    by_prompt: dict[int, list] = defaultdict(list)
    for s in todo:
        by_prompt[s.prompt_id].append(s)
    with ctx.db.session() as session:
        prompts = list(judging.prompts(session, list(by_prompt)).values())
    other = paraphrases([(p.id, p.family, p.task_key, p.text) for p in prompts], ctx.config.generation.tasks.levels)
    g = ctx.config.generation
    sampling = Sampling(n=cfg.samples, temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
                        max_new_tokens=g.max_new_tokens, stop=tuple(g.stop))
    asked = [pid for pid in by_prompt if pid in other]
    views: dict[int, list[str | None]] = {}
    per_call = max(1, 2 * ctx.config.engine.batch_size // cfg.samples)
    for start in range(0, len(asked), per_call):
        ctx.check_stop()
        engine = ctx.runtime.engine()  # started only when some prompt has another wording
        chunk = asked[start : start + per_call]
        first = {pid: by_prompt[pid][0] for pid in chunk}
        seeds = [[ctx.seed("cross_view", first[pid].source, first[pid].item_index, j) for j in range(cfg.samples)]
                 for pid in chunk]
        outs = engine.generate([user_chat(other[pid], g.system_prompt) for pid in chunk], sampling, seeds=seeds,
                               adapter=ctx.policy)
        views |= {pid: [extract_answer(c.text, chain) for c in completions] for pid, completions in zip(chunk, outs)}
    rows = []
    for pid, samples in by_prompt.items():
        answers = [extract_answer(s.text, chain) for s in samples]
        if pid not in views:  # no other training wording: no second view, no reward
            rows += [{"sample_id": s.id, "kind": "cross_view", "judge_index": 0, "answer": a, "score": None,
                      "parse_ok": False, "details": {"paraphrase": None}} for s, a in zip(samples, answers)]
            continue
        rewards, label = intrinsic.cross_view(answers, views[pid])
        rows += [{"sample_id": s.id, "kind": "cross_view", "judge_index": 0, "answer": a, "score": r, "parse_ok": True,
                  "details": {"paraphrase": other[pid], "label": label, "other_view": views[pid]}}
                 for s, a, r in zip(samples, answers, rewards)]
    with ctx.db.session() as session:
        insert_ignore(session, Judgment, rows, ["sample_id", "kind", "judge_index"])


SIGNALS = {"confidence": _confidence, "vote": _vote, "llm_judge": _llm_judge, "self_certainty": _self_certainty,
           "entropy": _entropy, "semantic_entropy": _semantic_entropy, "cross_view": _cross_view}


def run(ctx: PhaseContext) -> None:
    with ctx.db.session() as session:
        grade_iteration(session, ctx.iteration_id)
    for signal in ctx.config.judge.signals:
        SIGNALS[signal](ctx)
    with ctx.db.session() as session:
        if ctx.config.judge.reward != "judged":  # in the done mark's transaction: transformed once, or not at all
            changed = transform(session, ctx.iteration_id, ctx.config.judge.reward, ctx.config.loop.seed, ctx.step,
                                function=ctx.config.judge.reward_function)
            set_metric(session, ctx.iteration_id, f"judge.{ctx.config.judge.reward}_judgments", changed)
        metrics = calibrate(session, ctx.iteration_id)
        rate, floor = metrics.get("judge.parse_rate"), ctx.config.warnings.min_judge_parse_rate
        judged = "llm_judge" in ctx.config.judge.signals and ctx.config.judge.reward == "judged"
        if judged and rate is not None and rate < floor:
            add_event(session, ctx.loop_id, ctx.iteration_id, "judge.parse_rate_low",
                      f"the LLM judge gave a readable score in {rate:.1%} of judgments (floor {floor:.0%}): "
                      "its scores rest on few samples", level="warning", data={"parse_rate": rate, "floor": floor})
        ctx.mark_done(session)
