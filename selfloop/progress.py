"""Progress of long work: a terminal bar with tokens/s, and the liveness heartbeat the watchdog reads.

Every update (a finished sequence, a decode step, a training step) refreshes `HEARTBEAT`; the
systemd watchdog thread feeds systemd only while the heartbeat is fresh, so a hung phase stops it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from loguru import logger
from tqdm import tqdm


class _Heartbeat:
    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self.last


HEARTBEAT = _Heartbeat()


class _Live:
    """The rate of the step running now (generation or training), for `/metrics`; stale after a minute."""

    def __init__(self) -> None:
        self._rate: float | None = None
        self._at = 0.0

    def set(self, tokens_per_s: float) -> None:
        self._rate, self._at = tokens_per_s, time.monotonic()

    def tokens_per_s(self) -> float | None:
        return self._rate if self._rate is not None and time.monotonic() - self._at < 60.0 else None


LIVE = _Live()


class _IterationClock:
    """When the running iteration started and how long the loop's last one took: the ETA in log lines."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.expected_s: float | None = None

    def start(self, expected_s: float | None) -> None:
        self.started, self.expected_s = time.monotonic(), expected_s

    def eta(self) -> str:
        if self.started is None or not self.expected_s:
            return ""
        left = self.expected_s - (time.monotonic() - self.started)
        return f"; iteration ETA {left / 60:.1f} min" if left > 0 else "; iteration past its expected time"


ITERATION = _IterationClock()


class Progress:
    """Counts units of one long step. on_update(done, total) is called at most every `every_s` seconds.

    On a terminal: a bar with tokens/s. Elsewhere (the journal, a pipe): a log line every 30 seconds.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str = "seq",
        *,
        on_update: Callable[[int, int], None] | None = None,
        every_s: float = 5.0,
        done: int = 0,
    ) -> None:
        """`done`: units finished before this process (a resumed phase counts its whole work)."""
        self.total, self.done, self.tokens = total, done, 0
        self.started = time.monotonic()
        self._on_update, self._every, self._last = on_update, every_s, 0.0
        self.desc, self.unit = desc, unit
        self._logged = self.started
        self._bar = tqdm(total=total, initial=done, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                         leave=False, disable=total == 0 or not sys.stderr.isatty())

    def update(self, units: int = 0, tokens: int = 0) -> None:
        HEARTBEAT.beat()
        self.done += units
        self.tokens += tokens
        if units:
            self._bar.update(units)
        elapsed = time.monotonic() - self.started
        if tokens and elapsed > 0:
            self._bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tok/s", refresh=False)
            LIVE.set(self.tokens / elapsed)
        now = time.monotonic()
        if self._bar.disable and now - self._logged >= 30.0:
            self._logged = now
            rate = f", {self.tokens / elapsed:.1f} tok/s" if self.tokens and elapsed > 0 else ""
            logger.info("{}: {}/{} {}{}{}", self.desc, self.done, self.total, self.unit, rate, ITERATION.eta())
        if self._on_update is not None and units and (now - self._last >= self._every or self.done >= self.total):
            self._last = now
            self._on_update(self.done, self.total)

    def close(self) -> None:
        """Outside a terminal, one summary line: what was done, how long it took, how fast."""
        self._bar.close()
        if self._bar.disable and self.total:
            elapsed = time.monotonic() - self.started
            rate = f", {self.tokens / elapsed:.1f} tok/s" if self.tokens and elapsed > 0 else ""
            logger.info("{}: {}/{} {} in {:.1f} s{}", self.desc, self.done, self.total, self.unit, elapsed, rate)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
