"""Every file a loop will read, checked before anything is written.

`selfloop config validate`, `run`, `resume` and the daemon call `check_inputs` first: a missing,
unreadable, non-UTF-8, oversized or malformed task, eval or template file is reported with its file,
line and field before a loop row or an iteration exists, so fixing the file is all it takes.
"""

from __future__ import annotations

from pathlib import Path

from selfloop.config import Config
from selfloop.errors import ConfigError


def check_inputs(config: Config, *, this_machine: bool = True) -> None:
    """Check the state directory and a local model path, load the task pool, every held-out suite and the
    judge template, and (`this_machine`) what the engine needs of the machine; raise ConfigError on the first bad
    one."""
    from selfloop.evals.suites import load_suite
    from selfloop.judging.judge import load_template
    from selfloop.tasks import load_pool

    check_paths(config)
    if this_machine:
        check_engine(config)
    load_pool(config.generation.tasks)
    for suite in config.eval.suites:
        load_suite(suite)
    if "llm_judge" in config.judge.signals:
        load_template(config.judge.llm_judge.template)
    if config.judge.reward_function is not None:
        from selfloop.judging.reward_function import load

        load(config.judge.reward_function)  # importable here, before anything is written


def check_engine(config: Config) -> None:
    """What the engine needs of this machine, checked before a loop is created: vLLM installed for the vllm
    engine, a CUDA GPU for what only runs on one (vLLM's sleep mode, engine.device cuda). A config for a GPU
    machine run on a CPU one failed inside vLLM ("ValidationError ... ModelConfig") after the loop was written."""
    import importlib.util

    e = config.engine
    on_cpu_instead = "on this machine use engine.kind: hf (--set engine.kind=hf)"
    if e.kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"engine.kind: 'vllm' needs vLLM, which is not installed here (pip install "
                          f"'selfloop[vllm]' on a GPU machine); {on_cpu_instead}")
    if (e.kind == "vllm" and e.enable_sleep_mode) or e.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            field = "engine.enable_sleep_mode" if e.kind == "vllm" and e.enable_sleep_mode else "engine.device"
            raise ConfigError(f"{field}: needs a CUDA GPU and none is visible here; {on_cpu_instead}"
                              + (" or set engine.enable_sleep_mode: false" if field == "engine.enable_sleep_mode" else ""))


def check_model_limits(config: Config, model_dir: Path) -> None:
    """Sizes the config bounds statically, checked again against the resolved model's own limits."""
    import json

    meta = json.loads((Path(model_dir) / "config.json").read_text())
    context = meta.get("max_position_embeddings") or meta.get("n_positions")
    hidden = meta.get("hidden_size") or meta.get("n_embd")
    where = f"model {config.model.base!r}"
    if context:
        lengths = {"generation.max_new_tokens": config.generation.max_new_tokens,
                   "self_instruct.max_new_tokens": config.self_instruct.max_new_tokens,
                   "judge.llm_judge.max_new_tokens": config.judge.llm_judge.max_new_tokens,
                   **{f"eval.suites[{s.name}].max_new_tokens": s.max_new_tokens for s in config.eval.suites}}
        for field, value in lengths.items():
            if value >= context:
                raise ConfigError(f"{field}: {value} is not below the context length of {where} ({context} tokens)")
    if hidden and config.train.lora.rank > hidden:
        raise ConfigError(f"train.lora.rank: {config.train.lora.rank} is above the hidden size of {where} ({hidden})")


def looks_like_a_path(spec: str) -> bool:
    """A model.base that can only be a directory (a hub id is org/name, never starting with / . or ~)."""
    return spec.startswith(("/", "./", "../", "~")) or spec in (".", "..")


def check_paths(config: Config) -> None:
    """The state directory is a directory (or can be made), and a model.base given as a path exists."""
    state = config.state_dir()
    where = state
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        field = "loop.state_dir" if config.loop.state_dir is not None else "the state directory ($SELFLOOP_STATE_DIR)"
        raise ConfigError(f"{field}: {where} is not a directory" + (f" (so {state} cannot be made)" if where != state else ""))
    base = config.model.base
    if looks_like_a_path(base):
        path = Path(base).expanduser()
        if not path.exists():
            raise ConfigError(f"model.base: {base} does not exist (a local model is a directory with config.json and "
                              "safetensors weights)")
        from selfloop.errors import SelfloopError
        from selfloop.models.resolve import check_model_dir

        try:
            check_model_dir(path)
        except SelfloopError as exc:
            raise ConfigError(str(exc)) from None
