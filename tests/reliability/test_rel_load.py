"""Load: 1,000 concurrent requests with feedback out of order from other threads; memory over 20,000 requests.

The model calls are answered in-process by `InstantClient` (same `acomplete` contract as `ModelClient`, no
HTTP, no latency) so that what is measured is the router's own bookkeeping: selection, pending decisions,
feedback, learning. The HTTP path is exercised by test_rel_request_faults.py.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import queue
import random
import threading
import tracemalloc
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage

from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import Completion
from uniscale_lc.costs import CostModel, cost_penalty
from uniscale_lc.features import HashingFeaturizer
from uniscale_lc.feedback import FeedbackResult, FeedbackStore, PendingDecision
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import Decision, LinUCB
from uniscale_lc.strategies import MajorityVote, Single

pytestmark = pytest.mark.timeout(240)


class InstantClient:
    """Answers every call at once (after one yield to the loop, so concurrent requests interleave)."""

    async def acomplete(
        self, spec: ModelSpec, messages: list[dict[str, Any]], *, n: int = 1, **_: Any
    ) -> Completion:
        await asyncio.sleep(0)
        usage = {
            "input_tokens": 12 * n,
            "output_tokens": 5 * n,
            "total_tokens": 17 * n,
            "calls": 1,
            "cost_usd": 1e-6 * n,
            "latency_s": 0.0,
        }
        return Completion(texts=[f"{spec.model} says 42"] * n, usage=usage, model=spec.model)


class RecordingLinUCB(LinUCB):
    """LinUCB that logs each update in the order it was applied (under the policy's own lock)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.applied: list[tuple[Decision, float]] = []

    def update(self, decision: Decision, reward: float) -> None:
        with self._lock:
            super().update(decision, reward)
            self.applied.append((decision, reward))


def _specs() -> list[ModelSpec]:
    return [
        ModelSpec(model=name, input_usd_per_mtok=price, output_usd_per_mtok=4 * price)
        for name, price in (("small", 0.1), ("medium", 0.5), ("large", 2.0))
    ]


def _score(decision_id: str) -> float:
    """A deterministic quality in [0, 1] per decision, as a caller's grader would give."""
    return int(hashlib.sha256(decision_id.encode()).hexdigest()[:4], 16) / 0xFFFF


def _assert_same_state(got: Mapping[str, Any], want: Mapping[str, Any], where: str = "state") -> None:
    assert set(got) == set(want), where
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value, err_msg=f"{where}.{key}")
        elif isinstance(value, Mapping):
            _assert_same_state(got[key], value, f"{where}.{key}")
        else:
            assert got[key] == value, f"{where}.{key}"


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="uniscale_lc")


