"""Phase evaluate: held-out verifiable suites for the iteration's candidate and its starting policy,
then the drift monitors.

Per suite and policy, each response graded by the suite's task family: greedy accuracy (with a Wilson 95%
interval; for instruction following, every constraint followed: IFEval's prompt-level strict accuracy), the
family's part metric where it has one (instruction following: the share of constraints followed), majority@k
accuracy when asked, mean response length. Every answered problem is a row of `eval_items`, written in chunks, so a
re-run continues where it stopped; the `evals` rows are computed from them with the done mark. The
starting policy's rows are copied from an earlier iteration of the loop that evaluated the same
checkpoint on the same problems, instead of being generated again. An algorithm whose spec declares `held_out`
adds its own figures per suite and policy from the answered items (R-Tuning: the average precision of P(sure)).
A suite with `when: ends` is answered at the loop's ends only (`answered_by`): by its start, and in its last iteration
by the policy the gate will keep, decided here as the promote phase decides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from selfloop.algorithms import spec, trainer
from selfloop.db import evaluation
from selfloop.db.models import Eval, EvalItem, Iteration
from selfloop.db.queries import adapter_of, add_event, ancestor_ids, insert_ignore, row
from selfloop.engines.base import Completion, Sampling
from selfloop.engines.chat import prompt_chat
from selfloop.errors import ConfigError
from selfloop.evals import cache as eval_cache
from selfloop.evals.drift import kl_per_token, monitor
from selfloop.evals.stats import wilson
from selfloop.evals.suites import Item, load_suite
from selfloop.families import family
from selfloop.families.answers import extract_answer, normalise
from selfloop.families.spec import FamilySpec
from selfloop.judging.vote import vote
from selfloop.phases.context import PhaseContext
from selfloop.progress import Progress
from selfloop.tasks import load_pool

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from selfloop.adapters import Adapter
    from selfloop.config import Config, SuiteConfig


def check_disjoint(ctx: PhaseContext, suites: dict[str, list[Item]]) -> None:
    """Refuse to evaluate on a problem the loop could have trained on."""
    with ctx.db.session() as session:
        trained = evaluation.trained_prompts(session, ctx.loop_id)
    trained |= {t.prompt for t in load_pool(ctx.config.generation.tasks)}
    for name, items in suites.items():
        overlap = [it.prompt for it in items if it.prompt in trained]
        if overlap:
            raise ConfigError(f"eval suite {name!r} shares {len(overlap)} problem(s) with the training prompts, "
                              f"e.g. {overlap[0]!r}: held-out suites must be disjoint from them")


def _reuse(ctx: PhaseContext, suite: SuiteConfig, checkpoint_id: int | None, items: list[Item]) -> list[dict] | None:
    """Rows of an earlier evaluation of the same policy on the same problems in this loop, else (a suite without
    sampled majorities, answered greedily) in a loop it was forked from, or with eval.reuse_from_store in any loop of
    the store, that evaluated it with the same settings: a fork's start is its parent's candidate, answered already."""
    greedy_only = suite.majority_k == 0
    anywhere = ctx.config.eval.reuse_from_store and greedy_only
    with ctx.db.session() as session:
        ancestors = ancestor_ids(session, ctx.loop_id) if greedy_only else []
        evaluated = evaluation.earlier_evaluations(session, ctx.iteration_id, ctx.loop_id, suite.name, checkpoint_id,
                                                   None if anywhere else [ctx.loop_id, *ancestors])
        configs = evaluation.loop_configs(session, {e.loop_id for e in evaluated} - {ctx.loop_id})
        found = next((e for e in evaluated
                      if e.loop_id == ctx.loop_id or _same_settings(configs[e.loop_id], ctx.config, suite)), None)
        if found is None:
            return None
        rows = evaluation.suite_items(session, found.iteration_id, found.role, suite.name)
    if [r.prompt for r in rows] != [it.prompt for it in items]:
        return None
    keep = ("item_index", "prompt", "answer", "response", "predicted", "correct", "majority_correct", "majority_answer",
            "num_tokens", "parts")
    return [{k: getattr(r, k) for k in keep} for r in rows]


def _cache_key(ctx: PhaseContext, suite: SuiteConfig, adapter: Adapter | None, items: list[Item]) -> str:
    from selfloop.models.resolve import weights_sha256

    model = ctx.runtime.model
    return eval_cache.key(ctx.config, model.sha256 or weights_sha256(str(model.path)),
                          adapter.sha256 if adapter is not None else None, suite, items)


def _keep(ctx: PhaseContext, role: str, suite: SuiteConfig, cache: Path, digest: str) -> None:
    """The suite's rows for `role`, now complete in the store, kept in the eval cache."""
    with ctx.db.session() as session:
        rows = evaluation.suite_items(session, ctx.iteration_id, role, suite.name)
        found = [{f: getattr(r, f) for f in eval_cache.ROW_FIELDS} for r in rows]
    eval_cache.save(cache, digest, found)


