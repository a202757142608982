"""What one model call may cost at most: the total deadline, the byte cap, and requests refused up front.

Needs nothing but this package: a scripted model on a loopback server (no real LLM, no key, no network).
About ten seconds.

    python examples/call_limits.py

- `RetryPolicy.deadline_s(timeout_s)` is the ceiling of one call, every attempt and wait included; a server
  that holds the request is given up on there, and the router falls back to another arm.
- Bytes read per response are capped while reading: `64 KiB + n x max_tokens x 4 KiB`, or
  `ModelClient(max_response_bytes=...)` (default 32 MiB) without `max_tokens`.
- Options no provider could take (`seed=object()`, NaN in `logit_bias`) are a `ConfigError` before any call.
"""

from __future__ import annotations

import math
import time

from uniscale_lc import ModelSpec, UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy, response_byte_cap
from uniscale_lc.errors import AllArmsFailedError, ConfigError
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel


def main() -> None:
    models = [SimulatedModel("slow", "the answer is 42", hang_s=60.0), SimulatedModel("steady", "42")]
    with OpenAIServer(models=models) as server:
        retry = RetryPolicy(max_attempts=2, base_delay_s=0.05)
        specs = [
            ModelSpec(model=name, api_base=server.api_base, timeout_s=1.0, gpu_usd_per_hour=1.0)
            for name in ("slow", "steady")
        ]
        chat = UniScaleChat(models=specs, client=ModelClient(retry=retry, max_response_bytes=1024 * 1024))
        print(f"ceiling of one call with timeout_s=1, 2 attempts: {retry.deadline_s(1.0):.0f} s")
        print(f"bytes read per response with max_tokens=256: at most {response_byte_cap(256, 1):,}")

        chat.invoke("warm-up")  # the first call of a process imports litellm (seconds): not counted below
        server.set_failure("slow", "timeout")  # the server now holds every request to "slow"
        started = time.perf_counter()
        try:
            chat.invoke("what is six times seven?", model="slow")  # pinned: no other arm to fall back to
        except AllArmsFailedError as error:
            print(
                f"pinned to the held model: {type(error.errors[0][1]).__name__} after "
                f"{time.perf_counter() - started:.1f} s (ceiling {retry.deadline_s(1.0):.0f} s)"
            )
        message = chat.invoke("what is six times seven?")
        print(f"unpinned: answered by {message.response_metadata['uniscale']['arm']}")

        for bad in ({"seed": object()}, {"logit_bias": {"50256": math.nan}}):
            try:
                chat.invoke("hello", **bad)
            except ConfigError as error:
                print(f"refused before any call: {error}")
        print(
            f"requests that reached the server (none of them the refused ones): slow {server.request_count('slow')}, "
            f"steady {server.request_count('steady')}"
        )
        chat.close()


if __name__ == "__main__":
    main()
