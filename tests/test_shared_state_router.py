"""`Router(..., shared_state=...)` and `UniScaleChat(..., shared_state=...)` on a real redis-server and a
loopback OpenAI-compatible server: replicas learn one policy, cost model and pacer; feedback by request id
on another replica; duplicates applied once; Redis down at start-up is a clear error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc import Router  # noqa: E402
from uniscale_lc.client import ModelClient  # noqa: E402
from uniscale_lc.errors import StateError  # noqa: E402
from uniscale_lc.policy import LinUCB  # noqa: E402
from uniscale_lc.policy.base import Decision  # noqa: E402
from uniscale_lc.strategies.config import MajorityVote, Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]


@pytest.fixture
def server(make_server: MakeServer) -> OpenAIServer:
    return make_server([SimulatedModel("a", "the answer is 42"), SimulatedModel("b", "it is 41")])


@pytest.fixture
def make_router(server: OpenAIServer, model_client: ModelClient, redis_url: str) -> Callable[..., Router]:
    routers: list[Router] = []

    def factory(**overrides: Any) -> Router:
        params: dict[str, Any] = {
            "models": [
                spec_for(server, "a", gpu_usd_per_hour=1.0),
                spec_for(server, "b", gpu_usd_per_hour=2.0),
            ],
            "strategies": [Single(), MajorityVote(n=3)],
            "client": model_client,
            "shared_state": redis_url,
            "policy": LinUCB(seed=2),
        }
        params.update(overrides)
        router = Router(**params)
        routers.append(router)
        return router

    yield factory
    for router in routers:
        router.close()


def _learnt(router: Router) -> dict[str, np.ndarray]:
    return _learnt_policy(router.policy)


def _wait(router: Router, updates: int, pacer_requests: int | None = None) -> None:
    """Until the replica has folded `updates` reward updates (and, if given, that many answers' usage:
    usage and rewards are separate log entries, so one may land a fold before the other)."""
    shared = router._shared.shared

    def caught_up() -> bool:
        if router.stats()["updates"] != updates:
            return False
        return pacer_requests is None or (router.pacer is not None and router.pacer.requests == pacer_requests)

    assert shared.wait_until(caught_up, 10), router.stats()["shared_state"]


def test_feedback_on_another_router_teaches_both_once(make_router: Callable[..., Router]) -> None:
    a, b = make_router(), make_router()
    completion = a.complete("what is 6 x 7?", request_id="req-7")
    result = b.feedback("req-7", 0.9)  # the load balancer sent the feedback elsewhere
    assert result.decision_id == completion.decision_id and not result.duplicate
    assert b.stats()["updates"] == 1  # read-your-writes
    assert a.feedback(completion.decision_id, 0.1).duplicate  # a retry on the first router: applied once
    _wait(a, 1)
    learnt_a, learnt_b = _learnt(a), _learnt(b)
    for key in learnt_a:
        np.testing.assert_array_equal(learnt_a[key], learnt_b[key], err_msg=key)
    # The learnt reward is the first feedback's quality: a fresh policy fed it equals both.
    alone = LinUCB(seed=2)
    alone.bind(a.arm_space, a.policy.context_dim)
    [batch] = [b for b in _log(a) if b.batch_id == completion.decision_id]
    [event] = batch.events
    alone.update(Decision(arm_id=event.arm_id, context=event.context), event.reward)
    assert event.reward == 0.9 and event.arm_id == completion.decision["arm"]
    learnt_alone = _learnt_policy(alone)
    for key in learnt_alone:
        np.testing.assert_allclose(learnt_alone[key], learnt_a[key], atol=1e-12, err_msg=key)
    assert b.stats()["shared_state"]["connected"] and a.stats()["arms"][event.arm_id]["pulls"] == 1


def _written(router: Router) -> None:
    """Until the router's writer thread has put its decisions in the store (about one round trip)."""
    shared = router._shared.shared
    assert shared.wait_until(lambda: shared.buffered == 0, 10), router.stats()["shared_state"]


