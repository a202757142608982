"""Per-decision time (select + update) of uniscale-lc's LinUCB beside MABWiser's and contextualbandits' LinUCB.

Every policy sees the same seeded stream of contexts in the same process; each makes its own choices and
learns from a reward that is linear in the context for the arm it chose. After an untimed warm-up of
logged decisions, each timed decision is one select and one update. Run:

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_policy.py            # full table
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_policy.py --quick    # fewer decisions

The baselines are optional (install them into a separate venv, never into the project):

    python -m venv .venv-bench && .venv-bench/bin/pip install -e . -r benchmarks/requirements.txt
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # single-threaded BLAS for a fair comparison; set before numpy loads
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniscale_lc.arms import ArmSpace  # noqa: E402
from uniscale_lc.model_spec import ModelSpec  # noqa: E402
from uniscale_lc.policy import LinUCB  # noqa: E402
from uniscale_lc.strategies import BestOfN, MajorityVote, Reflection, Single  # noqa: E402

CONFIGS = [(8, 32), (8, 128), (64, 32), (64, 64), (64, 128), (512, 32), (512, 128)]
STRATEGIES = [
    Single(),
    BestOfN(n=2),
    BestOfN(n=4),
    MajorityVote(n=3),
    MajorityVote(n=5),
    MajorityVote(n=9),
    Reflection(rounds=1),
    Reflection(rounds=2),
]


def arm_space(arms: int) -> ArmSpace:
    """`arms` real arms: arms / 8 models x 8 strategies."""
    models = [
        ModelSpec(
            model=f"model-{index}",
            input_usd_per_mtok=0.1 * (index + 1),
            output_usd_per_mtok=0.4 * (index + 1),
            params_b=float(2 ** (index % 8)),
        )
        for index in range(max(1, arms // len(STRATEGIES)))
    ]
    return ArmSpace.product(models, STRATEGIES[: min(arms, len(STRATEGIES))])


class Stream:
    """Seeded contexts and a linear reward per arm index (the same for every policy)."""

    def __init__(self, arms: int, dim: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.weights = rng.standard_normal((arms, dim)) / np.sqrt(dim)
        self.contexts = rng.standard_normal((4096, dim)) / np.sqrt(dim)
        self.noise = 0.1 * rng.standard_normal(4096)

    def context(self, step: int) -> np.ndarray:
        return self.contexts[step % len(self.contexts)]

    def reward(self, step: int, arm: int) -> float:
        return float(self.weights[arm] @ self.context(step) + self.noise[step % len(self.noise)])


Step = Callable[[int], None]


def ours(arms: int, dim: int, stream: Stream, warmup: int, **options: Any) -> Step:
    space = arm_space(arms)
    index_of = {arm_id: index for index, arm_id in enumerate(space.ids)}
    policy = LinUCB(**options)
    policy.bind(space, dim)
    policy.warm_start(
        (stream.context(s), space.ids[s % arms], stream.reward(s, s % arms)) for s in range(warmup)
    )

    def step(s: int) -> None:
        decision = policy.select(stream.context(s))
        policy.update(decision, stream.reward(s, index_of[decision.arm_id]))

    return step


def mabwiser(arms: int, dim: int, stream: Stream, warmup: int) -> Step:
    from mabwiser.mab import MAB, LearningPolicy

    mab = MAB(list(range(arms)), LearningPolicy.LinUCB(alpha=1.0, l2_lambda=1.0), seed=0)
    steps = range(warmup)
    mab.fit(
        [s % arms for s in steps],
        [stream.reward(s, s % arms) for s in steps],
        np.stack([stream.context(s) for s in steps]),
    )

    def step(s: int) -> None:
        x = stream.context(s)[None, :]
        arm = int(mab.predict(x))
        mab.partial_fit([arm], [stream.reward(s, arm)], x)

    return step


def contextualbandits(arms: int, dim: int, stream: Stream, warmup: int) -> Step:
    from contextualbandits.online import LinUCB as CBLinUCB

    # float64 and Sherman-Morrison updates, like ours.
    model = CBLinUCB(nchoices=arms, alpha=1.0, lambda_=1.0, use_float=False, method="sm", random_state=1)
    steps = range(warmup)
    model.fit(
        np.stack([stream.context(s) for s in steps]),
        np.array([s % arms for s in steps]),
        np.array([stream.reward(s, s % arms) for s in steps]),
    )

    def step(s: int) -> None:
        x = stream.context(s)[None, :]
        arm = int(model.predict(x)[0])
        model.partial_fit(x, np.array([arm]), np.array([stream.reward(s, arm)]))

    return step


def plain_numpy(arms: int, dim: int, stream: Stream, warmup: int) -> Step:
    """The textbook disjoint LinUCB in plain numpy: one inverse per arm, all arms scored by one einsum."""
    inverse = np.repeat(np.eye(dim)[None], arms, axis=0)
    target = np.zeros((arms, dim))

    def learn(arm: int, x: np.ndarray, reward: float) -> None:
        u = inverse[arm] @ x
        inverse[arm] -= np.outer(u, u) / (1.0 + x @ u)
        target[arm] += reward * x

    for s in range(warmup):
        learn(s % arms, stream.context(s), stream.reward(s, s % arms))

    def step(s: int) -> None:
        x = stream.context(s)
        mean = np.einsum("kij,kj,i->k", inverse, target, x)
        variance = np.einsum("kij,i,j->k", inverse, x, x)
        arm = int(np.argmax(mean + 0.3 * np.sqrt(np.maximum(variance, 0.0))))
        learn(arm, x, stream.reward(s, arm))

    return step


def bytes_per_arm(arms: int, dim: int, observations: int = 1, **options: Any) -> float:
    """Memory our LinUCB holds per arm once every arm has learnt `observations` times (tracemalloc, net of
    the empty policy)."""
    import tracemalloc

    stream = Stream(arms, dim)
    space = arm_space(arms)
    steps = range(arms * observations)
    tracemalloc.start()
    policy = LinUCB(**options)
    policy.bind(space, dim)
    baseline = tracemalloc.get_traced_memory()[0]
    policy.warm_start((stream.context(s), space.ids[s % arms], stream.reward(s, s % arms)) for s in steps)
    used = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    return used / arms


def scale_rows(decisions: int, budget_s: float) -> list[dict[str, Any]]:
    """Issue 11's policy-at-scale aims: 1,000 arms at d=64 (hybrid) and 10,000 arms (shared model only).

    The 1,000-arm row warms up on one logged decision per arm (most arms keep few observations, the
    long tail of a large arm space); the "10obs" row on ten per arm (fresh form in 12-row blocks since arms
    keep up to 32 observations low-rank; every arm was dense at ten before); the "dense" row on 40 per arm,
    so every per-arm inverse is dense (more than 32 observations, policy/packed.py): the steady state of an
    arm space that has seen much traffic.
    """
    rows = []
    print(f"\nat scale: microseconds per decision (median / p99) and KB of state per arm; load {os.getloadavg()[0]:.1f}")
    for arms, dim, options, label, observations in (
        (1000, 64, {}, "ours_hybrid", 1),
        (1000, 64, {}, "ours_hybrid_10obs", 10),
        (1000, 64, {}, "ours_hybrid_dense", 40),
        (10000, 64, {"per_arm": False}, "ours_shared_only", 1),
    ):
        stream = Stream(arms, dim)
        warmup = arms * observations
        row: dict[str, Any] = {
            "arms": arms,
            "dim": dim,
            "observations_per_arm": observations,
            label: measure(ours(arms, dim, stream, warmup, **options), decisions, budget_s, warmup),
        }
        row["kb_per_arm"] = bytes_per_arm(arms, dim, observations, **options) / 1024
        if label == "ours_hybrid":
            row["plain_numpy"] = measure(plain_numpy(arms, dim, stream, warmup), decisions, budget_s, warmup)
        ours_cell = row[label]
        line = (
            f"  K={arms:>5} d={dim} ({observations} obs/arm): {label} {ours_cell['median_us']:.0f} / "
            f"{ours_cell['p99_us']:.0f} us (CPU {ours_cell['cpu_median_us']:.0f} us), "
            f"{row['kb_per_arm']:.1f} KB per arm"
        )
        if "plain_numpy" in row:
            ratio = row["plain_numpy"]["median_us"] / ours_cell["median_us"]
            line += f"; plain numpy disjoint LinUCB {row['plain_numpy']['median_us']:.0f} us ({ratio:.1f}x ours)"
        print(line, flush=True)
        rows.append(row)
    return rows


def measure(step: Step, decisions: int, budget_s: float, offset: int) -> dict[str, float]:
    """Median and p99 microseconds per decision, and the median CPU time of this thread (what a loaded
    machine's waits for a core do not inflate); stops early after `budget_s` (at least 50 decisions)."""
    for s in range(20):  # untimed: caches, lazy allocations
        step(offset + s)
    times, cpu_times = [], []
    started = time.perf_counter()
    for s in range(decisions):
        begin, cpu_begin = time.perf_counter_ns(), time.thread_time_ns()
        step(offset + 20 + s)
        cpu_times.append(time.thread_time_ns() - cpu_begin)
        times.append(time.perf_counter_ns() - begin)
        if len(times) >= 50 and time.perf_counter() - started > budget_s:
            break
    micro = np.array(times) / 1000.0
    return {
        "median_us": float(np.median(micro)),
        "p99_us": float(np.percentile(micro, 99)),
        "cpu_median_us": float(np.median(cpu_times)) / 1000.0,
        "n": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer decisions per cell")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--scale-only", action="store_true", help="only the 1,000- and 10,000-arm rows")
    args = parser.parse_args()
    decisions, budget_s = (300, 2.0) if args.quick else (2000, 8.0)
    if args.scale_only:
        scale = scale_rows(decisions, budget_s)
        if args.json:
            args.json.write_text(json.dumps({"scale": scale}, indent=2))
        return

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} (single-threaded BLAS for every library)"
    )
    baselines: dict[str, Callable[..., Step]] = {}
    for name, factory, module in (
        ("mabwiser", mabwiser, "mabwiser"),
        ("contextualbandits", contextualbandits, "contextualbandits"),
    ):
        try:
            __import__(module)
            baselines[name] = factory
        except Exception as error:  # an optional baseline must not stop the benchmark
            print(f"{name}: not available ({type(error).__name__}: {error}); skipped")
    contenders: dict[str, Callable[..., Step]] = {
        "ours_hybrid": lambda k, d, st, w: ours(k, d, st, w),
        "ours_disjoint": lambda k, d, st, w: ours(k, d, st, w, shared=False),
        **baselines,
    }
    print("microseconds per decision (select + update), median / p99; ratio = baseline median / ours")
    header = f"{'K':>4} {'d':>4} " + " ".join(f"{name:>22}" for name in contenders)
    print(header)
    results = []
    for arms, dim in CONFIGS:
        stream = Stream(arms, dim)
        warmup = max(2 * arms, 200)
        row: dict[str, Any] = {"arms": arms, "dim": dim}
        for name, factory in contenders.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    row[name] = measure(factory(arms, dim, stream, warmup), decisions, budget_s, warmup)
            except Exception as error:
                print(f"{name} failed at K={arms} d={dim}: {type(error).__name__}: {error}")
        cells = [
            f"{row[name]['median_us']:>10.0f} / {row[name]['p99_us']:>9.0f}" if name in row else f"{'-':>22}"
            for name in contenders
        ]
        print(f"{arms:>4} {dim:>4} " + " ".join(cells), flush=True)
        results.append(row)
    print("\nratios (baseline median / ours median):")
    for row in results:
        parts = []
        for ours_name in ("ours_hybrid", "ours_disjoint"):
            for name in baselines:
                if name in row and ours_name in row:
                    parts.append(
                        f"{name}/{ours_name}={row[name]['median_us'] / row[ours_name]['median_us']:.1f}x"
                    )
        print(f"  K={row['arms']:>3} d={row['dim']:>3}: " + ", ".join(parts))
    print("\ngrowth in K (ours median, same d):")
    for dim in sorted({d for _, d in CONFIGS}):
        cells = [
            (r["arms"], r["ours_hybrid"]["median_us"])
            for r in results
            if r["dim"] == dim and "ours_hybrid" in r
        ]
        if len(cells) > 1:
            (k0, t0), (k1, t1) = cells[0], cells[-1]
            print(
                f"  d={dim}: K {k0}->{k1} ({k1 / k0:.0f}x arms): {t0:.0f} -> {t1:.0f} us ({t1 / t0:.1f}x time)"
            )
    scale = scale_rows(decisions, budget_s)
    if args.json:
        args.json.write_text(json.dumps({"configs": results, "scale": scale}, indent=2))


if __name__ == "__main__":
    main()
