"""Faults on the request path, against the loopback OpenAI-compatible server.

Each model fault alone and mixed: the caller gets an answer from a fallback arm or one typed error, the
failing arm is penalised and picked again once its endpoint heals, and 1,000 faulted requests leave no
thread, task, socket or other descriptor behind.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import random
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage
from reliability_helpers import (
    ALL_FAULTS,
    BACKUP,
    BACKUP_ANSWER,
    BACKUP_ARM,
    PRIMARY,
    PRIMARY_ARM,
    SERVER_FAULTS,
    closed_port,
    fault_models,
    make_router,
    open_fds,
    quality_of,
    thread_names,
)

from uniscale_lc.arms import ArmSpace
from uniscale_lc.breaker import BreakerConfig
from uniscale_lc.errors import AllArmsFailedError, ModelCallError, UniScaleError
from uniscale_lc.features import HashingFeaturizer
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import LinUCB
from uniscale_lc.strategies import Single
from uniscale_lc.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(models=fault_models()) as running:
        yield running


@pytest.fixture(autouse=True)
def _quiet_fallback_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="uniscale_lc")


def _break_primary(server: OpenAIServer, fault: str) -> str | None:
    """Inject `fault` on PRIMARY; for "refused", the primary's api_base points at a closed port instead."""
    if fault == "refused":
        return f"http://127.0.0.1:{closed_port()}/v1"
    server.set_failure(PRIMARY, fault)  # type: ignore[arg-type]
    return None


@pytest.mark.parametrize("fault", ALL_FAULTS)
async def test_each_fault_alone_falls_back_to_a_healthy_arm(server: OpenAIServer, fault: str) -> None:
    router = make_router(server, primary_api_base=_break_primary(server, fault))
    requests = 6
    for index in range(requests):
        message = await router.chat.ainvoke(f"question {index}: what is six times seven?")
        record = message.response_metadata["uniscale"]
        if record["arm"] == PRIMARY_ARM:
            # Only an oversized answer can come back from the broken arm: it is an answer, not a crash.
            assert fault == "oversized", f"{fault}: the broken arm answered"
            continue
        assert record["arm"] == BACKUP_ARM and message.content == BACKUP_ANSWER
        if record["fallbacks"]:
            (fallback,) = record["fallbacks"]
            assert fallback["arm"] == PRIMARY_ARM
            assert fallback["error"] in {"ModelCallError", "ModelTimeoutError", "RateLimitedError"}
    stats = router.chat.stats()["arms"]
    if fault != "oversized":
        # The failing arm is penalised: every failed attempt is counted and taught to the policy.
        assert stats[PRIMARY_ARM]["failures"] >= 1
        assert stats[BACKUP_ARM]["pulls"] == requests
        assert stats[PRIMARY_ARM].get("pulls", 0) == 0


@pytest.mark.parametrize("fault", ALL_FAULTS)
async def test_each_fault_on_every_arm_is_one_typed_error(server: OpenAIServer, fault: str) -> None:
    router = make_router(server, primary_api_base=_break_primary(server, fault))
    if fault != "refused":
        server.set_failure(BACKUP, fault)  # type: ignore[arg-type]
    else:
        server.set_failure(BACKUP, "500")
    for index in range(3):
        try:
            message = await router.chat.ainvoke(f"question {index}")
        except AllArmsFailedError as error:
            assert {arm for arm, _ in error.errors} == {PRIMARY_ARM, BACKUP_ARM}
            assert all(isinstance(inner, ModelCallError) for _, inner in error.errors)
        else:
            assert fault == "oversized" and isinstance(message, AIMessage)
    assert router.chat.stats()["failed_requests"] == (0 if fault == "oversized" else 3)


@pytest.mark.parametrize(
    "fault",
    [
        "refused",
        "500",
        "429",
        "timeout",
        "malformed_json",
        "empty_choices",
        "truncated_stream",
    ],
)
async def test_streaming_faults_fall_back_before_the_first_token_or_raise_one_typed_error(
    server: OpenAIServer, fault: str
) -> None:
    router = make_router(server, primary_api_base=_break_primary(server, fault))
    text, error = "", None
    try:
        async for chunk in router.chat.astream("stream me an answer please"):
            text += str(chunk.content)
    except UniScaleError as raised:
        error = raised
    if fault == "truncated_stream":
        # Tokens already reached the caller when the stream broke: a clean fallback is impossible, so the
        # caller gets one typed error (and the arm is penalised) instead of a silently cut answer.
        assert isinstance(error, ModelCallError), f"got {error!r} after {text!r}"
        assert router.chat.stats()["arms"][PRIMARY_ARM]["failures"] == 1
    else:
        assert error is None and text == BACKUP_ANSWER


