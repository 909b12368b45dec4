"""Loop management and taking results elsewhere, through the CLI: fork from the base model, remove and
rename loops, overrides of stored configs and list entries, output formats, finding the store, export in
TRL's forms, merge into a plain model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from selfloop.db.engine import open_database
from selfloop.db.models import Checkpoint, Iteration, Loop
from tests.conftest import REPO, FinishedStore, selfloop_cli, table_counts, tiny_yaml

pytestmark = pytest.mark.integration


def test_export_loads_with_datasets_in_trls_forms(finished_tiny: FinishedStore, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    url = finished_tiny.url
    for what, required in (("samples", {"prompt", "completion", "correct", "known_answer"}), ("evals", {"prompt", "completion", "correct"}),
                           ("examples", {"prompt", "completion", "reward", "weight"})):
        path = tmp_path / f"{what}.jsonl"
        out = selfloop_cli("export", "tiny", "--what", what, "--out", str(path), "--db", url)
        assert out.returncode == 0, out.stderr[-2000:]
        n = int(out.stdout.split(": ")[1].split()[0])
        ds = datasets.load_dataset("json", data_files=str(path), split="train")
        assert len(ds) == n > 0 and required <= set(ds.column_names) and {"loop", "iteration"} <= set(ds.column_names)
        row = ds[0]
        assert row["prompt"][-1]["role"] == "user" and row["loop"] == "tiny"
        assert [m["role"] for m in row["completion"]] == ["assistant"]
    table_rows = table_counts(url)
    exported = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    with create_engine(url).connect() as conn:  # the judge phase's verdicts, as stored
        stored = [r[0] for r in conn.execute(text("SELECT s.correct FROM samples s JOIN prompts p ON p.id = s.prompt_id "
                                                  "ORDER BY s.iteration_id, p.source, p.item_index, s.sample_index"))]
    assert [r["correct"] for r in exported] == [None if v is None else bool(v) for v in stored]
    assert any(v is not None for v in stored) and all((r["correct"] is None) == (r["known_answer"] is None) for r in exported)
    assert len(exported) == table_rows["samples"]
    assert len((tmp_path / "examples.jsonl").read_text().splitlines()) == table_rows["examples"]
    out = selfloop_cli("export", "tiny", "--what", "samples", "--format", "parquet", "--out", str(tmp_path / "s.parquet"), "--db", url)
    assert out.returncode == 0
    assert len(datasets.load_dataset("parquet", data_files=str(tmp_path / "s.parquet"), split="train")) == table_rows["samples"]
    out = selfloop_cli("export", "tiny", "--what", "samples", "--iteration", "7", "--out", str(tmp_path / "x.jsonl"), "--db", url)
    assert out.returncode == 1 and "has no iteration 7" in out.stderr


def test_export_pairs_in_trls_preference_form(tmp_path: Path, sqlite_url: str, config_factory) -> None:
    """Pairs as DPOTrainer reads them: prompt (user turn), chosen and rejected (one assistant turn each)."""
    datasets = pytest.importorskip("datasets")
    from selfloop.db.models import Example, Judgment, Sample
    from tests.conftest import store_samples

    db = open_database(sqlite_url, init=True)
    config = config_factory(sqlite_url, train={"algorithm": "dpo"}, generation={"system_prompt": "Be brief."})
    it = store_samples(db, config, [("What is 2 + 3?", "5", ["5", "six"])])
    with db.session() as s:
        good, bad = s.execute(select(Sample.id, Sample.prompt_id).order_by(Sample.sample_index)).all()
        s.add_all([Judgment(sample_id=good.id, kind="llm_judge", judge_index=0, score=5.0, parse_ok=True),
                   Judgment(sample_id=bad.id, kind="llm_judge", judge_index=0, score=1.0, parse_ok=True),
                   Example(iteration_id=it, item_index=0, algorithm="dpo", prompt_id=good.prompt_id,
                           sample_id=good.id, rejected_sample_id=bad.id)])
    db.dispose()
    path = tmp_path / "pairs.jsonl"
    out = selfloop_cli("export", "test", "--what", "pairs", "--out", str(path), "--db", sqlite_url)
    assert out.returncode == 0, out.stderr
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    row = ds[0]
    assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    assert row["chosen"] == [{"role": "assistant", "content": "5"}] and row["rejected"] == [{"role": "assistant", "content": "six"}]
    assert (row["chosen_score"], row["rejected_score"], row["iteration"], row["loop"]) == (5.0, 1.0, 1, "test")


def test_merge_writes_a_plain_model_that_matches_the_adapter(finished_tiny: FinishedStore, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    url = finished_tiny.url
    db = open_database(url)
    with db.session() as s:
        path, base = s.execute(select(Checkpoint.path, Checkpoint.base_model).order_by(Checkpoint.id.desc()).limit(1)).one()
        number = s.scalar(select(Iteration.number).where(Iteration.output_checkpoint_id.is_not(None))
                          .order_by(Iteration.number.desc()).limit(1))
    db.dispose()
    out_dir = tmp_path / "merged"
    out = selfloop_cli("merge", "tiny", "--iteration", str(number), "--out", str(out_dir), "--db", url)
    assert out.returncode == 0, out.stderr[-2000:]
    assert any(out_dir.glob("*.safetensors")) and not any(out_dir.glob("*.bin"))
    merged = AutoModelForCausalLM.from_pretrained(out_dir, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert tokenizer.chat_template
    from selfloop.models.resolve import resolve_model
    from tests.conftest import CACHE

    state = finished_tiny.root / "state"
    assert not Path(path).is_absolute()  # recorded relative to the state directory
    path = state / path
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve_model(base, CACHE).path), path)
    ids = tokenizer("What is 2 + 3?", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, reference(ids).logits, atol=1e-4)
    # A damaged checkpoint is refused: a copy of the store whose newest checkpoint row names a damaged copy of
    # its directory (the shared store itself is only read).
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(path, damaged)
    (damaged / "adapter_model.safetensors").write_bytes(b"damaged")
    shutil.copy(url.removeprefix("sqlite:///"), tmp_path / "copy.db")
    copy_url = f"sqlite:///{tmp_path / 'copy.db'}"
    with create_engine(copy_url).begin() as conn:
        moved = conn.execute(text("UPDATE checkpoints SET path = :p WHERE path = :old"),
                             {"p": str(damaged), "old": str(path.relative_to(state))})
        assert moved.rowcount == 1
    out = selfloop_cli("merge", "tiny", "--iteration", str(number), "--out", str(tmp_path / "again"), "--db", copy_url)
    assert out.returncode == 1 and "adapter_model.safetensors" in out.stderr


def test_fork_from_the_base_model_then_remove_and_rename(tmp_path: Path, sqlite_url: str) -> None:
    config = tiny_yaml(tmp_path, sqlite_url, loop__max_iterations=1)
    assert selfloop_cli("run", "--config", str(config)).returncode == 0
    out = selfloop_cli("fork", "tiny", "--at", "0", "--name", "from-base", "--db", sqlite_url)
    assert out.returncode == 0, out.stderr
    db = open_database(sqlite_url)
    with db.session() as s:
        fork = s.scalars(select(Loop).where(Loop.name == "from-base")).one()
        assert (fork.parent_iteration, fork.start_checkpoint_id, fork.current_checkpoint_id) == (0, None, None)
    db.dispose()
    out = selfloop_cli("loop", "rm", "tiny", "--yes", "--db", sqlite_url)
    assert out.returncode == 1 and "from-base" in out.stderr  # a fork starts from it
    before = table_counts(sqlite_url)
    out = selfloop_cli("loop", "rm", "from-base", "--db", sqlite_url)
    assert out.returncode == 1 and "--yes" in out.stderr and table_counts(sqlite_url) == before  # no terminal: no silent delete
    assert selfloop_cli("loop", "rm", "from-base", "--yes", "--db", sqlite_url).returncode == 0
    checkpoints = sorted((tmp_path / "state" / "checkpoints" / "tiny").iterdir())
    assert checkpoints
    out = selfloop_cli("loop", "rm", "tiny", "--yes", "--db", sqlite_url)
    assert out.returncode == 0, out.stderr
    counts = table_counts(sqlite_url)
    assert all(counts[t] == 0 for t in ("loops", "iterations", "prompts", "samples", "judgments", "checkpoints", "evals", "events"))
    assert not [p for p in (tmp_path / "state" / "checkpoints" / "tiny").iterdir()]
    # The name is free again, and a loop can be renamed (its stored config follows).
    assert selfloop_cli("run", "--config", str(config)).returncode == 0
    out = selfloop_cli("loop", "rename", "tiny", "renamed", "--db", sqlite_url)
    assert out.returncode == 0 and "1 checkpoint(s) moved with it" in out.stdout, out.stderr
    moved = sorted(p.name for p in (tmp_path / "state" / "checkpoints" / "renamed").iterdir())
    assert moved == ["iteration-0001"] and not list((tmp_path / "state" / "checkpoints" / "tiny").glob("iteration-*"))
    # The old name says where the loop went (it said only "no loop named 'tiny'"), renamed again included.
    assert selfloop_cli("loop", "rename", "renamed", "again", "--db", sqlite_url).returncode == 0
    gone = selfloop_cli("history", "--loop", "tiny", "--db", sqlite_url)
    assert gone.returncode == 1 and "no loop named 'tiny' in this database: it was renamed to 'again'" in gone.stderr
    assert selfloop_cli("loop", "rename", "again", "renamed", "--db", sqlite_url).returncode == 0
    # A new loop of the old name trains into its own free directory (it used to fail on checkpoints.path).
    out = selfloop_cli("run", "--config", str(config))
    assert out.returncode == 0, out.stderr[-2000:]
    out = selfloop_cli("resume", "renamed", "--db", sqlite_url, "--set", "loop.max_iterations=2")
    assert out.returncode == 0, out.stderr[-2000:]
    db = open_database(sqlite_url)
    with db.session() as s:
        loop = s.scalars(select(Loop).where(Loop.name == "renamed")).one()
        assert loop.config["loop"]["name"] == "renamed" and loop.config["loop"]["max_iterations"] == 2
        assert s.scalar(select(func.count()).select_from(Iteration).where(Iteration.loop_id == loop.id)) == 2
    db.dispose()
    out = selfloop_cli("resume", "renamed", "--db", sqlite_url, "--set", "train.learning_rate=0.5")
    assert out.returncode == 1 and "train.learning_rate" in out.stderr and "fork" in out.stderr


def test_overrides_of_list_entries_and_on_validate(tmp_path: Path) -> None:
    config = tiny_yaml(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    out = selfloop_cli("config", "validate", str(config), "--set", "eval.suites[0].size=5")
    assert out.returncode == 0, out.stderr
    out = selfloop_cli("config", "show", str(config), "--set", "eval.suites[0].size=5")
    assert "size: 5" in out.stdout
    out = selfloop_cli("config", "validate", str(config), "--set", "eval.suites[9].size=5")
    assert out.returncode == 2 and "index 9 is out of range" in out.stderr


def test_history_formats_columns_and_a_closed_pipe(finished_tiny: FinishedStore) -> None:
    url = finished_tiny.url
    out = selfloop_cli("history", "--db", url, "--format", "csv", "--columns", "loop,iteration,status")
    assert out.returncode == 0 and out.stdout.splitlines() == ["loop,iteration,status", "tiny,1,done", "tiny,2,done"], out.stderr
    out = selfloop_cli("history", "--db", url, "--format", "jsonl", "--columns", "iteration")
    assert [json.loads(line) for line in out.stdout.splitlines()] == [{"iteration": 1}, {"iteration": 2}]
    out = selfloop_cli("sql", "--db", url, "--format", "jsonl", "SELECT name FROM loops")
    assert json.loads(out.stdout) == {"name": "tiny"}
    long = "SELECT '" + "x" * 80 + "' AS s"
    assert "x" * 80 in selfloop_cli("sql", "--db", url, "--wide", long).stdout
    assert "x" * 57 + "..." in selfloop_cli("sql", "--db", url, long).stdout
    out = selfloop_cli("history", "--db", url, "--columns", "nope")
    assert out.returncode == 1 and "no column 'nope'" in out.stderr
    # The default table fits a terminal (it was 21 columns, about 300 characters): the main figures, and no
    # column this loop leaves empty (RLSC with no parsed judge score: no judge columns); --columns all has them all.
    table = selfloop_cli("history", "--db", url).stdout.splitlines()
    assert max(len(line) for line in table[:4]) <= 130 and "main_metric" in table[0] and "checkpoint" not in table[0]
    everything = selfloop_cli("history", "--db", url, "--columns", "all").stdout.splitlines()[0]
    assert "checkpoint" in everything and "started_at" in everything
    piped = subprocess.run(f"{sys.executable} -m selfloop history --db {url} --wide | head -1", shell=True,
                           capture_output=True, text=True, cwd=REPO)
    assert piped.returncode == 0 and "BrokenPipe" not in piped.stderr and "error" not in piped.stderr


def test_read_commands_find_the_store(finished_tiny: FinishedStore, tmp_path: Path) -> None:
    url = finished_tiny.url
    out = selfloop_cli("history", "--loop", "tiny", env={"SELFLOOP_DB": url, "SELFLOOP_STATE_DIR": str(tmp_path)})
    assert out.returncode == 0 and "tiny" in out.stdout
    out = selfloop_cli("history", env={"SELFLOOP_STATE_DIR": str(tmp_path / "empty"), "SELFLOOP_DB": ""})
    assert out.returncode == 1 and "--config" in out.stderr and "SELFLOOP_DB" in out.stderr
    assert not (tmp_path / "empty" / "selfloop.db").exists()


def test_offline_mode_is_named_and_not_restarted(tmp_path: Path, sqlite_url: str) -> None:
    """A hub id that is not cached, with HF_HUB_OFFLINE set (the env example no longer sets it): exit 2, which
    the unit's RestartPreventExitStatus keeps from restarting, naming the variable; no loop row is left."""
    config = tiny_yaml(tmp_path, sqlite_url, model__base="someorg/not-cached")
    out = selfloop_cli("run", "--config", str(config), env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "HF_HUB_OFFLINE" in out.stderr and "not in the model cache" in out.stderr
    assert table_counts(sqlite_url)["loops"] == 0
    env_example = (REPO / "systemd" / "selfloop.env.example").read_text()
    assert "\nHF_HUB_OFFLINE=1" not in env_example and "#HF_HUB_OFFLINE=1" in env_example
    assert "RestartPreventExitStatus=2 3" in (REPO / "systemd" / "selfloop.service").read_text()


def test_a_long_download_feeds_the_watchdog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub is reachable here, so the download is a stand-in that reports progress through the tqdm
    class it is given, as huggingface_hub's snapshot_download does; each report is a heartbeat."""
    import time as _time

    import huggingface_hub

    from selfloop.models import resolve
    from selfloop.progress import HEARTBEAT

    beats = []

    def fake_snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None, tqdm_class=None):
        bar = tqdm_class(total=3, disable=True)
        for _ in range(3):
            HEARTBEAT.last -= 100  # as if long without progress
            bar.update(1)
            beats.append(HEARTBEAT.age())
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        (model / "model.safetensors").write_bytes(b"")
        return str(model)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = _time.monotonic()
    path = resolve._download("someorg/model", None, tmp_path)
    assert path == tmp_path / "model" and len(beats) == 3 and all(age < _time.monotonic() - started + 1 for age in beats)


