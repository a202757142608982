"""Warm start: teach a policy and a cost model labelled outcomes (an eval set) before any live traffic.

A labelled outcome says "arm A answered prompt P with quality Q (at this cost / usage)". The policy learns
the quality, exactly as live feedback teaches it (cost enters at selection time, not in what is learnt);
the cost model learns the usage where it is given. Every record is checked before anything is taught, so
one bad record teaches nothing. Pure and framework-free: `Router.fit`, `UniScaleChat.fit`, the CLI
`uniscale-lc fit` and the replay's `uniscale_warm` learner all go through `fit_outcomes`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .costs import CostModel, estimate_tokens
from .errors import ConfigError
from .policy.base import Decision, check_context
from .policy.linucb import LinUCB
from .policy.offline import cv_ridge
from .tags import check_tags

__all__ = ["FIT_RIDGES", "LabelledOutcome", "check_outcomes", "fit_outcomes", "labelled_split"]

_FIELDS = ("prompt", "arm_id", "quality", "cost_usd", "input_tokens", "output_tokens", "calls", "tags")
_USAGE_FIELDS = ("cost_usd", "input_tokens", "output_tokens", "calls")
# LinUCB context ridges (prior precision of prompt-feature weights) `fit` chooses from by cross-validation;
# none below the arm-mean ridge (1), whose prior already sets a fresh arm's bonus to about alpha.
FIT_RIDGES: tuple[float, ...] = (1.0, 10.0, 100.0)
_CV_FOLDS = 3
# Records learnt per progress report (each block ends with LinUCB's exact refresh: same numbers).
_PROGRESS_CHUNK = 2000


@dataclass(frozen=True)
class LabelledOutcome:
    """One arm's recorded answer to one prompt: its quality in [0, 1] and, optionally, what it cost.

    `input_tokens` / `output_tokens` / `calls` are totals over the strategy's calls (as live usage is);
    give both token counts to teach the cost model. `cost_usd` is kept for summaries (mean cost per arm).
    """

    prompt: str
    arm_id: str
    quality: float
    cost_usd: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    calls: float | None = None
    # The request's tags, as a live request would pass them (RouterConfig.tag_buckets, uniscale_lc/tags.py).
    tags: tuple[str, ...] = ()


def _as_fields(record: Any, owner: str) -> dict[str, Any]:
    """A record's fields from a LabelledOutcome, a mapping, or a (prompt, arm_id, quality[, cost]) tuple."""
    if isinstance(record, LabelledOutcome):
        return {name.name: getattr(record, name.name) for name in fields(record)}
    if isinstance(record, Mapping):
        unknown = sorted(str(key) for key in record if key not in _FIELDS)
        if unknown:
            raise ConfigError(f"{owner}: unknown field(s) {unknown}; a record has {list(_FIELDS)}")
        missing = [name for name in ("prompt", "arm_id", "quality") if name not in record]
        if missing:
            raise ConfigError(f"{owner}: missing {missing}; a record needs prompt, arm_id and quality")
        return dict(record)
    if isinstance(record, (tuple, list)) and 3 <= len(record) <= 4:
        return dict(zip(("prompt", "arm_id", "quality", "cost_usd"), record, strict=False))
    raise ConfigError(
        f"{owner}: got {type(record).__name__}; pass a LabelledOutcome, a dict with prompt/arm_id/quality, "
        "or a (prompt, arm_id, quality[, cost_usd]) tuple"
    )


