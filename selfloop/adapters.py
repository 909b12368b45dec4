"""LoRA adapters as the rest of selfloop refers to them: a stored checkpoint (its row id, directory and manifest
sum) and the check that a directory is one, complete and unaltered. A low module: the database's queries, the
engines and training all use it without importing one another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfloop.errors import CheckpointError
from selfloop.manifest import verify

REQUIRED = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class Adapter:
    """A stored LoRA checkpoint to apply on top of the base model."""

    checkpoint_id: int
    path: Path
    sha256: str


def verify_checkpoint(path: Path, sha256: str | None = None) -> None:
    """Refuse a directory whose manifest is missing or does not match, or that is not a LoRA adapter."""
    verify(path, sha256)
    for name in REQUIRED:
        if not (Path(path) / name).is_file():
            raise CheckpointError(f"{Path(path) / name}: missing; not a LoRA adapter checkpoint")
