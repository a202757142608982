"""A SIMULATED model pool for the demo: scripted models on a loopback OpenAI-compatible server.

Nothing here is a language model. Each simulated model looks the question up in a registry of generated
problems and answers it correctly with a probability set by a table (falling with difficulty, rising with
model size); otherwise it makes a slip at one step of a worked solution, so wrong answers scatter and a
majority vote over several samples genuinely helps. Prices are made up, of the order of real small,
medium and large hosted models, so the trade-off the router learns has a realistic shape.

Each sample is drawn from a generator keyed by (pool seed, model, question, sample index, how many
times that key was drawn before), not by the server's per-request generator, which is seeded by arrival
order across all questions and so differs from run to run under concurrency. As long as any one question
is not sent to the same model twice at once, a run repeats exactly; the samples of one request are
independent, and so are repeated requests (a second wave of a majority vote draws new samples).
`new_run()` forgets those counts, so that every policy compared on the pool meets the same answers (common
random numbers): without it, a fixed arm's outcomes would depend on what the policy run before it asked.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..model_spec import ModelSpec
from ..testing.openai_server import OpenAIServer, SimulatedModel, message_text
from .problems import Problem, apply_step

__all__ = [
    "DEFAULT_PROFILES",
    "SIMULATED_NOTICE",
    "ProblemRegistry",
    "SimModelProfile",
    "SimulatedPool",
    "worked_solution",
]

SIMULATED_NOTICE = (
    "SIMULATED model pool: scripted stand-ins on a loopback server (no real LLM is called); "
    "accuracies and prices are made up to show the trade-off, not measured."
)

# A generated question runs from "<Name> has <n> <items>." to "... have now?" (see problems.py).
_QUESTION = re.compile(r"[A-Z][a-z]+ has \d+ [a-z]+\.[^?]*?have now\?")
_OP_SYMBOL = {"add": "+", "sub": "-", "mul": "x", "div": "/"}


@dataclass(frozen=True)
class SimModelProfile:
    """One simulated model: its made-up prices and size, its latency, and P(correct) per difficulty 1..5."""

    name: str
    params_b: float
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    accuracy: tuple[float, float, float, float, float]
    latency_s: float = 0.01

    def __post_init__(self) -> None:
        if len(self.accuracy) != 5 or not all(0.0 <= p <= 1.0 for p in self.accuracy):
            raise ValueError(f"SimModelProfile.accuracy: got {self.accuracy!r}; give 5 values in [0, 1]")

    def p_correct(self, difficulty: int) -> float:
        return self.accuracy[min(max(difficulty, 1), 5) - 1]


# Small is cheap and good on easy problems only; large costs 50 times as much and is good on all but the
# hardest; medium is in between, and with a 5-sample majority vote it matches large on mid-difficulty
# problems for half the price. No single arm is best everywhere: that is what routing per request can use.
DEFAULT_PROFILES: tuple[SimModelProfile, ...] = (
    SimModelProfile("sim-small", 3.0, 0.10, 0.40, (0.97, 0.90, 0.45, 0.15, 0.05), latency_s=0.005),
    SimModelProfile("sim-medium", 14.0, 0.60, 2.40, (0.99, 0.96, 0.75, 0.40, 0.15), latency_s=0.01),
    SimModelProfile("sim-large", 70.0, 5.00, 20.00, (0.995, 0.99, 0.95, 0.90, 0.80), latency_s=0.02),
)


class ProblemRegistry:
    """Question text -> problem, so a simulated model can recognise a generated question inside any prompt."""

    def __init__(self, problems: Iterable[Problem] = ()) -> None:
        self._lock = threading.Lock()
        self._by_question: dict[str, Problem] = {}
        self.register(problems)

    def register(self, problems: Iterable[Problem]) -> None:
        with self._lock:
            for problem in problems:
                self._by_question[problem.question] = problem

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_question)

    def find(self, text: str) -> Problem | None:
        """The registered problem whose question appears in `text` (the last one, if several do)."""
        with self._lock:
            for match in reversed(_QUESTION.findall(text)):
                problem = self._by_question.get(match)
                if problem is not None:
                    return problem
        return None


def worked_solution(problem: Problem, correct: bool, rng: random.Random) -> tuple[str, int]:
    """(text, final answer): a step-by-step solution ending 'The answer is N.', with one slip if not correct."""
    slip_at = -1 if correct else rng.randrange(len(problem.steps))
    value = problem.start
    lines = ["Let me work through it step by step.", f"Start with {value}."]
    for index, step in enumerate(problem.steps):
        result = apply_step(value, step.op, step.operand)
        if index == slip_at:
            spread = max(2, abs(result) // 6)
            delta = rng.randint(1, spread)
            # Slips keep the amount positive, as a plausible miscalculation would.
            result += delta if rng.random() < 0.5 or result - delta < 1 else -delta
        lines.append(f"Step {index + 1}: {value} {_OP_SYMBOL[step.op]} {step.operand} = {result}.")
        value = result
    if not correct and value == problem.answer:  # the slip cancelled out; a wrong answer must be wrong
        value += 1
        lines.append(f"Adjusting for the remainder gives {value}.")
    lines.append(f"The answer is {value}.")
    return "\n".join(lines), value


class SimulatedPool:
    """The simulated models on one loopback `OpenAIServer`, and a `ModelSpec` for each.

    Use as a context manager; register the problems before sending them (questions the registry does not
    know get a fixed reply with the answer 0). `latency_scale` multiplies every profile's latency.
    """

    def __init__(
        self,
        problems: Iterable[Problem] = (),
        profiles: Sequence[SimModelProfile] = DEFAULT_PROFILES,
        *,
        seed: int = 0,
        latency_scale: float = 1.0,
        timeout_s: float = 30.0,
    ) -> None:
        if not profiles:
            raise ValueError("SimulatedPool.profiles: give at least one SimModelProfile")
        if latency_scale < 0:
            raise ValueError(f"SimulatedPool.latency_scale: got {latency_scale!r}; use a value >= 0")
        self.profiles = tuple(profiles)
        self.seed = seed
        self.timeout_s = timeout_s
        self.registry = ProblemRegistry(problems)
        self._draws_lock = threading.Lock()
        self._draws: dict[str, int] = {}
        self.server = OpenAIServer(
            models=[
                SimulatedModel(
                    name=profile.name,
                    answer=self._answer_fn(profile),
                    latency_s=profile.latency_s * latency_scale,
                )
                for profile in self.profiles
            ]
        )

    # -- lifecycle

    def start(self) -> SimulatedPool:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> SimulatedPool:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what callers use

    def new_run(self) -> None:
        """Start a new policy run: the next request for a (model, sample, question) gets its first draw again."""
        with self._draws_lock:
            self._draws.clear()

    def register(self, problems: Iterable[Problem]) -> None:
        self.registry.register(problems)

    @property
    def api_base(self) -> str:
        return self.server.api_base

    def spec(self, name: str) -> ModelSpec:
        """The `ModelSpec` of one simulated model (the pool must be started: it carries the server's URL)."""
        for profile in self.profiles:
            if profile.name == name:
                return ModelSpec(
                    model=f"hosted_vllm/{profile.name}",
                    name=profile.name,
                    api_base=self.server.api_base,
                    input_usd_per_mtok=profile.input_usd_per_mtok,
                    output_usd_per_mtok=profile.output_usd_per_mtok,
                    params_b=profile.params_b,
                    timeout_s=self.timeout_s,
                )
        raise KeyError(f"unknown simulated model {name!r}; pool: {[p.name for p in self.profiles]}")

    def specs(self) -> list[ModelSpec]:
        """One `ModelSpec` per simulated model, cheapest first."""
        return [self.spec(profile.name) for profile in self.profiles]

    def profile(self, name: str) -> SimModelProfile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise KeyError(f"unknown simulated model {name!r}; pool: {[p.name for p in self.profiles]}")

    # -- the scripted behaviour

    def _answer_fn(self, profile: SimModelProfile) -> Any:
        def answer(messages: list[dict[str, Any]], sample_index: int, _request_rng: random.Random) -> str:
            text = "\n".join(message_text(m) for m in messages if m.get("role") == "user")
            problem = self.registry.find(text)
            if problem is None:
                return f"({profile.name} is simulated and knows only the demo's problems.) The answer is 0."
            key = f"{self.seed}:{profile.name}:{sample_index}:{problem.question}"
            with self._draws_lock:
                occurrence = self._draws.get(key, 0)
                self._draws[key] = occurrence + 1
            rng = random.Random(f"uniscale-demo-pool:{key}:{occurrence}")
            correct = rng.random() < profile.p_correct(problem.difficulty)
            return worked_solution(problem, correct, rng)[0]

        return answer
