"""Config: validation errors name the field path and the bad value; every shipped YAML validates."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from selfloop.config import Config, config_reference, load_config, validate_config
from selfloop.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_minimal_config_fills_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "loop:\n  name: mini\n"))
    assert config.loop.name == "mini"
    assert config.train.algorithm == "dpo"
    assert config.generation.samples_per_prompt == 4
    assert config.loop.phases == ["synthesize", "rollout", "judge", "select", "train", "evaluate", "promote"]


BAD = [
    # (yaml, expected fragments of the message: field path and value)
    ("loop: {name: a}\ntrain: {algorithm: foo}", ["train.algorithm: 'foo' is not one of dpo, spin, ttrl, rlsc, rest, orpo"]),
    ("loop: {name: a}\ngeneration: {samples_per_prompt: -3}", ["generation.samples_per_prompt: -3", "greater than or equal to 1"]),
    ("loop: {name: a}\ngeneration: {samples_per_prompt: many}", ["generation.samples_per_prompt: 'many'", "integer"]),
    ("loop: {name: a}\ngeneration: {temperature: hot}", ["generation.temperature: 'hot'", "number"]),
    ("loop: {name: a}\nengine: {kind: tensorrt}", ["engine.kind: 'tensorrt' is not one of hf, vllm"]),
    ("loop: {name: a}\ntrain: {learning_rate: 0}", ["train.learning_rate: 0", "greater than 0"]),
    ("loop: {name: a}\ntrain: {lora: {rank: 0}}", ["train.lora.rank: 0"]),
    ("loop: {name: a}\ntrain: {dpo: {kind: softmax}}", ["train.dpo.kind: 'softmax' is not one of sigmoid, ipo, hinge"]),
    ("loop: {name: a}\ngeneration: {top_p: 1.5}", ["generation.top_p: 1.5"]),
    ("loop: {name: a, colour: blue}", ["loop.colour: unknown key", "'blue'"]),
    ("loop: {name: a}\nmodle: {base: x}", ["modle: unknown key"]),
    ("loop: {name: 'bad name/'}", ["loop.name:", "'bad name/'"]),
    ("generation: {samples_per_prompt: 2}", ["loop: required, but missing"]),
    ("loop: {name: a}\ndatabase: {url: 'mysql://u@h/db'}", ["database.url:", "'mysql' is not supported", "'mysql://u@h/db'"]),
    ("loop: {name: a}\ndatabase: {url: 'not a url'}", ["database.url:", "not a database URL", "'not a url'"]),
    ("loop: {name: a}\ndatabase: {url: 'sqlite://'}", ["database.url:", "needs a file path"]),
    ("loop: {name: a, phases: [rollout, synthesize]}", ["loop.phases:", "order"]),
    ("loop: {name: a, phases: [synthesize, judge]}", ["loop.phases:", "rollout cannot be switched off"]),
    ("loop: {name: a}\nschedule: {cron: 'every night'}", ["schedule.cron:", "crontab"]),
    ("loop: {name: a}\neval: {main_metric: nosuch/greedy_accuracy}", ["eval:", "names no suite"]),
    ("loop: {name: a}\ngeneration: {tasks: {kind: jsonl}}", ["generation.tasks:", "needs a path"]),
    ("loop: {name: a}\ntrain: {algorithm: ttrl, ttrl: {n_train: 64}}\ngeneration: {samples_per_prompt: 8}",
     ["n_train (64)", "samples_per_prompt (8)"]),
    ("loop: {name: a}\njudge: {vote: {voters: 9}}\ngeneration: {samples_per_prompt: 8}",
     ["judge.vote.voters (9)", "samples_per_prompt (8)"]),
    ("loop: {name: a}\ntrain: {algorithm: dpo}\njudge: {signals: [vote]}", ["needs judge.signals to include 'llm_judge'"]),
    ("loop: {name: a}\nself_instruct: {min_words: 50, max_words: 10}", ["min_words (50) is above max_words (10)"]),
    ("loop: {name: a}\nloop: {seed: 1.5}", ["c.yaml:2:1: the key 'loop' is given twice"]),  # not a silent replacement
    ("loop: {name: a}\nengine: {kind: vllm-server}", ["engine:", "needs servers"]),
    ("loop: {name: a}\nengine: {kind: vllm-server, servers: ['gpu1:8000']}", ["engine.servers:", "'gpu1:8000' is not a server base URL"]),
    ("loop: {name: a}\nengine: {kind: vllm-server, servers: ['http://h:1'], max_in_flight: 0}", ["engine.max_in_flight: 0"]),
    ("loop: {name: a}\nengine: {kind: vllm-server, servers: ['http://h:1']}\njudge: {llm_judge: {model: tiny}}",
     ["judge.llm_judge.model", "not served by engine.kind 'vllm-server'"]),
    ("loop: {name: a}\ntrain: {batch_size: 6, processes: 4}", ["train:", "batch_size 6 does not split evenly over 4 processes"]),
    ("loop: {name: a}\ntrain: {processes: 0}", ["train.processes: 0"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD, ids=[f[0][:40] for f in BAD])
def test_bad_config_names_field_and_value(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:4:\d+: YAML syntax error: expected .,. or .\]."):
        load_config(write(tmp_path, "loop:\n  name: a\n  seed: [1, 2\ntrain: {}\n"))


def test_unreadable_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "loop:\n  name: a\n")
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads any file, so the PermissionError a service user would get is raised by hand
        def denied(self: Path, *args: object, **kwargs: object) -> str:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(ConfigError, match=r"c.yaml: permission denied for user \S+ \(make the file"):
        load_config(path)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="empty|mapping"):
        load_config(write(tmp_path, text))


def test_overrides_apply_and_validate(tmp_path: Path) -> None:
    path = write(tmp_path, "loop: {name: a}\n")
    config = load_config(path, ["train.learning_rate=2e-4", "generation.stop=['###']", "loop.name=b"])
    assert config.train.learning_rate == 2e-4 and config.generation.stop == ["###"] and config.loop.name == "b"
    with pytest.raises(ConfigError, match="train.learning_rate: 'fast'"):
        load_config(path, ["train.learning_rate=fast"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(path, ["novalue"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, Config)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# selfloop ") or first.startswith("# make "), f"{path.name} must start with the command that runs it"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_validate_with_its_files_from_anywhere(path: Path, run_cli, tmp_path: Path,
                                                                           monkeypatch) -> None:
    """The GPU configs named task files under /var/lib/selfloop that exist only on a deployed server: they name
    the small example files shipped beside them, found from any working directory."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("config", "validate", str(path))
    assert code == 0 and "valid" in out, err