def test_a_moved_state_directory_keeps_working(tmp_path: Path) -> None:
    """Checkpoints are recorded relative to the state directory: after moving it (database included), a fork
    from a checkpoint and a resume find everything."""
    import shutil

    old = tmp_path / "old"
    old.mkdir()
    config = tiny_yaml(old, f"sqlite:///{old / 'state' / 'selfloop.db'}", loop__max_iterations=1)
    assert selfloop_cli("run", "--config", str(config)).returncode == 0
    shutil.move(old / "state", tmp_path / "moved")
    url = f"sqlite:///{tmp_path / 'moved' / 'selfloop.db'}"
    out = selfloop_cli("fork", "tiny", "--at", "1", "--name", "after-move", "--db", url)
    assert out.returncode == 0, out.stderr
    out = selfloop_cli("resume", "after-move", "--db", url, "--set", f"loop.state_dir={tmp_path / 'moved'}",
                       "--set", "loop.max_iterations=1")
    assert out.returncode == 0, out.stderr[-2000:]
    db = open_database(url)
    with db.session() as s:
        paths = s.scalars(select(Checkpoint.path)).all()
    db.dispose()
    assert len(paths) == 2 and all((tmp_path / "moved" / p / "MANIFEST.json").is_file() for p in paths)


def test_export_to_stdout(finished_tiny: FinishedStore) -> None:
    url = finished_tiny.url
    out = selfloop_cli("export", "tiny", "--what", "samples", "--iteration", "1", "--db", url)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["iteration"] == 1 and r["completion"][0]["role"] == "assistant" for r in rows)
    assert "stdout:" in out.stderr


