"""A stand-in for `vllm serve`: health, models, vLLM-style /metrics, minimal chat completions.

It lets the launcher, monitor and profiler be tested on CPU. Latency follows a toy model of a speculative
decoding server: step time grows with the running batch and with k, each step yields the expected accepted
length, so TPOT and the spec-decode counters respond to load the way a real server's do.

`--speculative-config JSON` is checked the way vLLM checks it at startup (`uniscale_lc.specserve.vllm_rules`,
which restates vLLM's source): a config vLLM refuses makes the stand-in exit with code 1 and vLLM's message
on stderr, before it serves anything. An accepted config sets k, and its `num_speculative_tokens_per_batch_size`
table is expanded up to `--max-num-seqs` as vLLM's scheduler does, so each request runs the k of the batch
it joins.

    python -m uniscale_lc.testing.vllm_standin --host 127.0.0.1 --port 8011 [--crash-after 2]
        [--speculative-config '{"method": "draft_model", "model": "d", "num_speculative_tokens": 3}']
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(_BUCKETS_S)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, upper in enumerate(_BUCKETS_S):
            if value <= upper:
                self.counts[i] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = [f"# HELP {name} Histogram of {name}.", f"# TYPE {name} histogram"]
        for upper, count in zip(_BUCKETS_S, self.counts, strict=True):
            out.append(f'{name}_bucket{{le="{upper}",{labels}}} {float(count)}')
        out.append(f'{name}_bucket{{le="+Inf",{labels}}} {float(self.count)}')
        out.append(f"{name}_sum{{{labels}}} {self.total}")
        out.append(f"{name}_count{{{labels}}} {float(self.count)}")
        return out


class StandinState:
    """Counters and the latency model of the fake server; one lock guards everything."""

    def __init__(self, args: argparse.Namespace, k_by_batch: list[int] | None = None) -> None:
        self.args = args
        # k_by_batch[b] = k at b running requests (index 0 unused); None: --spec-k at every batch size.
        self.k_by_batch = k_by_batch
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.drafts = 0.0
        self.draft_tokens = 0.0
        self.accepted = 0.0
        self.accepted_per_pos = [0.0] * args.spec_k
        self.ttft = _Histogram()
        self.tpot = _Histogram()

    def k_at(self, batch: int) -> int:
        """The speculation length a step at this many running requests uses."""
        if self.k_by_batch is None:
            return int(self.args.spec_k)
        return self.k_by_batch[min(max(batch, 1), len(self.k_by_batch) - 1)]

    def survival(self, k: int | None = None) -> list[float]:
        """P(positions 1..j all accepted) for j = 1..k, geometric in the acceptance rate."""
        depth = self.args.spec_k if k is None else k
        return [self.args.acceptance ** (j + 1) for j in range(depth)]

    def tpot_s(self, batch: int) -> float:
        k = self.k_at(batch)
        step_ms = (self.args.step_ms + self.args.step_ms_per_request * batch) * (1 + 0.15 * k)
        return step_ms / 1000.0 / (1.0 + sum(self.survival(k)))

    def metrics_text(self) -> str:
        if self.args.metrics_file:
            return Path(self.args.metrics_file).read_text(encoding="utf-8")
        labels = f'model_name="{self.args.model_name}",engine="0"'
        with self.lock:
            out = [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{{{labels}}} {float(self.running)}",
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting{{{labels}}} {float(self.waiting)}",
                "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
                "# TYPE vllm:kv_cache_usage_perc gauge",
                f"vllm:kv_cache_usage_perc{{{labels}}} {min(1.0, self.running / 64.0)}",
                "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
                "# TYPE vllm:prompt_tokens_total counter",
                f"vllm:prompt_tokens_total{{{labels}}} {float(self.prompt_tokens)}",
                "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
                "# TYPE vllm:generation_tokens_total counter",
                f"vllm:generation_tokens_total{{{labels}}} {float(self.generation_tokens)}",
            ]
            out += self.ttft.lines("vllm:time_to_first_token_seconds", labels)
            out += self.tpot.lines("vllm:time_per_output_token_seconds", labels)
            if self.args.spec_k > 0:
                for name, value in (
                    ("vllm:spec_decode_num_drafts_total", self.drafts),
                    ("vllm:spec_decode_num_draft_tokens_total", self.draft_tokens),
                    ("vllm:spec_decode_num_accepted_tokens_total", self.accepted),
                ):
                    out += [f"# HELP {name} Speculative decoding counter.", f"# TYPE {name} counter"]
                    out.append(f"{name}{{{labels}}} {float(round(value))}")
                name = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
                out += [f"# HELP {name} Accepted tokens per draft position.", f"# TYPE {name} counter"]
                for pos, value in enumerate(self.accepted_per_pos):
                    out.append(f'{name}{{{labels},position="{pos}"}} {float(round(value))}')
        return "\n".join(out) + "\n"

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Serve one chat completion: sleep as the latency model says, then count what was generated."""
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        tokens = max(1, min(max_tokens, 4096))
        prompt = json.dumps(body.get("messages", []))
        prompt_tokens = max(1, len(prompt) // 4)
        with self.lock:
            self.running += 1
            batch = self.running
        ttft = self.args.ttft_ms / 1000.0
        tpot = self.tpot_s(batch)
        try:
            time.sleep(ttft + tpot * (tokens - 1))
        finally:
            with self.lock:
                self.running -= 1
                self.prompt_tokens += prompt_tokens
                self.generation_tokens += tokens
                self.ttft.observe(ttft)
                if tokens > 1:
                    self.tpot.observe(tpot)
                k = self.k_at(batch)
                if k > 0:
                    survival = self.survival(k)
                    steps = math.ceil((tokens - 1) / (1.0 + sum(survival))) if tokens > 1 else 0
                    self.drafts += steps
                    self.draft_tokens += steps * k
                    self.accepted += steps * sum(survival)
                    for j, s in enumerate(survival):
                        self.accepted_per_pos[j] += steps * s
        text = "ok " * tokens
        return {
            "id": f"chatcmpl-standin-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.args.model_name),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text.strip()}, "finish_reason": "length"}
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                      "total_tokens": prompt_tokens + tokens},
        }


