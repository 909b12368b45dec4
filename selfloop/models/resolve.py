"""Resolve a model spec from config to a directory of safetensors weights, tokenizer and chat template."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from selfloop.errors import SelfloopError


@dataclass(frozen=True)
class ResolvedModel:
    spec: str
    path: Path
    sha256: str | None  # manifest sha256 of a directory selfloop built; None for user directories


def resolve_model(spec: str, cache_dir: Path, revision: str | None = None) -> ResolvedModel:
    from selfloop.models.packaged import PACKAGED, resolve_packaged
    from selfloop.models.tiny import tiny_model_dir

    if spec in PACKAGED:
        path, sha = resolve_packaged(spec, cache_dir)
        return ResolvedModel(spec, path, sha)
    if spec == "tiny":
        path, sha = tiny_model_dir(cache_dir)
        return ResolvedModel(spec, path, sha)
    local = Path(spec).expanduser()
    if local.exists():
        check_model_dir(local)
        return ResolvedModel(spec, local.resolve(), None)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        return ResolvedModel(spec, _download(spec, revision, cache_dir), None)
    raise SelfloopError(
        f"model.base {spec!r}: not a packaged model ({', '.join(sorted(PACKAGED))}, tiny), "
        "not an existing directory, not a hub id (org/name)"
    )


def check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise SelfloopError(f"model.base {path}: not a directory")
    if not (path / "config.json").is_file():
        raise SelfloopError(f"model.base {path}: no config.json (expected a transformers model directory)")
    if not any(path.glob("*.safetensors")):
        found = sorted(p.name for p in path.glob("*.bin"))
        hint = f" (found {', '.join(found)}: pickle files are never loaded; convert them to safetensors)" if found else ""
        raise SelfloopError(f"model.base {path}: no .safetensors weights{hint}")


def _download(repo_id: str, revision: str | None, cache_dir: Path) -> Path:
    import os

    from selfloop.errors import ConfigError

    try:
        from huggingface_hub import snapshot_download
        from tqdm.auto import tqdm

        from selfloop.progress import HEARTBEAT

        class _Beating(tqdm):  # a download of many GB is progress: it keeps the watchdog fed
            def update(self, n: float | None = 1) -> bool | None:
                HEARTBEAT.beat()
                return super().update(n)

        path = Path(snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir / "hub",
            allow_patterns=["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"],
            tqdm_class=_Beating,
        ))
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: all end the same way for the user
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            # A config error (exit 2): systemd does not restart it, since only the environment can fix it.
            raise ConfigError(f"model.base {repo_id!r} is not in the model cache and HF_HUB_OFFLINE is set, which "
                              "forbids downloading it: unset HF_HUB_OFFLINE (under systemd: /etc/selfloop/selfloop.env) "
                              "for the first start, or point model.base at a local directory") from None
        raise SelfloopError(f"cannot fetch {repo_id!r} from the hub ({exc.__class__.__name__}): "
                            "use a local directory, or check network access and the id") from None
    check_model_dir(path)
    return path


@cache
def weights_sha256(model_dir: str) -> str:
    """The sha256 of a model directory's weights: over each .safetensors file's own sha256, in name order (what a
    results line records, and what keys the evaluation cache)."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        file_hash = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                file_hash.update(block)
        digest.update(f"{path.name} {file_hash.hexdigest()}\n".encode())
    return digest.hexdigest()
