"""End to end on the packaged SmolLM2-135M-Instruct (slow: it is converted once, then cached)."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import select

from selfloop.db.engine import open_database
from selfloop.db.models import Prompt
from selfloop.db.queries import metrics_of
from selfloop.engines.base import Sampling
from selfloop.engines.chat import user_chat
from selfloop.loop import open_loop, run_iteration
from selfloop.runtime import Runtime
from tests.conftest import CACHE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from selfloop.models.resolve import resolve_model

    first = resolve_model("smollm2-135m-instruct", CACHE)
    weights = first.path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    started = time.monotonic()
    again = resolve_model("smollm2-135m-instruct", CACHE)
    print(f"second resolution took {time.monotonic() - started:.2f}s")
    assert again == first and weights.stat().st_mtime_ns == stamp  # reused, not converted again
    return first


@pytest.fixture(scope="module")
def engine(smollm2):
    from selfloop.engines.hf import HFEngine

    return HFEngine(smollm2.path, batch_size=8)


def test_smollm2_answers_two_plus_three(engine) -> None:
    outs = engine.generate([user_chat("What is 2 + 3?")], Sampling(n=8, temperature=0.7, max_new_tokens=48), seeds=[list(range(8))])
    texts = [c.text for c in outs[0]]
    assert any(re.search(r"(?<!\d)5(?!\d)", t) for t in texts), texts


def test_synthesis_on_smollm2_yields_new_prompts_and_counts_rejections(smollm2, sqlite_url: str, config_factory) -> None:
    config = config_factory(
        sqlite_url, loop={"name": "syn2", "phases": ["synthesize"] + ["rollout"], "max_iterations": 1},
        model={"base": "smollm2-135m-instruct"},
        generation={"prompts_per_iteration": 1, "samples_per_prompt": 1, "max_new_tokens": 8},
        self_instruct={"num_prompts": 4, "max_rounds": 4, "max_new_tokens": 64},
    )
    db = open_database(sqlite_url, init=True)
    open_loop(db, config)
    run_iteration(db, config, Runtime(config))
    with db.session() as s:
        metrics = metrics_of(s, 1, "synthesize.")
        accepted = s.scalars(select(Prompt.text).where(Prompt.source == "self_instruct")).all()
    print("accepted:", accepted, "metrics:", metrics)
    seeds = {t.prompt for t in __import__("selfloop.tasks", fromlist=["seed_tasks"]).seed_tasks()}
    assert len(accepted) >= 1 and not set(accepted) & seeds
    assert metrics["synthesize.accepted"] == len(accepted)
    assert sum(v for k, v in metrics.items() if k.startswith("synthesize.rejected.")) >= 1
    db.dispose()


def test_judging_on_smollm2_records_calibration(smollm2, sqlite_url: str, config_factory) -> None:
    config = config_factory(
        sqlite_url, loop={"name": "judge2", "phases": ["rollout", "judge"], "max_iterations": 1},
        model={"base": "smollm2-135m-instruct"},
        generation={"prompts_per_iteration": 4, "samples_per_prompt": 4, "max_new_tokens": 32, "temperature": 0.7},
        judge={"signals": ["vote", "llm_judge", "confidence"], "llm_judge": {"k": 1, "max_new_tokens": 32}},
    )
    db = open_database(sqlite_url, init=True)
    open_loop(db, config)
    run_iteration(db, config, Runtime(config))
    with db.session() as s:
        metrics = metrics_of(s, 1, "judge.")
    print("calibration on SmolLM2:", metrics)
    for name in ("judge.label_accuracy", "judge.reward_accuracy", "judge.vote_share", "judge.parse_rate"):
        assert 0.0 <= metrics[name] <= 1.0, name
    db.dispose()