def make_handler(state: StandinState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quieter than the default stderr line
            sys.stdout.write("standin: " + (format % args) + "\n")
            sys.stdout.flush()

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:
            ready = time.monotonic() - state.started >= state.args.startup_delay
            if self.path == "/health":
                self._send(200 if ready else 503, b"" if ready else b"loading", "text/plain")
            elif not ready:
                self._json(503, {"error": "loading"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [
                    {"id": state.args.model_name, "object": "model", "owned_by": "vllm-standin"}]})
            elif self.path == "/metrics":
                self._send(200, state.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._json(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                return
            if self.path != "/v1/chat/completions":
                self._json(404, {"error": f"no route {self.path}"})
                return
            self._json(200, state.complete(body))

    return Handler


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-name", default="standin-model")
    parser.add_argument("--crash-after", type=float, default=None, help="exit with code 3 after S seconds")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="answer 503 on /health for S seconds")
    parser.add_argument("--metrics-file", default=None, help="serve this file verbatim as /metrics")
    parser.add_argument("--ignore-sigterm", action="store_true", help="to test the SIGKILL fallback")
    parser.add_argument("--spec-k", type=int, default=3, help="speculative tokens per step (0: none)")
    parser.add_argument("--acceptance", type=float, default=0.7, help="per-position acceptance rate")
    parser.add_argument("--step-ms", type=float, default=4.0, help="decode step time at batch 0")
    parser.add_argument("--step-ms-per-request", type=float, default=0.5, help="added per running request")
    parser.add_argument("--ttft-ms", type=float, default=5.0)
    parser.add_argument("--speculative-config", default=None, help="vLLM's JSON; validated as vLLM does")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="as vLLM's (expands the k table)")
    return parser.parse_args(argv)


def speculation_from_config(args: argparse.Namespace) -> list[int] | None:
    """Validate `--speculative-config` like vLLM; set args.spec_k and return the k-by-batch table.

    Raises SystemExit(1) with vLLM's message when vLLM would refuse to start.
    """
    if args.speculative_config is None:
        return None
    from ..specserve.vllm_rules import SpeculativeConfigError, dense_schedule, validate_speculative_config

    try:
        config = json.loads(args.speculative_config)
        checked = validate_speculative_config(config, max_num_seqs=args.max_num_seqs)
    except (json.JSONDecodeError, SpeculativeConfigError) as exc:
        print(f"standin: ValueError: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from exc
    args.spec_k = int(checked["num_speculative_tokens"] or 0)
    print(f"standin: speculative config {json.dumps(checked, sort_keys=True)}", flush=True)
    table = checked.get("num_speculative_tokens_per_batch_size")
    if table is None:
        return None
    return dense_schedule(table, args.max_num_seqs, args.spec_k)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = StandinState(args, speculation_from_config(args))
    server = ThreadingHTTPServer((args.host, args.port), make_handler(state))
    server.daemon_threads = True
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.crash_after is not None:

        def crash() -> None:
            print("standin: simulated crash", flush=True)
            os._exit(3)

        timer = threading.Timer(args.crash_after, crash)
        timer.daemon = True
        timer.start()
    print(f"standin: serving {args.model_name} on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except SystemExit:
        print("standin: shutting down", flush=True)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
