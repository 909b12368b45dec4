"""The whole configuration as one tree of pydantic models, one class per YAML section.

Every field has a default where one makes sense, so a minimal YAML names only the loop. Unknown keys are errors.
The algorithm, task-family and filter registries decide the names `train.algorithm`, `generation.tasks.kind`,
`eval.suites[].kind` and `curate.filters` accept and the `train.<algorithm>` and `curate.<filter>` option sections.
The sections live by area (base, running, data, judging, training, evaluation, operations); this module holds the
root, Config, and names every section as importers know them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from selfloop.config.base import (
    ALGORITHMS,
    DEFAULT_PHASES,
    FAMILIES,
    FILTERS,
    PHASES,
    Algorithm,
    CurateFilter,
    FamilyName,
    Phase,
    PoolKind,
    PositiveInt,
    Probability,
    Section,
    SuiteKind,
    default_cache_dir,
    section_type,
    upto,
)
from selfloop.config.data import FieldMap, GenerationConfig, MineHardConfig, SelfInstructConfig, SuiteConfig, TaskSource, check_family
from selfloop.config.evaluation import DriftConfig, EvalConfig, GuardConfig
from selfloop.config.judging import ConfidenceConfig, CrossViewConfig, JudgeConfig, LLMJudgeConfig, SemanticEntropyConfig, VoteConfig
from selfloop.config.operations import (
    DatabaseConfig,
    LoggingConfig,
    MetricsConfig,
    MLflowTrackingConfig,
    ScheduleConfig,
    TrackingConfig,
    WandbTrackingConfig,
    WarningsConfig,
)
from selfloop.config.running import EngineConfig, LoopConfig, ModelConfig
from selfloop.config.training import CurateConfig, EFTConfig, LoraConfig, TrainConfig

__all__ = [
    "ALGORITHMS", "Algorithm", "ConfidenceConfig", "Config", "CrossViewConfig", "CurateConfig", "CurateFilter",
    "DEFAULT_PHASES", "DatabaseConfig", "DriftConfig", "EFTConfig", "EngineConfig", "EvalConfig", "FAMILIES",
    "FILTERS", "FamilyName", "FieldMap", "GenerationConfig", "GuardConfig", "JudgeConfig", "LLMJudgeConfig",
    "LoggingConfig", "LoopConfig", "LoraConfig", "MLflowTrackingConfig", "MetricsConfig", "MineHardConfig",
    "ModelConfig", "PHASES", "Phase", "PoolKind", "PositiveInt", "Probability", "ScheduleConfig", "Section",
    "SelfInstructConfig", "SemanticEntropyConfig", "SuiteConfig", "SuiteKind", "TaskSource", "TrackingConfig",
    "TrainConfig", "VoteConfig", "WandbTrackingConfig", "WarningsConfig", "check_family", "default_cache_dir",
    "section_type", "upto",
]


class Config(Section):
    """The whole configuration; one field per YAML section."""

    loop: LoopConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    warnings: WarningsConfig = Field(default_factory=WarningsConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)

    @model_validator(mode="after")
    def _cross_section(self) -> Config:
        # Each algorithm reads one self-judging signal; a config that switches it off would select nothing.
        signal = ALGORITHMS[self.train.algorithm].signal
        if "select" in self.loop.phases and signal and signal not in self.judge.signals:
            raise ValueError(f"train.algorithm {self.train.algorithm!r} needs judge.signals to include {signal!r}")
        if self.train.eft.enabled and "llm_judge" not in self.judge.signals:
            raise ValueError("train.eft.enabled: evaluation fine-tuning learns from the LLM judge's judgments; "
                             "add 'llm_judge' to judge.signals")
        if self.train.eft.enabled and self.train.processes > 1:
            raise ValueError("train.eft.enabled: judge examples are trained in one process for now (train.processes: 1)")
        if "evaluate" in self.loop.phases and not self.eval.suites:
            raise ValueError("eval.suites is empty, but the evaluate phase needs at least one held-out suite "
                             "(or remove 'evaluate' from loop.phases)")
        ends = [s.name for s in self.eval.suites if s.when == "ends"]
        if ends and self.loop.max_iterations is None:
            raise ValueError(f"eval.suites[{ends[0]}].when 'ends' is answered in the loop's last iteration, and "
                             "loop.max_iterations is null (no last one): set it, or answer the suite every iteration")
        if ends and self.guard.enabled and self.guard.action == "stop":
            raise ValueError(f"eval.suites[{ends[0]}].when 'ends': guard.action 'stop' can end the loop before its last "
                             "iteration, which would leave the final policy unmeasured on it; answer it every iteration")
        n, voters = self.generation.samples_per_prompt, self.judge.vote.voters
        if voters is not None and voters > n:
            raise ValueError(f"judge.vote.voters ({voters}) is above generation.samples_per_prompt ({n})")
        check = ALGORITHMS[self.train.algorithm].check
        problem = check(self) if check is not None else None
        if problem:
            raise ValueError(problem)
        if self.curate.filters and "select" in self.loop.phases and "curate" not in self.loop.phases:
            phases = list(self.loop.phases)
            phases.insert(phases.index("select"), "curate")
            self.loop.phases = phases
        if self.curate.filters and "curate" in self.loop.phases:
            for name in self.curate.filters:
                read = FILTERS[name].reads(self.curate.options(name))
                if read is not None and read not in self.judge.signals:
                    raise ValueError(f"curate.filters names {name!r}, which reads the {read!r} judgments: "
                                     f"add {read!r} to judge.signals")
        if self.self_instruct.mine_hard.enabled and "synthesize" not in self.loop.phases:
            raise ValueError("self_instruct.mine_hard.enabled: hard prompts seed the synthesize phase, which is "
                             "not in loop.phases")
        mlflow_uri = self.tracking.mlflow.tracking_uri
        if mlflow_uri and "://" in mlflow_uri and not mlflow_uri.startswith(("http:", "https:", "databricks")):
            from selfloop.db.engine import same_database

            if same_database(mlflow_uri, self.database.url or f"sqlite:///{self.state_dir() / 'selfloop.db'}"):
                raise ValueError("tracking.mlflow.tracking_uri is selfloop's own store (database.url): MLflow would "
                                 "create its tables inside it; give MLflow a database of its own")
        if self.engine.kind == "vllm-server" and self.judge.llm_judge.model is not None:
            raise ValueError("judge.llm_judge.model: a separate judge model is not served by engine.kind 'vllm-server' "
                             "(its servers serve the policy's base model); leave it null to judge with the policy")
        return self

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        """Keys an algorithm's section had once, moved where they live now (each algorithm's `moved`)."""
        if not isinstance(data, dict):
            return data
        for spec in ALGORITHMS.values():
            if spec.moved is not None:
                data = spec.moved(data)
        return data

    # Paths that depend on the environment, resolved once here so every module agrees.
    def state_dir(self) -> Path:
        if self.loop.state_dir is not None:
            return self.loop.state_dir.expanduser().resolve()
        env = os.environ.get("SELFLOOP_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
        if env:
            return Path(env.split(":")[0]).expanduser().resolve()
        return Path("~/.local/share/selfloop").expanduser()

    def cache_dir(self) -> Path:
        if self.model.cache_dir is not None:
            return self.model.cache_dir.expanduser().resolve()
        return default_cache_dir()

    def database_url(self) -> str:
        """The store's URL as this process connects to it: with the password of `database.password_file` when the
        URL carries none."""
        url = self.database.url or f"sqlite:///{self.state_dir() / 'selfloop.db'}"
        if self.database.password_file is not None:
            from selfloop.credentials import with_password_file

            url = with_password_file(url, self.database.password_file)
        return url

    def stored_checkpoint(self, path: Path) -> str:
        """How a checkpoint directory is recorded: relative to the state directory when inside it, so that a
        moved state directory (or a copy on another machine) keeps working."""
        try:
            return Path(path).resolve().relative_to(self.state_dir()).as_posix()
        except ValueError:
            return str(Path(path).resolve())

    def checkpoint_dir(self, stored: str) -> Path:
        """A recorded checkpoint path on this machine: absolute as recorded; relative under the state
        directory, or else beside an SQLite database (whose default home is the state directory)."""
        path = Path(stored)
        if path.is_absolute():
            return path
        here = self.state_dir() / path
        if not here.exists():
            url = self.database_url()
            if url.startswith("sqlite:///") and (Path(url.removeprefix("sqlite:///")).parent / path).exists():
                return Path(url.removeprefix("sqlite:///")).parent / path
        return here

    def reader_url(self) -> str:
        """Where user SQL runs: the read-only role's URL, or the database itself (SQLite opens it read-only)."""
        return self.database.reader_url or self.database_url()