def test_an_agent_run_under_one_request_id_is_scored_whole_on_another_router(
    make_router: Callable[..., Router],
) -> None:
    a, b = make_router(), make_router()
    steps = [a.complete(f"step {index}: what is 6 x 7?", request_id="agent-7") for index in range(3)]
    _written(a)
    result = b.feedback("agent-7", 0.8)  # the load balancer sent the feedback to another replica
    assert (result.decisions, result.duplicate) == (3, False)
    assert result.decision_id == steps[-1].decision_id
    assert b.stats()["updates"] == 3  # read-your-writes: all three folded
    assert sum(row["feedback"] for row in b.stats()["arms"].values()) == 3
    batches = [batch for batch in _log(a) if batch.reward_updates]
    assert sorted(batch.batch_id for batch in batches) == sorted(step.decision_id for step in steps)
    assert all(event.reward == 0.8 for batch in batches for event in batch.events)
    # A repeat, on either router, learns nothing.
    assert b.feedback("agent-7", 0.1).duplicate and a.feedback("agent-7", 0.1).duplicate
    _wait(a, 3)
    assert b.stats()["updates"] == 3 and len([x for x in _log(a) if x.reward_updates]) == 3
    assert sum(row["feedback"] for row in a.stats()["arms"].values()) == 0  # scored on b, counted there
    assert len(a.pending_decisions) == 0  # the repeat on a found them scored and dropped its local copies
    learnt_a, learnt_b = _learnt(a), _learnt(b)
    for key in learnt_a:
        np.testing.assert_array_equal(learnt_a[key], learnt_b[key], err_msg=key)


def test_feedback_sent_the_moment_an_agent_run_ends_still_scores_every_step_once(
    make_router: Callable[..., Router],
) -> None:
    a, b = make_router(), make_router()
    steps = [a.complete(f"step {index}: what is 6 x 7?", request_id="agent-8") for index in range(3)]
    b.feedback("agent-8", 0.6)  # no wait: a's last write may reach Redis after this feedback
    _wait(a, 3)
    _wait(b, 3)
    batches = [batch for batch in _log(a) if batch.reward_updates]
    assert sorted(batch.batch_id for batch in batches) == sorted(step.decision_id for step in steps)
    assert all(event.reward == 0.6 for batch in batches for event in batch.events)
    counted = [sum(row["feedback"] for row in r.stats()["arms"].values()) for r in (a, b)]
    assert sum(counted) == 3  # each step counted once, on the replica that committed it
    assert b.feedback("agent-8", 0.1).duplicate


def test_uniscale_chat_parent_run_id_groups_on_the_shared_path(
    server: OpenAIServer, model_client: ModelClient, redis_url: str
) -> None:
    import uuid

    from langchain_core.runnables import RunnableLambda

    from uniscale_lc import UniScaleChat

    models = [spec_for(server, "a"), spec_for(server, "b")]
    first = UniScaleChat(models=models, client=model_client, shared_state=redis_url)
    second = UniScaleChat(models=models, client=model_client, shared_state=redis_url)
    try:

        def agent(question: str) -> str:
            answer = first.invoke(question)
            return str(first.invoke(f"{question} again: {answer.content}").content)

        run_id = uuid.uuid4()
        RunnableLambda(agent).invoke("plan", config={"run_id": run_id})
        _written(first.router)
        assert second.feedback(str(run_id), 0.75).decisions == 2
        assert second.stats()["updates"] == 2
        assert second.feedback(str(run_id), 0.75).duplicate
        assert first.router._shared.shared.wait_until(lambda: first.stats()["updates"] == 2)
    finally:
        first.router.close()
        second.router.close()


def _learnt_policy(policy: LinUCB) -> dict[str, np.ndarray]:
    policy.score(np.zeros(policy.context_dim))  # every arm's slot, for a like-for-like view
    state = policy.state_dict()
    arrays = {"shared.gram": state["shared"]["gram"], "shared.target": state["shared"]["target"]}
    for arm_id, arm_state in state["per_arm"].items():
        arrays[f"{arm_id}.gram"], arrays[f"{arm_id}.target"] = arm_state["gram"], arm_state["target"]
    return arrays


def _log(router: Router) -> list[Any]:
    from uniscale_lc.shared_state import codec

    store = router._shared.shared.store
    return [codec.decode_batch(payload) for _, _, payload in store.read_after("0-0", 10_000, block=False)]


