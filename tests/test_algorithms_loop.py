"""Every registered algorithm runs two iterations of the tiny loop (the CLI in a subprocess). The judge scores by
its verdict distribution (one forward pass, no justification), so even the random tiny model gives every sample a
distinct score and the judge-ranked methods have something to train on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from selfloop.algorithms import specs
from tests.conftest import selfloop_cli, tiny_yaml

# CUT trains on the judge's written reasons: its judge writes a few tokens before the verdict.
JUDGE = {"cut": {"k": 1, "max_new_tokens": 8, "scoring": "distribution"}}
# The random tiny model is never right and its votes rarely agree: the vote-trained algorithms get a binary reward
# that varies within a prompt (a digit or none: judge.reward function); CoIN keeps the majority's samples.
BY_FUNCTION = {"judge__reward": "function", "judge__reward_function": "tests.support.rewards:has_digit"}
OPTIONS = {"coin": {"train__coin": {"reward": "majority"}}, "ttrl": BY_FUNCTION,
           "rest": {**BY_FUNCTION, "train__rest": {"reward": "majority"}}}


def _references(tmp_path: Path) -> dict:
    """SPIN's ground truth: prompts with a reference response each (generation.tasks of kind jsonl)."""
    path = tmp_path / "references.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Compute {a} plus {a + 2}, please.", "answer": str(2 * a + 2),
                                        "response": f"{a} + {a + 2} = {2 * a + 2}. The answer is {2 * a + 2}."}) + "\n"
                            for a in range(1, 40)))
    return {"generation__tasks": {"kind": "jsonl", "path": str(path)}}


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", sorted(specs()))
def test_two_iterations_of_the_tiny_loop(algorithm: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=2, train__algorithm=algorithm,
                       judge__llm_judge=JUDGE.get(algorithm, {"k": 1, "max_new_tokens": 0, "scoring": "distribution"}),
                       self_instruct__num_prompts=0, loop__phases=["rollout", "judge", "select", "train", "evaluate", "promote"],
                       **OPTIONS.get(algorithm, {}), **(_references(tmp_path) if algorithm == "spin" else {}))
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    with create_engine(url).connect() as conn:
        done = conn.execute(text("SELECT count(*) FROM iterations WHERE status = 'done'")).scalar()
        steps = conn.execute(text("SELECT count(*) FROM train_steps")).scalar()
        shapes = conn.execute(text(
            "SELECT count(*), count(rejected_sample_id), (SELECT count(DISTINCT example_id) FROM example_candidates) "
            "FROM examples")).one()
        held_out = conn.execute(text("SELECT count(*) FROM evals WHERE metric = 'mean_sure'")).scalar()
        data = [json.loads(d) if isinstance(d, str) else d for d, in conn.execute(text("SELECT data FROM examples"))]
        with_context = sum(1 for d in data if d and d.get("context") is not None)
        step_metrics = [json.loads(m) for m, in conn.execute(text("SELECT metrics FROM train_steps"))]
        kl = dict(conn.execute(text("SELECT i.number, m.value FROM metrics m JOIN iterations i ON i.id = m.iteration_id "
                                    "WHERE m.name = 'drift.kl_from_start'")).all())
    assert done == 2
    # Every registered algorithm trains: examples stored, steps taken, and iteration 2 (from the trained adapter)
    # measurably elsewhere than iteration 1 (from the base model).
    assert steps > 0 and shapes[0] > 0
    assert kl[1] == 0.0 and kl[2] != 0.0
    # The stored examples have the declared shape.
    shape = specs()[algorithm].shape
    assert (shapes[1] == shapes[0]) if shape == "pair" else (shapes[1] == 0)
    assert (shapes[2] == shapes[0]) if shape == "ranked" else (shapes[2] == 0)
    # An algorithm's own held-out figures (R-Tuning's): every suite, both policies, both iterations.
    assert held_out == (2 * 2 * 2 if specs()[algorithm].held_out else 0)
    if algorithm == "rtuning":  # its export form: prompt-completion rows whose completion ends with the certainty answer
        from selfloop import export
        from selfloop.db.engine import open_database

        db = open_database(url)
        with db.session() as session:
            rows = list(export.rows(session, "tiny", "examples"))
        db.dispose()
        assert len(rows) == shapes[0]
        assert all(r["completion"][0]["content"].endswith(("I am sure.", "I am unsure.")) for r in rows)
        assert {r["reward"] for r in rows} <= {0.0, 1.0}
    if algorithm == "cut":  # negatives with the judged prompt; the unlikelihood term ran on them; exported beside them
        assert with_context > 0 and any(m["negatives"] > 0 and m["unlikelihood"] > 0 for m in step_metrics)
        from selfloop import export
        from selfloop.db.engine import open_database

        db = open_database(url)
        with db.session() as session:
            rows = list(export.rows(session, "tiny", "examples"))
        db.dispose()
        judged = [r for r in rows if r["context"] is not None]
        assert len(judged) == with_context and all("Judgment:" in r["context"][-1]["content"] for r in judged)
    if algorithm == "coin":  # paraphrased examples, and the contrastive term ran on them
        assert with_context > 0 and any(m["paired"] > 0 and m["info_nce"] > 0 for m in step_metrics)
