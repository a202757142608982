"""Update throughput and staleness of the shared policy on a real redis-server, against local updates.

All in one run, the default LinUCB over 3 models x 3 strategies with 64-dimensional contexts (the
default HashingFeaturizer), N feedbacks:

1. baseline: `policy.update(decision, reward)` in one process, no Redis (what a lone replica does);
2. commit: the same feedbacks through `SharedFeedback.apply` on one replica (resolve + commit + fold:
   three Redis round trips each), one thread, then `--threads` threads at once; with the AOF fsynced
   on every write (`appendfsync always`, nothing acknowledged is ever lost) and once a second;
3. fold: a second replica that joins afterwards and folds the whole log from Redis (read + decode +
   update): the rate at which a replica catches up;
4. staleness: while replica A commits as fast as it can, replica B samples how many updates it is behind
   the store's last sequence number (median and max of the samples).

    python benchmarks/bench_shared_state.py            # about 20 s
    python benchmarks/bench_shared_state.py --quick    # a few seconds

Prints each rate and its ratio to the baseline; docs/scaling.md quotes a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
import uuid

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the Makefile sets; before numpy is imported
import numpy as np

from uniscale_lc.arms import ArmSpace
from uniscale_lc.feedback import FeedbackResult, FeedbackStore, PendingDecision
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import LinUCB
from uniscale_lc.shared_state import LearnerFold, SharedFeedback, SharedState, reward_updates
from uniscale_lc.shared_state.redis_store import RedisStore, parse_store_url
from uniscale_lc.strategies import BestOfN, MajorityVote, Single
from uniscale_lc.testing.redis_server import RedisServer

DIM = 64


def make_policy() -> LinUCB:
    models = [
        ModelSpec(model=f"m{i}", input_usd_per_mtok=0.1 * 4**i, output_usd_per_mtok=0.3 * 4**i)
        for i in range(3)
    ]
    policy = LinUCB()
    policy.bind(ArmSpace.product(models, [Single(), MajorityVote(n=5), BestOfN(n=4)]), DIM)
    return policy


def contexts(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM)) / np.sqrt(DIM)


def learn(pending: PendingDecision, quality: float):
    return reward_updates([(pending.decision, quality)]), FeedbackResult(
        pending.decision_id, pending.arm_id, quality, quality
    )


def local_rate(xs: np.ndarray) -> float:
    policy = make_policy()
    decisions = [policy.select(x) for x in xs]
    started = time.perf_counter()
    for decision in decisions:
        policy.update(decision, 0.5)
    return len(xs) / (time.perf_counter() - started)


def shared_rate(url: str, xs: np.ndarray, threads: int) -> float:
    policy = make_policy()
    shared = SharedState.connect(url, LearnerFold(policy), snapshot_every=100_000)
    feedback = SharedFeedback(shared, FeedbackStore())
    pendings = []
    for x in xs:
        pending = PendingDecision(policy.select(x), 0.001, 0.001, 0.2)
        feedback.add(pending)
        pendings.append(pending)
    chunks = [pendings[i::threads] for i in range(threads)]

    def send(chunk: list[PendingDecision]) -> None:
        for pending in chunk:
            feedback.apply(pending.decision_id, 0.5, learn)

    workers = [threading.Thread(target=send, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    shared.close()
    return len(xs) / elapsed


def fold_rate(url: str, expected: int) -> float:
    started = time.perf_counter()
    shared = SharedState.connect(url, LearnerFold(make_policy()), start=False)
    elapsed = time.perf_counter() - started
    assert shared.stats()["updates"] == expected, shared.stats()
    shared.close()
    return expected / elapsed


def staleness(url: str, xs: np.ndarray) -> tuple[float, int, int]:
    writer_policy = make_policy()
    writer = SharedState.connect(url, LearnerFold(writer_policy), snapshot_every=100_000)
    reader = SharedState.connect(url, LearnerFold(make_policy()), snapshot_every=100_000)
    probe = RedisStore(parse_store_url(url))
    feedback = SharedFeedback(writer, FeedbackStore())
    done = threading.Event()
    samples: list[int] = []

    def sample() -> None:
        while not done.is_set():
            samples.append(max(0, probe.last_seq() - reader.applied_seq))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for x in xs:
        pending = PendingDecision(writer_policy.select(x), 0.001, 0.001, 0.2)
        feedback.add(pending)
        feedback.apply(pending.decision_id, 0.5, learn)
    done.set()
    sampler.join()
    for item in (writer, reader):
        item.close()
    probe.close()
    return statistics.median(samples), max(samples), len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 300 if args.quick else args.updates
    xs = contexts(count, 1)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    base = local_rate(xs)
    print(f"baseline local policy.update        {base:10.0f} updates/s")
    for fsync in ("always", "everysec"):
        with RedisServer(appendfsync=fsync) as server:
            print(f"redis-server {server.binary}, appendfsync {fsync}")
            for threads in (1, args.threads):
                url = f"{server.url}?namespace=bench-{uuid.uuid4().hex[:8]}"
                rate = shared_rate(url, xs, threads)
                print(
                    f"  shared feedback, {threads} thread(s)       {rate:10.0f} updates/s  ({rate / base:.3f}x baseline)"
                )
            folded = fold_rate(url, count)
            print(
                f"  fold of the log by a joiner        {folded:10.0f} updates/s  ({folded / base:.3f}x baseline)"
            )
            median, worst, taken = staleness(f"{server.url}?namespace=stale-{uuid.uuid4().hex[:8]}", xs)
            print(f"  staleness of a second replica while one commits flat out: median {median:.0f}, "
                  f"max {worst} updates behind ({taken} samples)")  # fmt: skip


if __name__ == "__main__":
    main()
