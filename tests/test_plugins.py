"""Algorithms and task families added from outside the package, through entry points, as a user's package
adds them: the toy plug-ins in tests/support/plugin are copied to a temporary directory with a dist-info that
declares them, put on PYTHONPATH, and run for one iteration of the tiny loop by the CLI in a subprocess (the
registry is read when the config module is first imported, as it is in every `selfloop` process)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO, selfloop_cli, tiny_yaml

PLUGIN = REPO / "tests" / "support" / "plugin"


def install(target: Path, entry_points: dict[str, dict[str, str]]) -> dict[str, str]:
    """The plug-in modules and a dist-info naming their entry points; the environment that finds them."""
    target.mkdir()
    for module in PLUGIN.glob("*.py"):
        shutil.copy(module, target / module.name)
    info = target / "selfloop_toys-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: selfloop-toys\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n"
        for group, points in entry_points.items()))
    return {"PYTHONPATH": f"{target}:{REPO}"}


@pytest.mark.integration
def test_an_algorithm_from_outside_the_package_trains_one_iteration(tmp_path: Path) -> None:
    env = install(tmp_path / "site", {"selfloop.algorithms": {"toy_sft": "toy_sft_config:SPEC"}})
    url = f"sqlite:///{tmp_path / 'toy.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, train__algorithm="toy_sft",
                       train__toy_sft={"per_prompt": 2})

    shown = selfloop_cli("config", "validate", str(config), env=env, fresh=True)
    assert shown.returncode == 0, shown.stderr
    unknown = tiny_yaml(tmp_path, url, name="bad.yaml", train__algorithm="toy_sft", train__toy_sft={"per_promt": 2})
    refused = selfloop_cli("config", "validate", str(unknown), env=env, fresh=True)
    assert refused.returncode == 2 and "train.toy_sft.per_promt: unknown key" in refused.stderr
    missing = selfloop_cli("config", "validate", str(config))  # without the plug-in, the name is refused
    assert missing.returncode == 2 and "train.algorithm: 'toy_sft' is not one of" in missing.stderr

    ran = selfloop_cli("run", "--config", str(config), env=env, fresh=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    with create_engine(url).connect() as conn:
        examples = conn.execute(text("SELECT algorithm, count(*), count(DISTINCT prompt_id), "
                                     "count(rejected_sample_id) FROM examples GROUP BY algorithm")).all()
        steps = conn.execute(text("SELECT count(*) FROM train_steps")).scalar()
        checkpoints = conn.execute(text("SELECT count(*) FROM checkpoints WHERE kind = 'lora'")).scalar()
    ((name, n, prompts, rejected),) = examples
    assert name == "toy_sft" and n == 2 * prompts and rejected == 0  # two rewarded samples per prompt
    assert steps == -(-n // 4) and checkpoints == 1  # one epoch in batches of 4


def _hint_loop(tmp_path: Path, url: str) -> None:
    """A tiny loop with the toy_hint plug-in from outside the package, then what it stored, trained and exports."""
    import json

    env = install(tmp_path / "site", {"selfloop.algorithms": {"toy_hint": "toy_hint_config:SPEC"}})
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, train__algorithm="toy_hint",
                       train__toy_hint={"hint": "Count carefully."})
    ran = selfloop_cli("run", "--config", str(config), env=env, fresh=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT e.data, p.text, v.share FROM examples e JOIN prompts p ON p.id = e.prompt_id "
                                   "JOIN votes v ON v.prompt_id = p.id ORDER BY e.item_index")).all()
        steps = [json.loads(m) if isinstance(m, str) else m for m, in conn.execute(text("SELECT metrics FROM train_steps"))]
    engine.dispose()
    data = [json.loads(d) if isinstance(d, str) else d for d, _, _ in stored]
    assert stored and all(d == {"hinted": f"{p} Count carefully.", "difficulty": pytest.approx(1 - share)}
                          for d, (_, p, share) in zip(data, stored))
    # The loss read the data: over one epoch the steps' batches (their `hinted` counts) hold every example once, and
    # their mean difficulties add up to the stored ones.
    assert sum(m["hinted"] for m in steps) == len(data)
    assert sum(m["difficulty"] * m["hinted"] for m in steps) == pytest.approx(sum(d["difficulty"] for d in data))
    out = selfloop_cli("export", "tiny", "--what", "examples", "--db", url, env=env, fresh=True)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["difficulty"] for r in rows] == [d["difficulty"] for d in data]
    assert all(r["hinted"][-1] == {"role": "user", "content": d["hinted"]} for r, d in zip(rows, data))


@pytest.mark.integration
def test_an_algorithm_with_data_of_its_own_needs_no_migration(tmp_path: Path) -> None:
    """An algorithm that keeps fields no other has (a hinted prompt, a difficulty) declares them as its spec's data
    model: stored in examples.data, validated, tokenised where they are prompts, handed to its loss, exported; nothing
    in selfloop is edited for it."""
    _hint_loop(tmp_path, f"sqlite:///{tmp_path / 'hint.db'}")


@pytest.mark.postgres
@pytest.mark.integration
def test_an_algorithm_with_data_of_its_own_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    _hint_loop(tmp_path, postgres_url)


@pytest.mark.integration
def test_a_broken_plugin_breaks_only_what_names_it(tmp_path: Path) -> None:
    """A plug-in that fails to import broke every command ("entry point selfloop.algorithms:wsft ... failed to
    load"), `status` of an unrelated store included. It is loaded when needed and named there, in one line."""
    env = install(tmp_path / "site", {"selfloop.algorithms": {"nothing": "toy_sft_config:NOT_THERE",
                                                              "boom": "no_such_module:SPEC"}})
    url = f"sqlite:///{tmp_path / 'x.db'}"
    config = tiny_yaml(tmp_path, url)
    assert selfloop_cli("config", "validate", str(config), env=env, fresh=True).returncode == 0
    assert selfloop_cli("db", "upgrade", "--db", url, env=env, fresh=True).returncode == 0
    status = selfloop_cli("status", "--db", url, env=env, fresh=True)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    naming = tiny_yaml(tmp_path, url, name="naming.yaml", train__algorithm="nothing")
    out = selfloop_cli("config", "validate", str(naming), env=env, fresh=True)
    assert out.returncode == 2, out.stderr
    assert "train.algorithm: 'nothing' is not available: entry point selfloop.algorithms:nothing " \
           "(toy_sft_config:NOT_THERE) failed to load" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2


@pytest.mark.integration
def test_a_curate_filter_from_outside_the_package_decides_what_is_trained(tmp_path: Path) -> None:
    """Filters are declared as algorithms are: a spec beside its options, an entry point; the config names none of
    them. The plug-in's options are checked, the signal it reads is required, and its decisions are rows."""
    env = install(tmp_path / "site", {"selfloop.filters": {"toy_shortest": "toy_filter_config:SPEC"}})
    url = f"sqlite:///{tmp_path / 'f.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, curate__filters=["toy_shortest"],
                       curate__toy_shortest={"keep": 2})
    typo = tiny_yaml(tmp_path, url, name="typo.yaml", curate__filters=["toy_shortest"], curate__toy_shortest={"kep": 2})
    refused = selfloop_cli("config", "validate", str(typo), env=env, fresh=True)
    assert refused.returncode == 2 and "curate.toy_shortest.kep: unknown key" in refused.stderr
    unvoted = tiny_yaml(tmp_path, url, name="unvoted.yaml", curate__filters=["toy_shortest"], judge__signals=["llm_judge"])
    refused = selfloop_cli("config", "validate", str(unvoted), env=env, fresh=True)
    assert refused.returncode == 2 and "curate.filters names 'toy_shortest', which reads the 'vote' judgments" in refused.stderr
    missing = selfloop_cli("config", "validate", str(config))  # without the plug-in, the name is refused
    assert missing.returncode == 2 and "curate.filters.0: 'toy_shortest' is not one of" in missing.stderr

    ran = selfloop_cli("run", "--config", str(config), env=env, fresh=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    with create_engine(url).connect() as conn:
        decided = conn.execute(text("SELECT prompt_id, score, kept FROM curations WHERE filter = 'toy_shortest' "
                                    "AND sample_id IS NULL")).all()
        prompts = conn.execute(text("SELECT count(*) FROM prompts")).scalar()
        trained = {p for p, in conn.execute(text("SELECT DISTINCT prompt_id FROM examples"))}
    kept = {p for p, _, ok in decided if ok}
    assert len(decided) == prompts and len(kept) == 2
    assert max(score for p, score, _ in decided if p in kept) <= min(score for p, score, _ in decided if p not in kept)
    assert trained <= kept  # select trained only on what the filter kept


@pytest.mark.integration
def test_a_family_from_outside_the_package_is_task_pool_and_suite(tmp_path: Path) -> None:
    import sys

    env = install(tmp_path / "site", {"selfloop.families": {"reverse_word": "reverse_word:SPEC"}})
    url = f"sqlite:///{tmp_path / 'rev.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, generation__tasks={"kind": "reverse_word"},
                       eval__suites=[{"name": "reverse", "kind": "reverse_word", "size": 4, "max_new_tokens": 8},
                                     {"name": "reverse-unseen", "kind": "reverse_word", "size": 4, "max_new_tokens": 8,
                                      "phrasing": "unseen"}],
                       eval__main_metric="reverse/greedy_accuracy")
    wrong_level = tiny_yaml(tmp_path, url, name="bad.yaml", generation__tasks={"kind": "reverse_word", "levels": [2]})
    refused = selfloop_cli("config", "validate", str(wrong_level), env=env, fresh=True)
    assert refused.returncode == 2 and "levels: the reverse_word family has levels 1, not 2" in refused.stderr

    ran = selfloop_cli("run", "--config", str(config), env=env, fresh=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        import reverse_word
    finally:
        sys.path.remove(str(tmp_path / "site"))
    with create_engine(url).connect() as conn:
        tasks = conn.execute(text("SELECT p.text, p.answer, p.family, s.text, s.correct FROM samples s "
                                  "JOIN prompts p ON p.id = s.prompt_id WHERE p.source = 'task'")).all()
        items = conn.execute(text("SELECT suite, prompt, answer, response, predicted, correct FROM eval_items")).all()
        metrics = dict(conn.execute(text("SELECT suite || '/' || role, value FROM evals WHERE metric = 'greedy_accuracy'")).all())
    assert tasks and all(family == "reverse_word" and prompt.startswith("Reverse the word") for prompt, _, family, _, _ in tasks)
    # every sample graded once, by the plug-in's grader
    assert [bool(ok) for *_, ok in tasks] == [reverse_word.grade(said, answer).correct for _, answer, _, said, _ in tasks]
    held_out = reverse_word.problems([1], "eval", "seen")  # fewer than the suites' size: every one is used
    assert {suite for suite, *_ in items} == {"reverse", "reverse-unseen"} and len(items) == 2 * 2 * len(held_out)
    assert all(p.startswith("Write '") for suite, p, *_ in items if suite == "reverse-unseen")
    for _, _, answer, response, predicted, ok in items:
        graded = reverse_word.grade(response, answer)
        assert (predicted, bool(ok)) == (graded.predicted, graded.correct)
    assert set(metrics) == {"reverse/baseline", "reverse/candidate", "reverse-unseen/baseline", "reverse-unseen/candidate"}


@pytest.mark.integration
def test_ranked_examples_are_stored_trained_exported_and_shown(tmp_path: Path) -> None:
    import json

    from starlette.testclient import TestClient

    from selfloop.ui.app import create_app

    env = install(tmp_path / "site", {"selfloop.algorithms": {"toy_rank": "toy_rank_config:SPEC"}})
    url = f"sqlite:///{tmp_path / 'rank.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, train__algorithm="toy_rank")
    ran = selfloop_cli("run", "--config", str(config), env=env, fresh=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    with create_engine(url).connect() as conn:
        ranked = conn.execute(text(
            "SELECT e.id, e.sample_id, c.rank, c.sample_id, c.score, s.mean_logprob FROM examples e "
            "JOIN example_candidates c ON c.example_id = e.id JOIN samples s ON s.id = c.sample_id "
            "ORDER BY e.item_index, c.rank")).all()
        n_examples, samples = conn.execute(text("SELECT (SELECT count(*) FROM examples), (SELECT count(*) FROM samples)")).one()
        steps = conn.execute(text("SELECT count(*), min(metrics) FROM train_steps")).one()
        prompt_id = conn.execute(text("SELECT prompt_id FROM examples ORDER BY item_index LIMIT 1")).scalar()
    assert len(ranked) == samples and n_examples * 4 == samples  # every sample, four to an example
    for _example, top, rank, sample_id, score, logprob in ranked:
        assert score == logprob and (rank != 0 or sample_id == top)  # the example's sample is its best candidate
    for example_id in {r[0] for r in ranked}:
        scores = [r[4] for r in ranked if r[0] == example_id]
        assert scores == sorted(scores, reverse=True) and [r[2] for r in ranked if r[0] == example_id] == [0, 1, 2, 3]
    assert steps[0] == -(-n_examples // 4) and json.loads(steps[1])["candidates"] == 4.0

    out = selfloop_cli("export", "tiny", "--what", "ranked", "--db", url, env=env, fresh=True)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == n_examples and all(len(r["responses"]) == len(r["scores"]) == 4 for r in rows)
    assert all(r["scores"] == sorted(r["scores"], reverse=True) and isinstance(r["query"], str) for r in rows)
    pairs = selfloop_cli("export", "tiny", "--what", "examples", "--db", url, env=env, fresh=True)
    assert pairs.returncode != 0 and "has no examples" in pairs.stderr and "--what ranked" in pairs.stderr

    page = TestClient(create_app(url), base_url="http://127.0.0.1:8765").get(f"/prompts/{prompt_id}").text
    listed = page.split('<ol class="ranking">')[1].split("</ol>")[0]
    assert listed.count("<li>") == 4 and "toy_rank" in page


@pytest.mark.postgres
@pytest.mark.integration
def test_a_plugin_with_a_forty_character_name_runs_and_resumes_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The registry allows 40 characters; every column that stores the name holds them (examples.algorithm held
    20: "value too long for type character varying(20)" at the first insert, and in every select on resume)."""
    long_name = "toy_sft_with_a_name_of_forty_characters_"
    assert len(long_name) == 40
    env = install(tmp_path / "site", {"selfloop.algorithms": {long_name: "toy_sft_config:LONG_SPEC"}})
    config = tiny_yaml(tmp_path, postgres_url, loop__max_iterations=2, train__algorithm=long_name,
                       **{f"train__{long_name}": {"per_prompt": 2}})
    ran = selfloop_cli("run", "--config", str(config), "--iterations", "1", env=env, fresh=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    resumed = selfloop_cli("resume", "tiny", "--iterations", "1", "--db", postgres_url, env=env, fresh=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT i.number, e.algorithm, count(*) FROM examples e JOIN iterations i "
                                   "ON i.id = e.iteration_id GROUP BY i.number, e.algorithm ORDER BY i.number")).all()
    engine.dispose()
    assert [(n, name) for n, name, _ in stored] == [(1, long_name), (2, long_name)] and all(c > 0 for *_, c in stored)
