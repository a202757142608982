"""`ServerMonitor`: scrape a vLLM server's /metrics on an interval in a background thread."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from types import TracebackType

from ..errors import field_error
from .prometheus import PrometheusParseError, parse_prometheus_text
from .vllm_metrics import ServerLoad, VLLMSnapshot, load_between, snapshot_from_metrics

Fetch = Callable[[str, float], str]


def http_get_text(url: str, timeout_s: float) -> str:
    """GET a URL and return its body as text; the default fetcher (stdlib only, no proxy for loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout_s) as response:
        body: bytes = response.read()
    return body.decode("utf-8", errors="replace")


def server_root(url: str) -> str:
    """'http://h:p/v1/' -> 'http://h:p': monitors and health checks live at the server root."""
    root = url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class ServerMonitor:
    """Scrapes `<root>/metrics` every `interval_s`; `latest` is the load over the last interval.

    Scrape failures do not raise from the thread: they become a `ServerLoad` with `error` set, so a router
    reading `latest` sees a down server instead of stale numbers.
    """

    def __init__(
        self,
        url: str,
        *,
        interval_s: float = 2.0,
        timeout_s: float = 2.0,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise field_error("ServerMonitor", "interval_s", interval_s, "give a positive number of seconds")
        if timeout_s <= 0:
            raise field_error("ServerMonitor", "timeout_s", timeout_s, "give a positive number of seconds")
        self.root = server_root(url)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._fetch = fetch or http_get_text
        self._clock = clock
        self._lock = threading.Lock()
        self._previous: VLLMSnapshot | None = None
        self._latest: ServerLoad | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    @property
    def metrics_url(self) -> str:
        return self.root + "/metrics"

    @property
    def latest(self) -> ServerLoad | None:
        """The most recent load, or None before the first scrape."""
        with self._lock:
            return self._latest

    def scrape(self) -> ServerLoad:
        """Scrape once now; the load is over the interval since the previous successful scrape."""
        now = self._clock()
        try:
            text = self._fetch(self.metrics_url, self.timeout_s)
            snapshot = snapshot_from_metrics(parse_prometheus_text(text), now)
        except (OSError, PrometheusParseError, ValueError) as exc:
            load = ServerLoad(time_s=now, error=f"{type(exc).__name__}: {exc}")
        else:
            with self._lock:
                previous = self._previous
                self._previous = snapshot
            load = load_between(previous, snapshot)
        with self._lock:
            self._latest = load
            self.scrapes += 1
        return load

    def start(self) -> ServerMonitor:
        """Start the background thread (a daemon, so a forgotten monitor never blocks interpreter exit)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"ServerMonitor({self.root})", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait for it (at most `timeout_s` plus one scrape timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s + self.timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scrape()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ServerMonitor:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