def _number(value: Any, owner: str, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{owner}: got {value!r} ({type(value).__name__}); pass {what}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ConfigError(f"{owner}: got {value!r}; pass {what}")
    return number


def check_outcomes(records: Iterable[Any], arm_ids: Sequence[str]) -> list[LabelledOutcome]:
    """Every record validated and normalised to a `LabelledOutcome`, or a ConfigError naming the first bad one.

    The error names the record's index, the field and the fix (unknown arm id, quality outside [0, 1] or
    NaN, a wrong type, a negative cost); nothing is returned, so nothing is taught, when any record is bad.
    """
    known = set(arm_ids)
    checked: list[LabelledOutcome] = []
    for index, record in enumerate(records):
        owner = f"records[{index}]"
        values = _as_fields(record, owner)
        prompt = values["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{owner}.prompt: got {prompt!r:.60}; pass the prompt as a non-empty string")
        arm_id = values["arm_id"]
        if not isinstance(arm_id, str) or arm_id not in known:
            raise ConfigError(
                f"{owner}.arm_id: unknown {arm_id!r}; the router's arms are {sorted(known)[:5]}"
                f"{' ...' if len(known) > 5 else ''} (fit only arms it is configured with)"
            )
        quality = _number(values["quality"], f"{owner}.quality", 0.0, 1.0, "a finite score in [0, 1]")
        usage: dict[str, float | None] = {}
        for name in _USAGE_FIELDS:
            value = values.get(name)
            if value is None:
                usage[name] = None
                continue
            low = 1.0 if name == "calls" else 0.0
            usage[name] = _number(
                value, f"{owner}.{name}", low, math.inf, f"a finite number >= {low:g}, or None if unknown"
            )
        if (usage["input_tokens"] is None) != (usage["output_tokens"] is None):
            raise ConfigError(
                f"{owner}: input_tokens and output_tokens go together; give both (to teach the cost model) "
                "or neither"
            )
        tags = check_tags(values.get("tags"), f"{owner}.tags")
        checked.append(LabelledOutcome(prompt, arm_id, quality, **usage, tags=tags))
    if not checked:
        raise ConfigError("records: got none; pass at least one labelled outcome")
    return checked


def fit_outcomes(
    policy: Any,
    cost_model: CostModel,
    featurize: Callable[[str, tuple[str, ...]], np.ndarray],
    records: Iterable[Any],
    *,
    choose_ridge: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Teach `policy` each record's quality and `cost_model` its usage; returns a summary.

    `featurize(prompt, tags)` gives the policy's context, the same one a live request would get. Records are
    validated against the cost model's arm space and every context is computed and checked before the
    first is learnt. The policy's `warm_start` is used when it has one (LinUCB: one exact refresh at the
    end), else one `update` per record. `progress(n)` is called as each block of records has been learnt.

    With `choose_ridge`, a LinUCB that has learnt nothing yet first takes as `context_ridge` (the prior
    precision of its prompt-feature weights) the value of least 3-fold cross-validated error of per-arm
    ridge regressions on these records (intercept unpenalised, as LinUCB's arm mean is barely shrunk),
    from `FIT_RIDGES`: how much the prompt features can be trusted is what labelled data tells best, and
    with many arms an under-shrunk fit lets the argmax pick the luckiest arm (docs/warm_start.md).

    Summary: records, prompts, arms_taught, cost_observations, context_ridge (and whether CV chose it)
    and per arm the number of records, mean quality and mean cost (where costs were given).
    """
    arm_space = cost_model.arm_space
    checked = check_outcomes(records, arm_space.ids)
    contexts: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    context_dim = getattr(policy, "context_dim", None)
    for index, record in enumerate(checked):
        key = (record.prompt, record.tags)
        if key not in contexts:
            vector = np.asarray(featurize(record.prompt, record.tags), dtype=np.float64)
            if context_dim:
                vector = check_context(vector, int(context_dim), owner=f"records[{index}] features")
            contexts[key] = vector
    ridge_chosen = False
    if choose_ridge and _learnt_nothing(policy) and len(contexts) >= 2 * _CV_FOLDS:
        ridge = _cross_validated_ridge(checked, contexts, arm_space.ids)
        if ridge != policy.context_ridge:
            policy.context_ridge = ridge
            policy.bind(arm_space, policy.context_dim)  # a policy that learnt nothing loses nothing
        ridge_chosen = True
    logged = [(contexts[(record.prompt, record.tags)], record.arm_id, record.quality) for record in checked]
    warm_start = getattr(policy, "warm_start", None)
    for start in range(0, len(logged), _PROGRESS_CHUNK):
        chunk = logged[start : start + _PROGRESS_CHUNK]
        if callable(warm_start):
            warm_start(chunk)  # LinUCB: checked again (cheap), learnt, then one exact refresh
        else:
            for x, arm_id, quality in chunk:
                policy.update(Decision(arm_id=arm_id, context=x, policy="warm_start"), quality)
        if progress is not None:
            progress(len(chunk))
    cost_observations = 0
    for record in checked:
        if record.input_tokens is None or record.output_tokens is None:
            continue
        cost_model.observe(
            record.arm_id,
            float(estimate_tokens(record.prompt)),
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            calls=record.calls if record.calls is not None else 1.0,
            latency_s=0.0,  # recorded latency is not part of an outcome table
        )
        cost_observations += 1
    summary = _summary(checked, cost_observations)
    summary["context_ridge"] = getattr(policy, "context_ridge", None)
    summary["context_ridge_chosen_by_cv"] = ridge_chosen
    return summary


def _learnt_nothing(policy: Any) -> bool:
    """A bound LinUCB without any learnt statistic (so re-binding it with another prior loses nothing)."""
    if not isinstance(policy, LinUCB) or not policy.bound:
        return False
    state = policy.state_dict()
    shared = state.get("shared")
    return not state.get("per_arm") and (shared is None or int(shared.get("updates", 0)) == 0)


def _cross_validated_ridge(
    checked: Sequence[LabelledOutcome],
    contexts: Mapping[tuple[str, tuple[str, ...]], np.ndarray],
    arm_ids: Sequence[str],
) -> float:
    """`FIT_RIDGES`' best by `policy.offline.cv_ridge` on the (request x arm) mean-quality matrix."""
    requests = list(contexts)
    row_of = {request: row for row, request in enumerate(requests)}
    column_of = {arm_id: column for column, arm_id in enumerate(arm_ids)}
    sums = np.zeros((len(requests), len(arm_ids)))
    counts = np.zeros_like(sums)
    for record in checked:
        row = row_of[(record.prompt, record.tags)]
        sums[row, column_of[record.arm_id]] += record.quality
        counts[row, column_of[record.arm_id]] += 1
    taught = counts.sum(axis=0) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        quality = np.where(counts > 0, sums / counts, np.nan)[:, taught]
    design = np.array([contexts[request] for request in requests])
    ridge, _ = cv_ridge(design, quality, FIT_RIDGES, _CV_FOLDS, seed=0)
    return ridge


def _summary(checked: Sequence[LabelledOutcome], cost_observations: int) -> dict[str, Any]:
    per_arm: dict[str, dict[str, Any]] = {}
    for record in checked:
        entry = per_arm.setdefault(record.arm_id, {"records": 0, "quality": 0.0, "cost": 0.0, "costed": 0})
        entry["records"] += 1
        entry["quality"] += record.quality
        if record.cost_usd is not None:
            entry["cost"] += record.cost_usd
            entry["costed"] += 1
    arms = {
        arm_id: {
            "records": entry["records"],
            "mean_quality": entry["quality"] / entry["records"],
            "mean_cost_usd": entry["cost"] / entry["costed"] if entry["costed"] else None,
        }
        for arm_id, entry in sorted(per_arm.items())
    }
    return {
        "records": len(checked),
        "prompts": len({record.prompt for record in checked}),
        "arms_taught": len(arms),
        "cost_observations": cost_observations,
        "arms": arms,
    }


def labelled_split(
    n_questions: int, fraction: float = 0.3, seed: int = 20_241_202
) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, held-out) question indices, each sorted: a seeded `fraction` of the questions is labelled.

    Both parts are non-empty whenever there are at least two questions. The seed is a constant so that
    every replay seed and every learner sees the same split.
    """
    if not isinstance(n_questions, (int, np.integer)) or n_questions < 2:
        raise ConfigError(f"labelled_split.n_questions: got {n_questions!r}; need at least 2 questions")
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):
        raise ConfigError(f"labelled_split.fraction: got {fraction!r}; use a fraction in (0, 1), e.g. 0.3")
    count = min(max(1, round(fraction * int(n_questions))), int(n_questions) - 1)
    permutation = np.random.default_rng(seed).permutation(int(n_questions))
    return np.sort(permutation[:count]), np.sort(permutation[count:])
