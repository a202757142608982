"""`uniscale-lc demo`: UniScaleChat learns online, on a SIMULATED model pool, which arm each problem needs.

It runs seeded arithmetic word problems through a LangChain chain `prompt | UniScaleChat`, scores every
answer against the known result and reports it with `chat.afeedback` (what the router learns from), then
runs every fixed (model x strategy) arm on the same problems, learning-free, and prints one table: accuracy
and cost of UniScale against each fixed arm. Everything is local: the models are scripted stand-ins on a
loopback server (see `pool.py`); no real LLM is called and the prices are made up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import progress_bar
from ..strategies.aggregate import extract_number
from .pool import SIMULATED_NOTICE, SimulatedPool
from .problems import Problem, generate_problems

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

    from ..chat_model import UniScaleChat

__all__ = ["DemoReport", "Outcome", "PolicyResult", "add_subparser", "main", "run", "run_demo"]

SYSTEM_PROMPT = "Solve the arithmetic word problem step by step. End with 'The answer is N.'"
# Reward = correct - COST_WEIGHT * cost / (cost of the dearest arm): a wrong answer costs more than any arm.
COST_WEIGHT = 0.5
# These problems show their difficulty in length and in how many numbers they hold, not in their words,
# so the prompt statistics are weighted up against the hashed n-grams (a user's choice, documented).
STATS_WEIGHT = 6.0
# Requests sent together between learning steps: feedback from one chunk shapes the choices of the next.
CHUNK_SIZE = 10
FIXED_ARM_CONCURRENCY = 32
UNISCALE_NAME = "UniScale (LinUCB)"
# Enough requests that the last half (the window compared) shows what UniScale learnt, in about a minute.
DEFAULT_REQUESTS = 600


@dataclass(frozen=True)
class Outcome:
    """One answered problem: which arm answered it, whether it was right, and what it cost."""

    problem_id: int
    difficulty: int
    arm_id: str
    correct: bool
    cost_usd: float


@dataclass(frozen=True)
class PolicyResult:
    """How one policy (UniScale or a fixed arm) did over the problems, in request order."""

    name: str
    outcomes: tuple[Outcome, ...]

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def accuracy(self) -> float:
        return sum(o.correct for o in self.outcomes) / max(1, len(self.outcomes))

    @property
    def total_cost_usd(self) -> float:
        return sum(o.cost_usd for o in self.outcomes)

    @property
    def cost_per_request_usd(self) -> float:
        return self.total_cost_usd / max(1, len(self.outcomes))

    def _last_half(self) -> tuple[Outcome, ...]:
        return self.outcomes[len(self.outcomes) // 2 :]

    @property
    def last_half_accuracy(self) -> float:
        half = self._last_half()
        return sum(o.correct for o in half) / max(1, len(half))

    @property
    def last_half_cost_per_request_usd(self) -> float:
        half = self._last_half()
        return sum(o.cost_usd for o in half) / max(1, len(half))

    def last_half_reward(self, reference_cost_usd: float) -> float:
        """Mean reward in the last half as the router is taught it: correct - weight x cost / dearest."""
        penalty = COST_WEIGHT * self.last_half_cost_per_request_usd / reference_cost_usd if reference_cost_usd else 0
        return self.last_half_accuracy - penalty


@dataclass
class DemoReport:
    """What `run_demo` found. `fixed_arms` holds every arm of the space, run alone on the same problems."""

    requests: int
    seed: int
    uniscale: PolicyResult
    fixed_arms: list[PolicyResult]
    wall_s: float
    plot_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        """Always True: the demo's models are scripted stand-ins."""
        return True

    def arm(self, name: str) -> PolicyResult:
        for result in self.fixed_arms:
            if result.name == name:
                return result
        raise KeyError(f"no fixed arm {name!r}; arms: {[r.name for r in self.fixed_arms]}")

    @property
    def cheapest_arm(self) -> PolicyResult:
        return min(self.fixed_arms, key=lambda r: r.cost_per_request_usd)

    @property
    def dearest_arm(self) -> PolicyResult:
        return max(self.fixed_arms, key=lambda r: r.cost_per_request_usd)

    @property
    def most_accurate_arm(self) -> PolicyResult:
        return max(self.fixed_arms, key=lambda r: (r.accuracy, -r.cost_per_request_usd))

    @property
    def best_fixed_arm_last_half(self) -> PolicyResult:
        """The fixed arm with the best last-half reward at the demo's cost weight (what UniScale aims at)."""
        reference = max(r.last_half_cost_per_request_usd for r in self.fixed_arms)
        return max(self.fixed_arms, key=lambda r: r.last_half_reward(reference))

    def dominating_arms(self) -> list[PolicyResult]:
        """Fixed arms at least as accurate as UniScale in the last half for no more cost (one strictly)."""
        uni = self.uniscale
        accuracy, cost = uni.last_half_accuracy, uni.last_half_cost_per_request_usd
        return [
            r
            for r in self.fixed_arms
            if r.last_half_accuracy >= accuracy
            and r.last_half_cost_per_request_usd <= cost
            and (r.last_half_accuracy > accuracy or r.last_half_cost_per_request_usd < cost)
        ]

    def within_a_point_of_best_fixed(self) -> bool:
        """Issue 9's demo aim: in the last half, within 1 point of the best fixed arm's accuracy at no more
        than its cost, or a better reward than it outright."""
        uni, best = self.uniscale, self.best_fixed_arm_last_half
        reference = max(r.last_half_cost_per_request_usd for r in self.fixed_arms)
        cheaper = uni.last_half_cost_per_request_usd <= best.last_half_cost_per_request_usd
        close = uni.last_half_accuracy >= best.last_half_accuracy - 0.01
        return (cheaper and close) or uni.last_half_reward(reference) >= best.last_half_reward(reference)

    def choices(self, last_half: bool = False) -> Counter[str]:
        """How often UniScale picked each arm (over all requests, or the last half)."""
        outcomes = self.uniscale._last_half() if last_half else self.uniscale.outcomes
        return Counter(o.arm_id for o in outcomes)

    def choices_by_difficulty(self, last_half: bool = True) -> dict[int, Counter[str]]:
        outcomes = self.uniscale._last_half() if last_half else self.uniscale.outcomes
        table: dict[int, Counter[str]] = {}
        for outcome in outcomes:
            table.setdefault(outcome.difficulty, Counter())[outcome.arm_id] += 1
        return dict(sorted(table.items()))

    def learning_curve(self, window: int = 30) -> list[tuple[int, float, float]]:
        """(requests seen, accuracy, cost per request) of UniScale over a sliding window."""
        outcomes = self.uniscale.outcomes
        points = []
        for end in range(min(window, len(outcomes)), len(outcomes) + 1):
            chunk = outcomes[end - window if end >= window else 0 : end]
            points.append(
                (end, sum(o.correct for o in chunk) / len(chunk), sum(o.cost_usd for o in chunk) / len(chunk))
            )
        return points

    def table(self) -> str:
        """The comparison table: UniScale first, then the fixed arms from cheapest to dearest."""
        header = ("policy / arm", "accuracy", "USD / 1k req", "last half: accuracy", "USD / 1k req")
        rows = [header]
        ordered = [self.uniscale, *sorted(self.fixed_arms, key=lambda r: r.cost_per_request_usd)]
        for result in ordered:
            rows.append(
                (
                    result.name,
                    f"{100 * result.accuracy:5.1f} %",
                    f"{1000 * result.cost_per_request_usd:.4f}",
                    f"{100 * result.last_half_accuracy:5.1f} %",
                    f"{1000 * result.last_half_cost_per_request_usd:.4f}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
            )
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def summary(self) -> str:
        """The whole printed report: notice, table, what UniScale chose, and the comparison in words."""
        uni, cheap, dear = self.uniscale, self.cheapest_arm, self.dearest_arm
        lines = [
            SIMULATED_NOTICE,
            f"{self.requests} problems (seed {self.seed}), difficulty 1-5; wall time {self.wall_s:.1f} s.",
            "",
            self.table(),
            "",
            "UniScale's choices in the last half, by difficulty:",
        ]
        for difficulty, counts in self.choices_by_difficulty(last_half=True).items():
            picks = ", ".join(f"{arm} x{count}" for arm, count in counts.most_common(3))
            lines.append(f"  difficulty {difficulty}: {picks}")
        lines.append("")
        lines.append(
            f"UniScale: {100 * uni.accuracy:.1f} % accuracy at {1000 * uni.cost_per_request_usd:.4f} USD per 1k "
            f"requests overall; in the last half (after learning) {100 * uni.last_half_accuracy:.1f} % at "
            f"{1000 * uni.last_half_cost_per_request_usd:.4f}."
        )
        best = self.best_fixed_arm_last_half
        verdict = "within 1 point at no more cost, or better" if self.within_a_point_of_best_fixed() else "behind"
        lines.append(
            f"  last half vs the best fixed arm by reward ({best.name}: {100 * best.last_half_accuracy:.1f} % at "
            f"{1000 * best.last_half_cost_per_request_usd:.4f}): {verdict}"
        )
        dominating = self.dominating_arms()
        lines.append(
            "  fixed arms that beat UniScale on both accuracy and cost in the last half: "
            + (", ".join(r.name for r in dominating) if dominating else "none")
        )
        affordable = [r for r in self.fixed_arms if r.cost_per_request_usd <= uni.cost_per_request_usd]
        if affordable:
            best_cheaper = max(affordable, key=lambda r: r.accuracy)
            lines.append(
                f"  best fixed arm costing no more: {best_cheaper.name}, {100 * best_cheaper.accuracy:.1f} % "
                f"({100 * (uni.accuracy - best_cheaper.accuracy):+.1f} points for UniScale)"
            )
        as_good = [r for r in self.fixed_arms if r.accuracy >= uni.accuracy]
        if as_good:
            cheapest_good = min(as_good, key=lambda r: r.cost_per_request_usd)
            lines.append(
                f"  cheapest fixed arm at least as accurate: {cheapest_good.name}, "
                f"{100 * cheapest_good.accuracy:.1f} %, costing "
                f"{_ratio(cheapest_good.total_cost_usd, uni.total_cost_usd)} UniScale's spend"
            )
        lines.append(
            f"  range of the fixed arms: {cheap.name} {100 * cheap.accuracy:.1f} % at "
            f"{_ratio(cheap.total_cost_usd, uni.total_cost_usd)} UniScale's spend, up to {dear.name} "
            f"{100 * dear.accuracy:.1f} % at {_ratio(dear.total_cost_usd, uni.total_cost_usd)}."
        )
        lines += self.notes
        if self.plot_path:
            lines.append(f"plot written to {self.plot_path}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def result(r: PolicyResult) -> dict[str, Any]:
            return {
                "name": r.name,
                "accuracy": r.accuracy,
                "last_half_accuracy": r.last_half_accuracy,
                "last_half_cost_per_request_usd": r.last_half_cost_per_request_usd,
                "cost_per_request_usd": r.cost_per_request_usd,
                "total_cost_usd": r.total_cost_usd,
            }

        return {
            "simulated": True,
            "requests": self.requests,
            "seed": self.seed,
            "wall_s": self.wall_s,
            "uniscale": result(self.uniscale),
            "fixed_arms": [result(r) for r in self.fixed_arms],
            "uniscale_choices": dict(self.choices()),
            "best_fixed_arm_last_half": self.best_fixed_arm_last_half.name,
            "dominating_arms": [r.name for r in self.dominating_arms()],
            "within_a_point_of_best_fixed": self.within_a_point_of_best_fixed(),
        }


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


# ---------------------------------------------------------------------------------------------- running


def _outcome(problem: Problem, answer: Any) -> Outcome:
    """One row of the ledger, from the answer the chain returned: its arm and cost are in its metadata."""
    meta = (getattr(answer, "response_metadata", None) or {}).get("uniscale", {})
    correct = extract_number(str(answer.content)) == str(problem.answer)
    return Outcome(problem.id, problem.difficulty, str(meta.get("arm", "?")), correct, float(meta.get("cost_usd", 0.0)))


def _build_chain(chat: UniScaleChat) -> Runnable[dict[str, str], Any]:
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM_PROMPT), ("human", "{question}")])
    return prompt | chat