def test_resume_config_is_the_loops_config_file(tmp_path: Path, sqlite_url: str) -> None:
    """`--config` meant the loop's config on `run` but only the store's location on `resume` (a corrected field
    in the file was silently ignored). Now both take the file as the loop's config: what may change between runs
    is applied, a change of what the loop computes is refused, and a file of another loop is refused."""
    config = tiny_yaml(tmp_path, sqlite_url, loop__max_iterations=1)
    assert selfloop_cli("run", "--config", str(config)).returncode == 0
    longer = tiny_yaml(tmp_path, sqlite_url, name="longer.yaml", loop__max_iterations=2)
    out = selfloop_cli("resume", "tiny", "--config", str(longer))
    assert out.returncode == 0 and "ran 1 iteration(s), last 2" in out.stdout, out.stderr[-2000:]
    db = open_database(sqlite_url)
    with db.session() as s:
        assert s.scalars(select(Loop).where(Loop.name == "tiny")).one().config["loop"]["max_iterations"] == 2
    db.dispose()
    other = tiny_yaml(tmp_path, sqlite_url, name="lr.yaml", loop__max_iterations=3, train__learning_rate=0.5)
    out = selfloop_cli("resume", "tiny", "--config", str(other))
    assert out.returncode == 1 and "train.learning_rate" in out.stderr and "fork" in out.stderr
    named = tiny_yaml(tmp_path, sqlite_url, name="named.yaml", loop__name="another")
    out = selfloop_cli("resume", "tiny", "--config", str(named))
    assert out.returncode == 1 and f"--config {named} configures loop 'another', not 'tiny'" in out.stderr


