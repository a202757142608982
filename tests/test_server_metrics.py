"""GET /metrics text (pure): valid Prometheus exposition, read back with the project's own parser."""

from __future__ import annotations

import math

from uniscale_lc.server.metrics import Family, ServerMetrics, render, router_families
from uniscale_lc.serving.prometheus import parse_prometheus_text

STATS = {
    "requests": 3,
    "failed_requests": 1,
    "routes": 4,
    "pending": 2,
    "total_cost_usd": 0.25,
    "cost_weight": 0.2,
    "arms": {
        'odd"arm|single': {
            "pulls": 1,
            "failures": 2,
            "feedback": 0,
            "mean_quality": None,
            "total_cost_usd": 0.05,
        },
        "small|single": {
            "pulls": 2,
            "failures": 0,
            "feedback": 2,
            "mean_quality": 0.75,
            "total_cost_usd": 0.2,
        },
    },
    "breakers": {"small": {"open": False}, "large": {"open": True}},
}


def test_router_stats_become_per_arm_families() -> None:
    parsed = parse_prometheus_text(render(router_families(STATS)))
    assert parsed.total("uniscale_routed_requests_total") == 3
    assert parsed.total("uniscale_failed_requests_total") == 1
    assert parsed.total("uniscale_pending_decisions") == 2
    assert parsed.total("uniscale_route_decisions_total") == 4
    assert parsed.by_label("uniscale_arm_pulls_total", "arm") == {'odd"arm|single': 1, "small|single": 2}
    assert parsed.by_label("uniscale_arm_failures_total", "arm")['odd"arm|single'] == 2
    assert parsed.by_label("uniscale_arm_cost_usd_total", "arm")["small|single"] == 0.2
    # No mean quality before any feedback: absent, not 0.
    assert parsed.by_label("uniscale_arm_mean_quality", "arm") == {"small|single": 0.75}
    assert parsed.by_label("uniscale_breaker_open", "model") == {"large": 1.0, "small": 0.0}
    assert parsed.types["uniscale_arm_pulls_total"] == "counter"


def test_requests_feedback_and_latency_histogram() -> None:
    metrics = ServerMetrics(buckets=(0.1, 1.0))
    metrics.observe_request("chat_completions", 200)
    metrics.observe_request("chat_completions", 200)
    metrics.observe_request("chat_completions", 400)
    metrics.observe_feedback("applied")
    for seconds in (0.05, 0.5, 5.0):
        metrics.observe_latency("small|single", seconds)
    parsed = parse_prometheus_text(metrics.render(STATS))
    assert parsed.total("uniscale_requests_total", endpoint="chat_completions", status="200") == 2
    assert parsed.total("uniscale_requests_total", status="400") == 1
    assert parsed.total("uniscale_feedback_total", outcome="applied") == 1
    buckets = {
        s.labels["le"]: s.value
        for s in parsed.select("uniscale_request_latency_seconds_bucket", arm="small|single")
    }
    assert buckets == {"0.1": 1, "1": 2, "+Inf": 3}  # cumulative, as Prometheus requires
    assert parsed.total("uniscale_request_latency_seconds_count") == 3
    assert math.isclose(parsed.total("uniscale_request_latency_seconds_sum") or 0.0, 5.55)
    assert parsed.types["uniscale_request_latency_seconds"] == "histogram"


def test_render_escapes_labels_and_special_values() -> None:
    family = Family("x", "gauge", "help").add(math.nan, arm='a"b\\c\nd').add(math.inf)
    text = render([family])
    assert 'x{arm="a\\"b\\\\c\\nd"} NaN' in text and "x +Inf" in text
    parsed = parse_prometheus_text(text)
    assert parsed.select("x")[0].labels["arm"] == 'a"b\\c\nd'
