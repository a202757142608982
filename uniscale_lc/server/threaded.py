"""Run the server in a background thread of this process (tests, notebooks): a real uvicorn on a real port.

    with ThreadedServer(create_app(router)) as server:
        OpenAI(base_url=server.base_url + "/v1", api_key="unused").chat.completions.create(...)

Stopping it runs the app's shutdown, which flushes the router's state, as SIGTERM does for `uniscale-lc serve`.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

THREAD_NAME = "uniscale-serve"


class ThreadedServer:
    """uvicorn serving `app` on `host:port` (0: a free port, read back once started) in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
        )
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ThreadedServer:
        """Start and wait until it listens (the app first imports litellm: seconds on a busy machine)."""
        self._thread = threading.Thread(target=self._server.run, name=THREAD_NAME, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start on {self.host}:{self.port} within {timeout_s} s")
            time.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop: finish open requests, run the shutdown (state flush), join the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"the server thread did not stop within {timeout_s} s")
            self._thread = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
