"""Generation back ends behind one protocol (`base.Engine`): hf (transformers), vllm (in-process) and
vllm-server (a fleet of `vllm serve` servers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from selfloop.config import Config
from selfloop.engines.base import Engine
from selfloop.errors import SelfloopError


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
    except Exception as exc:  # noqa: BLE001 - vLLM's own errors (a pydantic ValidationError of its config...), in one line
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
        except Exception:  # noqa: BLE001 - not pydantic's after all
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
