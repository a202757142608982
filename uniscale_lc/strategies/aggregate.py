"""Pure aggregation over samples: answer extraction, voting, early stopping, picking the best.

The live strategies and the offline replay call these same functions, so a replayed majority vote
is exactly the vote the live path would have taken.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# ----------------------------------------------------------------------------- answer extraction

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_ANSWER_MARKERS = re.compile(
    r"(?:final answer|answer is|answer:|####|therefore,?|so the answer is|result is)", re.IGNORECASE
)
_CHOICE_PATTERNS = (
    # Only the keywords ignore case: a case-blind letter read "the answer is a prime" as choice A.
    re.compile(r"(?i:answer|option|choice)\s*(?i:is|:)?\s*\(?([A-J])\)?(?![A-Za-z])"),
    re.compile(r"^\s*\(?([A-J])\)?[.):]?\s*$", re.MULTILINE),
    re.compile(r"\(([A-J])\)"),
)
_BOXED = "\\boxed{"


def normalise_number(text: str) -> str | None:
    """Canonical string for a number so that `1,000`, `1000.0` and `1000` vote together."""
    cleaned = text.replace(",", "").strip()
    if not cleaned:
        return None
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/", 1)
            value = float(numerator) / float(denominator)
        else:
            value = float(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(value):
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def extract_number(text: str) -> str | None:
    """The final number of a response: after an answer marker if there is one, else the last number."""
    if _BOXED in text:
        boxed = extract_boxed(text)
        if boxed is not None:
            found = _NUMBER.findall(boxed)
            if found:
                return normalise_number(found[-1])
    markers = list(_ANSWER_MARKERS.finditer(text))
    tail = text[markers[-1].end() :] if markers else text
    found = _NUMBER.findall(tail)
    if markers and found:
        return normalise_number(found[0])
    found = found or _NUMBER.findall(text)
    return normalise_number(found[-1]) if found else None


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter A-J, preferring an explicit 'answer is X'."""
    for pattern in _CHOICE_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return str(matches[-1]).upper()
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}`, with nested braces balanced."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth = 0
    begin = start + len(_BOXED)
    for index in range(begin, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                content = text[begin:index].strip()
                return content or None
            depth -= 1
    return None


def extract_text(text: str) -> str | None:
    """Normalised exact text: lower case, collapsed whitespace, no trailing punctuation."""
    normalised = " ".join(text.lower().split()).strip(" .!?;:")
    return normalised or None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "number": extract_number,
    "choice": extract_choice,
    "boxed": extract_boxed,
    "text": extract_text,
}


def get_extractor(extractor: str | Callable[[str], str | None]) -> Callable[[str], str | None]:
    """Resolve an extractor name or pass a callable through."""
    if callable(extractor):
        return extractor
    try:
        return EXTRACTORS[extractor]
    except KeyError:
        raise ValueError(
            f"extractor: unknown {extractor!r}; use one of {sorted(EXTRACTORS)} or a callable"
        ) from None


# ----------------------------------------------------------------------------- voting


@dataclass(frozen=True)
class VoteResult:
    """Outcome of a vote: the winning answer, the index of a sample that gave it, and the tally."""

    answer: str | None
    winner_index: int
    votes: dict[str, int]
    samples_used: int


def majority_vote(answers: Sequence[str | None]) -> VoteResult:
    """Most common non-empty answer; ties go to the answer seen first (deterministic, order-stable).

    With no extractable answer at all the first sample wins, so the caller still gets a response.
    """
    votes: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is None or answer == "":
            continue
        votes[answer] = votes.get(answer, 0) + 1
        first_seen.setdefault(answer, index)
    if not votes:
        return VoteResult(answer=None, winner_index=0, votes={}, samples_used=len(answers))
    winner = max(votes, key=lambda key: (votes[key], -first_seen[key]))
    return VoteResult(answer=winner, winner_index=first_seen[winner], votes=votes, samples_used=len(answers))


def leader_is_safe(votes: dict[str, int], remaining: int) -> bool:
    """True when no other answer can catch the leader with `remaining` samples still to draw.

    Ties at the end go to the earlier answer, but we demand a strict lead so the stop never changes
    the result the full vote would give.
    """
    if not votes:
        return remaining == 0
    counts = sorted(votes.values(), reverse=True)
    leader = counts[0]
    runner_up = counts[1] if len(counts) > 1 else 0
    return leader > runner_up + remaining


def early_stop_vote(answers: Sequence[str | None], n: int, wave_size: int) -> VoteResult:
    """Replay an early-stopping vote over pre-drawn answers: look at waves of `wave_size` until safe.

    `answers` holds at least the first n samples in draw order; `samples_used` says how many were drawn.
    """
    if n < 1 or wave_size < 1:
        raise ValueError("n and wave_size must be >= 1")
    limit = min(n, len(answers))
    drawn = 0
    while drawn < limit:
        drawn = min(limit, drawn + wave_size)
        result = majority_vote(answers[:drawn])
        if leader_is_safe(result.votes, limit - drawn):
            return result
    return majority_vote(answers[:limit])


def pick_best(scores: Sequence[float]) -> int:
    """Index of the highest finite score; ties to the earliest; all non-finite gives 0."""
    best_index = 0
    best_score = -math.inf
    for index, score in enumerate(scores):
        if math.isfinite(score) and score > best_score:
            best_index, best_score = index, score
    return best_index


def mean_logprob(token_logprobs: Sequence[float]) -> float:
    """Length-normalised log-probability of a sample; -inf when there are no tokens."""
    finite = [value for value in token_logprobs if math.isfinite(value)]
    return sum(finite) / len(finite) if finite else -math.inf


_SCORE = re.compile(r"(?:score|rating)\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_judge_score(text: str, max_score: int) -> float:
    """A judge's 1..max_score rating scaled to [0, 1]; NaN when the judge gave none."""
    match = _SCORE.search(text)
    found = match.group(1) if match else None
    if found is None:
        numbers = re.findall(r"\d+(?:\.\d+)?", text)
        found = numbers[0] if numbers else None
    if found is None:
        return math.nan
    value = min(max(float(found), 1.0), float(max_score))
    return (value - 1.0) / (max_score - 1.0)


_APPROVE = re.compile(r"\b(?:APPROVED|LGTM|no (?:errors|issues|changes) (?:found|needed))\b", re.IGNORECASE)


def critique_approves(text: str) -> bool:
    """Whether a critique says the draft needs no revision (the critic prompt asks for 'APPROVED')."""
    return bool(_APPROVE.search(text))
