"""What a model call returns and what it cost: `Completion`, `Choice`, `StreamDelta` and the usage dict.

Plain data every layer reads (the router, strategies, the chat model), kept apart from the client that
fills it in so fakes in tests and the offline replay build the same objects. Cost rules: docs/client.md
("Usage and cost").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .model_spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class Choice:
    """One sample. `tool_calls` are OpenAI-format dicts; `logprobs` one float per generated token, if asked."""

    text: str
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: list[float] | None = None


def empty_usage() -> dict[str, Any]:
    """The usage dict with every key present and zero."""
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "calls": 0,
        "cost_usd": 0.0,
        "latency_s": 0.0,
    }


@dataclasses.dataclass
class Completion:
    """The result of `acomplete`: exactly `n` choices, and usage summed over every call made for them.

    `usage` keys: input_tokens, output_tokens, total_tokens, calls (successful API calls), cost_usd, latency_s
    (wall clock of the whole request, retries and backoff included). `Completion(texts=[...])` alone is
    enough for fakes in tests: choices are filled from the texts.
    """

    texts: list[str]
    choices: list[Choice] = dataclasses.field(default_factory=list)
    usage: dict[str, Any] = dataclasses.field(default_factory=empty_usage)
    model: str = ""

    def __post_init__(self) -> None:
        if not self.choices:
            self.choices = [Choice(text=text) for text in self.texts]
        elif len(self.choices) != len(self.texts):
            raise ValueError(f"Completion: {len(self.texts)} texts but {len(self.choices)} choices")


@dataclasses.dataclass(frozen=True)
class StreamDelta:
    """One piece of a streamed answer. The last delta of a stream has `usage` set and no text."""

    text: str = ""
    index: int = 0
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: list[float] | None = None
    usage: dict[str, Any] | None = None


@dataclasses.dataclass
class _CallResult:
    choices: list[Choice]
    input_tokens: int
    output_tokens: int
    litellm_cost_usd: float | None


def call_cost_usd(
    input_tokens: int,
    output_tokens: int,
    input_usd_per_mtok: float,
    output_usd_per_mtok: float,
    litellm_cost_usd: float | None = None,
) -> float:
    """Token cost of one call: litellm's own figure when it has one (it knows cached and reasoning rates),
    else tokens times the per-million prices."""
    if litellm_cost_usd is not None:
        return float(litellm_cost_usd)
    return (input_tokens * input_usd_per_mtok + output_tokens * output_usd_per_mtok) / 1e6


def gpu_cost_usd(latency_s: float, gpu_usd_per_hour: float) -> float:
    """Self-hosted cost: the server's hourly price for the wall time this request held it (batching ignored)."""
    return max(0.0, latency_s) * gpu_usd_per_hour / 3600.0


def summed_usage(spec: ModelSpec, results: Sequence[_CallResult], latency_s: float) -> dict[str, Any]:
    """The usage dict of one request: tokens and cost summed over its calls, GPU time for self-hosted specs."""
    input_tokens = sum(result.input_tokens for result in results)
    output_tokens = sum(result.output_tokens for result in results)
    cost = sum(
        call_cost_usd(
            result.input_tokens,
            result.output_tokens,
            spec.input_usd_per_mtok or 0.0,
            spec.output_usd_per_mtok or 0.0,
            result.litellm_cost_usd,
        )
        for result in results
    )
    if spec.gpu_usd_per_hour is not None:
        cost += gpu_cost_usd(latency_s, spec.gpu_usd_per_hour)
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "calls": len(results),
        "cost_usd": cost,
        "latency_s": latency_s,
    }
