"""Greedy held-out answers kept by their content, across stores: eval.cache_dir.

A policy's greedy answers to a suite depend on the weights (the base model's and the adapter's), the problems, the
system prompt, the token budget and the engine that decodes them; the key is the sha256 of all of these (and of the
torch and transformers versions, whose kernels decide float32 sums), so two lab stores, or two labs, that evaluate
the same start answer it once. Only the in-process hf engine (whose weights are the resolved files) and only
greedy suites (majority_k 0; sampled answers follow the loop's seed) are kept. A file is one suite's rows, gzipped
JSON, written whole (temp file, then rename) and owner-only; one that fails its checks is ignored and answered
again, never half-used.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from selfloop.config import Config, SuiteConfig
    from selfloop.evals.suites import Item

FORMAT = 2  # 2: with each row's per-part verdicts
MAX_BYTES = 256 << 20  # a suite's rows as stored; a file larger is refused before it is read
ROW_FIELDS: dict[str, type | tuple[type, ...]] = {"item_index": int, "prompt": str, "answer": (str, type(None)), "response": str,
              "predicted": (str, type(None)), "correct": (bool, type(None)), "num_tokens": int,
              "parts": (list, type(None))}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def cacheable(config: Config, suite: SuiteConfig) -> bool:
    """Whether `suite`'s answers under `config` may be kept and reused by content."""
    return config.eval.cache_dir is not None and config.engine.kind == "hf" and suite.majority_k == 0


def key(config: Config, model_sha256: str, adapter_sha256: str | None, suite: SuiteConfig, items: Sequence[Item]) -> str:
    """The content a suite's greedy answers depend on, hashed."""
    problems = hashlib.sha256()
    for it in items:
        problems.update(json.dumps([it.prompt, it.answer, it.chat], sort_keys=True).encode())
    content = {
        "format": FORMAT, "model": model_sha256, "adapter": adapter_sha256, "problems": problems.hexdigest(),
        "suite": suite.answer_settings(), "system_prompt": config.generation.system_prompt,
        "engine": {"kind": config.engine.kind, "dtype": config.model.dtype, "device": config.engine.device},
        "versions": {p: _version(p) for p in ("torch", "transformers", "peft")},
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _path(directory: Path, digest: str) -> Path:
    return directory.expanduser() / f"{digest}.json.gz"


def has(directory: Path, digest: str) -> bool:
    return _path(directory, digest).is_file()


def load(directory: Path, digest: str, items: Sequence[Item]) -> list[dict[str, Any]] | None:
    """The kept rows for `digest`, checked against the problems asked; None when absent or not trustworthy."""
    path = _path(directory, digest)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        with gzip.open(path, "rb") as handle:
            text = handle.read(MAX_BYTES * 8 + 1)
        if len(text) > MAX_BYTES * 8:
            raise ValueError("larger than allowed once decompressed")
        data = json.loads(text)
        if data.get("format") != FORMAT or data.get("key") != digest:
            raise ValueError("another format or key")
        rows = data["rows"]
        if not isinstance(rows, list) or len(rows) != len(items):
            raise ValueError("not one row per problem")
        for index, (row, item) in enumerate(zip(rows, items)):
            if not isinstance(row, dict) or any(not isinstance(row.get(f), t) for f, t in ROW_FIELDS.items()):
                raise ValueError(f"row {index} lacks a field or has one of the wrong type")
            if row["item_index"] != index or row["prompt"] != item.prompt:
                raise ValueError(f"row {index} answers another problem")
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        logger.warning("eval cache: ignoring {} ({}); answering again", path, exc)
        return None
    return [{f: row.get(f) for f in ROW_FIELDS} | {"majority_correct": None, "majority_answer": None} for row in rows]


def save(directory: Path, digest: str, rows: list[dict[str, Any]]) -> None:
    """Keep a suite's rows under `digest`: written whole or not at all, readable by the owner only."""
    directory = directory.expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps({"format": FORMAT, "key": digest, "rows": [{f: r.get(f) for f in ROW_FIELDS} for r in rows]})
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
            handle.write(body.encode())
        os.chmod(tmp, 0o600)
        os.replace(tmp, _path(directory, digest))
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        logger.warning("eval cache: could not keep {} ({}); the store has the rows", _path(directory, digest), exc)
