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

from sqlalchemy import func, select

from selfloop.db.models import Judgment, Prompt, Sample, Vote
from selfloop.db.queries import add_event, insert_ignore, set_metric, unjudged_samples
from selfloop.engines.base import Completion, Sampling
from selfloop.judging.answers import extract_answer, normalise
from selfloop.judging.calibration import calibrate
from selfloop.judging.correctness import grade_iteration
from selfloop.families import family
from selfloop.judging.judge import judge_chat, load_template
from selfloop.judging.rewards import transform
from selfloop.judging.scores import VERDICT_STOPS, expected_score, justification, parse_score, verdict_tokens
from selfloop.judging.vote import vote
from selfloop.phases.context import PhaseContext
from selfloop.progress import Progress


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
        rescored = engine.score([prompt_chat(s.prompt, system, s.messages) for s in todo], [s.token_ids for s in todo],
                                adapter=ctx.policy)
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
        truths = {row.id: row for row in session.execute(
            select(Prompt.id, Prompt.answer, Prompt.family).where(Prompt.id.in_(list(by_prompt))))}
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
            "correct": result.answer == normalise(known) if label_checkable else None,
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
    by_distribution = cfg.scoring == "distribution"
    stops = VERDICT_STOPS if by_distribution else ()
    sampling = Sampling(n=cfg.k, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, stop=stops)
    per_call = max(1, 2 * ctx.config.engine.batch_size // cfg.k)
    with ctx.db.session() as session:
        samples = session.scalar(select(func.count()).select_from(Sample).where(Sample.iteration_id == ctx.iteration_id))
    with Progress("judge", samples * cfg.k, on_update=ctx.set_progress, done=(samples - len(todo)) * cfg.k) as progress:
        for start in range(0, len(todo), per_call):
            ctx.check_stop()
            chunk = todo[start : start + per_call]
            seeds = [[ctx.seed("judge", s.source, s.item_index, s.sample_index, j) for j in range(cfg.k)] for s in chunk]
            chats = [judge_chat(template, s.prompt, s.text) for s in chunk]
            if cfg.max_new_tokens:
                outs = engine.generate(chats, sampling, seeds=seeds, adapter=adapter, progress=progress.update)
            else:  # the verdict straight after the rubric prompt: no justification to write
                outs = [[Completion("", [], [], "length")] for _ in chunk]
                progress.update(len(chunk))
            if by_distribution:
                rows = _by_distribution(engine, adapter, chunk, chats, outs)
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


def _by_distribution(engine, adapter, chunk, chats, outs) -> list[dict]:  # noqa: ANN001
    """Each justification continued with the verdict prefix; the score is the expected points."""
    head, values = verdict_tokens(engine.tokenizer)
    flat = [(s, chat, j, c) for s, chat, judged in zip(chunk, chats, outs) for j, c in enumerate(judged)]
    texts = [justification(c.text) for *_, c in flat]
    # The justification and the verdict prefix are tokenised apart, so the prefix's tokens are exactly
    # those `verdict_tokens` checked the values against.
    prefixes = [engine.tokenizer.encode(t + "\n" if t else "", add_special_tokens=False) + head for t in texts]
    logprobs = engine.next_token_logprobs([chat for _, chat, _, _ in flat], prefixes, values, adapter=adapter)
    rows = []
    for (s, _, j, c), text, lps in zip(flat, texts, logprobs):
        score, mass, probs = expected_score(lps)
        rows.append({"sample_id": s.id, "kind": "llm_judge", "judge_index": j, "score": score,
                     "parse_ok": score is not None, "raw": c.text,
                     "details": {"scoring": "distribution", "probs": probs, "mass": mass}})
    return rows


SIGNALS = {"confidence": _confidence, "vote": _vote, "llm_judge": _llm_judge}


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
