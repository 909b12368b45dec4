"""What one process keeps between phases and iterations: the resolved base model and the engines.

Engines are built on first use and kept: loading a model once per process, not once per phase.
"""

from __future__ import annotations

from loguru import logger

from selfloop.config import Config
from selfloop.engines import build_engine
from selfloop.engines.base import Engine
from selfloop.models.resolve import ResolvedModel, resolve_model


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._model: ResolvedModel | None = None
        self._judge_model: ResolvedModel | None = None
        self._engine: Engine | None = None
        self._judge_engine: Engine | None = None

    @property
    def model(self) -> ResolvedModel:
        if self._model is None:
            self._model = resolve_model(self.config.model.base, self.config.cache_dir(), self.config.model.revision)
        return self._model

    def engine(self) -> Engine:
        """The policy's engine (base model; adapters are applied per call)."""
        if self._engine is None:
            logger.info("starting the {} engine on {}", self.config.engine.kind, self.model.path)
            self._engine = build_engine(self.config, self.model.path)
        self._engine.wake()
        return self._engine

    def judge_engine(self) -> tuple[Engine, bool]:
        """(engine, whether it is the policy itself). A separate judge model gets an engine of its own."""
        spec = self.config.judge.llm_judge.model
        if spec is None:
            return self.engine(), True
        if self._judge_engine is None:
            self._judge_model = resolve_model(spec, self.config.cache_dir())
            self._judge_engine = build_engine(self.config, self._judge_model.path)
        self._judge_engine.wake()  # release_accelerator put it to sleep before the last training
        return self._judge_engine, False

    def release_accelerator(self) -> None:
        """Before training: engines give back what memory they can (vLLM sleep mode, hf moves to CPU)."""
        for engine in (self._engine, self._judge_engine):
            if engine is not None:
                engine.sleep()

    def close(self) -> None:
        for engine in (self._engine, self._judge_engine):
            if engine is not None:
                engine.close()
        self._engine = self._judge_engine = None