def test_docs_config_reference_is_generated_from_the_models() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    assert config_reference() in page, "docs/configuration.md's reference is stale: run `make reference`"


def test_every_field_has_a_description() -> None:
    rows = [r for r in config_reference().splitlines()[2:]]
    missing = [r for r in rows if r.rstrip().endswith("|  |") or re.search(r"\| \|$", r)]
    assert not missing, missing


def test_algorithm_sections_match_the_registry() -> None:
    from selfloop.algorithms import specs
    from selfloop.config import TrainConfig

    for name, spec in specs().items():
        assert TrainConfig.model_fields[name].annotation is spec.options, f"train.{name} is its spec's options"
    assert set(specs()) == set(TrainConfig.model_fields["algorithm"].annotation.__args__)


def test_the_signal_an_algorithm_declares_is_required(tmp_path: Path) -> None:
    from selfloop.algorithms import specs

    for name, spec in specs().items():
        others = [s for s in ("llm_judge", "vote", "confidence") if s != spec.signal]
        data = {"loop": {"name": "x"}, "train": {"algorithm": name}, "judge": {"signals": others}}
        if spec.signal is None:
            validate_config(data)
        else:
            with pytest.raises(ConfigError, match=f"needs judge.signals to include '{spec.signal}'"):
                validate_config(data)


def test_a_spec_is_checked_where_it_is_declared() -> None:
    from pydantic import BaseModel

    from selfloop.algorithms.spec import AlgorithmSpec

    class Options(BaseModel):
        steps: int = 1

    with pytest.raises(ValueError, match="1-40 lower-case"):
        AlgorithmSpec(name="Bad-Name", options=Options, trainer="x", summary="", shape="pair")
    with pytest.raises(ValueError, match="fixed_steps names 'epochs'"):
        AlgorithmSpec(name="ok", options=Options, trainer="x", summary="", shape="pair", fixed_steps="epochs")
    with pytest.raises(ValueError, match="shape 'list'"):
        AlgorithmSpec(name="ok", options=Options, trainer="x", summary="", shape="list")  # type: ignore[arg-type]


def test_cli_validate_and_show(tmp_path: Path, run_cli) -> None:
    good = write(tmp_path, "loop: {name: cli}\ntrain: {algorithm: rlsc}\n")
    code, out, _ = run_cli("config", "validate", str(good))
    assert code == 0 and "valid" in out
    code, out, _ = run_cli("config", "show", str(good))
    shown = yaml.safe_load(out)
    assert code == 0 and shown["train"]["algorithm"] == "rlsc" and shown["train"]["rlsc"]["alpha"] == 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: {name: cli}\ntrain: {algorithm: foo}\n")
    code, out, err = run_cli("config", "validate", str(bad))
    assert code == 2 and "train.algorithm: 'foo' is not one of" in err and "Traceback" not in err


