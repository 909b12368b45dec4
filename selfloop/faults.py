"""Failpoints for fault-injection tests: SELFLOOP_FAILPOINT=name[:n] kills the process with SIGKILL
the n-th time (default 1st) execution reaches `failpoint(name)`. Unset, it costs a dict lookup."""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("SELFLOOP_FAILPOINT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
