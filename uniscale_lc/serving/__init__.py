"""Local OpenAI-compatible (vLLM) servers: launch or attach, watch their load, feed it to the router."""

from .load import FEATURE_NAMES, LoadSignals, slo_gate
from .monitor import ServerMonitor
from .prometheus import ParsedMetrics, PrometheusParseError, Sample, parse_prometheus_text
from .server import (
    HealthTimeoutError,
    PortInUseError,
    ServerExitedError,
    ServerStartError,
    VLLMServer,
    VLLMServerConfig,
    apply_plan,
    free_port,
    port_is_free,
)
from .vllm_metrics import ServerLoad, VLLMSnapshot, load_between, snapshot_from_metrics

__all__ = [
    "FEATURE_NAMES",
    "HealthTimeoutError",
    "LoadSignals",
    "ParsedMetrics",
    "PortInUseError",
    "PrometheusParseError",
    "Sample",
    "ServerExitedError",
    "ServerLoad",
    "ServerMonitor",
    "ServerStartError",
    "VLLMServer",
    "VLLMServerConfig",
    "VLLMSnapshot",
    "apply_plan",
    "free_port",
    "load_between",
    "parse_prometheus_text",
    "port_is_free",
    "slo_gate",
    "snapshot_from_metrics",
]
