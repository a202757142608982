"""Request overhead of UniScaleChat against a direct `litellm.acompletion`, on one loopback server.

What it measures, all in one run against one scripted OpenAI-compatible server started in a separate
process (so server work does not compete with the client for the GIL):

1. latency: sequential requests, direct and UniScale interleaved; median and p99 per request and the
   difference (the overhead UniScale adds: featurise, select, strategy bookkeeping, LangChain callbacks);
2. throughput: `--total` requests at `--concurrency` in flight, direct vs UniScale (best of `--rounds`);
3. test-time scaling: BestOfN(n=8) vs Single through UniScaleChat, with the model answering after 200 ms,
   median wall time per request.

UniScaleChat here has ONE arm (the model with Single, or with BestOfN(8)), so the policy's choice is
trivial and the figures show the fixed cost of the machinery, not of exploring expensive arms.

    python benchmarks/bench_overhead.py            # about a minute
    python benchmarks/bench_overhead.py --quick    # a few seconds, for a smoke check

Aims: under 1 ms added median latency, under 10 % throughput loss, best-of-8 within 1.3x of one sample.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ANSWER = "Adding the two numbers gives the total. The answer is 42."
PROMPT = "What is 19 plus 23? Think briefly and end with 'The answer is N.'"
SLOW_LATENCY_S = 0.2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def loopback_server() -> Iterator[str]:
    """Run the scripted server in a child process; yields its api_base."""
    port = _free_port()
    config = {
        "models": [
            {"name": "fast", "answer": ANSWER},
            {"name": "slow", "answer": ANSWER, "latency_s": SLOW_LATENCY_S},
        ]
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uniscale_lc.testing.openai_server",
            "--port",
            str(port),
            "--config",
            json.dumps(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30.0
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1.0):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    error = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"the loopback server did not start: {error[-2000:]}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(10.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


@dataclass
class LatencyStats:
    median_ms: float
    p99_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> LatencyStats:
        ordered = sorted(seconds)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return cls(statistics.median(ordered) * 1e3, p99 * 1e3)


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def _timed_cpu(call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(wall, CPU of this process) seconds; CPU is robust to other processes competing for the cores."""
    started, cpu_started = time.perf_counter(), time.process_time()
    await call()
    return time.perf_counter() - started, time.process_time() - cpu_started


