"""What runs: the loop (iterations, phases, seed), the model and the generation engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from selfloop.config.base import DEFAULT_PHASES, PHASES, Phase, Probability, Section, upto


class LoopConfig(Section):
    """The loop: name, seed, length, which phases run, where its state lives."""

    name: str = Field(description="Loop name, unique in the database; `selfloop run` creates or continues it.")
    seed: Annotated[int, upto(2**63 - 1, 0)] = Field(
        0, description="Loop seed (0 to 2^63-1); every sample, draw and training seed derives from it.")
    max_iterations: Annotated[int, upto(1_000_000)] | None = Field(
        None, description="Stop the loop after this many iterations in total (null: run forever)."
    )
    phases: list[Phase] = Field(
        list(DEFAULT_PHASES),
        description="Phases of an iteration, in this order; omit one to switch it off (e.g. synthesize). 'curate' "
        "runs between judge and select when curate.filters names a filter (it is added here if left out). "
        "[evaluate, promote]: a loop that only measures its policy (a lab's control, training off).",
    )
    state_dir: Path | None = Field(
        None,
        description="Database, checkpoints, backups and lock live here. Default: $SELFLOOP_STATE_DIR, "
        "systemd's $STATE_DIRECTORY, or ~/.local/share/selfloop.",
    )
    stall_timeout_s: Annotated[int, upto(7 * 24 * 3600)] = Field(
        900, description="The systemd watchdog stops being fed when no progress is made for this long."
    )

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError("must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    @field_validator("phases")
    @classmethod
    def _phases_in_order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a phase is listed twice")
        if [p for p in PHASES if p in v] != v:
            raise ValueError(f"phases must keep the order {', '.join(PHASES)}")
        readers = [p for p in ("judge", "curate", "select", "train") if p in v]
        if "rollout" not in v and readers:
            raise ValueError(f"rollout cannot be switched off while {', '.join(readers)} run(s): they read its samples "
                             "(a loop that only measures a policy lists [evaluate, promote])")
        if "train" in v and "select" not in v:
            raise ValueError("train needs select (it trains on the selected examples)")
        if "curate" in v and "select" not in v:
            raise ValueError("curate needs select (it decides which prompts select may train on)")
        return v


class ModelConfig(Section):
    """The base model the loop improves (LoRA adapters are trained on top of it)."""

    base: str = Field(
        "smollm2-135m-instruct",
        description="Base model: 'smollm2-135m-instruct' (packaged, CPU-friendly), 'tiny' (random, for tests), "
        "a local directory with safetensors weights, or a hub id.",
    )

    @field_validator("base")
    @classmethod
    def _not_a_url(cls, v: str) -> str:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", v):
            raise ValueError("a URL is not a model: give a packaged name, a local directory or a hub id (org/name)")
        if not v.strip():
            raise ValueError("empty")
        return v
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for a hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': float32 on CPU, bfloat16 on GPUs that support it."
    )
    cache_dir: Path | None = Field(
        None,
        description="Converted models (safetensors) are cached here. Default: $SELFLOOP_CACHE_DIR, "
        "systemd's $CACHE_DIRECTORY, or ~/.cache/selfloop.",
    )


class EngineConfig(Section):
    """The generation back end used for synthesis, rollouts, judging and evaluation."""

    kind: Literal["hf", "vllm", "vllm-server"] = Field(
        "hf", description="Generation back end: 'hf' (transformers, any device), 'vllm' (in-process) or 'vllm-server' "
        "(running `vllm serve` servers, listed in `servers`)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device of the hf engine and of training.")
    batch_size: Annotated[int, upto(4096)] = Field(16, description="hf engine: sequences decoded together (n samples count each).")
    gpu_memory_utilization: Probability = Field(0.85, description="vllm: share of GPU memory vLLM may take.")
    tensor_parallel_size: Annotated[int, upto(64)] = Field(1, description="vllm: GPUs one model is split over.")
    enable_sleep_mode: bool = Field(
        False, description="vllm: free GPU memory while training on the same GPU (vLLM sleep mode)."
    )
    max_model_len: Annotated[int, upto(1_048_576)] = Field(2048, description="vllm: longest prompt + completion in tokens.")
    max_lora_rank: Annotated[int, upto(1024)] = Field(64, description="vllm: the largest LoRA rank it must serve.")
    enforce_eager: bool = Field(False, description="vllm: skip CUDA graph capture (slower, starts faster).")
    servers: list[str] = Field(
        [], description="vllm-server: base URLs of `vllm serve` servers of the same base model (http://host:port); "
        "requests are spread over them."
    )
    served_model: str | None = Field(None, description="vllm-server: the base model's name on the servers (default: the one they list).")
    api_key_env: str | None = Field(
        None, description="vllm-server: environment variable holding the servers' API key (`vllm serve --api-key`)."
    )
    max_in_flight: Annotated[int, upto(4096)] = Field(32, description="vllm-server: requests outstanding per server at a time.")
    request_timeout_s: Annotated[int, upto(86_400)] = Field(600, description="vllm-server: seconds one request may take.")
    retries: Annotated[int, upto(20, 0)] = Field(
        2, description="vllm-server: tries a failed request gets on other servers before the call fails.")
    max_adapters_loaded: Annotated[int, upto(64)] = Field(
        2, description="vllm-server: LoRA adapters kept loaded per server; older ones are unloaded."
    )

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.fullmatch(r"https?://[^\s/]+(/v1)?/?", url.strip()):
                raise ValueError(f"{url!r} is not a server base URL such as http://10.0.0.5:8000")
        if len(v) > 256:
            raise ValueError("at most 256 servers")
        return v

    @model_validator(mode="after")
    def _servers_for_server_kind(self) -> EngineConfig:
        if self.kind == "vllm-server" and not self.servers:
            raise ValueError("kind 'vllm-server' needs servers: the base URLs of running `vllm serve` servers")
        return self
