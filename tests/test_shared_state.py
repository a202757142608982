"""Shared state on a real redis-server: payload safety, start-up errors, feedback on another replica,
duplicates applied once, snapshots and compaction, and a replica's policy equal to one learner fed the
store's updates in the store's order."""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from uniscale_lc.arms import ArmSpace
from uniscale_lc.costs import BudgetPacer, CostModel
from uniscale_lc.errors import ConfigError, FeedbackError, StateError
from uniscale_lc.feedback import FeedbackResult, FeedbackStore, PendingDecision
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import LinUCB
from uniscale_lc.policy.base import Decision
from uniscale_lc.shared_state import (
    Batch,
    CostObservation,
    LearnerFold,
    RewardUpdate,
    SharedFeedback,
    SharedState,
    codec,
    parse_store_url,
    reward_updates,
)
from uniscale_lc.shared_state.redis_store import RedisStore
from uniscale_lc.strategies import MajorityVote, Single

DIM = 6


def make_space() -> ArmSpace:
    models = [
        ModelSpec(
            model=f"model-{i}", input_usd_per_mtok=0.1 * 3**i, output_usd_per_mtok=0.4 * 3**i, params_b=2.0**i
        )
        for i in range(3)
    ]
    return ArmSpace.product(models, [Single(), MajorityVote(n=3)])


def make_policy(space: ArmSpace | None = None) -> LinUCB:
    policy = LinUCB(seed=5, refresh_every=16)
    policy.bind(space or make_space(), DIM)
    return policy


def quality_for(x: np.ndarray, arm_id: str) -> float:
    """A deterministic 'automatic feedback': better for bigger models, varying with the prompt."""
    size = int(arm_id.split("model-")[1][0])
    return float(np.clip(0.3 + 0.2 * size + 0.3 * np.tanh(x[0]), 0.0, 1.0))


def learn(pending: PendingDecision, quality: float) -> tuple[tuple[RewardUpdate, ...], FeedbackResult]:
    result = FeedbackResult(pending.decision_id, pending.arm_id, quality, quality)
    return reward_updates([(pending.decision, quality)]), result


class Replica:
    """The learning path of one app replica, as the Router runs it: select locally, feedback shared."""

    def __init__(self, url: str, *, costs: bool = False, **options: Any):
        space = make_space()
        self.policy = make_policy(space)
        self.cost_model = CostModel(space) if costs else None
        self.pacer = BudgetPacer(0.001) if costs else None
        self.fold = LearnerFold(self.policy, self.cost_model, self.pacer)
        self.shared = SharedState.connect(url, self.fold, **options)
        self.feedback = SharedFeedback(self.shared, FeedbackStore(), learn=learn)

    def request(
        self, x: np.ndarray, request_id: str | None = None, cost_usd: float = 0.001
    ) -> PendingDecision:
        decision = self.policy.select(x)
        pending = PendingDecision(decision, cost_usd, 0.001, 0.2, request_id=request_id)
        usage = CostObservation(decision.arm_id, 20.0, 20.0, 50.0, 1.0, 0.3, cost_usd)
        self.feedback.add(pending, usage=[usage] if self.cost_model is not None else [])
        return pending

    def score(self, key: str, quality: float) -> FeedbackResult:
        return self.feedback.apply(key, quality, learn)

    def close(self) -> None:
        self.shared.close()


