"""Feedback by request id racing the answering replica's writes, on a real redis-server.

Replica A answers an agent run of 3 model calls under one request id; replica B scores the request id at
once, while A's writer thread may still be writing the run's last decisions. Reports how many decisions
B's feedback found in the store itself, and how many of all decisions were learnt, each once (the rest
are scored by A's writer when their write sees the group's score mark; docs/scaling.md).

    python benchmarks/bench_group_feedback.py --runs 200
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import uuid

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np

from uniscale_lc.arms import ArmSpace
from uniscale_lc.feedback import FeedbackResult, FeedbackStore, PendingDecision
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import LinUCB
from uniscale_lc.shared_state import LearnerFold, SharedFeedback, SharedState, reward_updates
from uniscale_lc.strategies import Single
from uniscale_lc.testing.redis_server import RedisServer

DIM = 6


def learn(pending: PendingDecision, quality: float) -> tuple[object, FeedbackResult]:
    return reward_updates([(pending.decision, quality)]), FeedbackResult(
        pending.decision_id, pending.arm_id, quality, quality
    )


def replica(url: str) -> tuple[LinUCB, SharedState, SharedFeedback]:
    models = [ModelSpec(model=f"m{i}", input_usd_per_mtok=1.0, output_usd_per_mtok=1.0) for i in range(3)]
    policy = LinUCB(seed=1)
    policy.bind(ArmSpace.product(models, [Single()]), DIM)
    shared = SharedState.connect(url, LearnerFold(policy))
    return policy, shared, SharedFeedback(shared, FeedbackStore(), learn=learn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with RedisServer() as server:
        url = f"{server.url}?namespace=bench-{uuid.uuid4().hex[:8]}"
        (policy_a, shared_a, feedback_a), (_, shared_b, feedback_b) = replica(url), replica(url)
        found: collections.Counter[int] = collections.Counter()
        for run in range(args.runs):
            for step in range(3):
                decision = policy_a.select(np.full(DIM, step / 10))
                feedback_a.add(PendingDecision(decision, 0.0, 0.0, 0.0, request_id=f"run-{run}"))
            found[feedback_b.apply(f"run-{run}", 0.5, learn).decisions] += 1
        total = 3 * args.runs
        shared_b.wait_until(lambda: shared_b.stats()["updates"] == total, 30)
        learnt = shared_b.stats()["updates"]
        print(
            f"{args.runs} runs of 3 decisions on replica A, each scored at once on replica B: B's feedback "
            f"found {', '.join(f'{k} in {found[k]}' for k in sorted(found, reverse=True))} runs; "
            f"{learnt} of {total} decisions learnt ({shared_b.stats()['duplicates']} duplicate commits)"
        )
        shared_a.close()
        shared_b.close()
    return 0 if learnt == total else 1


if __name__ == "__main__":
    sys.exit(main())
