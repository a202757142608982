"""Many replicas on one real redis-server: four Router processes answering and learning concurrently and
a fifth that must equal one learner fed the store's updates in order; Redis killed and restarted mid-run."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

import numpy as np
import pytest
from test_shared_state import (
    DIM,
    Replica,
    assert_same_policy,
    log_batches,
    quality_for,
    single_learner,
)

from uniscale_lc.errors import FeedbackError
from uniscale_lc.testing.openai_server import SimulatedModel

pytest_plugins = ("fixtures_server",)

WORKERS = 4
REQUESTS = 50


def _router(url: str, api_base: str, feedback: bool) -> Any:
    """One app replica: the real Router on the loopback model server, with automatic feedback."""
    from uniscale_lc import Router
    from uniscale_lc.client import ModelClient, RetryPolicy
    from uniscale_lc.model_spec import ModelSpec
    from uniscale_lc.policy import LinUCB
    from uniscale_lc.strategies.config import MajorityVote, Single

    def score(messages: list[dict[str, Any]], completion: Any) -> float:
        return 1.0 if "42" in completion.text else 0.25

    models = [
        ModelSpec(model=name, api_base=api_base, timeout_s=10.0, gpu_usd_per_hour=price)
        for name, price in (("a", 1.0), ("b", 2.0))
    ]
    return Router(
        models=models,
        strategies=[Single(), MajorityVote(n=3)],
        policy=LinUCB(seed=2),
        client=ModelClient(retry=RetryPolicy(max_attempts=1), seed=0),
        feedback_fn=score if feedback else None,
        shared_state=url,
    )


def _check_against_one_learner(router: Any, url: str, name: str) -> int:
    from uniscale_lc.policy import LinUCB

    shared = router._shared.shared
    if not shared.wait_until(lambda: router.stats()["updates"] == WORKERS * REQUESTS, 60):
        raise AssertionError(f"{name} saw {router.stats()['updates']} updates")
    alone = LinUCB(seed=2)
    alone.bind(router.arm_space, router.policy.context_dim)
    assert_same_policy(router.policy, single_learner(log_batches(url), alone), tolerance=1e-9)
    return int(router.stats()["updates"])


def _worker(url: str, api_base: str, index: int, results: Any) -> None:
    """50 requests, each scored at once by the router's feedback_fn."""
    try:
        router = _router(url, api_base, feedback=True)
        for number in range(REQUESTS):
            router.complete(f"replica {index}, question {number}: what is 6 x 7?")
        results.put((index, "ok", _check_against_one_learner(router, url, f"worker {index}")))
        router.close()
    except BaseException as error:  # report every failure to the parent, which asserts
        results.put((index, f"{type(error).__name__}: {error}", None))


def _observer(url: str, api_base: str, results: Any) -> None:
    """The fifth process: serves no request, only folds what the others learn."""
    try:
        router = _router(url, api_base, feedback=False)
        results.put(("observer", "ok", _check_against_one_learner(router, url, "the observer")))
        router.close()
    except BaseException as error:
        results.put(("observer", f"{type(error).__name__}: {error}", None))


@pytest.mark.timeout(120)
def test_four_processes_learn_one_policy_that_a_fifth_equals(redis_url: str, make_server: Any) -> None:
    server = make_server([SimulatedModel("a", "the answer is 42"), SimulatedModel("b", "it is 41")])
    # One interpreter imports numpy, uniscale_lc and litellm once and forks the five replicas from it: spawn
    # would import them five times, fork would copy this process's threads' locks.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `make test` sets: BLAS threads only contend here
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["test_shared_state_processes", "uniscale_lc.router", "litellm", "openai"])
    results = context.Queue()
    processes = [context.Process(target=_observer, args=(redis_url, server.api_base, results))]
    processes += [
        context.Process(target=_worker, args=(redis_url, server.api_base, i, results)) for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=100) for _ in processes]
    for process in processes:
        process.join(timeout=20)
    assert all(status == "ok" for _, status, _ in reports), reports
    assert all(updates == WORKERS * REQUESTS for _, _, updates in reports)
    feedback = [batch for batch in log_batches(redis_url) if batch.reward_updates]
    assert len(feedback) == WORKERS * REQUESTS == len({batch.batch_id for batch in feedback})
    assert len({batch.origin for batch in feedback}) == WORKERS  # every worker's updates are in it
    assert server.request_count("a") + server.request_count("b") >= WORKERS * REQUESTS


@pytest.mark.timeout(120)
def test_redis_killed_and_restarted_mid_run_loses_and_doubles_nothing(private_redis) -> None:
    url = f"{private_redis.url}?namespace=restart"
    replicas = [Replica(url, socket_timeout_s=0.5, retry_interval_s=0.05) for _ in range(3)]
    failures: list[BaseException] = []
    scored: list[str] = []
    outage_requests = 0
    stop = threading.Event()
    rng = np.random.default_rng(7)

    def drive() -> None:
        nonlocal outage_requests
        count = 0
        while not stop.is_set() and count < 600:
            replica = replicas[count % len(replicas)]
            x = rng.standard_normal(DIM) / 3
            try:
                pending = replica.request(x, request_id=f"req-{count}")
                result = replica.score(f"req-{count}", quality_for(x, pending.arm_id))
                assert not result.duplicate
                scored.append(result.decision_id)
                if not private_redis.running:
                    outage_requests += 1
            except BaseException as error:
                failures.append(error)
            count += 1
            time.sleep(0.002)

    driver = threading.Thread(target=drive)
    try:
        driver.start()
        deadline = time.monotonic() + 30
        while len(scored) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        private_redis.kill()
        down_at = len(scored)
        while len(scored) < down_at + 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Feedback for another replica's decision cannot be served while the store is down: a clear error.
        stranger = replicas[0].request(np.zeros(DIM), request_id="stranger")
        with pytest.raises(FeedbackError, match="unreachable"):
            replicas[1].score("stranger", 1.0)
        assert replicas[0].score(stranger.decision_id, 1.0).quality == 1.0
        scored.append(stranger.decision_id)
        buffered = sum(r.shared.stats()["buffered"] for r in replicas)
        private_redis.start()
        while len(scored) < down_at + 100 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        driver.join(timeout=30)
    try:
        assert failures == [], failures[:3]
        assert outage_requests >= 30 and buffered > 0
        total = len(scored)
        for replica in replicas:
            ok = replica.shared.wait_until(
                lambda r=replica: r.shared.stats()["buffered"] == 0 and r.shared.stats()["updates"] == total,
                30,
            )
            assert ok, replica.shared.stats()
            assert replica.shared.stats()["reconnects"] >= 1
        batches = log_batches(url)
        ids = [batch.batch_id for batch in batches]
        assert len(ids) == len(set(ids)) == total  # nothing lost, nothing doubled
        assert sorted(ids) == sorted(scored)
        for replica in replicas:
            assert_same_policy(replica.policy, single_learner(batches))
    finally:
        for replica in replicas:
            replica.close()
