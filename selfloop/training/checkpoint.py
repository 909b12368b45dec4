"""LoRA checkpoints: PEFT adapter directories (adapter_config.json + adapter_model.safetensors),
loadable by `PeftModel.from_pretrained` and by vLLM's LoRARequest, written atomically with a manifest.

The directory is complete and fsynced before the database learns of it; the `checkpoints` row is the
commit point. Loading verifies the manifest first and refuses anything truncated, altered or unlisted
(`selfloop.adapters.verify_checkpoint`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfloop.manifest import atomic_directory, manifest_sha256

if TYPE_CHECKING:
    from peft import PeftModel


@dataclass(frozen=True)
class SavedCheckpoint:
    path: Path
    sha256: str
    size_bytes: int


def save_adapter(model: PeftModel, final: Path, adapter_name: str = "default", extra: dict[str, Any] | None = None,
                 base_model: str | None = None) -> SavedCheckpoint:
    """Write the PEFT adapter `adapter_name` of `model` to `final` atomically. `base_model`: the name its
    adapter_config.json gives the base (the config's model.base: a hub id, a packaged model's name or a
    directory), instead of this machine's cache path, so peft and vLLM find the base elsewhere."""
    with atomic_directory(final, extra={"kind": "lora", **(extra or {})}) as tmp:
        model.save_pretrained(str(tmp), selected_adapters=[adapter_name], safe_serialization=True)
        nested = tmp / adapter_name
        if adapter_name != "default" and nested.is_dir():  # peft nests non-default adapters in a sub-directory
            for item in nested.iterdir():
                item.rename(tmp / item.name)
            nested.rmdir()
        (tmp / "README.md").unlink(missing_ok=True)  # peft's generated model card: not part of a checkpoint
        _canonical_adapter_config(tmp / "adapter_config.json", base_model)
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    return SavedCheckpoint(final, manifest_sha256(final), size)


def _canonical_adapter_config(path: Path, base_model: str | None) -> None:
    """peft writes target_modules from a set, in an order that varies between processes; sorted (and with
    sorted keys) two identical trainings give byte-identical directories and manifests."""
    config = json.loads(path.read_text())
    if base_model is not None:
        config["base_model_name_or_path"] = base_model
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