async def test_automatic_feedback_and_the_budget_pacer_are_shared(
    make_router: Callable[..., Router],
) -> None:
    scored: list[str] = []

    def feedback_fn(messages: list[dict[str, Any]], completion: Any) -> float:
        scored.append(completion.decision_id)
        return 1.0 if "42" in completion.text else 0.0

    a = make_router(feedback_fn=feedback_fn, budget_usd_per_request=1e-6)
    b = make_router(feedback_fn=feedback_fn, budget_usd_per_request=1e-6)
    for index in range(6):
        await (a if index % 2 else b).acomplete(f"question {index}: what is 6 x 7?")
    _wait(a, 6, pacer_requests=6)
    _wait(b, 6, pacer_requests=6)
    assert len(scored) == 6
    assert a.pacer.state_dict() == b.pacer.state_dict() and a.pacer.requests == 6  # one fleet budget
    assert a.cost_model.state_dict() == b.cost_model.state_dict()
    late = make_router(feedback_fn=feedback_fn, budget_usd_per_request=1e-6)
    assert late.stats()["updates"] == 6 and late.pacer.requests == 6  # a fresh replica starts from all


def test_router_with_redis_down_at_start_up_is_a_clear_error(
    server: OpenAIServer, model_client: ModelClient, private_redis: Any
) -> None:
    url = private_redis.url
    private_redis.kill()
    with pytest.raises(StateError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        Router(models=[spec_for(server, "a")], client=model_client, shared_state=url)


def test_uniscale_chat_takes_shared_state(
    server: OpenAIServer, model_client: ModelClient, redis_url: str
) -> None:
    from uniscale_lc import UniScaleChat

    first = UniScaleChat(
        models=[spec_for(server, "a"), spec_for(server, "b")], client=model_client, shared_state=redis_url
    )
    second = UniScaleChat(
        models=[spec_for(server, "a"), spec_for(server, "b")], client=model_client, shared_state=redis_url
    )
    try:
        message = first.invoke("what is 6 x 7?", config={"metadata": {"uniscale_request_id": "chat-1"}})
        assert (
            second.feedback("chat-1", 1.0).decision_id == message.response_metadata["uniscale"]["decision_id"]
        )
        assert second.stats()["updates"] == 1
        assert first.router._shared.shared.wait_until(lambda: first.stats()["updates"] == 1)
    finally:
        first.router.close()
        second.router.close()


def test_routers_keep_answering_while_redis_is_down_and_lose_nothing(
    server: OpenAIServer, model_client: ModelClient, private_redis: Any
) -> None:
    url = f"{private_redis.url}?namespace=outage"
    models = [spec_for(server, "a", gpu_usd_per_hour=1.0), spec_for(server, "b", gpu_usd_per_hour=2.0)]
    a, b = (Router(models=models, client=model_client, shared_state=url, policy=LinUCB(seed=2)) for _ in "ab")
    try:
        for index in range(4):
            a.complete(f"before {index}", request_id=f"before-{index}")
            b.feedback(f"before-{index}", 1.0)
        private_redis.kill()
        for index in range(6):  # answered from the local copy; feedback on the answering replica is kept
            a.complete(f"during {index}", request_id=f"during-{index}")
            assert not a.feedback(f"during-{index}", 0.5).duplicate
        assert a.stats()["shared_state"]["buffered"] > 0 and not a.stats()["shared_state"]["connected"]
        assert a.stats()["updates"] == 4  # nothing folded while the log is unreachable
        private_redis.start()
        for router in (a, b):
            assert router._shared.shared.wait_until(
                lambda r=router: r.stats()["updates"] == 10 and r.stats()["shared_state"]["buffered"] == 0, 20
            ), router.stats()["shared_state"]
        feedback = [batch for batch in _log(a) if batch.reward_updates]
        assert len(feedback) == len({batch.batch_id for batch in feedback}) == 10
        assert a.stats()["requests"] == 10 and a.stats()["failed_requests"] == 0
        for key, value in _learnt(a).items():
            np.testing.assert_array_equal(value, _learnt(b)[key], err_msg=key)
    finally:
        a.close()
        b.close()
