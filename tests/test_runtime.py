"""Engines' lifecycle across phases: before training every engine gives the accelerator back (sleep);
whatever generates afterwards is awake again, the separate judge model included."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_config

pytestmark = pytest.mark.integration


class Recorded:
    """Wraps a real engine; records each call with the phase it came in, and whether the engine was asleep
    (on a GPU: whether its weights were off the device). On this CPU machine sleeping moves nothing, so
    the record is what shows a generate call made while asleep."""

    def __init__(self, engine, name: str, log: list, phase: list) -> None:
        self.engine, self.name, self.log, self.phase = engine, name, log, phase
        self.asleep = False

    def _call(self, what: str):
        self.log.append((self.phase[0], self.name, what, self.asleep))
        return getattr(self.engine, what)

    def generate(self, *args, **kwargs):
        return self._call("generate")(*args, **kwargs)

    def score(self, *args, **kwargs):
        return self._call("score")(*args, **kwargs)

    def sleep(self) -> None:
        self._call("sleep")()
        self.asleep = True

    def wake(self) -> None:
        self._call("wake")()
        self.asleep = False

    def close(self) -> None:
        self.engine.close()


def test_a_separate_judge_is_awake_whenever_it_judges(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from selfloop import runtime as runtime_module
    from selfloop.loop import run_iteration
    from selfloop.runner import prepare, start_runtime, take_loop
    from selfloop.runtime import build_engine

    log: list = []
    phase = ["-"]
    built: list[str] = []

    def recording_build(config, model_dir):
        name = "policy" if not built else "judge"
        built.append(name)
        return Recorded(build_engine(config, model_dir), name, log, phase)

    monkeypatch.setattr(runtime_module, "build_engine", recording_build)
    config = make_config(tmp_path, sqlite_url, judge={"llm_judge": {"k": 1, "max_new_tokens": 8, "model": "tiny"}},
                         loop={"name": "judged", "state_dir": str(tmp_path / "state"), "seed": 3, "max_iterations": 2})
    db = prepare(config)
    lock = take_loop(db, config, "run")
    runtime = start_runtime(config)
    from selfloop.loop import open_loop

    open_loop(db, config)
    try:
        for _ in range(2):
            outcome = run_iteration(db, config, runtime, on_phase=lambda _l, _n, p: phase.__setitem__(0, p))
            assert outcome.status == "done"
    finally:
        runtime.close()
        lock.release()
        db.dispose()
    assert built == ["policy", "judge"]
    used = [(p, name, what) for p, name, what, asleep in log if what in ("generate", "score")]
    assert ("judge", "judge", "generate") in used and ("judge", "policy", "generate") not in used
    asleep = [(p, name, what) for p, name, what, was_asleep in log if what in ("generate", "score") and was_asleep]
    assert asleep == [], f"an engine generated while asleep: {asleep}"
    slept = [(p, name) for p, name, what, _ in log if what == "sleep"]
    assert ("train", "policy") in slept and ("train", "judge") in slept  # both gave the accelerator back
    second_judging = [i for i, (p, name, what, _) in enumerate(log) if name == "judge" and what == "generate"]
    woken = [i for i, (p, name, what, _) in enumerate(log) if name == "judge" and what == "wake"]
    assert any(w < second_judging[-1] and w > log.index(next(e for e in log if e[1] == "judge" and e[2] == "sleep"))
               for w in woken), "the judge was not woken after training"
