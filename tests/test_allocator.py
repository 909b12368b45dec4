"""selfloop/allocator.py: glibc keeps freed memory for reuse, unless the user chose otherwise."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from selfloop.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parent.parent
glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="glibc's allocator only")

# What a decode does to the allocator: at each step every layer's cache is copied into a block a little larger (the
# new token's keys appended), written whole, and the old block freed. Minor page faults count the fresh pages the
# kernel had to map.
GROWING = """
import json, resource, sys, torch
from selfloop.allocator import keep_freed_memory
applied = keep_freed_memory()
block = torch.ones(2_000_000)   # 8 MB
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(60):
    block = torch.cat([block, torch.ones(16_384)])
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def growing_blocks(**env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("SELFLOOP_MALLOC", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", GROWING], env={**full, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.integration
@glibc
def test_growing_blocks_reuse_the_heap_instead_of_fresh_pages() -> None:
    kept, system = growing_blocks(), growing_blocks(SELFLOOP_MALLOC="system")
    assert kept["applied"] is True and system["applied"] is False
    # glibc's defaults map every larger block afresh (~2,000 pages, 60 times: ~147,000 faults here); kept, the heap's
    # freed blocks are reused (~16,000 here).
    assert system["faults"] > 60_000
    assert kept["faults"] * 4 < system["faults"]


@pytest.mark.integration
@glibc
def test_the_users_own_allocator_settings_are_left_alone() -> None:
    assert growing_blocks(MALLOC_TRIM_THRESHOLD_="131072")["applied"] is False
    assert growing_blocks(LD_PRELOAD="")["applied"] is True


def test_opting_out_applies_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFLOOP_MALLOC", "system")
    assert keep_freed_memory() is False
    monkeypatch.delenv("SELFLOOP_MALLOC")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert keep_freed_memory() is False
