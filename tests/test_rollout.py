"""Rollouts stored in SQL: prompts x n samples, idempotent, identical after a SIGKILL and a re-run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from selfloop.db.engine import open_database
from selfloop.db.models import PhaseRun, Prompt, Sample
from selfloop.loop import open_loop, run_iteration
from selfloop.runtime import Runtime
from tests.conftest import selfloop_cli

pytestmark = pytest.mark.integration


def _rows(url: str) -> list[tuple]:
    db = open_database(url)
    with db.session() as s:
        rows = s.execute(
            select(Prompt.source, Prompt.item_index, Prompt.text, Sample.sample_index, Sample.token_ids, Sample.seed)
            .join(Sample, Sample.prompt_id == Prompt.id)
            .order_by(Prompt.source, Prompt.item_index, Sample.sample_index)
        ).all()
    db.dispose()
    return [(a, b, c, d, tuple(e), f) for a, b, c, d, e, f in rows]


def test_rollout_stores_every_sample(db_url: str, config_factory) -> None:
    config = config_factory(db_url, loop={"name": "roll", "phases": ["rollout"], "max_iterations": 1})
    db = open_database(db_url, init=True)
    open_loop(db, config)
    runtime = Runtime(config)
    assert run_iteration(db, config, runtime).status == "done"
    with db.session() as s:
        n_prompts = s.scalar(select(func.count()).select_from(Prompt))
        samples = s.execute(select(Sample)).scalars().all()
        assert n_prompts == 6 and len(samples) == 6 * 3
        for sample in samples:
            assert sample.num_tokens == len(sample.token_ids) == len(sample.token_logprobs) > 0
            assert sample.sum_logprob == pytest.approx(sum(sample.token_logprobs), abs=1e-3)
            assert sample.finish_reason in ("stop", "length") and sample.seed is not None
        assert s.scalar(select(PhaseRun.status).where(PhaseRun.phase == "rollout")) == "done"
    # A second call starts no new work for a finished loop.
    assert run_iteration(db, config, runtime).status == "finished"
    db.dispose()


def _write(config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def _run_cli(config_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return selfloop_cli("run", "--config", str(config_path), "--iterations", "1", env=env, timeout=300)


def test_sigkill_during_rollout_then_rerun_matches_an_uninterrupted_run(tmp_path: Path, config_factory) -> None:
    sections = dict(loop={"name": "kill", "phases": ["rollout"], "max_iterations": 1},
                    generation={"prompts_per_iteration": 8, "samples_per_prompt": 3, "max_new_tokens": 10},
                    engine={"batch_size": 3})  # 2 prompts per chunk: 4 chunks
    killed_url, clean_url = f"sqlite:///{tmp_path / 'killed.db'}", f"sqlite:///{tmp_path / 'clean.db'}"
    killed = _write(config_factory(killed_url, **sections), tmp_path / "killed.yaml")
    clean = _write(config_factory(clean_url, **sections), tmp_path / "clean.yaml")

    first = _run_cli(killed, {"SELFLOOP_FAILPOINT": "rollout.after_chunk:2"})
    assert first.returncode == -9, first.stderr[-2000:]
    partial = _rows(killed_url)
    assert 0 < len(partial) < 8 * 3
    second = _run_cli(killed)
    assert second.returncode == 0, second.stderr[-2000:]
    assert _run_cli(clean).returncode == 0

    rows = _rows(killed_url)
    assert len(rows) == 8 * 3 and len(set(r[:4] for r in rows)) == len(rows)  # exactly prompts x n, no duplicates
    assert rows == _rows(clean_url)  # the same samples as the run that was never interrupted
    db = open_database(killed_url)
    with db.session() as s:
        run = s.scalars(select(PhaseRun).where(PhaseRun.phase == "rollout")).one()
        assert run.status == "done" and run.attempts == 2
        assert s.execute(select(func.count()).select_from(Sample)).scalar() == 24
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    db.dispose()