async def test_an_answer_far_over_the_token_limit_is_not_passed_on(server: OpenAIServer) -> None:
    router = make_router(server)
    server.set_failure(PRIMARY, "oversized")
    message = await router.chat.ainvoke("a short answer, please", max_tokens=16)
    assert len(str(message.content)) < 16 * 64
    assert message.response_metadata["uniscale"]["arm"] == BACKUP_ARM


async def test_mixed_faults_give_an_answer_or_one_typed_error(server: OpenAIServer) -> None:
    router = make_router(server)
    rng = random.Random(6)
    outcomes: collections.Counter[str] = collections.Counter()
    for batch in range(6):
        server.set_failure(PRIMARY, rng.choice(SERVER_FAULTS), rate=0.6)  # type: ignore[arg-type]
        server.set_failure(BACKUP, rng.choice(SERVER_FAULTS), rate=0.25)  # type: ignore[arg-type]
        results = await asyncio.gather(
            *(router.chat.ainvoke(f"batch {batch} question {i}") for i in range(25)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, AIMessage):
                outcomes["answer"] += 1
            elif isinstance(result, AllArmsFailedError):
                outcomes["AllArmsFailedError"] += 1
            else:
                pytest.fail(f"an untyped outcome reached the caller: {result!r}")
    assert sum(outcomes.values()) == 150
    assert outcomes["answer"] > 0
    print(f"\nmixed faults, 150 requests: {dict(outcomes)}")


async def test_a_penalised_arm_is_picked_again_once_its_endpoint_heals(server: OpenAIServer) -> None:
    # The breaker's cooldown is wall-clock time (5 s by default) while this test counts requests (a few ms
    # each): a short cooldown lets the count measure the policy's recovery, not the breaker's clock.
    router = make_router(
        server,
        feedback_fn=lambda messages, message: quality_of(message),
        breaker=BreakerConfig(cooldown_s=0.05, max_cooldown_s=0.2),
    )
    chat = router.chat

    async def pick(count: int, label: str) -> collections.Counter[str]:
        picks: collections.Counter[str] = collections.Counter()
        for index in range(count):
            message = await chat.ainvoke(f"{label} question {index % 9}")
            picks[message.response_metadata["uniscale"]["arm"]] += 1
        return picks

    before = await pick(10, "healthy")
    assert before.most_common(1)[0][0] == PRIMARY_ARM
    server.set_failure(PRIMARY, "500")
    during = await pick(60, "outage")
    failures_during = chat.stats()["arms"][PRIMARY_ARM]["failures"]
    assert during[BACKUP_ARM] == 60  # every request answered, by the fallback
    assert 1 <= failures_during < 60, "the policy kept trying the broken arm first on every request"
    server.set_failure(PRIMARY, None)
    after: collections.Counter[str] = collections.Counter()
    first_retry = None
    for round_index in range(20):
        picks = await pick(10, "healed")
        after += picks
        if picks[PRIMARY_ARM] and first_retry is None:
            first_retry = round_index * 10
        if after[PRIMARY_ARM] >= 10:
            break
    assert after[PRIMARY_ARM] >= 10, f"the healed arm was starved: {dict(after)}"
    print(
        f"\noutage of 60 requests: {failures_during} failed attempts on the broken arm, 0 failed requests; "
        f"after healing it was picked again within {first_retry}-{(first_retry or 0) + 10} requests, "
        f"{dict(after)}"
    )


def test_after_a_long_outage_the_healed_arm_is_tried_again() -> None:
    """Policy-level (thousands of requests in seconds): the chat model's failure rule, quality 0 for a failed
    attempt then a fallback, through a 1,000-request outage of the best arm; the arm must be picked again."""
    featurizer = HashingFeaturizer()
    space = ArmSpace.product(
        [ModelSpec(model=name, input_usd_per_mtok=0.0, output_usd_per_mtok=0.0) for name in ("best", "ok")],
        [Single()],
    )
    policy = LinUCB()
    policy.bind(space, featurizer.dim)
    quality = {"best|single": 1.0, "ok|single": 0.5}
    warm, outage, after = 50, 1000, 2000
    failed_attempts, first_retry, picks_after = 0, None, 0
    for index in range(warm + outage + after):
        x = featurizer.transform(f"question number {index % 13} about {index % 5}")
        decision = policy.select(x)
        if warm <= index < warm + outage and decision.arm_id == "best|single":
            policy.update(decision, 0.0)  # what UniScaleChat teaches for a failed attempt
            failed_attempts += 1
            decision = policy.select(x, ["ok|single"])
        policy.update(decision, quality[decision.arm_id])
        if index >= warm + outage and decision.arm_id == "best|single":
            picks_after += 1
            if first_retry is None:
                first_retry = index - warm - outage
    assert first_retry is not None, "the healed arm was starved for 2,000 requests"
    print(
        f"\n1,000-request outage after {warm} warm-up: {failed_attempts} failed attempts; after healing the arm "
        f"was first tried again after {first_retry} requests and picked {picks_after} times in {after}"
    )


async def test_1000_faulted_requests_leak_no_thread_task_or_descriptor(server: OpenAIServer) -> None:
    router = make_router(server)
    rng = random.Random(1000)
    concurrency = 50

    async def run(count: int) -> collections.Counter[str]:
        outcomes: collections.Counter[str] = collections.Counter()
        for start in range(0, count, concurrency):
            server.set_failure(PRIMARY, rng.choice(SERVER_FAULTS), rate=0.8)  # type: ignore[arg-type]
            server.set_failure(BACKUP, rng.choice(SERVER_FAULTS), rate=0.2)  # type: ignore[arg-type]
            results = await asyncio.gather(
                *(router.chat.ainvoke(f"load {start + i}") for i in range(concurrency)),
                return_exceptions=True,
            )
            for result in results:
                assert isinstance(result, (AIMessage, AllArmsFailedError)), repr(result)
                outcomes[type(result).__name__] += 1
        return outcomes

    gc.collect()
    idle_sockets = open_fds()["socket"]  # the server's listening socket and whatever the process holds
    await run(concurrency)  # warm-up: litellm's import-time threads and its connection pool
    gc.collect()
    fds_before, threads_before = open_fds(), thread_names()
    tasks_before = len(asyncio.all_tasks())
    outcomes: collections.Counter[str] = collections.Counter()
    socket_samples = []
    for _ in range(10):
        outcomes += await run(100)
        gc.collect()
        socket_samples.append(open_fds()["socket"])
    server.set_failure(PRIMARY, None)
    server.set_failure(BACKUP, None)
    await asyncio.sleep(0.2)  # let closed connections settle
    gc.collect()
    fds_after, threads_after = open_fds(), thread_names()
    assert sum(outcomes.values()) == 1000
    assert len(asyncio.all_tasks()) == tasks_before
    # This loop's default executor (DNS lookups, to_thread) grows lazily up to its fixed max_workers (other
    # loops' executors, e.g. the sync bridge's, have their own); any other new thread would be a leak.
    executor_max = min(32, (os.cpu_count() or 1) + 4)
    assert [t for t in threads_after if not t.startswith("asyncio_")] == [
        t for t in threads_before if not t.startswith("asyncio_")
    ]
    new_executor_threads = sum(t.startswith("asyncio_") for t in threads_after) - sum(
        t.startswith("asyncio_") for t in threads_before
    )
    assert new_executor_threads <= executor_max
    # Keep-alive connections are pooled (two descriptors each in this process: client and server end), so
    # the count moves with the pool, never with the number of requests: at most one connection per
    # concurrent request, after any number of requests.
    pool_bound = idle_sockets + 2 * concurrency + 20
    assert max(socket_samples) <= pool_bound, (idle_sockets, socket_samples)
    others = {kind: count for kind, count in fds_after.items() if kind not in ("socket", "total")}
    assert others == {kind: count for kind, count in fds_before.items() if kind not in ("socket", "total")}
    print(
        f"\n1000 faulted requests ({dict(outcomes)}): threads {len(threads_before)}->{len(threads_after)}, "
        f"tasks {tasks_before}->{len(asyncio.all_tasks())}, sockets per 100 requests {socket_samples} "
        f"(bound {pool_bound}), other descriptors {others}"
    )