@pytest.mark.integration
def test_a_loop_that_failed_before_its_first_checkpoint_may_run_again_with_changes(tmp_path: Path) -> None:
    """The user trial: a loop whose first run failed before any checkpoint was left with no way out ("fork it at
    N", with nothing to fork). With no finished iteration and no checkpoint, a changed config replaces the old
    one: the false start's rows go, and what runs equals a clean run of the new config. Once an iteration has
    finished, a changed config is refused (fork) as before."""
    url = f"sqlite:///{tmp_path / 'selfloop.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1)
    killed = selfloop_cli("run", "--config", str(config), env={"SELFLOOP_FAILPOINT": "judge.start"})
    assert killed.returncode == -9 and table_counts(url)["samples"] > 0  # a false start with rows
    changed = tiny_yaml(tmp_path, url, name="changed.yaml", loop__max_iterations=1, generation__temperature=0.7)
    out = selfloop_cli("run", "--config", str(changed))
    assert out.returncode == 0, out.stderr[-3000:]
    (tmp_path / "clean").mkdir()
    clean_url = f"sqlite:///{tmp_path / 'clean' / 'selfloop.db'}"
    clean = selfloop_cli("run", "--config", str(tiny_yaml(tmp_path / "clean", clean_url, loop__max_iterations=1,
                                                          generation__temperature=0.7)))
    assert clean.returncode == 0, clean.stderr[-3000:]
    mine, theirs = table_counts(url), table_counts(clean_url)
    assert mine["events"] == theirs["events"] + 1  # loop.config_replaced
    assert {k: v for k, v in mine.items() if k not in ("events", "writer_leases")} == \
        {k: v for k, v in theirs.items() if k not in ("events", "writer_leases")}
    engine = create_engine(url)
    with engine.connect() as conn:
        temperature = conn.execute(text("SELECT DISTINCT temperature FROM samples")).scalars().all()
        replaced = conn.execute(text("SELECT message FROM events WHERE kind = 'loop.config_replaced'")).scalar()
    engine.dispose()
    assert temperature == [0.7] and "generation.temperature" in replaced
    again = selfloop_cli("run", "--config", str(tiny_yaml(tmp_path, url, name="third.yaml", loop__max_iterations=2,
                                                          generation__temperature=0.9)))
    assert again.returncode != 0 and "fork it to run the new config" in again.stderr, again.stderr[-2000:]


def test_help_lists_every_algorithm_of_the_registry() -> None:
    """`--help` named 6 algorithms where there were 12."""
    from selfloop.algorithms import specs
    from selfloop.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert f"one of its {len(specs())} algorithms" in text
    assert all(name in text for name in specs())
