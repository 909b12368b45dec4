"""Prometheus `/metrics` and `/health` for a running loop, on 127.0.0.1 unless told otherwise.

The database is the record of truth: every scrape reads the loop's figures from it (iteration, phase,
progress, last train loss, last held-out main metric, promotions, rejections, events by level), plus
what only the process knows (tokens/s of the step running now, seconds since the last progress).
`/health` answers 503 when no progress was made for longer than `loop.stall_timeout_s`, the rule
the systemd watchdog applies, and 200 otherwise.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from selfloop.config import Config
from selfloop.db import queries
from selfloop.db.engine import Database
from selfloop.db.reader_engine import reader_engine
from selfloop.errors import ConfigError
from selfloop.progress import HEARTBEAT, LIVE

Request = socket.socket | tuple[bytes, socket.socket]  # what socketserver hands a server: a stream's socket here


class LoopCollector:
    """Builds the loop's metrics from the store (and the process's live progress) at each scrape."""

    def __init__(self, db: Database, loop: str) -> None:
        self.db, self.loop = db, loop

    def collect(self) -> Iterator[Metric]:
        with self.db.session() as session:
            figures = queries.loop_figures(session, self.loop)
        labels = ["loop"]
        values = [self.loop]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"selfloop_{name}", doc, labels=labels)
            if value is not None:
                family.add_metric(values, float(value))
            return family

        yield gauge("iteration", "Number of the loop's latest iteration.", figures.iteration)
        yield gauge("iterations_done", "Iterations finished.", figures.iterations_done)
        phase = GaugeMetricFamily("selfloop_phase", "1 for the phase running now.", labels=["loop", "phase"])
        if figures.phase is not None:
            phase.add_metric([self.loop, figures.phase], 1.0)
        yield phase
        fraction = figures.progress_done / figures.progress_total if figures.progress_total else None
        yield gauge("phase_progress", "Share of the running phase's work done (0 to 1).", fraction)
        yield gauge("train_loss", "Loss of the latest training step.", figures.train_loss)
        yield gauge("main_metric", "Latest held-out main metric of a candidate.", figures.main_metric)
        yield gauge("tokens_per_second", "Tokens/s of the generation or training running now.", LIVE.tokens_per_s())
        yield gauge("seconds_since_progress", "Seconds since this process last made progress.", HEARTBEAT.age())
        yield gauge("paused", "1 when the promotion gate paused the loop.", float(figures.status == "paused"))
        for name, doc, value in (("promotions", "Candidates promoted.", figures.promotions),
                                 ("rejections", "Candidates rejected by the promotion gate.", figures.rejections)):
            family = CounterMetricFamily(f"selfloop_{name}", doc, labels=labels)
            family.add_metric(values, float(value))
            yield family
        events = CounterMetricFamily("selfloop_events", "Events recorded, by level.", labels=["loop", "level"])
        for level in ("info", "warning", "error"):
            events.add_metric([self.loop, level], float(figures.events.get(level, 0)))
        yield events


MAX_CONNECTIONS = 32  # requests served at once (one thread each)
CONNECTION_TIMEOUT_S = 10.0  # a client that sends nothing for this long is dropped
REQUEST_DEADLINE_S = 5.0  # ... and one that has not sent its whole request by then (a byte every few seconds)


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections served at once (one thread each), a deadline on reading each
    request whatever the client trickles, and nothing logged for a client that went away: idle, slow or hostile
    clients cannot fill the loop's process with threads or its log. When every slot is taken, the connection that
    has waited longest for its request is dropped to make room, so slow clients never keep a health probe out
    (systemd would restart a healthy daemon)."""

    daemon_threads = True
    request_queue_size = 128  # socketserver listens with a backlog of 5: a burst of connections then waits on SYN retries

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._reading: dict[Request, float] = {}  # connections still reading their request -> when they came
        self._reading_lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="metrics-deadlines", daemon=True)
        self._reaper.start()

    def _drop(self, request: Request) -> None:

        try:
            if isinstance(request, socket.socket):  # a stream server's requests are sockets
                request.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once; the thread ends, the slot frees
        except OSError:
            pass

    def _reap(self) -> None:
        import time

        while not self._closed.wait(0.25):
            now = time.monotonic()
            with self._reading_lock:
                late = [r for r, since in self._reading.items() if now - since > REQUEST_DEADLINE_S]
                for request in late:
                    self._reading.pop(request, None)
            for request in late:
                self._drop(request)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    def request_read(self, request: Request) -> None:
        """The handler has the whole request: it is no longer a slow client."""
        with self._reading_lock:
            self._reading.pop(request, None)

    def process_request(self, request: Request, client_address: Any) -> None:
        import time

        if not self.slots.acquire(blocking=False):
            with self._reading_lock:  # make room: drop the connection that has waited longest for its request
                oldest = min(self._reading, key=self._reading.__getitem__, default=None)
                if oldest is not None:
                    self._reading.pop(oldest)
            if oldest is not None:
                self._drop(oldest)
            if not self.slots.acquire(timeout=1.0):
                self.shutdown_request(request)  # every slot is answering a whole request: closed, not queued
                return
        with self._reading_lock:
            self._reading[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.request_read(request)
            self.slots.release()
            raise

    def process_request_thread(self, request: Request, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.request_read(request)
            self.slots.release()

    def handle_error(self, request: Request, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], OSError):  # a reset, a broken pipe, a timeout: the client went away
            logger.opt(exception=True).warning("metrics: a request from {} failed", client_address[0])


class MetricsServer:
    """A small threaded HTTP server: GET /metrics (Prometheus text format) and GET /health (JSON).

    Bound to 127.0.0.1 unless metrics.host says otherwise; on a loopback address it answers only requests
    addressed to a loopback name (the dashboard's check against DNS rebinding), and elsewhere only its own
    address (or any, when bound to all of them)."""

    def __init__(self, config: Config) -> None:
        # Its own connections, which cannot write: a scrape never waits on or joins the writer's transactions,
        # and nothing it runs can change the store.
        url = config.database_url()
        self.db = Database(url, reader_engine(url, timeout_ms=config.database.busy_timeout_ms, require_reader_role=False))
        loop, stall_timeout_s = config.loop.name, config.loop.stall_timeout_s
        host, port = config.metrics.host, config.metrics.port
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LoopCollector(self.db, loop))

        from selfloop.hosts import LOOPBACK_NAMES, host_name, is_loopback

        # An address bound on every interface answers any Host name; only the names of that address otherwise.
        anywhere = host in ("0.0.0.0", "::", "")  # noqa: S104 - comparing, not binding
        allowed = LOOPBACK_NAMES if is_loopback(host) else None if anywhere else {host, f"[{host}]"}

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT_S  # the socket's timeout: an idle client is dropped

            def parse_request(self) -> bool:  # reads the headers; the request line was read before
                whole = super().parse_request()
                self.server.request_read(self.connection)  # type: ignore[attr-defined]  # a _BoundedServer
                return whole

            def do_GET(self) -> None:
                asked = host_name(self.headers.get("Host") or "")
                if allowed is not None and asked not in allowed:
                    body, code, kind = f"host {asked!r} refused\n".encode(), 421, "text/plain"
                elif self.path.split("?")[0] == "/metrics":
                    try:
                        body, code, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                    except Exception as exc:  # noqa: BLE001 - a scrape that fails says so, the loop goes on
                        body, code, kind = f"# scrape failed: {exc.__class__.__name__}\n".encode(), 500, "text/plain"
                elif self.path.split("?")[0] == "/health":
                    age = HEARTBEAT.age()
                    healthy = age <= stall_timeout_s
                    body = json.dumps({"loop": loop, "status": "ok" if healthy else "stalled",
                                       "seconds_since_progress": round(age, 1), "stall_timeout_s": stall_timeout_s}).encode()
                    code, kind = (200 if healthy else 503), "application/json"
                else:
                    body, code, kind = b"not found: try /metrics or /health\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.send_error(405, "read-only endpoint")

            do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815 - the http.server method names

            def log_message(self, *args: object) -> None:  # scrapes every few seconds: keep them out of the log
                pass

        try:
            self.httpd = _BoundedServer((host, port), Handler)
        except OSError as exc:
            self.db.dispose()
            raise ConfigError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.address = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        logger.info("metrics: {}/metrics and {}/health", self.address, self.address)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.db.dispose()