def test_validate_config_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        validate_config(["loop"])


@pytest.mark.integration
@pytest.mark.parametrize("argv", [["status"], ["sql", "SELECT count(*) FROM loops"], ["history"],
                                  ["config", "validate", "configs/tiny.yaml"], ["config", "validate", "configs/demo-cpu.yaml"]])
def test_read_commands_do_not_import_torch(tmp_path: Path, argv: list[str]) -> None:
    """status, sql, history and config validate read a store or a file: they start in well under a second
    because they never import torch (the algorithms' configs live apart from their training code)."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'x.db'}"
    from selfloop.db.engine import make_engine
    from selfloop.db.migrate import upgrade

    upgrade(make_engine(url, create=True))
    extra = [] if argv[0] == "config" else ["--db", url]
    code = ("import sys; from selfloop.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    out = subprocess.run([sys.executable, "-c", code, *argv, *extra], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "NO-TORCH 0", out.stdout + out.stderr


def test_relative_paths_in_a_config_are_the_files_not_the_working_directorys(tmp_path: Path, monkeypatch) -> None:
    """The same file means the same loop from wherever it is run; --set values stay relative to where it is typed."""
    (tmp_path / "project").mkdir()
    path = tmp_path / "project" / "loop.yaml"
    path.write_text("loop: {name: a, state_dir: state}\nmodel: {base: ./model}\n"
                    "generation: {tasks: {kind: jsonl, path: data/tasks.jsonl}}\n"
                    "eval: {suites: [{name: e, kind: jsonl, path: data/eval.jsonl}], main_metric: e/greedy_accuracy}\n"
                    "database: {url: 'sqlite:///loop.db'}\nlogging: {file: logs/loop.log}\n"
                    "tracking: {wandb: {dir: wandb}}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("project/loop.yaml", ["model.cache_dir=cache"])
    here = tmp_path / "project"
    assert (config.loop.state_dir, config.model.base, config.generation.tasks.path, config.eval.suites[0].path) == (
        here / "state", str(here / "model"), here / "data" / "tasks.jsonl", here / "data" / "eval.jsonl")
    assert config.database.url == f"sqlite:///{here / 'loop.db'}" and config.logging.file == here / "logs" / "loop.log"
    assert config.tracking.wandb.dir == here / "wandb"
    assert config.model.cache_dir == Path("cache")  # an override: as typed
    assert load_config(REPO / "configs" / "tiny.yaml").model.base == "tiny"  # names are not paths


@pytest.mark.parametrize("uri", ["postgresql+psycopg://mlflow:pw@db.example:5432/selfloop",
                                 "postgresql://other@db.example/selfloop"])
def test_an_mlflow_store_inside_selfloops_own_database_is_refused(uri: str) -> None:
    """MLflow created its tables inside selfloop's PostgreSQL store when pointed at it; another database is fine."""
    from selfloop.config import validate_config
    from selfloop.errors import ConfigError

    base = {"loop": {"name": "x"}, "database": {"url": "postgresql+psycopg://owner@db.example/selfloop"}}
    with pytest.raises(ConfigError, match="tracking.mlflow.tracking_uri is selfloop's own store"):
        validate_config({**base, "tracking": {"mlflow": {"tracking_uri": uri}}})
    validate_config({**base, "tracking": {"mlflow": {"tracking_uri": uri.replace("/selfloop", "/mlflow")}}})


@pytest.mark.parametrize(("override", "suggested"), [
    ("train.lr=1e-4", "train.lr: unknown key (value '1e-4'); did you mean 'learning_rate'?"),
    ("train.gradient_accumulation_steps=4", "did you mean 'grad_accum'?"),
    ("train.lora.r=8", "train.lora.r: unknown key (value 8); did you mean 'rank'?"),
    ("generation.max_tokens=64", "did you mean 'max_new_tokens'?"),
    ("train.learning_rat=1e-4", "did you mean 'learning_rate'?"),
])
def test_other_tools_names_for_a_field_suggest_ours(override: str, suggested: str) -> None:
    """`--set train.lr=...` suggested `lora` (closer in spelling); a TRL or Trainer name now suggests its field."""
    from selfloop.config import apply_overrides, validate_config
    from selfloop.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        validate_config(apply_overrides({"loop": {"name": "x"}}, [override]))
    assert suggested in str(refused.value)
