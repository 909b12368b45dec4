"""What one process keeps between phases and iterations: the resolved base model and the engines.

Engines are built from the config (engine.kind: hf, vllm, vllm-server) on first use and kept: loading a model once
per process, not once per phase.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loguru import logger

from selfloop.config import Config
from selfloop.engines.base import Engine
from selfloop.errors import SelfloopError
from selfloop.models.resolve import ResolvedModel, resolve_model


def _hf(config: Config, model_dir: Path) -> Engine:
    from selfloop.engines.hf import HFEngine

    return HFEngine(model_dir, device=config.engine.device, dtype=config.model.dtype, batch_size=config.engine.batch_size)


def _vllm(config: Config, model_dir: Path) -> Engine:
    from selfloop.engines.vllm import VLLMEngine

    e = config.engine
    try:
        return VLLMEngine(
            model_dir, dtype=config.model.dtype, gpu_memory_utilization=e.gpu_memory_utilization,
            tensor_parallel_size=e.tensor_parallel_size, enable_sleep_mode=e.enable_sleep_mode,
            max_model_len=e.max_model_len, max_lora_rank=max(e.max_lora_rank, config.train.lora.rank),
            enforce_eager=e.enforce_eager, seed=config.loop.seed,
        )
    except Exception as exc:
        raise SelfloopError(f"engine.kind 'vllm' could not start here: {_reason(exc)}; on a machine without a "
                            "GPU use engine.kind: hf (--set engine.kind=hf)") from exc


def _reason(exc: BaseException) -> str:
    """The first line that says why, from vLLM's errors (a pydantic ValidationError names only its model in its
    first line; the reason is its first error's message)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return str(first.get("msg", "")).removeprefix("Value error, ").strip() or type(exc).__name__
        except Exception:  # noqa: BLE001, S110 - not pydantic's after all: the message below
            pass
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _vllm_server(config: Config, model_dir: Path) -> Engine:
    from selfloop.engines.vllm_server import VLLMServerEngine, api_key_from_env

    e = config.engine
    return VLLMServerEngine(
        model_dir, e.servers, loop=config.loop.name, served_model=e.served_model, api_key=api_key_from_env(e.api_key_env),
        max_in_flight=e.max_in_flight, request_timeout_s=e.request_timeout_s, retries=e.retries,
        max_adapters_loaded=e.max_adapters_loaded, scorer_device=e.device,
    )


ENGINES: dict[str, Callable[[Config, Path], Engine]] = {"hf": _hf, "vllm": _vllm, "vllm-server": _vllm_server}


def build_engine(config: Config, model_dir: Path) -> Engine:
    return ENGINES[config.engine.kind](config, model_dir)


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
