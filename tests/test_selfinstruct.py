"""Self-instruct: ROUGE-L by hand, instruction parsing, filters, and the synthesize phase on the tiny model."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from selfloop.db.engine import open_database
from selfloop.db.models import Prompt
from selfloop.db.queries import metrics_of
from selfloop.loop import open_loop, run_iteration
from selfloop.runtime import Runtime
from selfloop.selfinstruct import Example, Pool, _tokens, few_shot_prompt, parse_instruction, rejection_reason, rouge_l


def test_rouge_l_by_hand() -> None:
    # LCS("the cat sat on the mat", "the cat lay on the mat") = "the cat on the mat" = 5 tokens;
    # precision = recall = 5/6, so F = 5/6.
    assert rouge_l(["the", "cat", "sat", "on", "the", "mat"], ["the", "cat", "lay", "on", "the", "mat"]) == pytest.approx(5 / 6)
    # LCS("a b c d", "b d") = 2: P = 2/4, R = 2/2, F = 2PR/(P+R) = 2/3.
    assert rouge_l(list("abcd"), list("bd")) == pytest.approx(2 / 3)
    assert rouge_l([], ["x"]) == 0.0 and rouge_l(["x"], ["y"]) == 0.0


def test_pool_bound_skips_without_changing_the_answer() -> None:
    rng = random.Random(0)
    words = ["add", "subtract", "write", "poem", "list", "explain", "number", "word", "city", "river", "count", "sum"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(60)]
    pool = Pool(texts[:50])
    for text in texts[50:]:
        brute = max(rouge_l(_tokens(text), _tokens(t)) for t in texts[:50])
        assert pool.max_rouge(text, threshold=1.01) == pytest.approx(brute)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Task 9: Write a poem about the sea.\n\nTask 10: Something else", "Write a poem about the sea."),
        ('"List three uses of copper."', "List three uses of copper."),
        ("New task: Explain   how tides\nwork.", "Explain how tides work."),
        ("Instruction 3) Name two rivers in Africa.", "Name two rivers in Africa."),
        ("Describe a rainbow.\nTask: Describe the sun.", "Describe a rainbow."),
        ("", ""),
    ],
)
def test_parse_instruction(reply: str, expected: str) -> None:
    assert parse_instruction(reply) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Hi there", "too_short"),
        ("word " * 200, "too_long"),
        ("Draw a picture of a cat sitting on a chair.", "unusable"),
        ("Summarise the file I attached in three lines.", "unusable"),
        ("??? what is this thing", "not_text"),
        ("Écrivez un poème sur la mer, s'il vous plaît ≈≈≈≈≈≈≈≈≈≈≈≈", "not_text"),
        ("Explain why leaves change colour in autumn.", None),
    ],
)
def test_rejection_reasons(text: str, reason: str | None) -> None:
    assert rejection_reason(text, min_words=3, max_words=150) == reason


def test_few_shot_prompt_shows_seed_and_generated_examples() -> None:
    seeds = [Example(f"seed:{i}", f"seed task {i}") for i in range(10)]
    generated = [Example("prompt:1", "generated task one"), Example("prompt:2", "generated task two")]
    text, keys = few_shot_prompt(seeds, generated, 6, 2, random.Random(1))
    assert len(keys) == 8 and {"prompt:1", "prompt:2"} <= set(keys)
    assert text.count("Task ") == 8 and "Task 8:" in text and "Reply with the task only" in text


def test_pool_duplicates() -> None:
    pool = Pool(["Write a poem about the sea."])
    assert pool.is_exact_duplicate("write a POEM about the sea")
    assert pool.max_rouge("Write a short poem about the sea.", 0.7) >= 0.7


@pytest.mark.integration
def test_synthesize_phase_stores_prompts_and_rejections(sqlite_url: str, config_factory) -> None:
    config = config_factory(sqlite_url, loop={"name": "syn", "phases": ["synthesize", "rollout"], "max_iterations": 1},
                            self_instruct={"num_prompts": 2, "max_rounds": 3, "max_new_tokens": 24})
    db = open_database(sqlite_url, init=True)
    open_loop(db, config)
    run_iteration(db, config, Runtime(config))
    with db.session() as s:
        metrics = metrics_of(s, 1, "synthesize.")
        accepted = s.scalars(select(Prompt).where(Prompt.source == "self_instruct")).all()
    assert metrics["synthesize.rounds"] >= 1
    rejected = sum(v for k, v in metrics.items() if k.startswith("synthesize.rejected."))
    assert metrics["synthesize.accepted"] == len(accepted)
    # Each round asks for max(4, 2 * missing) tasks; every one is either accepted or counted as rejected.
    asked = sum(max(4, 2 * (2 - k)) for k in range(int(metrics["synthesize.rounds"])))
    assert len(accepted) + rejected <= asked and len(accepted) + rejected > 0
    for prompt in accepted:
        assert prompt.parent_ids and all(p.startswith(("seed:", "prompt:")) for p in prompt.parent_ids)
        assert prompt.rouge_max is not None and prompt.rouge_max < 0.7
    db.dispose()


def test_sample_constraints_are_compatible_seen_and_checkable() -> None:
    import random

    from selfloop.families.instructions import CONFLICTS, KINDS, parse_answer, sample_constraints

    for seed in range(200):
        text, answer = sample_constraints(random.Random(seed), 2)
        spec = parse_answer(answer)
        kinds = [k for k, _ in spec]
        assert len(spec) == 2 and len(set(kinds)) == 2 and frozenset(kinds) not in CONFLICTS
        for k, _ in spec:  # in a training wording, never the held-out one
            assert KINDS[k].phrasings[-1].split("{value}")[0] not in text
    assert sample_constraints(random.Random(3), 1) == sample_constraints(random.Random(3), 1)


def test_synthesized_prompts_carry_checkable_constraints(sqlite_url: str, config_factory) -> None:
    from selfloop.families.instructions import parse_answer

    config = config_factory(sqlite_url, loop={"name": "syn", "phases": ["synthesize", "rollout"], "max_iterations": 1},
                            self_instruct={"num_prompts": 3, "max_rounds": 6, "max_new_tokens": 24, "min_words": 1,
                                           "constraints": 1})
    db = open_database(sqlite_url, init=True)
    open_loop(db, config)
    run_iteration(db, config, Runtime(config))
    with db.session() as s:
        accepted = s.scalars(select(Prompt).where(Prompt.source == "self_instruct")).all()
    assert accepted, "the tiny model's synthesis accepted nothing: the test would check nothing"
    for prompt in accepted:
        spec = parse_answer(prompt.answer)
        assert spec and len(spec) == 1
    db.dispose()
