"""Strategy execution over real HTTP: early stopping, the three scorers, reflection, usage sums."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc.client import ModelClient  # noqa: E402
from uniscale_lc.errors import ConfigError  # noqa: E402
from uniscale_lc.strategies.config import BestOfN, JudgeScorer, MajorityVote, Reflection, Single  # noqa: E402
from uniscale_lc.strategies.execute import (  # noqa: E402
    CallOptions,
    add_usage,
    question_text,
    run_strategy,
    stream_single,
)
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel, message_text  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]


def last_user(messages: list[dict[str, Any]]) -> str:
    return next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")


def solver(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
    """Sure of easy questions (always 4), guesses on hard ones."""
    if "[easy]" in last_user(messages):
        return "Two plus two. The answer is 4"
    return f"Hmm. The answer is {rng.randint(0, 10_000)}"


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


async def test_single_returns_one_sample_and_its_usage(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server([SimulatedModel("m", "the answer is 42")])
    result = await run_strategy(model_client, spec_for(server, "m"), Single(), ask("hi there"))
    assert result.text == "the answer is 42"
    assert result.kind == "single" and result.finish_reason == "stop"
    assert result.usage["calls"] == 1
    assert result.usage["output_tokens"] == 4  # the server counts words
    assert result.usage["total_tokens"] == result.usage["input_tokens"] + 4
    assert server.request_count("m") == 1


async def test_single_streams_tokens_then_usage(make_server: MakeServer, model_client: ModelClient) -> None:
    server = make_server([SimulatedModel("m", "one two three four")])
    deltas = [d async for d in stream_single(model_client, spec_for(server, "m"), ask("go"), CallOptions())]
    texts = [d.text for d in deltas if d.text]
    assert len(texts) == 4 and "".join(texts) == "one two three four"
    assert deltas[-1].usage is not None and deltas[-1].usage["output_tokens"] == 4


async def test_options_reach_the_provider(make_server: MakeServer, model_client: ModelClient) -> None:
    server = make_server([SimulatedModel("m", "alpha beta STOP gamma")])
    options = CallOptions(temperature=0.3, max_tokens=50, stop=["STOP"])
    result = await run_strategy(model_client, spec_for(server, "m"), Single(), ask("x"), options)
    assert result.text.strip() == "alpha beta"
    body = server.last_request("m")
    assert body is not None and body["temperature"] == 0.3 and body["stop"] == ["STOP"]


async def test_majority_vote_returns_a_winning_sample_and_the_votes(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    answers = ["so 7", "the answer is 5", "I get 7.0", "final answer: 1,000", "7"]

    def scripted(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
        return answers[index]

    server = make_server([SimulatedModel("m", scripted)])
    result = await run_strategy(model_client, spec_for(server, "m"), MajorityVote(n=5), ask("q"))
    assert result.details["votes"] == {"7": 3, "5": 1, "1000": 1}
    assert result.details["answer"] == "7"
    assert result.text == "so 7"  # the full text of the first sample that gave the winning answer
    assert result.details["samples"] == 5 and result.usage["calls"] == 1  # one call with n=5


async def test_early_stop_draws_fewer_samples_on_an_easy_question(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server([SimulatedModel("m", solver)])
    spec = spec_for(server, "m")
    strategy = MajorityVote(n=9, early_stop=True, wave_size=3)
    easy = await run_strategy(model_client, spec, strategy, ask("[easy] What is 2 + 2?"))
    easy_requests = server.request_count("m")
    hard = await run_strategy(model_client, spec, strategy, ask("[hard] Which prime comes next?"))
    assert easy.details["answer"] == "4" and easy.details["stopped_early"]
    # After two waves the leader has 6 votes and only 3 samples remain: it cannot be caught.
    assert easy.details["samples"] == 6 and easy.details["waves"] == 2 and easy_requests == 2
    assert hard.details["samples"] == 9 and not hard.details["stopped_early"]
    assert easy.usage["output_tokens"] < hard.usage["output_tokens"] * 1.5  # 6 short samples vs 9
    assert easy.usage["calls"] == 2 and hard.usage["calls"] == 3


async def test_early_stop_never_changes_the_full_vote(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server([SimulatedModel("m", solver)])
    spec = spec_for(server, "m")
    stopped = await run_strategy(model_client, spec, MajorityVote(n=6, early_stop=True), ask("[easy] 2+2"))
    full = await run_strategy(model_client, spec, MajorityVote(n=6), ask("[easy] 2+2"))
    assert stopped.details["answer"] == full.details["answer"] == "4"


async def test_best_of_n_logprob_requests_logprobs_and_keeps_the_most_likely(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    def varied(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
        return " ".join(f"w{index}x{k}" for k in range(3 + index))

    server = make_server([SimulatedModel("m", varied)])
    result = await run_strategy(model_client, spec_for(server, "m"), BestOfN(n=4), ask("q"))
    body = server.last_request("m")
    assert body is not None and body.get("logprobs") is True and body.get("n") == 4
    scores = result.details["scores"]
    assert len(scores) == 4 and all(isinstance(s, float) and s <= 0 for s in scores)
    best = max(range(4), key=lambda i: scores[i])
    assert result.details["best_index"] == best
    assert result.text == varied([], best, random.Random())


async def test_best_of_n_without_logprobs_keeps_the_first(model_client: ModelClient) -> None:
    """A provider that ignores `logprobs` gives every sample -inf: the first sample is kept and it is said."""
    from uniscale_lc.client import Choice, Completion

    class NoLogprobs:
        async def acomplete(self, spec: Any, messages: Any, *, n: int = 1, **kwargs: Any) -> Completion:
            texts = [f"s{i}" for i in range(n)]
            usage = {
                "input_tokens": 2,
                "output_tokens": n,
                "total_tokens": 2 + n,
                "calls": 1,
                "cost_usd": 0.0,
            }
            return Completion(
                texts=texts, choices=[Choice(text=t) for t in texts], usage={**usage, "latency_s": 0}
            )

        def astream(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    from uniscale_lc.model_spec import ModelSpec

    spec = ModelSpec(model="fake", gpu_usd_per_hour=0.0)
    result = await run_strategy(NoLogprobs(), spec, BestOfN(n=3), ask("q"))
    assert result.text == "s0" and "no logprobs" in result.details["note"]


async def test_best_of_n_callable_scorer_sees_question_and_answer(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    def candidates(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
        return f"candidate {index}"

    seen: list[tuple[str, str]] = []

    def prefer_two(question: str, answer: str) -> float:
        seen.append((question, answer))
        return 1.0 if answer.endswith("2") else 0.0

    server = make_server([SimulatedModel("m", candidates)])
    strategy = BestOfN(n=4, scorer=prefer_two)
    result = await run_strategy(model_client, spec_for(server, "m"), strategy, ask("pick one"))
    assert result.text == "candidate 2"
    assert sorted(seen) == [("pick one", f"candidate {i}") for i in range(4)]
    assert result.details["scores"] == [0.0, 0.0, 1.0, 0.0]
    body = server.last_request("m")
    assert body is not None and not body.get("logprobs")  # only the logprob scorer asks for them


async def test_best_of_n_callable_scorer_must_return_a_number(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server([SimulatedModel("m", "x")])
    strategy = BestOfN(n=2, scorer=lambda q, a: "good")  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="must return a number"):
        await run_strategy(model_client, spec_for(server, "m"), strategy, ask("q"))


async def test_best_of_n_judge_scores_each_candidate_and_its_calls_are_paid(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    def candidates(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
        return f"candidate {index}"

    def judge(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
        prompt = last_user(messages)
        assert "QUESTION:\nwhich is best?" in prompt
        return "Score: 9" if "ANSWER:\ncandidate 3" in prompt else "Score: 3"

    server = make_server([SimulatedModel("m", candidates), SimulatedModel("judge", judge)])
    judge_spec = spec_for(server, "judge", input_usd_per_mtok=1000.0, output_usd_per_mtok=1000.0)
    strategy = BestOfN(n=4, scorer=JudgeScorer(model=judge_spec))
    result = await run_strategy(model_client, spec_for(server, "m"), strategy, ask("which is best?"))
    assert result.text == "candidate 3"
    assert result.details["scores"] == pytest.approx([2 / 9, 2 / 9, 2 / 9, 8 / 9], abs=1e-6)
    assert server.request_count("judge") == 4
    assert result.usage["calls"] == 5  # one sampling call with n=4, four judge calls
    judge_usage = server.last_request("judge")
    assert judge_usage is not None and judge_usage["temperature"] == 0.0
    # The judge is priced at $1000/Mtok: its tokens must be in the cost.
    assert result.usage["cost_usd"] > 0.01


async def test_judge_failure_degrades_to_nan_not_an_error(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server(
        [SimulatedModel("m", "same"), SimulatedModel("judge", "Score: 5", failure="400", failure_rate=1.0)]
    )
    strategy = BestOfN(n=2, scorer=JudgeScorer(model=spec_for(server, "judge")))
    result = await run_strategy(model_client, spec_for(server, "m"), strategy, ask("q"))
    assert result.text == "same" and result.details["scores"] == [None, None]
    assert result.details["judge_errors"]


def _reflection_models(approve_when: str | None) -> list[SimulatedModel]:
    def writer(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
        # A revision sees the previous answer (and only it) as the assistant turn.
        previous = next((message_text(m) for m in messages if m.get("role") == "assistant"), None)
        if previous is None:
            return "draft answer"
        version = 1 if previous == "draft answer" else int(previous.rsplit("v", 1)[1]) + 1
        return f"revised answer v{version}"

    def critic(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
        prompt = last_user(messages)
        if approve_when is not None and f"ANSWER:\n{approve_when}" in prompt:
            return "APPROVED"
        return "The answer skips a step."

    return [SimulatedModel("writer", writer), SimulatedModel("critic", critic)]


@pytest.mark.parametrize(
    ("approve_when", "rounds_used", "text", "calls"),
    [
        ("draft answer", 1, "draft answer", 2),  # approved at once: draft + 1 critique
        ("revised answer v1", 2, "revised answer v1", 4),  # draft, critique, revise, critique
        (None, 3, "revised answer v3", 7),  # never approved: 1 + 2 * rounds
    ],
)
async def test_reflection_stops_when_the_critic_approves(
    make_server: MakeServer,
    model_client: ModelClient,
    approve_when: str | None,
    rounds_used: int,
    text: str,
    calls: int,
) -> None:
    server = make_server(_reflection_models(approve_when))
    strategy = Reflection(rounds=3, critic=spec_for(server, "critic"))
    result = await run_strategy(model_client, spec_for(server, "writer"), strategy, ask("explain x"))
    assert result.text == text
    assert result.details["rounds_used"] == rounds_used
    assert result.details["approved"] is (approve_when is not None)
    assert result.usage["calls"] == calls
    assert server.request_count("writer") + server.request_count("critic") == calls
    critique_prompt = last_user(server.last_requests("critic")[0]["messages"])
    assert "reply with exactly APPROVED" in critique_prompt and "QUESTION:\nexplain x" in critique_prompt


async def test_reflection_default_critic_is_the_arm_model(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server([SimulatedModel("m", "APPROVED as is")])
    result = await run_strategy(model_client, spec_for(server, "m"), Reflection(rounds=2), ask("q"))
    assert result.details["critic"] == "m" and result.details["rounds_used"] == 1
    assert server.request_count("m") == 2


async def test_tools_are_refused_for_scaled_strategies(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server([SimulatedModel("m", "x")])
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    ]
    with pytest.raises(ConfigError, match="only Single arms take tools"):
        await run_strategy(
            model_client, spec_for(server, "m"), MajorityVote(n=3), ask("q"), CallOptions(tools=tools)
        )


def test_add_usage_and_question_text() -> None:
    total = add_usage(
        {}, {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5, "calls": 1, "cost_usd": 0.5}
    )
    add_usage(total, {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2, "calls": 2, "cost_usd": 0.25})
    assert total["calls"] == 3 and total["total_tokens"] == 7 and math.isclose(total["cost_usd"], 0.75)
    conversation = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    assert question_text(conversation) == "second"
    assert question_text([{"role": "system", "content": "only system"}]) == "only system"
