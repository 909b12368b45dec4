"""Graceful stop: the first SIGTERM/SIGINT asks the loop to stop after the current batch; a second
one exits at once. Either way the database stays consistent: every write is a committed transaction,
and a half-written checkpoint is only a temporary directory that the next start removes."""

from __future__ import annotations

import os
import signal

from loguru import logger


class StopFlag:
    def __init__(self) -> None:
        self.signals = 0

    def __call__(self) -> bool:
        return self.signals > 0

    def request(self) -> None:
        self.signals += 1

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            logger.warning("{}: stopping after the current batch (send it again to stop at once)", name)
        else:
            logger.warning("{} again: stopping now", name)
            os._exit(128 + signum)
