"""`Router`: the framework-free learning core every front-end (LangChain, server, LlamaIndex) runs on.

One request: featurise the conversation (the last user message), predict each candidate arm's cost, let
the policy pick the arm with the best `quality + bonus - cost penalty`, run its strategy through the
model client (a failing arm falls back to the next best one, and the failure is taught to the policy),
and return a `Completion` whose `decision` records the choice. The decision waits in the feedback store
until the caller scores it (`feedback`), or is scored at once by `feedback_fn`. No LangChain import here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .autosave import Autosaver
from .client import empty_usage
from .core.config import (
    RouterConfig,
    refuse_secrets,
)
from .core.engine import RoutingEngine, iterate_sync, run_sync
from .core.explain import explain_rows
from .core.feedback_path import pending_reward
from .core.messages import as_messages, prompt_text
from .core.persistence import load_tree, state_tree
from .core.results import (
    Completion,
    CompletionChunk,
    Outcome,
    RequestOptions,
    RouteResult,
    decision_record,
)
from .costs import estimate_tokens
from .errors import ConfigError
from .feedback import FeedbackResult, PendingDecision
from .store import load_state, save_state
from .strategies.execute import StrategyResult
from .tags import check_tags
from .warm_start import fit_outcomes

__all__ = [
    "Completion",
    "CompletionChunk",
    "RequestOptions",
    "RouteResult",
    "Router",
    "RouterConfig",
    "iterate_sync",
]

logger = logging.getLogger(__name__)


class Router(RoutingEngine):
    """Learns online which arm (model x test-time-scaling strategy) to run per request.

    `Router(models=[ModelSpec, ...], strategies=[...])` or `Router(arms=ArmSpace(...))`, with the fields of
    `RouterConfig`; or `Router(config)` with a `RouterConfig`. See docs/router.md.
    """

    def __init__(self, config: RouterConfig | None = None, /, *, label: str = "Router", **fields: Any):
        if config is None:
            refuse_secrets(fields, label)
            config = RouterConfig(**fields)
        elif fields:
            raise ConfigError(f"{label}: give a RouterConfig or its fields, not both (got {sorted(fields)})")
        super().__init__(config, label)
        self._save_lock = threading.Lock()
        self._load_report: list[str] = []
        if config.state_path is not None and Path(config.state_path).exists():
            self._load()
        if config.shared_state is not None:
            self._join_shared_state(config.shared_state)
        if config.state_path is not None:
            self._autosaver = Autosaver(self.save, config.autosave_interval_s)

    # ------------------------------------------------------------------ what it holds

    @property
    def load_report(self) -> list[str]:
        """What loading `state_path` at construction dropped or kept aside (empty when nothing)."""
        return list(self._load_report)

    # ------------------------------------------------------------------ the public request API

    async def acomplete(
        self,
        messages: str | Sequence[Mapping[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        model: str | None = None,
        request_id: str | None = None,
        run_id: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        slo_tpot_ms: float | None = None,
        cost_weight: float | None = None,
        budget_usd_per_request: float | None = None,
        tags: str | Sequence[str] | None = None,
        **provider_options: Any,
    ) -> Completion:
        """Answer `messages` (OpenAI chat format) with the arm the policy picks; see docs/router.md.

        `cost_weight` and `budget_usd_per_request` route this request only (never sent to a provider);
        `tags` are what the application knows about it (needs `tag_buckets`; docs/features.md, 'Request
        tags'); other unknown keyword arguments go to the provider as they are."""
        options = RequestOptions(
            tools,
            tool_choice,
            model,
            temperature,
            max_tokens,
            stop,
            slo_tpot_ms,
            provider_options or None,
            cost_weight,
            budget_usd_per_request,
            check_tags(tags),
        )
        return await self.arun(as_messages(messages), options, run_id=run_id, request_id=request_id)

    def complete(self, messages: str | Sequence[Mapping[str, Any]], **options: Any) -> Completion:
        """Sync twin of `acomplete` (runs on the client's background loop, never the caller's)."""
        return run_sync(self.acomplete(messages, **options))

    async def astream(
        self,
        messages: str | Sequence[Mapping[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        model: str | None = None,
        request_id: str | None = None,
        run_id: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        slo_tpot_ms: float | None = None,
        cost_weight: float | None = None,
        budget_usd_per_request: float | None = None,
        tags: str | Sequence[str] | None = None,
        **provider_options: Any,
    ) -> AsyncIterator[CompletionChunk]:
        """Token chunks for Single arms (one chunk for other strategies); the last carries the Completion."""
        options = RequestOptions(
            tools,
            tool_choice,
            model,
            temperature,
            max_tokens,
            stop,
            slo_tpot_ms,
            provider_options or None,
            cost_weight,
            budget_usd_per_request,
            check_tags(tags),
        )
        stream = self.arun_stream(as_messages(messages), options, run_id=run_id, request_id=request_id)
        # aclosing: a caller that stops reading (or is cancelled) closes the inner stream and its connection
        # now, on its own task, rather than leaving it to the loop's shutdown (docs/reliability.md).
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                yield chunk

    def stream(
        self, messages: str | Sequence[Mapping[str, Any]], **options: Any
    ) -> Iterator[CompletionChunk]:
        """Sync twin of `astream`."""
        return iterate_sync(self.astream(messages, **options))

    def route(
        self,
        messages: str | Sequence[Mapping[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        model: str | None = None,
        request_id: str | None = None,
        tags: str | Sequence[str] | None = None,
    ) -> RouteResult:
        """Pick an arm WITHOUT calling any model, for callers that run it themselves.

        The decision is kept pending with its predicted cost, so `feedback(decision_id, score)` teaches
        the policy as for any answered request.
        """
        options = RequestOptions(tools=tools, model=model, tags=check_tags(tags))
        request = self.prepare(as_messages(messages), options, request_id)
        decision, arm = self._select(request, request.candidates)
        predicted = request.predicted_cost.get(arm.id, 0.0)
        usage = {**empty_usage(), "cost_usd": predicted}
        result = StrategyResult(
            "", arm.model.model, arm.strategy.kind, usage=usage, details={"route_only": True}
        )
        pending = PendingDecision(
            decision=decision,
            cost_usd=predicted,
            reference_cost_usd=request.reference_cost_usd,
            cost_weight=request.cost_weight,
            request_id=request_id,
        )
        with self._lock:
            self._keep_pending(pending)
            self._stats.routed()
        self._autosave()
        record = decision_record(request, Outcome(arm, decision, result, []), pending.decision_id, None)
        return RouteResult(
            pending.decision_id, arm.id, arm.model.model, arm.strategy.label, predicted, record
        )

    async def aroute(self, messages: str | Sequence[Mapping[str, Any]], **options: Any) -> RouteResult:
        """Async twin of `route` (no model is called; only a synchronous autosave waits on the disk)."""
        return await asyncio.to_thread(self.route, messages, **options)

    # ------------------------------------------------------------------ feedback

    def feedback(self, key: Any, score: Any) -> FeedbackResult:
        """Score a past answer: `score` is its quality in [0, 1]; the policy learns it.

        `key` is the decision id (or the Completion / RouteResult), the run id or the request id. Repeated
        feedback on the same decision is a no-op returning the first result (`duplicate=True`). Raises
        `FeedbackError` for an unknown key or an invalid score.
        """
        result = self._apply_feedback(key, score)
        if not result.duplicate:
            self._autosave()
        return result

    async def afeedback(self, key: Any, score: Any) -> FeedbackResult:
        """Async twin of `feedback`: the state file (and the shared store) are written in a worker thread."""
        result = await self._aapply_feedback(key, score)
        if not result.duplicate:
            await self._aautosave()
        return result

    # ------------------------------------------------------------------ warm start

    def fit(
        self, records: Iterable[Any] | str | Path, *, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Warm start from labelled outcomes (an eval set) before or between live requests; see docs/warm_start.md.

        `records`: `LabelledOutcome`s, dicts with prompt / arm_id / quality (and optionally cost_usd,
        input_tokens, output_tokens, calls, tags) or (prompt, arm_id, quality[, cost_usd]) tuples; or an
        outcome-table directory, of which the arms this router is configured with are taught. Every record
        is checked first: a bad one raises `ConfigError` and nothing is taught. The policy learns each
        quality as it would learn live feedback; usage teaches the cost model. Returns a summary
        (records, arms_taught, context_ridge, per-arm counts and means); the state file is saved as after
        feedback. `progress(n)` is called as blocks of records are learnt (the CLI's progress).
        """
        if self._shared is not None:
            raise ConfigError(
                f"{self.label}.fit: this router shares its policy through shared_state; fit a router "
                "without shared_state, save it, and start the replicas from that state file"
            )
        if isinstance(records, (str, Path)):
            from .replay.warm import directory_records  # the replay package is only needed for tables

            records = directory_records(
                records, self._arm_space.ids, task_tags=self.config.tag_buckets > 0
            )
        summary = fit_outcomes(
            self._policy,
            self._cost_model,
            lambda prompt, tags: self.context(as_messages(prompt), tags),
            records,
            progress=progress,
        )
        self._stats.warm_started(summary["records"])
        self._autosave()
        return summary

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """Per-arm pulls, failures, feedback count, mean quality, mean reward and total cost."""
        summary = self._stats.summary()
        return {
            "requests": summary["requests"],
            "failed_requests": summary["failed_requests"],
            "routes": summary["routes"],
            "side_observations": summary["side_observations"],
            "warm_start_records": summary["warm_start_records"],
            "pending": len(self._feedback),
            "total_cost_usd": summary["total_cost_usd"],
            "cost_weight": self.cost_weight_now(),
            "arms": summary["arms"],
            "breakers": self._breakers.snapshot() if self._breakers is not None else {},
            "updates": self._shared.updates if self._shared is not None else _local_updates(summary),
            **({"shared_state": self._shared.stats()} if self._shared is not None else {}),
        }

    def explain(
        self, prompt: str | Sequence[Mapping[str, Any]], tags: str | Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """How every arm would score for `prompt` now: predicted quality, bonus, cost, penalty, bound.

        Sorted best first; nothing is learnt or called.
        """
        messages = as_messages(prompt)
        prompt_tokens = estimate_tokens(prompt_text(messages))
        return explain_rows(
            self._policy,
            self._cost_model,
            self.context(messages, check_tags(tags)),
            self._arm_space.ids,
            prompt_tokens,
            self.cost_weight_now(),
        )

    # ------------------------------------------------------------------ persistence

    def _state_tree(self) -> dict[str, Any]:
        """One consistent cut: every change spanning parts holds the same lock (see RoutingEngine)."""
        with self._lock:
            pacer = self._pacer.state_dict() if self._pacer is not None else None
            return state_tree(
                self._policy, self._cost_model, self._feedback, pacer, self._stats, self._arm_space
            )

    def close(self) -> None:
        """Save what autosave has pending and stop its thread (also done at interpreter exit); write what
        waits for the shared store (for up to 2 s) and leave it."""
        if self._autosaver is not None:
            self._autosaver.close()
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    async def aclose(self) -> None:
        """Async twin of `close`: the final save runs in a worker thread."""
        await asyncio.to_thread(self.close)

    def save(self, path: str | Path | None = None) -> Path:
        """Write policy, cost model, pending decisions, pacer and stats atomically (default: state_path)."""
        target = path if path is not None else self.config.state_path
        if target is None:
            raise ConfigError(f"{self.label}.save.path: no path given and no state_path configured")
        with self._save_lock:
            return save_state(target, self._state_tree())

    def _join_shared_state(self, url: str) -> None:
        """Fold the shared store into this router's policy, cost model and pacer (docs/scaling.md)."""
        from .shared_state.router_link import RouterLink  # the redis client is an optional extra

        self._shared = RouterLink.connect(
            url,
            policy=self._policy,
            cost_model=self._cost_model,
            pacer=self._pacer,
            local=self._feedback,
            feedback_ttl_s=self.config.feedback_ttl_s,
            updates=_local_updates(self._stats.summary()),
            reward_of=pending_reward,
            on_scored=lambda result: self._stats.scored(result.arm_id, result.quality, result.reward),
        )

    def _load(self) -> None:
        state_path = self.config.state_path
        assert state_path is not None
        self._load_report = load_tree(
            load_state(state_path),
            state_path,
            policy=self._policy,
            cost_model=self._cost_model,
            feedback=self._feedback,
            pacer=self._pacer,
            stats=self._stats,
            arm_space=self._arm_space,
        )
        for line in self._load_report:
            logger.warning("uniscale: loading %s: %s", state_path, line)


def _local_updates(summary: Mapping[str, Any]) -> int:
    """Reward updates a router's own policy received: one per feedback, failed arm and side observation."""
    arms = summary["arms"].values()
    return sum(int(arm["feedback"]) + int(arm["failures"]) for arm in arms) + int(summary["side_observations"])
