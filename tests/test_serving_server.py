"""VLLMServer life cycle, ServerMonitor and LoadSignals against the stand-in server on 127.0.0.1."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from uniscale_lc.errors import ConfigError
from uniscale_lc.serving import (
    HealthTimeoutError,
    LoadSignals,
    PortInUseError,
    ServerExitedError,
    ServerMonitor,
    VLLMServer,
    VLLMServerConfig,
    free_port,
    slo_gate,
)
from uniscale_lc.specserve.server_profiler import fit_profile, observe

pytestmark = pytest.mark.timeout(60)


def standin_config(*extra: str, **kwargs: object) -> VLLMServerConfig:
    command = (sys.executable, "-m", "uniscale_lc.testing.vllm_standin", "--host", "{host}", "--port", "{port}",
               "--model-name", "{served_model_name}", *extra)
    fields: dict[str, object] = {"model": "standin", "port": free_port(), "command": command,
                                 "startup_timeout_s": 20.0, "stop_grace_s": 3.0, "health_poll_s": 0.05,
                                 "gpu_usd_per_hour": 2.0}
    fields.update(kwargs)
    return VLLMServerConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[VLLMServer]:
    srv = VLLMServer(standin_config("--step-ms", "1", "--step-ms-per-request", "0.2"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_start_health_model_spec_and_clean_stop(server: VLLMServer) -> None:
    assert server.is_running() and server.healthy()
    assert server.served_models() == ["standin"]
    spec = server.model_spec()
    assert spec.model == "hosted_vllm/standin"
    assert spec.api_base == server.api_base and spec.api_base.endswith("/v1")
    assert spec.gpu_usd_per_hour == 2.0 and spec.self_hosted
    pid = server.pid
    assert server.stop() == 0  # SIGTERM handled: exit code 0
    assert not server.is_running()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid or 0, 0)
    assert "serving standin" in server.log_tail()


def test_default_argv_is_vllm_serve_with_speculative_config() -> None:
    cfg = VLLMServerConfig(model="m", port=8123, speculative_config={"method": "ngram", "num_speculative_tokens": 3},
                           extra_args=("--max-num-seqs", "64"))
    argv = cfg.argv()
    assert argv[:3] == ["vllm", "serve", "m"]
    assert argv[argv.index("--speculative-config") + 1] == '{"method":"ngram","num_speculative_tokens":3}'
    assert argv[-2:] == ["--max-num-seqs", "64"]


def test_port_in_use_is_reported_before_launch() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        srv = VLLMServer(standin_config(port=port))
        with pytest.raises(PortInUseError, match="already in use"):
            srv.start()
        assert srv.pid is None


def test_crash_during_startup_includes_log_tail() -> None:
    srv = VLLMServer(standin_config("--crash-after", "0.2", "--startup-delay", "30"))
    try:
        with pytest.raises(ServerExitedError, match="exited with code 3") as info:
            srv.start()
        assert "simulated crash" in str(info.value)
    finally:
        srv.stop()


def test_health_timeout_stops_the_process() -> None:
    srv = VLLMServer(standin_config("--startup-delay", "60", startup_timeout_s=0.5))
    with pytest.raises(HealthTimeoutError, match="did not answer"):
        srv.start()
    assert not srv.is_running()


def test_sigkill_after_grace_when_sigterm_is_ignored() -> None:
    srv = VLLMServer(standin_config("--ignore-sigterm", stop_grace_s=0.3))
    with srv:
        assert srv.healthy()
        started = time.monotonic()
    assert srv._process is not None and srv._process.returncode == -9
    assert time.monotonic() - started < 5


def test_model_spec_without_price_fails_with_fix() -> None:
    srv = VLLMServer.attach("http://127.0.0.1:9/v1", "local-model")
    with pytest.raises(ValueError, match="gpu_usd_per_hour"):
        srv.model_spec()
    assert VLLMServer.attach("http://127.0.0.1:9", "x", gpu_usd_per_hour=1.0).model_spec().api_base == (
        "http://127.0.0.1:9/v1")
    assert not srv.healthy(timeout_s=0.5)


def test_monitor_background_thread_sees_counters_advance(server: VLLMServer) -> None:
    with ServerMonitor(server.api_base, interval_s=0.05) as monitor:
        observation = observe(server.base_url, "standin", 4, requests_per_worker=1, max_tokens=20, timeout_s=10)
        deadline = time.monotonic() + 5
        while monitor.scrapes < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert monitor.latest is not None and monitor.latest.ok
    # The stand-in accepts position j with probability 0.7**(j+1).
    assert observation.acceptance_per_pos == pytest.approx((0.7, 0.49, 0.343), abs=0.05)
    assert observation.mean_acceptance_length == pytest.approx(1 + 0.7 + 0.49 + 0.343, abs=0.1)
    assert observation.tpot_ms > 0


def test_monitor_reports_a_down_server_as_error() -> None:
    monitor = ServerMonitor(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    load = monitor.scrape()
    assert not load.ok and "Error" in (load.error or "")
    signals = LoadSignals({f"http://127.0.0.1:{monitor.root.rsplit(':', 1)[1]}/v1": monitor})
    assert signals.context_features()[5] == 1.0  # every server unavailable
    assert signals.predicted_tpot_ms(monitor.root + "/v1/") == float("inf")


def test_profile_from_standin_grows_with_concurrency(server: VLLMServer) -> None:
    levels = [1, 4, 8]
    obs = [observe(server.base_url, "standin", c, requests_per_worker=1, max_tokens=12, timeout_s=10)
           for c in levels]
    profile = fit_profile(obs, k=3)
    assert profile.acceptance_per_pos == pytest.approx([0.7, 0.49, 0.343], abs=0.05)
    assert profile.verify_ms[-1] > profile.verify_ms[0]
    assert not profile.synthetic and "measured" in profile.provenance


def fake_monitor(text: str) -> ServerMonitor:
    return ServerMonitor("http://127.0.0.1:1", fetch=lambda url, timeout: text)


LOAD = """vllm:num_requests_running {r}
vllm:num_requests_waiting {w}
vllm:kv_cache_usage_perc 0.5
vllm:time_per_output_token_seconds_sum {s}
vllm:time_per_output_token_seconds_count 10
"""


def test_load_signals_features_and_predicted_tpot() -> None:
    busy = fake_monitor(LOAD.format(r=32, w=32, s=0.5))  # 50 ms TPOT, as many waiting as running
    idle = fake_monitor(LOAD.format(r=2, w=0, s=0.1))  # 10 ms
    busy.scrape()
    idle.scrape()
    signals = LoadSignals({"http://a:1/v1": busy, "http://b:1/v1/": idle}, max_running=64, tpot_scale_ms=100)
    assert signals.predicted_tpot_ms("http://a:1/v1") == pytest.approx(100.0)  # 50 * (32+32)/32
    assert signals.predicted_tpot_ms("http://b:1/v1") == pytest.approx(10.0)
    assert signals.predicted_tpot_ms("http://elsewhere/v1") is None
    features = signals.context_features()
    assert features.shape == (LoadSignals.feature_dim,)
    assert features[0] == pytest.approx((0.5 + 2 / 64) / 2) and features[1] == pytest.approx(0.5)
    assert features[3] == pytest.approx(0.5) and features[4] == pytest.approx((1.0 + 0.1) / 2)
    assert np.all((features >= 0) & (features <= 1))
    with_model = LoadSignals({"http://a:1/v1": busy}, tpot_models={"http://a:1/v1": lambda b: float(b)})
    assert with_model.predicted_tpot_ms("http://a:1/v1") == 65.0  # running + waiting + 1


def test_slo_gate() -> None:
    arms = {"big|single": "http://a/v1", "small|single": "http://b/v1", "gpt|single": None, "new": "http://c/v1"}
    allowed, gated = slo_gate(arms, {"http://a/v1/": 80.0, "http://b/v1": 20.0, "http://c/v1": None}, 40.0)
    assert gated == ["big|single"]
    assert allowed == ["small|single", "gpt|single", "new"]
    # Everything over the SLO: the least loaded stays allowed rather than leaving no arm.
    allowed, gated = slo_gate({"a": "http://a/v1", "b": "http://b/v1"}, {"http://a/v1": 90, "http://b/v1": 60}, 40)
    assert allowed == ["b"] and gated == ["a"]
    with pytest.raises(ConfigError):
        slo_gate(arms, {}, 0.0)
