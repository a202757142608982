"""Seeded arithmetic word problems of difficulty 1..5: the demo's workload, pure and deterministic.

Difficulty sets the number of steps (1..5) and the size of the numbers. Each problem keeps its steps, so
the simulated models can write a worked solution (and make a plausible mistake in it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["DIFFICULTIES", "Operation", "Problem", "Step", "apply_step", "generate_problems", "make_problem"]

DIFFICULTIES: tuple[int, ...] = (1, 2, 3, 4, 5)

Operation = Literal["add", "sub", "mul", "div"]

# Per difficulty: (largest starting amount, largest added/removed amount, largest multiplier/divisor).
_SCALE: dict[int, tuple[int, int, int]] = {
    1: (20, 10, 3),
    2: (50, 25, 4),
    3: (120, 60, 5),
    4: (400, 150, 7),
    5: (999, 400, 9),
}
_NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemi", "Lucia")
_ITEMS = ("apples", "marbles", "stamps", "books", "coins", "stickers", "shells", "pencils", "cards", "beads")
_ADD = ("{name} buys {k} more.", "A friend gives {name} {k} more.", "{name} finds another {k}.")
_SUB = ("{name} gives away {k}.", "{name} sells {k} of them.", "{name} loses {k}.")
_MUL = ("{name} ends up with {k} times as many.", "The collection grows {k}-fold.")
_DIV = (
    "{name} splits them equally into {k} boxes and keeps one box.",
    "{name} divides them into {k} equal piles and keeps one pile.",
)


@dataclass(frozen=True)
class Step:
    """One operation of a problem: `op` applied with `operand` to the running amount."""

    op: Operation
    operand: int
    sentence: str


@dataclass(frozen=True)
class Problem:
    """A word problem: the question text, its integer answer, and how it was built."""

    id: int
    question: str
    answer: int
    difficulty: int
    start: int
    steps: tuple[Step, ...]


def apply_step(value: int, op: Operation, operand: int) -> int:
    """The running amount after one step (integer division, as a slip in a worked solution may need)."""
    if op == "add":
        return value + operand
    if op == "sub":
        return value - operand
    if op == "mul":
        return value * operand
    return value // operand


def make_problem(problem_id: int, difficulty: int, rng: random.Random) -> Problem:
    """One problem of `difficulty` (1..5 steps) drawn from `rng`; the amount stays positive throughout."""
    if difficulty not in _SCALE:
        raise ValueError(f"difficulty: got {difficulty!r}; use one of {DIFFICULTIES}")
    max_start, max_delta, max_factor = _SCALE[difficulty]
    name = rng.choice(_NAMES)
    items = rng.choice(_ITEMS)
    start = rng.randint(max(2, max_start // 5), max_start)
    value = start
    steps: list[Step] = []
    previous: Operation | None = None
    for _ in range(difficulty):
        choices: list[Operation] = ["add", "sub"]
        if previous not in ("mul", "div") and value <= 2000:
            choices.append("mul")
        divisors = [k for k in range(2, max_factor + 1) if value % k == 0 and value // k >= 2]
        if previous not in ("mul", "div") and divisors:
            choices.append("div")
        op = rng.choice(choices)
        if op == "add":
            operand = rng.randint(2, max_delta)
        elif op == "sub":
            if value <= 3:
                op, operand = "add", rng.randint(2, max_delta)
            else:
                operand = rng.randint(1, min(max_delta, value - 2))
        elif op == "mul":
            operand = rng.randint(2, max_factor)
        else:
            operand = rng.choice(divisors)
        template = rng.choice({"add": _ADD, "sub": _SUB, "mul": _MUL, "div": _DIV}[op])
        steps.append(Step(op=op, operand=operand, sentence=template.format(name=name, k=operand)))
        value = apply_step(value, op, operand)
        previous = op
    question = " ".join(
        [
            f"{name} has {start} {items}.",
            *(step.sentence for step in steps),
            f"How many {items} does {name} have now?",
        ]
    )
    return Problem(
        id=problem_id, question=question, answer=value, difficulty=difficulty, start=start, steps=tuple(steps)
    )


def generate_problems(count: int, seed: int = 0, difficulties: Sequence[int] = DIFFICULTIES) -> list[Problem]:
    """`count` problems with difficulties drawn uniformly from `difficulties`; the same seed, the same list.

    Seeding uses a string, which `random` hashes with SHA-512, so the list is identical across processes and
    machines (Python's salted `hash()` is never involved). Question texts are unique within the list.
    """
    if count < 0:
        raise ValueError(f"count: got {count!r}; use 0 or more")
    pool = tuple(difficulties)
    if not pool or any(d not in _SCALE for d in pool):
        raise ValueError(f"difficulties: got {difficulties!r}; use a non-empty subset of {DIFFICULTIES}")
    rng = random.Random(f"uniscale-demo-problems:{seed}")
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < count:
        problem = make_problem(len(problems), rng.choice(pool), rng)
        if problem.question in seen:  # rare at difficulty 1; keeps the prompt -> problem lookup exact
            continue
        seen.add(problem.question)
        problems.append(problem)
    return problems
