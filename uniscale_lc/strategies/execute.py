"""Run a test-time-scaling strategy over the model client: samples, scores, votes, critiques, usage.

The maths (extraction, voting, early stopping, picking, judge and critique parsing) lives in
`aggregate.py` and is shared with the offline replay; this module only decides which calls to make
and sums what they cost. Every strategy returns a `StrategyResult` whose usage covers ALL calls it
made, judge and critic calls included, so the cost the router learns from is the real one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

from ..client import Completion, StreamDelta, empty_usage
from ..errors import ConfigError, ModelCallError
from ..model_spec import ModelSpec
from .aggregate import (
    critique_approves,
    get_extractor,
    leader_is_safe,
    majority_vote,
    mean_logprob,
    parse_judge_score,
    pick_best,
)
from .config import BestOfN, JudgeScorer, MajorityVote, Reflection, Single, Strategy

__all__ = [
    "CRITIC_PROMPT",
    "JUDGE_PROMPT",
    "CallOptions",
    "CompletionClient",
    "StrategyResult",
    "aclose_stream",
    "add_usage",
    "question_text",
    "run_best_of_n",
    "run_majority_vote",
    "run_reflection",
    "run_single",
    "run_strategy",
    "stream_single",
]

JUDGE_PROMPT = (
    "You are a strict grader. Rate how correct and helpful the ANSWER is for the QUESTION, on a scale "
    "from 1 (wrong or useless) to {max_score} (fully correct and complete). Reply with one line of the "
    "form 'Score: <number>' and nothing else.\n\nQUESTION:\n{question}\n\nANSWER:\n{answer}"
)
CRITIC_PROMPT = (
    "Review the ANSWER to the QUESTION below for mistakes, gaps or unclear parts. If it is correct and "
    "complete, reply with exactly APPROVED. Otherwise list the problems briefly; do not rewrite it."
    "\n\nQUESTION:\n{question}\n\nANSWER:\n{answer}"
)
REVISE_PROMPT = (
    "A reviewer found these problems with your previous answer:\n{critique}\n\n"
    "Write an improved, complete answer to the original request."
)


class CompletionClient(Protocol):
    """What the strategies need of `ModelClient` (a fake with these two methods works in tests)."""

    async def acomplete(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        n: int = 1,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        stop: str | list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion: ...

    def astream(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        stop: str | list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamDelta]: ...


@dataclasses.dataclass(frozen=True)
class CallOptions:
    """Per-request generation options passed to every answer-producing call of a strategy.

    Judge and critic calls get only `temperature=0` and the timeout of their spec: they must not
    inherit the caller's tools, stop sequences or token limits, which are about the answer.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    extra: Mapping[str, Any] | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop or None,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "extra": self.extra,
        }


