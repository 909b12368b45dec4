"""Running a benchmark under bench/ as its smoke tests do: a subprocess on the tests' model cache, its last line of
JSON returned, its stderr's tail shown when it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import CACHE

ROOT = Path(__file__).resolve().parent.parent.parent


def run_bench(script: str, *args: str, timeout: int = 600) -> dict[str, Any]:
    """`python bench/SCRIPT ARGS...` from the repository root; the JSON line it ends with."""
    env = {**os.environ, "SELFLOOP_CACHE_DIR": str(CACHE), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, f"bench/{script}", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