def _same_settings(stored: dict[str, Any], config: Config, suite: SuiteConfig) -> bool:
    """Whether another loop's stored config answers `suite` as this one would: the same base model, dtype, engine,
    system prompt and suite definition (a base-model policy is only the same on the same base). The grading is the
    family's own rule whatever the loop votes with, so the vote's extractors do not matter."""
    try:
        theirs = next(s for s in stored["eval"]["suites"] if s.get("name") == suite.name)
        return (stored["model"]["base"] == config.model.base and stored["model"].get("dtype") == config.model.dtype
                and stored["engine"].get("kind") == config.engine.kind
                and stored["generation"].get("system_prompt") == config.generation.system_prompt
                and suite.answer_part(theirs) == suite.answer_settings())
    except (KeyError, TypeError, StopIteration):
        return False


def _answer(ctx: PhaseContext, role: str, suite: SuiteConfig, items: list[Item], adapter: Adapter | None) -> None:
    """Generate and store the missing eval_items of one suite for one policy."""
    spec = family(suite.graded_by())
    system = ctx.config.generation.system_prompt
    with ctx.db.session() as session:
        done = evaluation.answered(session, ctx.iteration_id, role, suite.name)
    todo = [i for i in range(len(items)) if i not in done]
    if not todo:
        return
    engine = ctx.runtime.engine()
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=suite.max_new_tokens)
    k = suite.majority_k
    g = ctx.config.generation
    sampled = Sampling(n=k, temperature=g.temperature or 1.0, top_p=g.top_p, top_k=g.top_k, max_new_tokens=suite.max_new_tokens)
    per_call = max(1, 2 * ctx.config.engine.batch_size // max(1, k))
    note = f"{role} on {suite.name}"
    with Progress(f"evaluate {note}", len(items), "item", done=len(items) - len(todo),
                  on_update=lambda done, total: ctx.set_progress(done, total, note)) as progress:
        for start in range(0, len(todo), per_call):
            ctx.check_stop()
            chunk = todo[start : start + per_call]
            chats = [prompt_chat(items[i].prompt, system, items[i].chat) for i in chunk]
            alive = lambda _done, tokens: progress.update(0, tokens)  # noqa: E731 - tok/s and the heartbeat
            outs = engine.generate(chats, greedy, adapter=adapter, progress=alive)
            votes: list[list[Completion] | None] = [None] * len(chunk)
            if k:
                seeds = [[ctx.seed("eval", suite.name, i, j) for j in range(k)] for i in chunk]
                votes = list(engine.generate(chats, sampled, seeds=seeds, adapter=adapter, progress=alive))
            rows = []
            for i, out, many in zip(chunk, outs, votes):
                parts = None
                if suite.labelled:
                    graded = spec.check(out[0].text, items[i].answer)
                    predicted, correct = graded.predicted, graded.correct
                    parts = list(graded.parts) if graded.parts is not None else None
                else:  # no label: the answer the family's extractors read, never right or wrong
                    predicted, correct = extract_answer(out[0].text, spec.extractors), False
                majority = _majority_answer(many, spec) if many else None
                rows.append({
                    "iteration_id": ctx.iteration_id, "role": role, "suite": suite.name, "item_index": i,
                    "prompt": items[i].prompt, "answer": items[i].answer, "response": out[0].text,
                    "predicted": predicted, "correct": correct,
                    "majority_correct": _majority_correct(many, items[i].answer, spec) if many and suite.labelled else None,
                    "majority_answer": majority, "num_tokens": out[0].num_tokens, "parts": parts,
                })
            with ctx.db.session() as session:
                insert_ignore(session, EvalItem, rows, ["iteration_id", "role", "suite", "item_index"])
            progress.update(len(chunk))
            ctx.failpoint("after_chunk")


def _majority_answer(completions: Sequence[Completion], spec: FamilySpec) -> str | None:
    """The majority of the k samples' answers, read by the family's own extractors (None: a family whose answers
    are no values)."""
    if not spec.votable:
        return None
    return vote([extract_answer(c.text, spec.extractors) for c in completions]).answer


def _majority_correct(completions: Sequence[Completion], answer: str, spec: FamilySpec) -> bool:
    """majority@k: the most common answer (read by the family's own extractors) is right. A family whose answers are
    no values (a constraint list) has no answer to vote on: there it is the majority of the k samples' verdicts
    (more than half correct)."""
    if not spec.votable:
        return 2 * sum(spec.check(c.text, answer).correct for c in completions) > len(completions)
    majority = vote([extract_answer(c.text, spec.extractors) for c in completions]).answer
    return majority is not None and spec.check(majority, answer).correct  # the family's grader, as every verdict


def consistent(predicted: str | None, majority: str | None) -> bool:
    """An item's label-free self-consistency: its greedy answer is the majority of its k samples' answers."""
    return predicted is not None and majority is not None and normalise(predicted) == majority


def _summarise(session: Session, iteration_id: int, role: str, suite: SuiteConfig, checkpoint_id: int | None) -> list[dict]:
    spec = family(suite.graded_by())
    rows = evaluation.graded(session, iteration_id, role, suite.name)
    n = len(rows)
    correct = sum(1 for r in rows if r.correct)
    base = {"iteration_id": iteration_id, "role": role, "checkpoint_id": checkpoint_id, "suite": suite.name, "n": n}
    low, high = wilson(correct, n)
    out = [{**base, "metric": "mean_response_tokens", "value": sum(r.num_tokens for r in rows) / n}]
    if rows and any(r.majority_answer is not None for r in rows):
        # Label-free: the greedy answer agrees with the majority of the k samples (Self-Consistency's agreement).
        agree = sum(1 for r in rows if consistent(r.predicted, r.majority_answer))
        c_low, c_high = wilson(agree, n)
        out.append({**base, "metric": "self_consistency", "value": agree / n, "ci_low": c_low, "ci_high": c_high})
    if not suite.labelled:
        return out
    out.insert(0, {**base, "metric": "greedy_accuracy", "value": correct / n, "ci_low": low, "ci_high": high})
    if rows and spec.part_metric:
        # The share of all parts passed (instruction following: IFEval's instruction-level strict accuracy).
        # Stored when answered; a row from before parts were stored is graded here.
        parts = [ok for r in rows for ok in (r.parts if r.parts is not None else spec.check(r.response, r.answer).parts) or ()]
        if parts:
            low, high = wilson(sum(parts), len(parts))
            out.append({**base, "n": len(parts), "metric": spec.part_metric, "value": sum(parts) / len(parts),
                        "ci_low": low, "ci_high": high})
    if rows and rows[0].majority_correct is not None:
        majority = sum(1 for r in rows if r.majority_correct)
        low, high = wilson(majority, n)
        out.append({**base, "metric": "majority_accuracy", "value": majority / n, "ci_low": low, "ci_high": high})
    return out


def is_last(config: Config, number: int) -> bool:
    """Whether iteration `number` is the loop's last (loop.max_iterations)."""
    return config.loop.max_iterations is not None and number >= config.loop.max_iterations


def answered_by(config: Config, number: int, role: str, final: str | None = None) -> list[SuiteConfig]:
    """The suites `role` answers in iteration `number`: every suite at the loop's ends (iteration 1's baseline is its
    start; `final`, the role the last iteration's gate keeps, is its final policy), the `when: every` ones between."""
    ends = (number == 1 and role == "baseline") or (final is not None and role == final)
    return [s for s in config.eval.suites if ends or s.when == "every"]


def _final_role(ctx: PhaseContext, policies: list[tuple[str, int | None]]) -> str | None:
    """In the loop's last iteration, the policy it ends with: the gate's decision (promote.promotes on
    eval.main_metric, whose suite is answered every iteration), taken here from the answered items as the promote
    phase takes it from their summaries (the same values: the same rows, summed alike); None in any other iteration."""
    from selfloop.phases.promote import promotes

    if not is_last(ctx.config, ctx.number):
        return None
    if len(policies) == 1 or "promote" not in ctx.config.loop.phases:
        return "baseline"  # nothing trained, or nothing is ever promoted: the loop ends with the policy it started from
    name, _, metric = ctx.config.eval.main_metric.partition("/")
    suite = next(s for s in ctx.config.eval.suites if s.name == name)
    with ctx.db.session() as session:
        values = {role: next((r["value"] for r in _summarise(session, ctx.iteration_id, role, suite, ckpt)
                              if r["metric"] == metric), None) for role, ckpt in policies}
    if values["candidate"] is None or values["baseline"] is None:
        raise RuntimeError(f"evaluate: {ctx.config.eval.main_metric} is missing for a policy; which one the gate keeps "
                           "cannot be told")
    return "candidate" if promotes(values["candidate"], values["baseline"], ctx.config.eval.tolerance) else "baseline"


def _held_out(ctx: PhaseContext, policies: list[tuple[str, int | None]], adapters: dict,
              answers: dict[str, list[SuiteConfig]]) -> list[dict]:
    """The algorithm's own held-out figures (R-Tuning's average precision of P(sure)) per suite and policy, from the
    answered items: computed again on a re-run, stored with the done mark."""
    name = ctx.config.train.algorithm
    figures, options = trainer(name).held_out_metrics, ctx.config.train.options()
    system, out = ctx.config.generation.system_prompt, []
    jobs = [(role, ckpt, suite) for role, ckpt in policies for suite in answers[role]]
    for done, (role, ckpt, suite) in enumerate(jobs):
        ctx.check_stop()
        ctx.set_progress(done, len(jobs), f"{name} held-out figures")
        logger.info("evaluate: {}'s held-out figures, {} on {} ({}/{})", name, role, suite.name, done + 1, len(jobs))
        with ctx.db.session() as session:
            items = evaluation.answers(session, ctx.iteration_id, role, suite.name)
        asked = load_suite(suite)  # a suite of conversations: the turns each item was asked with
        chats = [prompt_chat(i.prompt, system, asked[i.item_index].chat if i.item_index < len(asked) else None)
                 for i in items]
        values = figures(ctx.runtime.engine(), chats, [i.response for i in items],
                         [bool(i.correct) for i in items], adapters[role], options)
        out += [{"iteration_id": ctx.iteration_id, "role": role, "checkpoint_id": ckpt, "suite": suite.name,
                 "n": len(items), "metric": metric, "value": value} for metric, value in values.items()]
    return out


def _kl_from_start(ctx: PhaseContext) -> float | None:
    """drift.kl_from_start: the first eval.drift.kl_samples rollouts of the iteration (drawn from its starting policy)
    scored under that policy and under the base model, both at temperature 1."""
    n = ctx.config.eval.drift.kl_samples
    if not n:
        return None
    if ctx.policy is None:
        return 0.0  # the iteration starts from the base model itself
    with ctx.db.session() as session:
        rows = evaluation.first_rollouts(session, ctx.iteration_id, n)
    if not rows:
        return None
    chats = [prompt_chat(text, ctx.config.generation.system_prompt, messages) for text, messages, _ in rows]
    completions = [list(ids) for *_, ids in rows]
    engine = ctx.runtime.engine()
    return kl_per_token(engine.score(chats, completions, adapter=ctx.policy), engine.score(chats, completions, adapter=None))


def _answer_suites(ctx: PhaseContext, role: str, ckpt: int | None, chosen: list[SuiteConfig], suites: dict[str, list[Item]],
                   adapter: Adapter | None) -> None:
    """`role`'s answers to each chosen suite: copied from an earlier evaluation of the same policy, taken from the eval
    cache, or generated (and then kept in the cache)."""
    for suite in chosen:
        items = suites[suite.name]
        copied = _reuse(ctx, suite, ckpt, items) if role == "baseline" else None
        cache = ctx.config.eval.cache_dir if eval_cache.cacheable(ctx.config, suite) else None
        digest = _cache_key(ctx, suite, adapter, items) if cache is not None else ""
        answered = kept = False
        if copied is None and cache is not None:
            copied = eval_cache.load(cache, digest, items)
            kept = copied is not None
            if kept:
                logger.info("evaluate: {} on {} from the eval cache ({} items)", role, suite.name, len(items))
        if copied is not None:
            with ctx.db.session() as session:
                insert_ignore(session, EvalItem, [{**r, "iteration_id": ctx.iteration_id, "role": role, "suite": suite.name}
                                                  for r in copied], ["iteration_id", "role", "suite", "item_index"])
        else:
            _answer(ctx, role, suite, items, adapter)
            answered = True
        # Answered here (replacing a kept file that failed its checks), or copied in the store but not kept yet.
        if cache is not None and not kept and (answered or not eval_cache.has(cache, digest)):
            _keep(ctx, role, suite, cache, digest)


def run(ctx: PhaseContext) -> None:
    suites = {s.name: load_suite(s) for s in ctx.config.eval.suites}
    check_disjoint(ctx, suites)
    with ctx.db.session() as session:
        it = row(session, Iteration, ctx.iteration_id)
        policies = [("baseline", it.base_checkpoint_id)]
        if it.output_checkpoint_id is not None:
            policies.append(("candidate", it.output_checkpoint_id))
        adapters = {role: adapter_of(session, ckpt, ctx.config) for role, ckpt in policies}
    for role, ckpt in policies:
        _answer_suites(ctx, role, ckpt, answered_by(ctx.config, ctx.number, role), suites, adapters[role])
    # The last iteration: the suites answered at the ends (when: ends) for the policy the gate will keep, decided on
    # the gate's suite just answered; the other policy skips them.
    final = _final_role(ctx, policies)
    if final is not None:
        before = answered_by(ctx.config, ctx.number, final)
        ends = [s for s in answered_by(ctx.config, ctx.number, final, final) if s not in before]
        _answer_suites(ctx, final, dict(policies)[final], ends, suites, adapters[final])
    answers = {role: answered_by(ctx.config, ctx.number, role, final) for role, _ in policies}
    extra = _held_out(ctx, policies, adapters, answers) if spec(ctx.config.train.algorithm).held_out else []
    kl = _kl_from_start(ctx)
    with ctx.db.session() as session:
        rows = [r for role, ckpt in policies for s in answers[role]
                for r in _summarise(session, ctx.iteration_id, role, s, ckpt)] + extra
        insert_ignore(session, Eval, rows, ["iteration_id", "role", "suite", "metric"])
        floor = ctx.config.warnings.min_accuracy
        for figure in rows:
            # An iteration's baseline is the last one's candidate, already warned about: only iteration 1's is new.
            repeated = figure["role"] == "baseline" and ctx.number > 1
            if floor is not None and not repeated and figure["metric"] == "greedy_accuracy" and figure["value"] <= floor:
                add_event(session, ctx.loop_id, ctx.iteration_id, "eval.low_accuracy",
                          f"{figure['role']} scored {figure['value']:.3f} on suite {figure['suite']} (floor {floor:.3f}): "
                          "check the suite's answers and the answer extraction", level="warning",
                          data={"role": figure["role"], "suite": figure["suite"], "value": figure["value"]})
        monitor(session, ctx.config, ctx.loop_id, ctx.iteration_id, ctx.number, kl_from_start=kl)
        ctx.mark_done(session)