async def _throughput(call: Callable[[], Awaitable[Any]], total: int, concurrency: int) -> float:
    """Requests per second with `concurrency` workers sharing `total` requests."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import litellm
    from langchain_core.messages import HumanMessage

    from uniscale_lc import BestOfN, ModelSpec, Single
    from uniscale_lc.chat_model import UniScaleChat

    litellm.suppress_debug_info = True
    results: dict[str, Any] = {}
    with loopback_server() as api_base:

        def spec(name: str) -> ModelSpec:
            return ModelSpec(
                model=f"hosted_vllm/{name}",
                name=name,
                api_base=api_base,
                input_usd_per_mtok=0.1,
                output_usd_per_mtok=0.4,
                timeout_s=30.0,
            )

        def chat(name: str, strategy: Any) -> UniScaleChat:
            return UniScaleChat(models=[spec(name)], strategies=[strategy])

        messages = [{"role": "user", "content": PROMPT}]
        lc_messages = [HumanMessage(PROMPT)]

        async def direct(model: str = "fast") -> Any:
            return await litellm.acompletion(
                model=f"hosted_vllm/{model}",
                messages=messages,
                api_base=api_base,
                api_key="EMPTY",
                timeout=30.0,
                max_retries=0,
            )

        uni_single = chat("fast", Single())

        async def uniscale() -> Any:
            return await uni_single.ainvoke(lc_messages)

        # Warm both paths: imports, HTTP sessions, the policy's first allocations.
        for _ in range(args.warmup):
            await direct()
            await uniscale()

        direct_s: list[float] = []
        uniscale_s: list[float] = []
        direct_cpu: list[float] = []
        uniscale_cpu: list[float] = []
        for index in range(args.sequential):
            # Interleave, and alternate which goes first, so drift (thermal, GC) hits both alike.
            pair = (direct, uniscale) if index % 2 == 0 else (uniscale, direct)
            for call in pair:
                elapsed, cpu = await _timed_cpu(call)
                (direct_s if call is direct else uniscale_s).append(elapsed)
                (direct_cpu if call is direct else uniscale_cpu).append(cpu)
        results["latency"] = {
            "direct": LatencyStats.of(direct_s).__dict__,
            "uniscale": LatencyStats.of(uniscale_s).__dict__,
            "direct_cpu_ms": statistics.median(direct_cpu) * 1e3,
            "uniscale_cpu_ms": statistics.median(uniscale_cpu) * 1e3,
            "requests_each": args.sequential,
        }

        direct_rps: list[float] = []
        uniscale_rps: list[float] = []
        for _ in range(args.rounds):
            direct_rps.append(await _throughput(direct, args.total, args.concurrency))
            uniscale_rps.append(await _throughput(uniscale, args.total, args.concurrency))
        results["throughput"] = {
            "direct_rps": max(direct_rps),
            "uniscale_rps": max(uniscale_rps),
            "concurrency": args.concurrency,
            "requests": args.total,
            "rounds": args.rounds,
        }

        uni_slow_single = chat("slow", Single())
        uni_slow_best8 = chat("slow", BestOfN(n=8))
        await uni_slow_single.ainvoke(lc_messages)
        await uni_slow_best8.ainvoke(lc_messages)
        single_s: list[float] = []
        best8_s: list[float] = []
        for _ in range(args.scaling_requests):
            single_s.append(await _timed(lambda: uni_slow_single.ainvoke(lc_messages)))
            best8_s.append(await _timed(lambda: uni_slow_best8.ainvoke(lc_messages)))
        slow_direct_s = [await _timed(lambda: direct("slow")) for _ in range(args.scaling_requests)]
        results["scaling"] = {
            "server_latency_ms": SLOW_LATENCY_S * 1e3,
            "direct_single_ms": statistics.median(slow_direct_s) * 1e3,
            "uniscale_single_ms": statistics.median(single_s) * 1e3,
            "uniscale_best_of_8_ms": statistics.median(best8_s) * 1e3,
            "requests_each": args.scaling_requests,
        }
    return results


def render(results: dict[str, Any]) -> str:
    latency, throughput, scaling = results["latency"], results["throughput"], results["scaling"]
    added_median = latency["uniscale"]["median_ms"] - latency["direct"]["median_ms"]
    added_p99 = latency["uniscale"]["p99_ms"] - latency["direct"]["p99_ms"]
    loss = 1.0 - throughput["uniscale_rps"] / throughput["direct_rps"]
    ratio = scaling["uniscale_best_of_8_ms"] / scaling["uniscale_single_ms"]
    rows = [
        ("measure", "direct litellm", "UniScaleChat", "difference", "aim"),
        (
            f"median latency, ms (sequential, n={latency['requests_each']})",
            f"{latency['direct']['median_ms']:.2f}",
            f"{latency['uniscale']['median_ms']:.2f}",
            f"+{added_median:.2f} ms",
            "< +1 ms",
        ),
        (
            "client CPU per request, ms (median)",
            f"{latency['direct_cpu_ms']:.2f}",
            f"{latency['uniscale_cpu_ms']:.2f}",
            f"+{latency['uniscale_cpu_ms'] - latency['direct_cpu_ms']:.2f} ms",
            "",
        ),
        (
            "p99 latency, ms",
            f"{latency['direct']['p99_ms']:.2f}",
            f"{latency['uniscale']['p99_ms']:.2f}",
            f"+{added_p99:.2f} ms",
            "",
        ),
        (
            f"throughput, req/s ({throughput['concurrency']} in flight, {throughput['requests']} req)",
            f"{throughput['direct_rps']:.0f}",
            f"{throughput['uniscale_rps']:.0f}",
            f"{-100 * loss:+.1f} %",
            "> -10 %",
        ),
        (
            f"wall per request, ms (server {scaling['server_latency_ms']:.0f} ms): Single",
            f"{scaling['direct_single_ms']:.1f}",
            f"{scaling['uniscale_single_ms']:.1f}",
            "",
            "",
        ),
        (
            "  BestOfN(n=8) through UniScaleChat",
            "",
            f"{scaling['uniscale_best_of_8_ms']:.1f}",
            f"{ratio:.2f}x Single",
            "< 1.3x",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-|-".join("-" * width for width in widths))
    return "\n".join(lines)


def machine() -> str:
    load = ""
    with contextlib.suppress(OSError):
        load = f", load average {os.getloadavg()[0]:.1f} at the end"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()}{load}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke check, not a measurement")
    parser.add_argument("--sequential", type=int, default=400, help="sequential requests per path")
    parser.add_argument("--total", type=int, default=1000, help="requests per throughput round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (best kept)")
    parser.add_argument("--scaling-requests", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequential, args.total, args.rounds, args.scaling_requests, args.warmup = 40, 200, 1, 3, 5
    results = asyncio.run(run(args))
    print(f"machine: {machine()}; litellm {importlib.metadata.version('litellm')}")
    print(render(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