async def _run_chain(
    chat: UniScaleChat,
    problems: Sequence[Problem],
    chunk_size: int,
    progress: Callable[[int], None] | None,
) -> tuple[Outcome, ...]:
    """Send the problems in concurrent chunks; after each chunk, score every answer with `chat.afeedback`.

    Feedback goes in request order once the whole chunk is back, so every decision in a chunk sees the
    same learnt state and a run repeats exactly, whatever order the answers arrived in.
    """
    chain = _build_chain(chat)
    outcomes: list[Outcome] = []
    for start in range(0, len(problems), chunk_size):
        chunk = problems[start : start + chunk_size]
        answers = await chain.abatch(
            [{"question": p.question} for p in chunk], config={"max_concurrency": chunk_size}
        )
        for problem, answer in zip(chunk, answers, strict=True):
            outcome = _outcome(problem, answer)
            await chat.afeedback(answer, 1.0 if outcome.correct else 0.0)
            outcomes.append(outcome)
        if progress is not None:
            progress(len(chunk))
    return tuple(outcomes)


def _strategies() -> list[Any]:
    from ..strategies import MajorityVote, Single

    return [Single(), MajorityVote(n=5)]


async def _run_all(requests: int, seed: int, show_progress: bool, plot_path: str | None) -> DemoReport:
    from ..chat_model import UniScaleChat
    from ..features import HashingFeaturizer
    from ..policy import FixedArm, LinUCB

    started = time.perf_counter()
    problems = generate_problems(requests, seed=seed)
    with SimulatedPool(problems, seed=seed) as pool:
        models = pool.specs()
        strategies = _strategies()

        chat = UniScaleChat(
            models=models,
            strategies=strategies,
            policy=LinUCB(seed=seed),  # the library defaults
            featurizer=HashingFeaturizer(stats_weight=STATS_WEIGHT),
            cost_weight=COST_WEIGHT,
        )
        arm_ids = list(chat.arm_space.ids)
        total = requests * (1 + len(arm_ids))
        bar = progress_bar(total, "simulated requests", "req", enabled=show_progress)
        try:
            bar.set_postfix_str("UniScale learning")
            pool.new_run()
            uniscale = PolicyResult(UNISCALE_NAME, await _run_chain(chat, problems, CHUNK_SIZE, bar.update))
            fixed: list[PolicyResult] = []
            for arm_id in arm_ids:
                bar.set_postfix_str(f"fixed arm {arm_id}")
                pool.new_run()  # the same answers UniScale met, so the comparison is like for like
                fixed_chat = UniScaleChat(
                    models=models,
                    strategies=strategies,
                    policy=FixedArm(arm_id),
                    cost_weight=COST_WEIGHT,
                )
                outcomes = await _run_chain(fixed_chat, problems, FIXED_ARM_CONCURRENCY, bar.update)
                fixed.append(PolicyResult(arm_id, outcomes))
        finally:
            bar.close()
    report = DemoReport(
        requests=requests,
        seed=seed,
        uniscale=uniscale,
        fixed_arms=fixed,
        wall_s=time.perf_counter() - started,
    )
    if plot_path:
        written = write_plot(report, plot_path)
        if written:
            report.plot_path = plot_path
        else:
            report.notes.append("matplotlib is not installed: no plot (pip install 'uniscale-lc[plot]')")
    return report


