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
    ) -> None:
        self.total, self.done, self.tokens = total, 0, 0
        self.started = time.monotonic()
        self._on_update, self._every, self._last = on_update, every_s, 0.0
        self.desc, self.unit = desc, unit
        self._logged = self.started
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
                         disable=total == 0 or not sys.stderr.isatty())

    def update(self, units: int = 0, tokens: int = 0) -> None:
        HEARTBEAT.beat()
        self.done += units
        self.tokens += tokens
        if units:
            self._bar.update(units)
        elapsed = time.monotonic() - self.started
        if tokens and elapsed > 0:
            self._bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tok/s", refresh=False)
        now = time.monotonic()
        if self._bar.disable and now - self._logged >= 30.0:
            self._logged = now
            rate = f", {self.tokens / elapsed:.1f} tok/s" if self.tokens and elapsed > 0 else ""
            logger.info("{}: {}/{} {}{}", self.desc, self.done, self.total, self.unit, rate)
        if self._on_update is not None and units and (now - self._last >= self._every or self.done >= self.total):
            self._last = now
            self._on_update(self.done, self.total)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
