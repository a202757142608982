"""`VLLMServer`: launch `vllm serve` (or any command) or attach to a running server; health, log, stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UniScaleError, field_error
from ..model_spec import ModelSpec
from .monitor import http_get_text, server_root

if TYPE_CHECKING:
    from ..specserve.planner import SpecPlan


class ServerStartError(UniScaleError, RuntimeError):
    """The server did not become healthy; the message says why and carries the tail of its log."""


class PortInUseError(ServerStartError):
    """Something already listens on the port we were asked to launch on."""


class ServerExitedError(ServerStartError):
    """The server process exited before it became healthy."""


class HealthTimeoutError(ServerStartError):
    """The server process runs but did not answer /health in time."""


class VLLMServerConfig(BaseModel):
    """How to launch one server. `command` replaces `vllm serve MODEL --host H --port P --served-model-name N`
    (tests, wrappers); its items may use `{host}`, `{port}`, `{model}` and `{served_model_name}` placeholders.
    `--speculative-config` and `extra_args` follow either form, so a wrapper sees the flags vLLM would."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, description="model path or Hugging Face id given to `vllm serve`")
    served_model_name: str | None = Field(default=None, description="name clients use; default: `model`")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    extra_args: tuple[str, ...] = Field(default=(), description="further `vllm serve` arguments")
    speculative_config: dict[str, Any] | None = Field(default=None, description="--speculative-config JSON")
    command: tuple[str, ...] | None = Field(default=None, description="full argv instead of `vllm serve`")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    log_path: Path | None = Field(default=None, description="log file; default: a new temporary file")
    startup_timeout_s: float = Field(default=900.0, gt=0, description="loading weights can take minutes")
    stop_grace_s: float = Field(default=15.0, ge=0, description="SIGTERM, then SIGKILL after this")
    health_poll_s: float = Field(default=0.5, gt=0)
    gpu_usd_per_hour: float | None = Field(default=None, ge=0, description="price of the GPU(s) it runs on")

    @property
    def name(self) -> str:
        return self.served_model_name or self.model

    def argv(self) -> list[str]:
        """The command line to run."""
        if self.command is not None:
            fields = {"host": self.host, "port": str(self.port), "model": self.model, "served_model_name": self.name}
            argv = [part.format(**fields) for part in self.command]
        else:
            argv = ["vllm", "serve", self.model, "--host", self.host, "--port", str(self.port)]
            argv += ["--served-model-name", self.name]
        if self.speculative_config is not None:
            argv += ["--speculative-config", json.dumps(self.speculative_config, separators=(",", ":"))]
        return argv + list(self.extra_args)


