"""Failpoints for fault-injection tests. SELFLOOP_FAILPOINT=name[:n[:action]] acts the n-th time
(default the 1st) execution reaches `failpoint(name)`: action `kill` (default) sends SIGKILL to the
process, `hang` sleeps forever (a stuck phase, for the watchdog), `wait` waits until the file named by
SELFLOOP_FAILPOINT_GATE exists (a test decides when the process goes on). Unset, it costs a dict lookup."""

from __future__ import annotations

import os
import signal
import time

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("SELFLOOP_FAILPOINT")
    if not spec:
        return
    target, _, rest = spec.partition(":")
    if target != name:
        return
    nth, _, action = rest.partition(":")
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    if action == "hang":
        while True:
            time.sleep(3600)
    if action == "wait":
        gate = os.environ["SELFLOOP_FAILPOINT_GATE"]
        while not os.path.exists(gate):
            time.sleep(0.05)
        return
    os.kill(os.getpid(), signal.SIGKILL)
