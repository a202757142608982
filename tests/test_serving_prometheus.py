"""The exposition parser and the vLLM load computed from two scrapes."""

from __future__ import annotations

import math

import pytest

from uniscale_lc.serving.prometheus import PrometheusParseError, parse_prometheus_text
from uniscale_lc.serving.vllm_metrics import load_between, snapshot_from_metrics

SCRAPE_1 = r'''# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{le="0.01",model_name="m"} 1.0
vllm:time_per_output_token_seconds_bucket{le="+Inf",model_name="m"} 2.0
vllm:time_per_output_token_seconds_sum{model_name="m"} 0.03
vllm:time_per_output_token_seconds_count{model_name="m"} 2.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 1.0
vllm:time_to_first_token_seconds_count{model_name="m"} 2.0
vllm:spec_decode_num_drafts_total{model_name="m"} 10.0
vllm:spec_decode_num_draft_tokens_total{model_name="m"} 30.0
vllm:spec_decode_num_accepted_tokens_total{model_name="m"} 15.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{model_name="m",position="0"} 8.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{model_name="m",position="1"} 5.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{model_name="m",position="2"} 2.0
weird_metric{path="C:\\dir",quote="say \"hi\"",nl="a\nb",} NaN 1700000000000
'''

SCRAPE_2 = SCRAPE_1.replace('_sum{model_name="m"} 0.03', '_sum{model_name="m"} 0.13').replace(
    '_count{model_name="m"} 2.0\nvllm:time_to', '_count{model_name="m"} 7.0\nvllm:time_to'
).replace("drafts_total{model_name=\"m\"} 10.0", "drafts_total{model_name=\"m\"} 20.0").replace(
    "draft_tokens_total{model_name=\"m\"} 30.0", "draft_tokens_total{model_name=\"m\"} 60.0"
).replace("accepted_tokens_total{model_name=\"m\"} 15.0", "accepted_tokens_total{model_name=\"m\"} 30.0").replace(
    'position="0"} 8.0', 'position="0"} 16.0').replace('position="1"} 5.0', 'position="1"} 10.0').replace(
    'position="2"} 2.0', 'position="2"} 4.0')


def test_parser_reads_labels_escapes_special_values_and_types() -> None:
    parsed = parse_prometheus_text(SCRAPE_1)
    weird = parsed.select("weird_metric")[0]
    assert weird.labels == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "a\nb"}
    assert math.isnan(weird.value) and weird.timestamp_ms == 1700000000000
    inf_bucket = parsed.select("vllm:time_per_output_token_seconds_bucket", le="+Inf")[0]
    assert inf_bucket.value == 2.0
    assert parsed.types["vllm:time_per_output_token_seconds"] == "histogram"
    assert parsed.helps["vllm:num_requests_running"].startswith("Number of requests")
    assert parsed.by_label("vllm:spec_decode_num_accepted_tokens_per_pos_total", "position") == {
        "0": 8.0, "1": 5.0, "2": 2.0}
    assert parse_prometheus_text("x +Inf\ny -Inf\n").total("x") == math.inf


@pytest.mark.parametrize("bad", ['m{a="x} 1', "m{a=x} 1", "1abc 2", "m notanumber", 'm{a="x"}'])
def test_parser_rejects_malformed_lines(bad: str) -> None:
    with pytest.raises(PrometheusParseError, match="line 1"):
        parse_prometheus_text(bad)


def test_load_between_two_scrapes_uses_deltas_and_old_kv_name() -> None:
    first = snapshot_from_metrics(parse_prometheus_text(SCRAPE_1), 0.0)
    second = snapshot_from_metrics(parse_prometheus_text(SCRAPE_2), 1.0)
    load = load_between(first, second)
    assert load.running == 3.0 and load.waiting == 1.0 and load.kv_cache_usage == 0.25
    assert load.tpot_ms == pytest.approx(1000 * 0.10 / 5)  # (0.13-0.03)/(7-2)
    assert load.acceptance_rate == pytest.approx(15 / 30)
    assert load.mean_acceptance_length == pytest.approx(1 + 15 / 10)
    assert load.acceptance_per_pos == pytest.approx((0.8, 0.5, 0.2))
    # With no earlier scrape the totals are cumulative.
    assert load_between(None, first).tpot_ms == pytest.approx(15.0)


def test_counter_reset_counts_from_zero() -> None:
    second = snapshot_from_metrics(parse_prometheus_text(SCRAPE_2), 1.0)
    first = snapshot_from_metrics(parse_prometheus_text(SCRAPE_1), 2.0)
    load = load_between(second, first)  # counters went down: a restarted server
    assert load.acceptance_rate == pytest.approx(15 / 30)
