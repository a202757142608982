"""Request overhead of UniScaleChat against the LangChain chat models users would otherwise call.

Everything runs in one process against one scripted OpenAI-compatible server started in a separate
process (so server work does not compete with the client for the GIL). Contenders, all asking the same
model the same question:

- `openai SDK` and `litellm`: the raw clients, for reference (no LangChain);
- `ChatOpenAI` (langchain-openai, the named baseline) and `ChatLiteLLM` (langchain-litellm);
- `UniScale 1 arm`: UniScaleChat with one model and Single (the fixed cost of the machinery);
- `Router 1 arm` and `UniScaleLLM 1 arm`: the same arm through the core directly and through the LlamaIndex
  adapter (the latter when llama-index-core, the [llama-index] extra, is installed);
- `UniScale 64 arms`: 64 models x Single on the server, with feedback after every answer (the aim's case).

1. latency and client CPU: sequential requests in interleaved rounds (each round calls every contender once,
   in a rotating order, so drift hits all alike); medians, p99, and CPU per request of this process;
2. throughput: `--total` requests at `--concurrency` in flight, interleaved rounds; median req/s;
3. test-time scaling: BestOfN(n=8) vs Single through UniScaleChat, the model answering after 200 ms.

    python benchmarks/bench_overhead.py            # a few minutes
    python benchmarks/bench_overhead.py --quick    # a smoke check, not a measurement

ChatOpenAI and ChatLiteLLM come from benchmarks/requirements.txt (the `make bench` venv); without them
their rows are left out and the raw openai SDK is the reference.

Aims (issue 11): UniScale 64 arms adds <= 1.0 ms median client CPU over ChatOpenAI, keeps >= 0.85x its
throughput at 64 in flight, and best-of-8 wall stays <= 1.3x Single.
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
MANY_ARMS = 64
REFERENCE = "ChatOpenAI"
AIM_CONTENDER = f"UniScale {MANY_ARMS} arms"
AIM_ADDED_CPU_MS = 1.0
AIM_THROUGHPUT_RATIO = 0.85
AIM_BEST_OF_8_RATIO = 1.3

Call = Callable[[], Awaitable[Any]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _model_names() -> list[str]:
    return [f"m{index:02d}" for index in range(MANY_ARMS)]


@contextlib.contextmanager
def loopback_server() -> Iterator[str]:
    """Run the scripted server in a child process; yields its api_base."""
    port = _free_port()
    models = [{"name": "fast", "answer": ANSWER}]
    models += [{"name": name, "answer": ANSWER} for name in _model_names()]
    models.append({"name": "slow", "answer": ANSWER, "latency_s": SLOW_LATENCY_S})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uniscale_lc.testing.openai_server",
            "--port",
            str(port),
            "--config",
            json.dumps({"models": models}),
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
class Figures:
    """What was measured for one contender."""

    wall_s: list[float]
    cpu_s: list[float]
    rps: list[float]
    load_cpu_s: list[float]  # CPU per request during the throughput rounds

    @property
    def median_ms(self) -> float:
        return statistics.median(self.wall_s) * 1e3

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.wall_s)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1e3

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu_s) * 1e3

    @property
    def median_rps(self) -> float:
        return statistics.median(self.rps)

    @property
    def load_cpu_ms(self) -> float:
        return statistics.median(self.load_cpu_s) * 1e3

    def to_dict(self) -> dict[str, float]:
        return {
            "median_ms": self.median_ms,
            "p99_ms": self.p99_ms,
            "cpu_ms": self.cpu_ms,
            "median_rps": self.median_rps,
            "load_cpu_ms": self.load_cpu_ms,
            "requests": len(self.wall_s),
        }


async def _timed(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def _timed_cpu(call: Call) -> tuple[float, float]:
    """(wall, CPU of this process) seconds; CPU is robust to other processes competing for the cores."""
    started, cpu_started = time.perf_counter(), time.process_time()
    await call()
    return time.perf_counter() - started, time.process_time() - cpu_started


async def _throughput(call: Call, total: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, CPU seconds per request) with `concurrency` workers sharing `total` requests."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), (time.process_time() - cpu_started) / total


def _rotated(names: list[str], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def _other_front_ends(specs: list[Any]) -> tuple[dict[str, Call], list[Any], list[str]]:
    """The core `Router` and (with the [llama-index] extra) `UniScaleLLM` on the same one arm."""
    from uniscale_lc import Router

    router = Router(models=specs)
    messages = [{"role": "user", "content": PROMPT}]
    calls: dict[str, Call] = {"Router 1 arm": lambda: router.acomplete(messages)}
    closables: list[Any] = [router]
    try:
        from llama_index.core.llms import ChatMessage

        from uniscale_lc.llama_index import UniScaleLLM
    except ImportError:
        return (
            calls,
            closables,
            ["UniScaleLLM: llama-index-core not installed (pip install '.[llama-index]')"],
        )
    llm = UniScaleLLM(models=specs)
    li_messages = [ChatMessage(role="user", content=PROMPT)]
    calls["UniScaleLLM 1 arm"] = lambda: llm.achat(li_messages)
    return calls, [*closables, llm], []


def _optional_baselines(api_base: str) -> tuple[dict[str, Call], list[str]]:
    """ChatOpenAI and ChatLiteLLM when installed (the bench venv), and notes on the ones missing."""
    import importlib

    from langchain_core.messages import HumanMessage

    lc_messages = [HumanMessage(PROMPT)]
    baselines = [
        ("ChatOpenAI", "langchain_openai", {"model": "fast", "base_url": api_base, "timeout": 30.0}),
        ("ChatLiteLLM", "langchain_litellm", {"model": "hosted_vllm/fast", "api_base": api_base}),
    ]
    calls: dict[str, Call] = {}
    notes: list[str] = []
    for name, module_name, options in baselines:
        try:
            chat_class = getattr(importlib.import_module(module_name), name)
        except ImportError:
            package = module_name.replace("_", "-")
            notes.append(f"{name}: {package} not installed (pip install -r benchmarks/requirements.txt)")
            continue
        chat = chat_class(api_key="EMPTY", max_retries=0, **options)
        calls[name] = lambda chat=chat: chat.ainvoke(lc_messages)
    return calls, notes


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import litellm
    import openai
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

        def chat(names: list[str], strategy: Any) -> UniScaleChat:
            return UniScaleChat(models=[spec(name) for name in names], strategies=[strategy])

        messages = [{"role": "user", "content": PROMPT}]
        lc_messages = [HumanMessage(PROMPT)]
        sdk = openai.AsyncOpenAI(base_url=api_base, api_key="EMPTY", max_retries=0, timeout=30.0)

        async def raw_openai() -> Any:
            return await sdk.chat.completions.create(model="fast", messages=messages)  # type: ignore[arg-type]

        async def raw_litellm(model: str = "fast") -> Any:
            return await litellm.acompletion(
                model=f"hosted_vllm/{model}",
                messages=messages,
                api_base=api_base,
                api_key="EMPTY",
                timeout=30.0,
                max_retries=0,
            )

        uni_one = chat(["fast"], Single())
        uni_many = chat(_model_names(), Single())

        async def uniscale_one() -> Any:
            return await uni_one.ainvoke(lc_messages)

        async def uniscale_many() -> Any:
            message = await uni_many.ainvoke(lc_messages)
            await uni_many.afeedback(message, 1.0 if "42" in str(message.content) else 0.0)
            return message

        baselines, notes = _optional_baselines(api_base)
        front_ends, front_end_closables, front_end_notes = _other_front_ends([spec("fast")])
        notes += front_end_notes
        calls: dict[str, Call] = {"openai SDK": raw_openai, "litellm": raw_litellm, **baselines}
        calls["UniScale 1 arm"] = uniscale_one
        calls.update(front_ends)
        calls[AIM_CONTENDER] = uniscale_many
        names = list(calls)
        figures = {name: Figures([], [], [], []) for name in names}

        # Warm every path: imports, HTTP sessions, the policy's first allocations.
        for _ in range(args.warmup):
            for name in names:
                await calls[name]()

        for index in range(args.sequential):
            for name in _rotated(names, index):
                elapsed, cpu = await _timed_cpu(calls[name])
                figures[name].wall_s.append(elapsed)
                figures[name].cpu_s.append(cpu)

        for index in range(args.rounds):
            for name in _rotated(names, index):
                rps, cpu_per_request = await _throughput(calls[name], args.total, args.concurrency)
                figures[name].rps.append(rps)
                figures[name].load_cpu_s.append(cpu_per_request)
        await sdk.close()

        results["contenders"] = {name: figures[name].to_dict() for name in names}
        results["reference"] = REFERENCE if REFERENCE in calls else "openai SDK"
        results["notes"] = notes
        results["sequential_requests_each"] = args.sequential
        results["throughput"] = {
            "concurrency": args.concurrency,
            "requests": args.total,
            "rounds": args.rounds,
        }

        uni_slow_single = chat(["slow"], Single())
        uni_slow_best8 = chat(["slow"], BestOfN(n=8))
        await uni_slow_single.ainvoke(lc_messages)
        await uni_slow_best8.ainvoke(lc_messages)
        single_s: list[float] = []
        best8_s: list[float] = []
        for _ in range(args.scaling_requests):
            single_s.append(await _timed(lambda: uni_slow_single.ainvoke(lc_messages)))
            best8_s.append(await _timed(lambda: uni_slow_best8.ainvoke(lc_messages)))
        results["scaling"] = {
            "server_latency_ms": SLOW_LATENCY_S * 1e3,
            "uniscale_single_ms": statistics.median(single_s) * 1e3,
            "uniscale_best_of_8_ms": statistics.median(best8_s) * 1e3,
            "requests_each": args.scaling_requests,
        }
        for closable in (uni_one, uni_many, uni_slow_single, uni_slow_best8, *front_end_closables):
            closable.close()
    return results


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def render(results: dict[str, Any]) -> str:
    contenders: dict[str, dict[str, float]] = results["contenders"]
    reference_name = results["reference"]
    reference = contenders[reference_name]
    throughput = results["throughput"]
    header = (
        "contender",
        "median ms",
        "p99 ms",
        "CPU ms/req",
        f"CPU vs {reference_name}",
        f"req/s @{throughput['concurrency']}",
        f"x {reference_name}",
        "CPU ms/req loaded",
    )
    rows = [header]
    for name, figures in contenders.items():
        rows.append(
            (
                name,
                f"{figures['median_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                f"{figures['cpu_ms']:.2f}",
                f"{figures['cpu_ms'] - reference['cpu_ms']:+.2f} ms",
                f"{figures['median_rps']:.0f}",
                f"{figures['median_rps'] / reference['median_rps']:.2f}x",
                f"{figures['load_cpu_ms']:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-|-".join("-" * width for width in widths))
    lines.append(
        f"(latency: {results['sequential_requests_each']} sequential requests each, interleaved; "
        f"throughput: median of {throughput['rounds']} interleaved rounds of {throughput['requests']} requests)"
    )
    scaling = results["scaling"]
    ratio = scaling["uniscale_best_of_8_ms"] / scaling["uniscale_single_ms"]
    lines.append(
        f"wall per request, server {scaling['server_latency_ms']:.0f} ms: Single "
        f"{scaling['uniscale_single_ms']:.1f} ms, BestOfN(n=8) {scaling['uniscale_best_of_8_ms']:.1f} ms "
        f"({ratio:.2f}x)"
    )
    ours = contenders.get(AIM_CONTENDER)
    if ours is not None:
        added = ours["cpu_ms"] - reference["cpu_ms"]
        speed = ours["median_rps"] / reference["median_rps"]
        lines.append(f"aims ({AIM_CONTENDER} against {reference_name}):")
        lines.append(
            f"  added client CPU {added:+.2f} ms (aim <= {AIM_ADDED_CPU_MS:.1f} ms): "
            f"{_verdict(added <= AIM_ADDED_CPU_MS)}"
        )
        lines.append(
            f"  throughput {speed:.2f}x (aim >= {AIM_THROUGHPUT_RATIO:.2f}x): "
            f"{_verdict(speed >= AIM_THROUGHPUT_RATIO)}"
        )
    lines.append(
        f"  best-of-8 wall {ratio:.2f}x Single (aim <= {AIM_BEST_OF_8_RATIO:.1f}x): "
        f"{_verdict(ratio <= AIM_BEST_OF_8_RATIO)}"
    )
    lines.extend(f"note: {note}" for note in results["notes"])
    return "\n".join(lines)


def machine() -> str:
    load = ""
    with contextlib.suppress(OSError):
        load = f", load average {os.getloadavg()[0]:.1f} at the end"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()}{load}"
    )


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke check, not a measurement")
    parser.add_argument("--sequential", type=int, default=300, help="sequential requests per contender")
    parser.add_argument("--total", type=int, default=640, help="requests per throughput round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds (median kept)")
    parser.add_argument("--scaling-requests", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequential, args.total, args.rounds, args.scaling_requests, args.warmup = 30, 128, 1, 3, 3
    results = asyncio.run(run(args))
    versions = ", ".join(
        f"{package} {_version(package)}"
        for package in ("litellm", "openai", "langchain-openai", "langchain-litellm")
    )
    print(f"machine: {machine()}; {versions}")
    print(render(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