def apply_plan(
    config: VLLMServerConfig, spec_plan: SpecPlan, *, draft_model: str | None = None, method: str | None = None,
) -> VLLMServerConfig:
    """`config` with a SpecServe plan: its `--speculative-config` (checked against vLLM's rules) and, unless
    `extra_args` already sets one, `--max-num-seqs` at the largest batch whose tail TPOT meets the plan's SLO.

    A plan where speculation never pays gives no `--speculative-config` (plain decoding).
    """
    from ..specserve.planner import speculative_config

    spec = speculative_config(spec_plan, method=method, model=draft_model)
    extra = tuple(config.extra_args)
    if "--max-num-seqs" not in extra:
        cap = spec_plan.max_batch_meeting_slo or len(spec_plan.choices)
        extra += ("--max-num-seqs", str(cap))
    return config.model_copy(update={"speculative_config": spec, "extra_args": extra})


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (checked by binding, as the server will)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path | None, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class VLLMServer:
    """One OpenAI-compatible server the router can use, launched here or attached to by URL.

    Use as a context manager so the process is always stopped:

        with VLLMServer(VLLMServerConfig(model="meta-llama/Llama-3.1-8B-Instruct", gpu_usd_per_hour=2.0)) as s:
            spec = s.model_spec()
    """

    def __init__(
        self, config: VLLMServerConfig, *, speculative_plan: SpecPlan | None = None,
        draft_model: str | None = None, speculative_method: str | None = None,
    ) -> None:
        """With `speculative_plan`, launch with that plan (`apply_plan`); `draft_model` and
        `speculative_method` override the plan's (which come from its profile)."""
        if speculative_plan is not None:
            config = apply_plan(config, speculative_plan, draft_model=draft_model, method=speculative_method)
        self.speculative_plan = speculative_plan
        self.config = config
        self.base_url = f"http://{config.host}:{config.port}"
        self.log_path: Path | None = config.log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._attached = False
        self._served_model_name = config.name
        self._gpu_usd_per_hour = config.gpu_usd_per_hour

    @classmethod
    def attach(
        cls, url: str, served_model_name: str, *, gpu_usd_per_hour: float | None = None
    ) -> VLLMServer:
        """A server someone else runs: nothing is launched or stopped, only health and metrics are read."""
        root = server_root(url)
        host_port = root.split("://", 1)[-1]
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise field_error("VLLMServer.attach", "url", url, "give 'http://HOST:PORT' or 'http://HOST:PORT/v1'")
        config = VLLMServerConfig(
            model=served_model_name, host=host, port=int(port), gpu_usd_per_hour=gpu_usd_per_hour
        )
        server = cls(config)
        server.base_url = root
        server._attached = True
        return server

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        """For a launched server: its process is alive. For an attached one: /health answers."""
        if self._attached:
            return self.healthy()
        return self._process is not None and self._process.poll() is None

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """GET /health answered 200."""
        try:
            http_get_text(self.base_url + "/health", timeout_s)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def start(self, wait: bool = True) -> VLLMServer:
        """Launch the process (port checked first), then wait for /health unless `wait=False`."""
        if self._attached:
            if wait:
                self.wait_healthy()
            return self
        if self._process is not None and self._process.poll() is None:
            return self
        cfg = self.config
        if not port_is_free(cfg.host, cfg.port):
            raise PortInUseError(
                f"VLLMServerConfig.port: {cfg.host}:{cfg.port} is already in use; stop what listens there, "
                f"pick another port, or attach to it with VLLMServer.attach('{self.base_url}', ...)"
            )
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"vllm-{cfg.port}-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        env = {**os.environ, **cfg.env}
        argv = cfg.argv()
        try:
            # A new session: vLLM starts worker processes, and stop() must reach all of them.
            self._process = subprocess.Popen(
                argv, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise ServerStartError(f"could not run {argv[0]!r}: {exc}; is it installed and on PATH?") from exc
        if wait:
            try:
                self.wait_healthy()
            except ServerStartError:
                self.stop()
                raise
        return self

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Poll /health until it answers, the process exits, or the timeout passes."""
        timeout = self.config.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise ServerExitedError(
                    f"server exited with code {self._process.returncode} during startup "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            if self.healthy(timeout_s=min(2.0, self.config.health_poll_s * 4)):
                return
            if time.monotonic() >= deadline:
                raise HealthTimeoutError(
                    f"{self.base_url}/health did not answer within {timeout:.0f} s; raise "
                    f"VLLMServerConfig.startup_timeout_s if the model is still loading (log {self.log_path}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(self.config.health_poll_s)

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL it after the grace period; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=self.config.stop_grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        else:
            # The leader is gone; reap any workers it left in its group.
            self._signal_group(process, signal.SIGKILL)
        self._close_log()
        return process.returncode

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def model_spec(self, **overrides: Any) -> ModelSpec:
        """The `ModelSpec` for routing to this server (litellm's `hosted_vllm/` provider)."""
        # Without gpu_usd_per_hour (or explicit prices) ModelSpec fails with the fix: a local model has no
        # price in litellm's table, and silently pricing it at zero would bias the router towards it.
        fields: dict[str, Any] = {"model": f"hosted_vllm/{self._served_model_name}", "api_base": self.api_base}
        if self._gpu_usd_per_hour is not None:
            fields["gpu_usd_per_hour"] = self._gpu_usd_per_hour
        fields.update(overrides)
        return ModelSpec(**fields)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def served_models(self, timeout_s: float = 5.0) -> Sequence[str]:
        """Model ids from GET /v1/models, to check the served name before routing to it."""
        body = json.loads(http_get_text(self.api_base + "/models", timeout_s))
        return [str(item.get("id")) for item in body.get("data", [])]