def run_demo(
    requests: int = DEFAULT_REQUESTS, seed: int = 0, plot_path: str | None = None, show_progress: bool = True
) -> DemoReport:
    """Run the demo on the SIMULATED pool and return its report (print `report.summary()` to show it).

    Works from sync code only (it runs its own event loop); from async code, use `await arun_demo(...)`.
    """
    if requests < 2:
        raise ValueError(f"requests: got {requests!r}; use at least 2")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return asyncio.run(_run_all(requests, seed, show_progress, plot_path))


async def arun_demo(
    requests: int = DEFAULT_REQUESTS, seed: int = 0, plot_path: str | None = None, show_progress: bool = True
) -> DemoReport:
    """Async twin of `run_demo`."""
    if requests < 2:
        raise ValueError(f"requests: got {requests!r}; use at least 2")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return await _run_all(requests, seed, show_progress, plot_path)


# ---------------------------------------------------------------------------------------------- plot


def write_plot(report: DemoReport, path: str) -> bool:
    """Accuracy vs cost (every policy) and UniScale's learning curve; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    # Like with like: every dot is the same window, the last half of the requests.
    window = f"requests {report.requests // 2 + 1}-{report.requests}"
    for result in report.fixed_arms:
        x, y = 1000 * result.last_half_cost_per_request_usd, 100 * result.last_half_accuracy
        left.scatter([x], [y], color="tab:gray")
        left.annotate(result.name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    uni = report.uniscale
    left.scatter(
        [1000 * uni.last_half_cost_per_request_usd],
        [100 * uni.last_half_accuracy],
        color="tab:red",
        marker="*",
        s=180,
        label=f"{uni.name} (grey: each fixed arm alone)",
    )
    left.set_xscale("log")
    left.set_xlabel("cost, USD per 1k requests (log scale, simulated prices)")
    left.set_ylabel("accuracy, %")
    left.set_title(f"Last half ({window}): UniScale and every fixed arm", fontsize=10)
    left.legend(loc="lower right", fontsize=8)
    curve = report.learning_curve()
    if curve:
        steps = [point[0] for point in curve]
        right.plot(steps, [100 * point[1] for point in curve], color="tab:red", label="UniScale accuracy")
        best = report.best_fixed_arm_last_half
        right.axhline(
            100 * best.last_half_accuracy, color="tab:gray", linestyle="--", label=f"{best.name} (fixed, last half)"
        )
        right.set_xlabel("requests seen")
        right.set_ylabel("accuracy over the last 30 requests, %")
        twin = right.twinx()
        twin.plot(steps, [1000 * point[2] for point in curve], color="tab:blue", alpha=0.6, label="cost")
        twin.set_ylabel("USD per 1k requests (last 30)", color="tab:blue")
        right.legend(loc="lower right", fontsize=8)
    right.set_title("UniScale learning online")
    figure.suptitle(
        "uniscale-lc demo on a SIMULATED model pool (scripted models, made-up prices)", fontsize=10
    )
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


# ---------------------------------------------------------------------------------------------- CLI


def add_subparser(subparsers: Any) -> None:
    """Register `demo` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "demo",
        help="watch UniScaleChat learn on a SIMULATED model pool (offline, about a minute)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, default=DEFAULT_REQUESTS, help=f"problems to route (default {DEFAULT_REQUESTS})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the problems and the simulation")
    parser.add_argument(
        "--plot", default=None, metavar="PATH", help="write a PNG plot here (needs matplotlib)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    if args.requests < 2:
        print(f"--requests: got {args.requests}; use at least 2", file=sys.stderr)
        return 2
    report = run_demo(
        requests=args.requests, seed=args.seed, plot_path=args.plot, show_progress=not args.no_progress
    )
    print(report.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="uniscale-lc demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
