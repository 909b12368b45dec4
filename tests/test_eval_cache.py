"""The evaluation cache (eval.cache_dir): a policy's greedy answers to a suite, kept by content and taken by any
store on the machine; and the control arm that only evaluates (loop.phases [evaluate, promote])."""

from __future__ import annotations

import gzip
import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from selfloop.evals import cache as eval_cache
from selfloop.evals.suites import Item
from tests.conftest import make_config, selfloop_cli, tiny_yaml

pytestmark = pytest.mark.integration


def _rows(url: str) -> list[tuple]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT i.number, e.role, e.suite, e.item_index, e.prompt, e.response, e.correct "
                                 "FROM eval_items e JOIN iterations i ON i.id = e.iteration_id "
                                 "ORDER BY i.number, e.role, e.suite, e.item_index")).all()
        samples = conn.execute(text("SELECT count(*) FROM samples")).scalar()
    engine.dispose()
    assert samples == 0  # the control only evaluates: nothing rolled out, nothing judged
    return [tuple(r) for r in rows]


def _run(tmp_path: Path, name: str, cache: Path) -> tuple[str, list[tuple]]:
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    config = tiny_yaml(tmp_path, url, name=f"{name}.yaml", loop__name=name, loop__max_iterations=2,
                       loop__phases=["evaluate", "promote"], eval__cache_dir=str(cache))
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr, _rows(url)


def test_a_second_store_takes_the_start_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    log, first = _run(tmp_path, "one", cache)
    files = sorted(cache.glob("*.json.gz"))
    assert files and "from the eval cache" not in log
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files) and stat.S_IMODE(cache.stat().st_mode) == 0o700
    # Iteration 2's start is iteration 1's: copied within the store, as before.
    assert [r[3:] for r in first if r[0] == 1] == [r[3:] for r in first if r[0] == 2]

    # Another store answers nothing: its rows are the kept ones. A kept answer changed by hand shows where they came from.
    target = files[0]
    data = json.loads(gzip.decompress(target.read_bytes()))
    data["rows"][0]["response"] = "kept, not generated"
    target.write_bytes(gzip.compress(json.dumps(data).encode()))
    log, second = _run(tmp_path, "two", cache)
    assert "from the eval cache" in log
    changed = data["rows"][0]["prompt"]
    assert second == [(*r[:5], "kept, not generated", r[6]) if r[3] == 0 and r[4] == changed else r for r in first]

    # A file that fails its checks is ignored, the suite answered again (the same rows as the first store) and kept.
    target.write_bytes(b"not gzip")
    log, third = _run(tmp_path, "three", cache)
    assert "ignoring" in log and third == first
    generated = next(r[5] for r in first if r[3] == 0 and r[4] == changed)
    assert json.loads(gzip.decompress(target.read_bytes()))["rows"][0]["response"] == generated


def test_the_key_is_the_content(tmp_path: Path) -> None:
    config = make_config(tmp_path, eval={"cache_dir": str(tmp_path / "c"),
                                         "suites": [{"name": "arithmetic", "kind": "arithmetic", "size": 8, "max_new_tokens": 8}]})
    suite = config.eval.suites[0]
    items = [Item("What is 1 + 2?", "3"), Item("What is 2 + 2?", "4")]
    base = eval_cache.key(config, "m" * 64, None, suite, items)
    assert base == eval_cache.key(config, "m" * 64, None, suite, list(items))  # the same content, the same key
    other_prompt = make_config(tmp_path, generation={"system_prompt": "Be brief."},
                               eval={"cache_dir": str(tmp_path / "c"), "suites": [suite.model_dump()]})
    longer = suite.model_copy(update={"max_new_tokens": 9})
    assert len({base, eval_cache.key(config, "n" * 64, None, suite, items),      # other weights
                eval_cache.key(config, "m" * 64, "a" * 64, suite, items),       # an adapter
                eval_cache.key(config, "m" * 64, None, longer, items),          # another budget
                eval_cache.key(config, "m" * 64, None, suite, items[:1]),       # other problems
                eval_cache.key(config, "m" * 64, None, suite, [Item("What is 1 + 2?", "4"), items[1]]),  # another answer
                eval_cache.key(other_prompt, "m" * 64, None, suite, items)}) == 7
    assert eval_cache.cacheable(config, suite)
    assert not eval_cache.cacheable(config, suite.model_copy(update={"majority_k": 2}))  # sampled: follows the seed
    assert not eval_cache.cacheable(make_config(tmp_path), suite)                        # off by default


def test_kept_rows_are_checked_before_use(tmp_path: Path) -> None:
    items = [Item("What is 1 + 2?", "3"), Item("What is 2 + 2?", "4")]
    rows = [{"item_index": i, "prompt": it.prompt, "answer": it.answer, "response": "3", "predicted": "3",
             "correct": i == 0, "num_tokens": 2} for i, it in enumerate(items)]
    eval_cache.save(tmp_path, "k" * 64, rows)
    assert [r["correct"] for r in eval_cache.load(tmp_path, "k" * 64, items)] == [True, False]
    assert eval_cache.load(tmp_path, "k" * 64, items[::-1]) is None            # another problem at an index
    assert eval_cache.load(tmp_path, "k" * 64, items[:1]) is None              # not one row per problem
    assert eval_cache.load(tmp_path, "x" * 64, items) is None                  # nothing kept
    eval_cache.save(tmp_path, "b" * 64, [{**rows[0], "num_tokens": "2"}, rows[1]])
    assert eval_cache.load(tmp_path, "b" * 64, items) is None                  # a field of the wrong type
    (tmp_path / f"{'c' * 64}.json.gz").write_bytes(gzip.compress(json.dumps(
        {"format": 1, "key": "k" * 64, "rows": rows}).encode()))
    assert eval_cache.load(tmp_path, "c" * 64, items) is None                  # kept under another key