async def test_1000_concurrent_requests_with_out_of_order_feedback_from_threads() -> None:
    featurizer = HashingFeaturizer()
    policy = RecordingLinUCB(seed=3)
    chat = UniScaleChat(
        models=_specs(),
        strategies=[Single(), MajorityVote(n=3)],
        policy=policy,
        featurizer=featurizer,
        client=InstantClient(),
    )
    requests = 1000
    answered: queue.Queue[str | None] = queue.Queue()
    results: list[FeedbackResult] = []
    errors: list[BaseException] = []
    results_lock = threading.Lock()

    def give_feedback(worker: int) -> None:
        rng = random.Random(worker)
        held: list[str] = []  # hold some keys back so feedback arrives out of order
        while True:
            key = answered.get()
            if key is None:
                break
            held.append(key)
            if len(held) >= rng.randint(1, 8):
                rng.shuffle(held)
                for decision_id in held:
                    try:
                        # Every decision is scored twice, from two threads: the second is a duplicate.
                        result = chat.feedback(decision_id, _score(decision_id))
                    except BaseException as error:
                        errors.append(error)
                        continue
                    with results_lock:
                        results.append(result)
                held.clear()
        for decision_id in held:
            with results_lock:
                results.append(chat.feedback(decision_id, _score(decision_id)))

    workers = [
        threading.Thread(target=give_feedback, args=(index,), name=f"feedback-{index}") for index in range(8)
    ]
    for worker in workers:
        worker.start()

    async def one(index: int) -> AIMessage:
        message = await chat.ainvoke(f"request {index}: {'long ' * (index % 17)}question about {index % 31}")
        decision_id = message.response_metadata["uniscale"]["decision_id"]
        answered.put(decision_id)
        answered.put(decision_id)
        return message

    messages = await asyncio.gather(*(one(index) for index in range(requests)))
    for _ in workers:
        answered.put(None)
    for worker in workers:
        worker.join(timeout=120)
        assert not worker.is_alive()

    assert not errors, errors[:3]
    assert len(messages) == requests
    fresh = [result for result in results if not result.duplicate]
    assert len(fresh) == requests and len(results) == 2 * requests
    assert {result.decision_id for result in fresh} == {
        m.response_metadata["uniscale"]["decision_id"] for m in messages
    }
    assert len(policy.applied) == requests
    stats = chat.stats()
    assert stats["pending"] == 0 and stats["requests"] == requests
    assert sum(arm["feedback"] for arm in stats["arms"].values()) == requests

    # The learnt state equals applying the same updates serially, in the order they were applied...
    serial = LinUCB(seed=3)
    serial.bind(chat.arm_space, featurizer.dim)
    serial.score(np.zeros(featurizer.dim))  # selection creates every arm's (empty) statistics; so does this
    for decision, reward in policy.applied:
        serial.update(decision, reward)
    learnt = policy.state_dict()
    learnt.pop("rng")  # selection draws tie-breaks; the serial replay selects nothing
    replayed = serial.state_dict()
    replayed.pop("rng")
    _assert_same_state(learnt, replayed)
    # ...and its order-free parts (Gram matrices, shared target) equal a replay in request order.
    by_request = LinUCB(seed=3)
    by_request.bind(chat.arm_space, featurizer.dim)
    order = {m.response_metadata["uniscale"]["decision_id"]: i for i, m in enumerate(messages)}
    for decision, reward in sorted(policy.applied, key=lambda item: order[item[0].decision_id]):
        by_request.update(decision, reward)
    in_order = by_request.state_dict()
    np.testing.assert_allclose(learnt["shared"]["gram"], in_order["shared"]["gram"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(learnt["shared"]["target"], in_order["shared"]["target"], rtol=1e-9, atol=1e-9)
    for arm_id, arm_state in in_order["per_arm"].items():
        np.testing.assert_allclose(
            learnt["per_arm"][arm_id]["gram"], arm_state["gram"], rtol=1e-12, atol=1e-9
        )
        assert learnt["per_arm"][arm_id]["updates"] == arm_state["updates"]
    print(
        f"\n{requests} concurrent requests, {len(results)} feedback calls from 8 threads out of order "
        f"({len(results) - len(fresh)} duplicates answered without relearning): state equals the serial replay"
    )


def _simulate_requests(
    count: int,
    start: int,
    *,
    contexts: list[np.ndarray],
    policy: LinUCB,
    cost_model: CostModel,
    store: FeedbackStore,
    rng: random.Random,
    arm_ids: tuple[str, ...],
) -> None:
    """What UniScaleChat does per request and per feedback, minus the model call: select, record, score 70%."""
    for index in range(start, start + count):
        x = contexts[index % len(contexts)]
        prediction = cost_model.predict(10, arm_ids)
        penalty, reference = cost_penalty(prediction.cost_usd, 0.2)
        decision = policy.select(x, arm_ids, penalty)
        cost_model.observe(decision.arm_id, 10, input_tokens=12, output_tokens=5, calls=1, latency_s=0.01)
        pending = PendingDecision(
            decision, 1e-6, reference, 0.2, run_id=f"run-{index}", request_id=f"req-{index}"
        )
        store.add(pending)
        if rng.random() < 0.7:  # 30% of answers are never scored: only the bound keeps them in check
            taken = store.take(f"req-{index}")
            assert isinstance(taken, PendingDecision)
            quality = rng.random()
            policy.update(taken.decision, quality)
            store.mark_done(taken, FeedbackResult(taken.decision_id, taken.arm_id, quality, quality))


def _heap_samples(run_block: Any, blocks: int) -> list[int]:
    """Traced heap after each block. Objects alive before tracing started are not counted, and replacing
    them (evicted pending decisions, for one) looks like growth, so the first block is a turnover block:
    flatness is judged from the end of the first block on."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        samples = []
        for block in range(blocks):
            run_block(block)
            gc.collect()
            samples.append(tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    return samples


def test_memory_stays_flat_over_20000_requests_and_pending_decisions_are_bounded() -> None:
    featurizer = HashingFeaturizer()
    chat = UniScaleChat(
        models=_specs(), featurizer=featurizer, client=InstantClient()
    )  # the arm space it builds
    arm_ids = chat.arm_space.ids
    policy = LinUCB(seed=0)
    policy.bind(chat.arm_space, featurizer.dim)
    max_pending = 500
    store = FeedbackStore(max_pending=max_pending)
    kwargs: dict[str, Any] = {
        "contexts": [
            featurizer.transform(f"request about topic {i}: {'detail ' * (i % 7)}") for i in range(400)
        ],
        "policy": policy,
        "cost_model": CostModel(chat.arm_space),
        "store": store,
        "rng": random.Random(20000),
        "arm_ids": arm_ids,
    }
    _simulate_requests(4000, 0, **kwargs)  # warm-up: pending and scored records reach their bound

    def block(index: int) -> None:
        _simulate_requests(4000, 4000 * (index + 1), **kwargs)
        assert len(store) <= max_pending and len(store._done) <= max_pending

    samples = _heap_samples(block, 4)  # 4,000 + 16,000 = 20,000 requests
    growth_per_request = (samples[-1] - samples[0]) / 12000
    # Flat: a leak of one small object per request would be about 100 bytes per request.
    assert growth_per_request < 4, samples
    assert store.evicted > 0, "the bound was never reached, so the test proved nothing about it"
    print(
        f"\n20,000 requests (70% scored): traced heap after each 4,000 {samples} bytes "
        f"({growth_per_request:.2f} B/request after turnover); pending {len(store)} <= {max_pending}, "
        f"{store.evicted} unscored decisions evicted oldest-first"
    )


async def test_the_chat_model_itself_keeps_flat_memory_and_bounded_pending_decisions() -> None:
    max_pending = 200
    chat = UniScaleChat(models=_specs(), client=InstantClient(), max_pending=max_pending)

    async def requests(count: int, label: str) -> None:
        for index in range(count):
            message = await chat.ainvoke(f"{label} request {index} about {index % 13}")
            if index % 3:
                chat.feedback(message, 0.5)
        assert chat.stats()["pending"] <= max_pending

    await requests(600, "warm-up")
    gc.collect()
    tracemalloc.start()
    try:
        # tracemalloc sees only allocations made after start: an exact refresh (every 1,000 updates of a
        # model) that replaces matrices allocated before tracing would look like growth although the old
        # ones are freed. Re-allocate them all under tracing now, so later refreshes replace traced arrays.
        chat._policy.refresh()
        base = tracemalloc.get_traced_memory()[0]
        samples = []
        for block in range(4):
            await requests(500, f"block {block}")
            gc.collect()
            samples.append(tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    # Turnover: the first two blocks replace what was alive before tracing began (pending decisions, and
    # LinUCB's Gram and inverse matrices at its first exact refresh, 200 KB each); judge from there on.
    growth_per_request = (samples[-1] - samples[1]) / 1000
    assert growth_per_request < 32, samples
    print(
        f"\nUniScaleChat, 2,000 requests after 600 warm-up: traced heap {samples} bytes "
        f"({growth_per_request:.1f} B/request after turnover); pending <= {max_pending}"
    )


async def test_pending_decisions_expire_after_the_ttl() -> None:
    now = [1000.0]
    store = FeedbackStore(ttl_s=60.0, max_pending=100, clock=lambda: now[0])
    for index in range(50):
        decision = Decision("a", np.zeros(2), decision_id=f"d{index}")
        store.add(PendingDecision(decision, 0.0, 0.0, 0.2, created_at=now[0]))
        now[0] += 1.0
    now[0] += 35.0  # now 1085: the first 25 (created before 1025) are older than the TTL
    assert len(store.pending()) == 25 and store.expired == 25
    assert store.find("d10") is None and store.find("d40") is not None
