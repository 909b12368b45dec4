"""What reproduces a results line, recorded with it: the resolved config (its sha256, and a snapshot of it beside
the results file), the versions of selfloop, torch, transformers, peft and Python, the CPU model, the model
weights' sha256, and the commit, with the hash of the uncommitted diff when a lab ran from a dirty tree (which it
refuses to do unless told, `--allow-dirty`)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from selfloop.errors import SelfloopError

PACKAGES = ("selfloop", "torch", "transformers", "peft")


def config_snapshot(config: Any) -> tuple[str, str]:
    """(sha256, the JSON text) of the part of a resolved config that decides what a loop computes (`semantic_part`:
    the store, the state directory, logging, trackers, schedule and speed knobs left out, so the same piece run
    elsewhere has the same hash)."""
    from selfloop.loop import semantic_part

    text = json.dumps(semantic_part(config.model_dump(mode="json")), sort_keys=True, indent=1)
    return hashlib.sha256(text.encode()).hexdigest(), text


def keep_snapshot(results: Path, sha: str, text: str) -> Path:
    """The config snapshot beside the results file (`configs/<sha256>.json`), written once per content."""
    path = results.parent / "configs" / f"{sha}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)
    return path


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


@cache
def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                name = line.split(":", 1)[1].strip()
                if name and not name.isdigit():
                    return name
    except OSError:
        pass
    return platform.processor() or platform.machine()


def diff_sha256(here: Path, ignore: Sequence[Path] = ()) -> str | None:
    """The sha256 of the work tree's uncommitted diff (tracked files), what the lab writes itself left out; None
    outside git."""
    spec = [":/", *(f":(exclude){Path(p).resolve()}" for p in ignore)]
    try:
        out = subprocess.run(["git", "diff", "HEAD", "--", *spec], cwd=here, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return hashlib.sha256(out.stdout).hexdigest() if out.returncode == 0 else None


def refuse_dirty(commit: str | None, allow_dirty: bool, lab: str) -> None:
    if commit and commit.endswith("+dirty") and not allow_dirty:
        raise SelfloopError(f"lab {lab}: the source has uncommitted changes ({commit}); a results line from it "
                            "could not be reproduced from its commit. Commit first, or run with --allow-dirty (the "
                            "line then records the diff's sha256)")