@dataclasses.dataclass
class StrategyResult:
    """The answer of one strategy run and everything it cost.

    `usage` has the client's keys (input_tokens, output_tokens, total_tokens, calls, cost_usd,
    latency_s) summed over every call; latency_s is the wall clock of the whole strategy.
    `details` is kind-specific: votes, scores, rounds used, samples drawn.
    """

    text: str
    model: str
    kind: str
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] = dataclasses.field(default_factory=empty_usage)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def add_usage(total: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Sum two usage dicts in place (latency included; callers overwrite it with wall clock)."""
    for key in ("input_tokens", "output_tokens", "total_tokens", "calls"):
        total[key] = int(total.get(key, 0)) + int(more.get(key, 0) or 0)
    for key in ("cost_usd", "latency_s"):
        total[key] = float(total.get(key, 0.0)) + float(more.get(key, 0.0) or 0.0)
    return total


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping) and "text" in part
        )
    return ""


def question_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """What a judge or critic is told the question was: the last user message (else all text)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _message_text(message)
            if text:
                return text
    return "\n".join(text for text in (_message_text(m) for m in messages) if text)


def _finish(result: StrategyResult, started: float) -> StrategyResult:
    result.usage["latency_s"] = time.perf_counter() - started
    result.usage["total_tokens"] = int(result.usage["input_tokens"]) + int(result.usage["output_tokens"])
    return result


# ----------------------------------------------------------------------------- Single


async def run_single(
    client: CompletionClient, spec: ModelSpec, messages: list[dict[str, Any]], options: CallOptions
) -> StrategyResult:
    """One sample; the only strategy that may carry tool calls."""
    started = time.perf_counter()
    completion = await client.acomplete(spec, messages, n=1, **options.kwargs())
    choice = completion.choices[0]
    result = StrategyResult(
        text=choice.text,
        model=spec.model,
        kind="single",
        tool_calls=choice.tool_calls,
        finish_reason=choice.finish_reason,
        usage=add_usage(empty_usage(), completion.usage),
        details={"samples": 1},
    )
    return _finish(result, started)


def stream_single(
    client: CompletionClient, spec: ModelSpec, messages: list[dict[str, Any]], options: CallOptions
) -> AsyncIterator[StreamDelta]:
    """Token stream of one sample; the last delta carries usage (see `ModelClient.astream`)."""
    return client.astream(spec, messages, **options.kwargs())


async def aclose_stream(stream: AsyncIterator[Any]) -> None:
    """Close a stream now if it can be closed (an async generator can; a bare iterator has nothing to)."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


# ----------------------------------------------------------------------------- BestOfN


async def _judge_scores(
    client: CompletionClient, judge: JudgeScorer, question: str, answers: Sequence[str], usage: dict[str, Any]
) -> tuple[list[float], list[str]]:
    """Pointwise judge ratings in [0, 1] (NaN where the judge failed or gave no number)."""

    async def rate(answer: str) -> Completion | ModelCallError:
        prompt = JUDGE_PROMPT.format(max_score=judge.max_score, question=question, answer=answer)
        try:
            return await client.acomplete(
                judge.model, [{"role": "user", "content": prompt}], n=1, temperature=0.0, max_tokens=16
            )
        except ModelCallError as error:  # one broken rating must not sink the whole request
            return error

    outcomes = await asyncio.gather(*(rate(answer) for answer in answers))
    scores: list[float] = []
    errors: list[str] = []
    for outcome in outcomes:
        if isinstance(outcome, ModelCallError):
            scores.append(math.nan)
            errors.append(str(outcome))
            continue
        add_usage(usage, outcome.usage)
        scores.append(parse_judge_score(outcome.choices[0].text, judge.max_score))
    return scores, errors


async def run_best_of_n(
    client: CompletionClient,
    spec: ModelSpec,
    strategy: BestOfN,
    messages: list[dict[str, Any]],
    options: CallOptions,
) -> StrategyResult:
    """n samples, each scored (judge, mean token logprob, or a callable); the best one wins."""
    started = time.perf_counter()
    scorer = strategy.scorer
    want_logprobs = scorer == "logprob"
    completion = await client.acomplete(
        spec, messages, n=strategy.n, logprobs=want_logprobs, **options.kwargs()
    )
    usage = add_usage(empty_usage(), completion.usage)
    answers = [choice.text for choice in completion.choices]
    details: dict[str, Any] = {"samples": len(answers), "scorer": strategy.scorer_name}
    if isinstance(scorer, JudgeScorer):
        scores, errors = await _judge_scores(client, scorer, question_text(messages), answers, usage)
        if errors:
            details["judge_errors"] = errors[:3]
    elif want_logprobs:
        scores = [mean_logprob(choice.logprobs or []) for choice in completion.choices]
        if all(choice.logprobs is None for choice in completion.choices):
            details["note"] = "the provider returned no logprobs; the first sample was kept"
    elif callable(scorer):
        question = question_text(messages)
        scores = [_callable_score(scorer, question, answer) for answer in answers]
    else:  # validated by BestOfN; kept for type checkers
        raise ConfigError(f"BestOfN.scorer: got {scorer!r}; use 'logprob', a JudgeScorer or a callable")
    best = pick_best(scores)
    details["scores"] = [None if not math.isfinite(score) else round(score, 6) for score in scores]
    details["best_index"] = best
    choice = completion.choices[best]
    result = StrategyResult(
        text=choice.text,
        model=spec.model,
        kind="best_of_n",
        finish_reason=choice.finish_reason,
        usage=usage,
        details=details,
    )
    return _finish(result, started)


def _callable_score(scorer: Callable[[str, str], float], question: str, answer: str) -> float:
    value = scorer(question, answer)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"BestOfN.scorer: {getattr(scorer, '__name__', scorer)!r} returned {value!r}; "
            "a scorer must return a number (higher is better)"
        ) from None
    return score


# ----------------------------------------------------------------------------- MajorityVote


async def run_majority_vote(
    client: CompletionClient,
    spec: ModelSpec,
    strategy: MajorityVote,
    messages: list[dict[str, Any]],
    options: CallOptions,
) -> StrategyResult:
    """Up to n samples, the most common extracted answer wins; with early_stop, drawn in waves.

    Early stopping asks `leader_is_safe` after each wave: once no other answer could catch up with
    the samples still allowed, drawing stops, so an easy question costs one or two waves.
    """
    started = time.perf_counter()
    extractor = get_extractor(strategy.extractor)
    wave = strategy.effective_wave_size if strategy.early_stop else strategy.n
    usage = empty_usage()
    texts: list[str] = []
    finish_reasons: list[str | None] = []
    answers: list[str | None] = []
    waves = 0
    while len(texts) < strategy.n:
        size = min(wave, strategy.n - len(texts))
        completion = await client.acomplete(spec, messages, n=size, **options.kwargs())
        waves += 1
        add_usage(usage, completion.usage)
        for choice in completion.choices:
            texts.append(choice.text)
            finish_reasons.append(choice.finish_reason)
            answers.append(extractor(choice.text))
        if strategy.early_stop:
            tally = majority_vote(answers)
            if leader_is_safe(tally.votes, strategy.n - len(texts)):
                break
    vote = majority_vote(answers)
    result = StrategyResult(
        text=texts[vote.winner_index],
        model=spec.model,
        kind="majority_vote",
        finish_reason=finish_reasons[vote.winner_index],
        usage=usage,
        details={
            "answer": vote.answer,
            "votes": dict(vote.votes),
            "samples": len(texts),
            "max_samples": strategy.n,
            "waves": waves,
            "stopped_early": len(texts) < strategy.n,
            # Every sample's extracted answer in draw order: what side observations read
            # (uniscale_lc/side_observations.py).
            "sample_answers": list(answers),
            "extractor": strategy.extractor_name,
        },
    )
    return _finish(result, started)


# ----------------------------------------------------------------------------- Reflection


async def run_reflection(
    client: CompletionClient,
    spec: ModelSpec,
    strategy: Reflection,
    messages: list[dict[str, Any]],
    options: CallOptions,
) -> StrategyResult:
    """Draft, then up to `rounds` of critique and revision; stops as soon as the critic approves."""
    started = time.perf_counter()
    critic = strategy.critic or spec
    question = question_text(messages)
    usage = empty_usage()
    draft = await client.acomplete(spec, messages, n=1, **options.kwargs())
    add_usage(usage, draft.usage)
    text, finish_reason = draft.choices[0].text, draft.choices[0].finish_reason
    critiques: list[str] = []
    approved = False
    rounds_used = 0
    for _ in range(strategy.rounds):
        rounds_used += 1
        prompt = CRITIC_PROMPT.format(question=question, answer=text)
        critique = await client.acomplete(critic, [{"role": "user", "content": prompt}], n=1, temperature=0.0)
        add_usage(usage, critique.usage)
        critique_text = critique.choices[0].text
        critiques.append(critique_text)
        if critique_approves(critique_text):
            approved = True
            break
        revision_messages = [
            *messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": REVISE_PROMPT.format(critique=critique_text)},
        ]
        revised = await client.acomplete(spec, revision_messages, n=1, **options.kwargs())
        add_usage(usage, revised.usage)
        text, finish_reason = revised.choices[0].text, revised.choices[0].finish_reason
    result = StrategyResult(
        text=text,
        model=spec.model,
        kind="reflection",
        finish_reason=finish_reason,
        usage=usage,
        details={
            "rounds_used": rounds_used,
            "max_rounds": strategy.rounds,
            "approved": approved,
            "critic": critic.display_name,
            "last_critique": critiques[-1][:500] if critiques else None,
        },
    )
    return _finish(result, started)


# ----------------------------------------------------------------------------- dispatch


async def run_strategy(
    client: CompletionClient,
    spec: ModelSpec,
    strategy: Strategy,
    messages: list[dict[str, Any]],
    options: CallOptions | None = None,
) -> StrategyResult:
    """Run `strategy` on `spec`; raises the client's typed `ModelCallError` when a needed call fails."""
    options = options or CallOptions()
    if options.tools and not isinstance(strategy, Single):
        raise ConfigError(
            f"tools: the {strategy.label} strategy cannot carry tool calls; only Single arms take tools"
        )
    if isinstance(strategy, Single):
        return await run_single(client, spec, messages, options)
    if isinstance(strategy, BestOfN):
        return await run_best_of_n(client, spec, strategy, messages, options)
    if isinstance(strategy, MajorityVote):
        return await run_majority_vote(client, spec, strategy, messages, options)
    if isinstance(strategy, Reflection):
        return await run_reflection(client, spec, strategy, messages, options)
    raise ConfigError(
        f"strategy: got {type(strategy).__name__}; use Single, BestOfN, MajorityVote or Reflection"
    )
