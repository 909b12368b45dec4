"""systemd integration without extra packages: sd_notify over $NOTIFY_SOCKET, and a watchdog thread
that pings only while the loop makes progress, so a hung phase lets systemd restart the service
(faulthandler, enabled by the daemon, prints every thread's traceback when systemd aborts it)."""

from __future__ import annotations

import os
import socket
import threading

from loguru import logger

from selfloop.progress import HEARTBEAT


class Notifier:
    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET")
        if self.address and self.address.startswith("@"):
            self.address = "\0" + self.address[1:]  # abstract namespace

    def send(self, *lines: str) -> bool:
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
            except OSError as exc:
                logger.debug("sd_notify failed: {}", exc)
                return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec), or None when systemd asked for no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2


class Watchdog(threading.Thread):
    """Pings WATCHDOG=1 every `interval` seconds while the heartbeat is younger than `stall_after`."""

    def __init__(self, notifier: Notifier, interval: float, stall_after: float) -> None:
        super().__init__(name="selfloop-watchdog", daemon=True)
        self.notifier, self.interval, self.stall_after = notifier, interval, stall_after
        self._stop = threading.Event()
        self.pings = 0
        self.stalled = False

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            if HEARTBEAT.age() < self.stall_after:
                self.notifier.send("WATCHDOG=1")
                self.pings += 1
                self.stalled = False
            elif not self.stalled:
                self.stalled = True
                logger.error("no progress for {:.0f}s: no longer feeding the systemd watchdog", HEARTBEAT.age())

    def stop(self) -> None:
        self._stop.set()