def policy_arrays(state: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """Every learnt array of a LinUCB state dict (the tie-breaking generator left out)."""
    for key, value in state.items():
        if key == "rng":
            continue
        if isinstance(value, Mapping):
            yield from policy_arrays(value, f"{prefix}{key}.")
        elif isinstance(value, np.ndarray) or (
            isinstance(value, (int, float)) and not isinstance(value, bool)
        ):
            yield f"{prefix}{key}", np.asarray(value, dtype=np.float64)


def assert_same_policy(a: LinUCB, b: LinUCB, tolerance: float = 1e-9) -> None:
    for policy in (a, b):
        policy.score(
            np.zeros(policy.context_dim)
        )  # gives every arm its (prior) slot: untried arms compare too
    left, right = dict(policy_arrays(a.state_dict())), dict(policy_arrays(b.state_dict()))
    assert left.keys() == right.keys()
    for key in left:
        np.testing.assert_allclose(left[key], right[key], rtol=0, atol=tolerance, err_msg=key)


def log_batches(url: str) -> list[Batch]:
    """Every batch in the store's log, in the store's order (read straight from Redis)."""
    store = RedisStore(parse_store_url(url))
    try:
        return [
            codec.decode_batch(payload) for _, _, payload in store.read_after("0-0", 100_000, block=False)
        ]
    finally:
        store.close()


def single_learner(batches: list[Batch], policy: LinUCB | None = None) -> LinUCB:
    """A fresh policy fed every reward update of `batches` in order: what every replica must equal."""
    policy = policy or make_policy()
    for batch in batches:
        for event in batch.events:
            if isinstance(event, RewardUpdate):
                policy.update(Decision(arm_id=event.arm_id, context=event.context), event.reward)
    return policy


def assert_fleet_learnt(replicas: Sequence[Replica], updates: int, url: str) -> list[Batch]:
    """Every replica folds `updates` reward updates and equals one learner fed the log; returns the log."""
    batches = log_batches(url)
    for replica in replicas:
        assert replica.shared.wait_until(lambda r=replica: r.shared.stats()["updates"] == updates)
        assert_same_policy(replica.policy, single_learner(batches))
    return batches


def in_threads(
    replicas: Sequence[Replica], send: Callable[[Replica], list[FeedbackResult]]
) -> list[FeedbackResult]:
    """`send` on each replica in a thread of its own, all at once; every result, in no set order."""
    results: list[FeedbackResult] = []
    lock = threading.Lock()

    def run(replica: Replica) -> None:
        outcome = send(replica)
        with lock:
            results.extend(outcome)

    threads = [threading.Thread(target=run, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# ---------------------------------------------------------------------- payloads (no Redis needed)


def test_batch_round_trip_is_bit_exact() -> None:
    x = np.random.default_rng(0).standard_normal(DIM) / 3
    batch = Batch(
        "d1",
        "r1",
        (
            RewardUpdate(x, "model-0/single", 0.1 + 0.2),
            CostObservation("model-0/single", 12.0, 12.0, 30.0, 1.0, 0.25, 1.5e-6),
        ),
    )
    decoded = codec.decode_batch(codec.encode_batch(batch))
    assert decoded.batch_id == "d1" and decoded.origin == "r1" and decoded.reward_updates == 1
    reward = decoded.events[0]
    assert isinstance(reward, RewardUpdate)
    assert reward.context.tobytes() == x.tobytes() and reward.reward == 0.1 + 0.2
    assert decoded.events[1] == batch.events[1]


def test_snapshot_round_trip_restores_the_policy_exactly() -> None:
    policy = make_policy()
    rng = np.random.default_rng(1)
    for _ in range(40):
        decision = policy.select(rng.standard_normal(DIM) / 3)
        policy.update(decision, float(rng.random()))
    payload = codec.encode_snapshot({"policy": policy.state_dict()}, seq=40, entry_id="5-0", updates=40)
    snapshot = codec.decode_snapshot(payload)
    assert (snapshot.seq, snapshot.entry_id, snapshot.updates) == (40, "5-0", 40)
    restored = make_policy()
    restored.load_state_dict(snapshot.state["policy"])
    assert_same_policy(policy, restored, tolerance=0.0)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (pickle.dumps({"format": codec.FORMAT}), "not valid JSON"),
        (json.dumps({"format": "other", "v": 1, "type": "batch"}).encode(), "not in the uniscale-lc-shared format"),
        (json.dumps({"format": codec.FORMAT, "v": 99, "type": "batch"}).encode(), "version 99"),
        (json.dumps({"format": codec.FORMAT, "v": 1, "type": "pending"}).encode(), "expected a batch"),
        (
            json.dumps(
                {"format": codec.FORMAT, "v": 1, "type": "batch", "id": "b", "origin": "o",
                 "events": [{"k": "reward", "x": [1.0, "nan"], "a": "arm", "r": 1.0}]}
            ).encode(),
            "finite numbers",
        ),
        (
            json.dumps(
                {"format": codec.FORMAT, "v": 1, "type": "batch", "id": "b", "origin": "o",
                 "events": [{"k": "exec", "a": "arm"}]}
            ).encode(),
            "knows 'reward' and 'cost'",
        ),
        (b"[" * (codec.MAX_BATCH_BYTES + 1), "over the"),
    ],
)  # fmt: skip
def test_unsafe_or_foreign_batches_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        codec.decode_batch(payload)


def test_snapshot_array_that_declares_more_than_it_holds_is_refused_before_decoding() -> None:
    payload = json.loads(codec.encode_snapshot({"a": np.zeros(4)}, seq=1, entry_id="1-0", updates=1))
    payload["arrays"][0]["shape"] = [10**12]
    with pytest.raises(StateError, match="declares"):
        codec.decode_snapshot(json.dumps(payload).encode())
    payload["arrays"][0] = {"dtype": "|O", "shape": [1], "data": "AAAAAAAAAAA="}
    with pytest.raises(StateError, match="dtype"):
        codec.decode_snapshot(json.dumps(payload).encode())


def test_store_url_is_validated_and_its_password_never_shown() -> None:
    parsed = parse_store_url("redis://:s3cret-pass@cache.internal:6380/2?namespace=prod&ssl_cert_reqs=none")
    assert parsed.namespace == "prod"
    assert "s3cret" not in parsed.shown and "***@cache.internal:6380/2" in parsed.shown
    assert "namespace" not in parsed.client_url and "ssl_cert_reqs=none" in parsed.client_url
    with pytest.raises(ConfigError, match="scheme 'http'"):
        parse_store_url("http://localhost:6379")
    with pytest.raises(ConfigError, match="namespace"):
        parse_store_url("redis://localhost:6379/0?namespace=a b")


# ---------------------------------------------------------------------- start-up


def test_redis_down_at_start_up_is_a_clear_error(private_redis) -> None:
    url = f"{private_redis.url}?namespace=x"
    private_redis.kill()
    with pytest.raises(StateError, match=r"cannot reach Redis at redis://127\.0\.0\.1:\d+/0.*start Redis"):
        SharedState.connect(url, LearnerFold(make_policy()), socket_timeout_s=0.5)


def test_a_replica_of_another_configuration_is_refused(redis_url: str) -> None:
    first = Replica(redis_url)
    try:
        other = LinUCB(seed=6)  # another seed: another random projection, another policy
        other.bind(make_space(), DIM)
        with pytest.raises(ConfigError, match="same policy, featurizer and budget, or use another"):
            SharedState.connect(redis_url, LearnerFold(other))
    finally:
        first.close()


# ---------------------------------------------------------------------- feedback across replicas


def test_feedback_on_another_replica_teaches_every_replica_once(redis_url: str) -> None:
    a, b, c = Replica(redis_url), Replica(redis_url), Replica(redis_url)
    try:
        x = np.full(DIM, 0.2)
        pending = a.request(x, request_id="req-1")
        result = b.score("req-1", 0.75)  # feedback by request id, on a replica that never saw the request
        assert (result.decision_id, result.quality, result.duplicate) == (pending.decision_id, 0.75, False)
        assert b.shared.stats()["updates"] == 1  # read-your-writes on the replica that took the feedback
        again = c.score(pending.decision_id, 0.1)  # a retry, by decision id, on a third replica
        assert again.duplicate and again.quality == 0.75
        assert a.score("req-1", 0.75).duplicate
        for replica in (a, b, c):
            assert replica.shared.wait_until(lambda r=replica: r.shared.stats()["updates"] == 1)
        assert len(a.feedback.local) == 0  # the answering replica dropped its local copy
        [batch] = log_batches(redis_url)
        assert batch.batch_id == pending.decision_id and batch.reward_updates == 1
        assert_same_policy(a.policy, single_learner([batch]))
        with pytest.raises(FeedbackError, match="no pending decision"):
            c.score("never-issued", 1.0)
    finally:
        for replica in (a, b, c):
            replica.close()


def test_concurrent_duplicate_feedback_on_many_replicas_is_applied_once(redis_url: str) -> None:
    replicas = [Replica(redis_url) for _ in range(3)]
    try:
        keys = [replicas[0].request(np.full(DIM, i / 10), request_id=f"r{i}").decision_id for i in range(20)]
        results = in_threads(replicas * 2, lambda replica: [replica.score(key, 0.5) for key in keys])
        assert sum(not r.duplicate for r in results) == 20 and len(results) == 120
        batches = assert_fleet_learnt(replicas, 20, redis_url)
        assert sorted(b.batch_id for b in batches) == sorted(keys)
    finally:
        for replica in replicas:
            replica.close()


def _written(*replicas: Replica) -> None:
    """Until each replica's writer thread has put its decisions in the store (within a round trip of
    the answer; feedback on another replica comes later than that in practice)."""
    for replica in replicas:
        assert replica.shared.wait_until(lambda r=replica: r.shared.buffered == 0, 10)


def test_feedback_by_request_id_scores_every_decision_under_it_once_across_replicas(redis_url: str) -> None:
    a, b, c = Replica(redis_url), Replica(redis_url), Replica(redis_url)
    try:
        # An agent run: two model calls answered by replica A, a third by replica B, one request id.
        steps = [a.request(np.full(DIM, 0.1), "agent-1"), a.request(np.full(DIM, 0.2), "agent-1")]
        steps.append(b.request(np.full(DIM, 0.3), "agent-1"))
        other = a.request(np.full(DIM, 0.4), "agent-2")
        _written(a, b)
        result = c.score("agent-1", 0.6)  # on a replica that made none of them
        assert (result.decisions, result.duplicate, result.quality) == (3, False, 0.6)
        assert result.decision_id == steps[-1].decision_id  # the newest, as on the local path
        assert c.shared.stats()["updates"] == 3  # read-your-writes: all three folded
        # Repeats on every replica, concurrently, and by one member's decision id: nothing more learnt.
        repeats = in_threads([a, b, c, a, b], lambda replica: [replica.score("agent-1", 0.1)])
        assert len(repeats) == 5 and all(r.duplicate and r.quality == 0.6 for r in repeats)
        assert b.score(steps[0].decision_id, 0.1).duplicate
        batches = log_batches(redis_url)
        assert sorted(batch.batch_id for batch in batches) == sorted(p.decision_id for p in steps)
        assert all(batch.reward_updates == 1 for batch in batches)
        assert len(a.feedback.local) == 1 and len(b.feedback.local) == 0  # only agent-2's is left
        assert b.score("agent-2", 0.9).decision_id == other.decision_id  # another request id: untouched
        assert_fleet_learnt([a, b, c], 4, redis_url)
    finally:
        for replica in (a, b, c):
            replica.close()


def test_concurrent_feedback_on_one_request_id_scores_each_decision_once(redis_url: str) -> None:
    replicas = [Replica(redis_url) for _ in range(3)]
    try:
        steps = [replicas[i % 3].request(np.full(DIM, i / 10), "run-9") for i in range(6)]
        _written(*replicas)
        results = in_threads(replicas * 2, lambda replica: [replica.score("run-9", 0.5)])
        # However the six calls raced, each decision was scored by exactly one of them.
        assert sum(r.decisions for r in results if not r.duplicate) == 6
        batches = assert_fleet_learnt(replicas, 6, redis_url)
        assert sorted(batch.batch_id for batch in batches) == sorted(p.decision_id for p in steps)
    finally:
        for replica in replicas:
            replica.close()


def test_a_decision_that_reaches_the_store_after_its_request_ids_feedback_is_scored_once(
    redis_url: str,
) -> None:
    a = Replica(redis_url, start=False)  # no writer thread yet: its decisions wait in its outbox
    b = Replica(redis_url)
    try:
        early = b.request(np.full(DIM, 0.1), "agent-3")
        _written(b)
        late = a.request(np.full(DIM, 0.2), "agent-3")  # answered before the feedback, not yet written
        result = b.score("agent-3", 0.7)
        assert (result.decision_id, result.decisions) == (early.decision_id, 1)
        a.shared.start()  # the write lands after the feedback: its writer scores it with that feedback
        assert a.shared.wait_until(lambda: len(log_batches(redis_url)) == 2)
        assert a.shared.wait_until(lambda: a.shared.stats()["updates"] == 2)
        assert len(a.feedback.local) == 0
        assert b.score(late.decision_id, 0.1).duplicate  # once
        later = a.request(np.full(DIM, 0.3), "agent-3")  # made after that feedback: waits for its own
        _written(a)
        assert a.feedback.local.find(later.decision_id) is not None
        again = b.score("agent-3", 0.2)
        assert (again.decision_id, again.decisions, again.duplicate) == (later.decision_id, 1, False)
        batches = assert_fleet_learnt([a, b], 3, redis_url)
        rewards = {batch.batch_id: batch.events[0].reward for batch in batches}
        assert rewards == {early.decision_id: 0.7, late.decision_id: 0.7, later.decision_id: 0.2}
    finally:
        a.close()
        b.close()


def test_feedback_racing_the_answering_replicas_writes_still_scores_every_decision_once(
    redis_url: str,
) -> None:
    a, b = Replica(redis_url), Replica(redis_url)
    try:
        steps: list[PendingDecision] = []
        for run in range(30):
            steps += [a.request(np.full(DIM, step / 10), f"race-{run}") for step in range(3)]
            b.score(f"race-{run}", 0.5)  # at once: a's last writes of the run are often still in flight
        batches = assert_fleet_learnt([a, b], 90, redis_url)
        assert sorted(x.batch_id for x in batches) == sorted(p.decision_id for p in steps)
    finally:
        a.close()
        b.close()


def test_decisions_under_a_request_id_expire_with_the_feedback_ttl(redis_url: str) -> None:
    import time

    a, b = Replica(redis_url, feedback_ttl_s=1.0), Replica(redis_url, feedback_ttl_s=1.0)
    try:
        a.request(np.full(DIM, 0.1), "slow-1")
        a.request(np.full(DIM, 0.2), "slow-1")
        _written(a)
        time.sleep(2.5)  # both pending decisions expire in Redis (and their group with them)
        with pytest.raises(FeedbackError, match="no pending decision"):
            b.score("slow-1", 1.0)
        late = a.request(np.full(DIM, 0.3), "slow-1")  # a later call under the same request id
        _written(a)
        result = b.score("slow-1", 1.0)
        assert (result.decision_id, result.decisions) == (late.decision_id, 1)
        assert [batch.batch_id for batch in log_batches(redis_url)] == [late.decision_id]
    finally:
        a.close()
        b.close()


def test_snapshots_compact_the_log_and_a_late_replica_starts_from_all_updates(redis_url: str) -> None:
    first = Replica(redis_url, snapshot_every=10)
    try:
        rng = np.random.default_rng(3)
        contexts = []
        for i in range(35):
            x = rng.standard_normal(DIM) / 3
            contexts.append(x)
            pending = first.request(x)
            first.score(pending.decision_id, quality_for(x, pending.arm_id))
            if i == 20:
                assert first.shared.wait_until(lambda: first.shared.stats()["snapshots_written"] >= 1)
        assert first.shared.wait_until(lambda: first.shared.stats()["snapshots_written"] >= 3)
        remaining = log_batches(redis_url)
        assert len(remaining) < 35  # compacted: the snapshot holds the rest
        late = Replica(redis_url)
        try:
            stats = late.shared.stats()
            assert stats["updates"] == 35 and stats["snapshots_loaded"] == 1
            assert_same_policy(late.policy, first.policy)
        finally:
            late.close()
    finally:
        first.close()


def test_a_replica_with_learnt_state_seeds_an_empty_store(redis_url: str) -> None:
    policy = make_policy()
    rng = np.random.default_rng(4)
    for _ in range(12):
        x = rng.standard_normal(DIM) / 3
        decision = policy.select(x)
        policy.update(decision, quality_for(x, decision.arm_id))
    seeded = SharedState.connect(redis_url, LearnerFold(policy, updates=12))
    try:
        joiner = Replica(redis_url)
        try:
            assert joiner.shared.stats()["updates"] == 12
            assert_same_policy(joiner.policy, policy)
        finally:
            joiner.close()
    finally:
        seeded.close()


def test_answer_usage_reaches_every_replicas_cost_model_and_budget_pacer(redis_url: str) -> None:
    a, b = Replica(redis_url, costs=True), Replica(redis_url, costs=True)
    try:
        for i in range(8):
            a.request(np.full(DIM, i / 10), cost_usd=0.004)  # four times the budget: the weight must rise
        for replica in (a, b):
            assert replica.shared.wait_until(lambda r=replica: r.pacer.requests == 8), replica.shared.stats()
        assert a.pacer.state_dict() == b.pacer.state_dict() and a.pacer.cost_weight > 0.5
        assert a.cost_model.state_dict() == b.cost_model.state_dict()
        assert a.shared.stats()["updates"] == 0  # usage is not a reward update
        [usage] = {batch.batch_id[:6] for batch in log_batches(redis_url)}
        assert usage == "usage:"
    finally:
        a.close()
        b.close()


def test_a_foreign_log_entry_is_skipped_alike_by_every_replica(redis_url: str) -> None:
    a, b = Replica(redis_url), Replica(redis_url)
    store = RedisStore(parse_store_url(redis_url))
    try:
        first = a.request(np.full(DIM, 0.1))
        a.score(first.decision_id, 0.9)
        seq = store.client.incr(store.seq_key)
        store.client.xadd(store.log_key, {"s": seq, "e": pickle.dumps({"not": "ours"})})
        second = b.request(np.full(DIM, -0.1))
        b.score(second.decision_id, 0.2)
        for replica in (a, b):
            assert replica.shared.wait_until(lambda r=replica: r.shared.stats()["updates"] == 2)
            assert replica.shared.stats()["unreadable_entries"] == 1
        assert_same_policy(a.policy, b.policy, tolerance=0.0)
    finally:
        store.close()
        a.close()
        b.close()


def test_an_oversized_snapshot_is_refused_before_it_is_transferred(redis_url: str) -> None:
    store = RedisStore(parse_store_url(redis_url))
    try:
        store.client.hset(store.snapshot_key, mapping={"seq": 1, "entry_id": "1-0", "payload": b"x" * 2048})
        with pytest.raises(StateError, match="over the 1024-byte limit"):
            store.snapshot(max_bytes=1024)
    finally:
        store.close()


def test_a_replica_with_local_state_joining_a_used_store_adopts_the_store(redis_url: str) -> None:
    first = Replica(redis_url)
    try:
        pending = first.request(np.full(DIM, 0.3))
        first.score(pending.decision_id, 0.8)
        local = make_policy()  # learnt alone (say, from an old state file): the store must win
        rng = np.random.default_rng(9)
        for _ in range(5):
            x = rng.standard_normal(DIM) / 3
            local.update(local.select(x), 0.1)
        joined = SharedState.connect(redis_url, LearnerFold(local, updates=5))
        try:
            assert joined.stats()["updates"] == 1
            assert_same_policy(local, first.policy)
        finally:
            joined.close()
    finally:
        first.close()


def test_a_store_that_lost_its_data_is_rebased_on_a_replica_and_every_replica_converges(
    redis_url: str,
) -> None:
    a, b = Replica(redis_url), Replica(redis_url)
    store = RedisStore(parse_store_url(redis_url))
    try:
        rng = np.random.default_rng(11)
        for replica in (a, b, a, b, a):
            x = rng.standard_normal(DIM) / 3
            pending = replica.request(x)
            replica.score(pending.decision_id, quality_for(x, pending.arm_id))
        for replica in (a, b):
            assert replica.shared.wait_until(lambda r=replica: r.shared.stats()["updates"] == 5)
        store.client.delete(*store.client.keys(store.prefix + "*"))  # Redis restarted without persistence
        for replica in (a, b):
            assert replica.shared.wait_until(lambda r=replica: r.shared.stats()["store_resets"] == 1), (
                replica.shared.stats()
            )
        for replica in (b, a, b):
            x = rng.standard_normal(DIM) / 3
            pending = replica.request(x)
            replica.score(pending.decision_id, quality_for(x, pending.arm_id))
        for replica in (a, b):
            assert replica.shared.wait_until(lambda r=replica: r.shared.stats()["updates"] == 8), (
                replica.shared.stats()
            )
        late = Replica(redis_url)  # a fresh replica starts from the re-based store: all 8 updates
        try:
            assert late.shared.stats()["updates"] == 8
            assert_same_policy(a.policy, b.policy, tolerance=0.0)
            assert_same_policy(late.policy, a.policy, tolerance=0.0)
        finally:
            late.close()
    finally:
        store.close()
        a.close()
        b.close()
