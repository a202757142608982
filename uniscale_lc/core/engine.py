"""`RoutingEngine`: the learning loop of the core: prepare, select, run with fallbacks, record, learn.

`uniscale_lc.router.Router` subclasses it with the public faces (complete, stream, route, feedback,
stats, persistence); front-ends call `arun` / `arun_stream`. No front-end import here. The parts it
drives are built in `parts.py`; feedback resolution and learning live in `feedback_path.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..arms import Arm
from ..client import empty_usage
from ..costs import cost_penalty, estimate_tokens
from ..errors import AllArmsFailedError, ConfigError, ModelCallError, RequestRejectedError
from ..feedback import PendingDecision
from ..loop_cleanup import watch_running_loop
from ..model_spec import ModelSpec
from ..policy import Decision
from ..side_observations import SampleArm, implied_arms, same_answer_arms
from ..strategies.config import Single
from ..strategies.execute import (
    CallOptions,
    StrategyResult,
    aclose_stream,
    add_usage,
    run_strategy,
    stream_single,
)
from ..tags import check_tags, tag_features
from .config import check_per_call_cost
from .feedback_path import FeedbackPath, ScoreHook
from .messages import featurized_text, prompt_text
from .parts import unavailable_models
from .request_check import check_request
from .results import (
    Completion,
    CompletionChunk,
    Outcome,
    PreparedRequest,
    RequestOptions,
    decision_record,
    plain_usage,
)
from .selection import candidate_arms, slo_gated, tool_arms, within_budget
from .sync_bridge import iterate_sync, run_sync

__all__ = ["RoutingEngine", "ScoreHook", "iterate_sync", "run_sync", "unavailable_models"]

logger = logging.getLogger(__name__)

# A run id, or (streaming) a function that knows it once the first chunk has reached the caller.
RunIdSource = str | Callable[[], str | None] | None


class RoutingEngine(FeedbackPath):
    """The learning parts of one router and the request path through them; holds no front-end types."""

    async def arun(
        self,
        messages: list[dict[str, Any]],
        options: RequestOptions,
        *,
        run_id: str | None = None,
        request_id: str | None = None,
        score: ScoreHook | None = None,
        parent_run_id: str | None = None,
    ) -> Completion:
        """One request from a front-end that already holds OpenAI messages; `score` overrides feedback_fn.

        `parent_run_id` (a LangChain parent run) groups decisions as `request_id` does: feedback on it
        scores every decision made under it."""
        request = self.prepare(messages, options, request_id)
        await watch_running_loop()  # litellm's clients of this loop close with it (asyncio.run's end)
        outcome = await self._run_with_fallbacks(request)
        completion, pending = self._finish(request, outcome, run_id, parent_run_id)
        await self._after_answer(self._score_hook(messages, score), completion, pending)
        return completion

    async def arun_stream(
        self,
        messages: list[dict[str, Any]],
        options: RequestOptions,
        *,
        run_id: RunIdSource = None,
        request_id: str | None = None,
        score: ScoreHook | None = None,
        parent_run_id: str | None = None,
    ) -> AsyncGenerator[CompletionChunk, None]:
        """Streaming twin of `arun`: a fallback is possible only before the first chunk reached the caller."""
        request = self.prepare(messages, options, request_id)
        await watch_running_loop()
        remaining: list[str] = list(request.candidates)
        failures: list[tuple[str, ModelCallError]] = []
        while True:
            decision, arm = self._select(request, remaining)
            if not isinstance(arm.strategy, Single):
                try:
                    result = await run_strategy(
                        self._client, self._spec(arm), arm.strategy, request.openai_messages, request.options
                    )
                except ModelCallError as error:
                    remaining = self._learn_failure(request, decision, arm, error, failures)
                    continue
                yield CompletionChunk(
                    text=result.text or "", decision_id=decision.decision_id, model=arm.model.model
                )
                break
            sent: list[str] = []
            raw_calls: list[dict[str, Any]] = []
            usage: dict[str, Any] | None = None
            finish_reason: str | None = None
            started = time.perf_counter()
            deltas = stream_single(self._client, self._spec(arm), request.openai_messages, request.options)
            try:
                async for delta in deltas:
                    if delta.usage is not None:
                        usage = delta.usage
                        continue
                    finish_reason = delta.finish_reason or finish_reason
                    calls = list(delta.tool_calls or [])
                    raw_calls.extend(calls)
                    if not delta.text and not calls:
                        continue
                    sent.append(delta.text or "")
                    yield CompletionChunk(
                        text=delta.text or "",
                        tool_calls=calls,
                        decision_id=decision.decision_id,
                        model=arm.model.model,
                    )
            except (GeneratorExit, asyncio.CancelledError):
                if sent:  # the caller stopped reading: what the provider sent was spent all the same
                    self._record_abandoned(
                        request,
                        Outcome(
                            arm,
                            decision,
                            self._abandoned_result(request, arm, sent, raw_calls, started),
                            failures,
                        ),
                        run_id() if callable(run_id) else run_id,
                        parent_run_id,
                    )
                raise
            except ModelCallError as error:
                if sent:  # tokens already reached the caller: no clean fallback
                    with self._lock:
                        self._learn_zero(decision)
                        self._stats.arm_failed(arm.id, request_failed=True)
                    self._record_breaker_failure(arm)
                    raise
                remaining = self._learn_failure(request, decision, arm, error, failures)
                continue
            finally:
                # Closed here, on this task, also when the caller stops reading (GeneratorExit) or is
                # cancelled: left to the loop's shutdown, its close would race httpx's (docs/reliability.md).
                await aclose_stream(deltas)
            result = self._streamed_result(arm, sent, raw_calls, finish_reason, usage, started)
            break
        resolved_run_id = run_id() if callable(run_id) else run_id
        completion, pending = self._finish(
            request, Outcome(arm, decision, result, failures), resolved_run_id, parent_run_id
        )
        await self._after_answer(self._score_hook(messages, score), completion, pending)
        yield CompletionChunk(
            completion=completion, decision_id=completion.decision_id, model=completion.model
        )

    @staticmethod
    def _abandoned_result(
        request: PreparedRequest, arm: Arm, texts: list[str], raw_calls: list[dict[str, Any]], started: float
    ) -> StrategyResult:
        """A stream the caller stopped reading: its usage never came, so it is estimated (prompt tokens as
        predicted, output as characters / 4, cost as the arm's predicted cost for the request)."""
        output_tokens = max(1, sum(len(text) for text in texts) // 4)
        usage = {
            **empty_usage(),
            "input_tokens": request.prompt_tokens,
            "output_tokens": output_tokens,
            "total_tokens": request.prompt_tokens + output_tokens,
            "calls": 1,
            "cost_usd": request.predicted_cost.get(arm.id, 0.0),
        }
        result = RoutingEngine._streamed_result(arm, texts, raw_calls, "abandoned", usage, started)
        result.details["abandoned"] = True
        return result

    def _record_abandoned(
        self, request: PreparedRequest, outcome: Outcome, run_id: str | None, parent_run_id: str | None
    ) -> None:
        """Count the pull and its cost, and keep the decision for feedback, as for a finished answer."""
        try:
            self._finish(request, outcome, run_id, parent_run_id)
            self._autosave()
        except Exception:  # never mask the caller's own exit from the stream
            logger.exception("uniscale: recording an abandoned stream failed")

    @staticmethod
    def _streamed_result(
        arm: Arm,
        texts: list[str],
        raw_calls: list[dict[str, Any]],
        finish_reason: str | None,
        usage: dict[str, Any] | None,
        started: float,
    ) -> StrategyResult:
        total = add_usage(empty_usage(), usage or {})
        total["latency_s"] = time.perf_counter() - started
        return StrategyResult(
            text="".join(texts),
            model=arm.model.model,
            kind="single",
            tool_calls=raw_calls or None,
            finish_reason=finish_reason,
            usage=total,
            details={"samples": 1, "streamed": True},
        )

    def tool_arms(self, arm_ids: Sequence[str]) -> list[str]:
        """The arms among `arm_ids` that can carry tool calls (Single strategy, supports_tools model)."""
        return tool_arms(self._arm_space, arm_ids)

    def candidates(self, tools: bool, model: str | None) -> tuple[str, ...]:
        """The arms a request may use: those of `model` if given, those that take tools if tools are given."""
        return candidate_arms(self._arm_space, tools, model, unavailable=self._unavailable)

    def prepare(
        self, messages: list[dict[str, Any]], options: RequestOptions, request_id: str | None
    ) -> PreparedRequest:
        """Candidates, context, cost predictions and call options of one request; no model is called."""
        if not messages:
            # The caller's mistake: refuse it before any arm is called (and so before any arm is penalised).
            raise ConfigError(
                "messages: got an empty list; pass at least one message, e.g. chat.invoke('Hello')"
            )
        check_request(messages, options)  # likewise a request no provider could take (not JSON, bad tools)
        tools = options.tools or None
        per_call_weight, budget = options.cost_weight, options.budget_usd_per_request
        if per_call_weight is not None or budget is not None:
            check_per_call_cost(per_call_weight, budget, self.label)
        extra = options.extra
        candidates = candidate_arms(
            self._arm_space,
            bool(tools),
            options.model,
            response_format=bool(extra) and extra.get("response_format") is not None,  # type: ignore[union-attr]
            unavailable=self._unavailable,
        )
        x = self.context(messages, options.tags)
        gate_record: dict[str, Any] | None = None
        if self.config.load_signals is not None:
            slo = options.slo_tpot_ms if options.slo_tpot_ms is not None else self.config.slo_tpot_ms
            if slo is not None:
                candidates, gate_record = self._slo_gate(candidates, float(slo))
        blocked: list[str] = []
        if self._breakers is not None and self._breakers.any_open():
            candidates, blocked = self._breakers.filter(
                candidates, {arm_id: self._arm_space[arm_id].model.display_name for arm_id in candidates}
            )
        prompt_tokens = estimate_tokens(prompt_text(messages))
        costs = self._cost_model.predict(prompt_tokens, candidates).cost_usd
        if budget is not None:
            keep = within_budget(costs, float(budget))
            if not keep.all():
                candidates = tuple(arm_id for arm_id, kept in zip(candidates, keep, strict=True) if kept)
                costs = costs[keep]
        weight = float(per_call_weight) if per_call_weight is not None else self.cost_weight_now()
        penalty, reference = cost_penalty(costs, weight)
        return PreparedRequest(
            x=x,
            candidates=candidates,
            penalties=dict(zip(candidates, penalty.tolist(), strict=True)),
            predicted_cost=dict(zip(candidates, costs.tolist(), strict=True)),
            reference_cost_usd=reference,
            cost_weight=weight,
            prompt_tokens=prompt_tokens,
            openai_messages=messages,
            options=self._call_options(options, tools),
            request_id=request_id,
            slo_gate=gate_record,
            breaker_blocked=blocked,
            budget_usd_per_request=None if budget is None else float(budget),
            penalty_array=penalty,
        )

    def _call_options(self, options: RequestOptions, tools: list[dict[str, Any]] | None) -> CallOptions:
        config = self.config
        extra = {key: value for key, value in (options.extra or {}).items() if value is not None}
        stop = options.stop or config.stop
        return CallOptions(
            temperature=options.temperature if options.temperature is not None else config.temperature,
            max_tokens=options.max_tokens if options.max_tokens is not None else config.max_tokens,
            stop=list(stop) if stop else None,
            tools=tools,
            tool_choice=options.tool_choice if tools else None,
            extra=extra or None,
        )

    def context(self, messages: Sequence[Mapping[str, Any]], tags: Sequence[str] = ()) -> np.ndarray:
        """The policy's context: prompt features, request tags (tag_buckets), live server load (load_signals)."""
        x = np.asarray(self._featurizer.transform(featurized_text(messages)), dtype=np.float64)
        buckets = self.config.tag_buckets
        if tags and not buckets:
            # The caller's mistake, refused before any arm is called (so nothing is taught).
            raise ConfigError(
                f"{self.label}: tags {list(tags)[:3]} were given but tag_buckets is 0, so the policy has no "
                "features for them; configure tag_buckets=64 (a new policy: the context grows) or drop the tags"
            )
        parts = [x]
        if buckets:
            parts.append(tag_features(check_tags(list(tags), "tags"), buckets))
        if self.config.load_signals is not None:
            parts.append(np.asarray(self.config.load_signals.context_features(), dtype=np.float64))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _slo_gate(
        self, candidates: tuple[str, ...], slo_tpot_ms: float
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        predicted = self.config.load_signals.predicted_tpot_by_api_base()
        return slo_gated(self._arm_space, candidates, predicted, slo_tpot_ms)

    def _spec(self, arm: Arm) -> ModelSpec:
        timeout = self.config.timeout
        if timeout is None:
            return arm.model
        spec = self._specs.get(arm.model.display_name)
        if spec is None:
            spec = self._specs[arm.model.display_name] = arm.model.model_copy(update={"timeout_s": timeout})
        return spec

    def _select(self, request: PreparedRequest, remaining: Sequence[str]) -> tuple[Decision, Arm]:
        if len(remaining) == 1:
            # One eligible arm: nothing to decide. The decision still carries the context, so feedback on
            # it teaches the policy as for any other.
            arm_id = remaining[0]
            decision = Decision(arm_id=arm_id, context=request.x, policy=self._policy_name)
            return decision, self._arm_space[arm_id]
        if len(remaining) == len(request.candidates) and request.penalty_array is not None:
            # No arm has failed yet: the candidates as prepared, penalties as the array (no dict lookups).
            decision = self._policy.select(request.x, request.candidates, request.penalty_array)
        else:
            decision = self._policy.select(request.x, list(remaining), request.penalties)
        return decision, self._arm_space[decision.arm_id]

    def _learn_failure(
        self,
        request: PreparedRequest,
        decision: Decision,
        arm: Arm,
        error: ModelCallError,
        failures: list[tuple[str, ModelCallError]],
    ) -> list[str]:
        """Teach the policy that this arm failed (quality 0) and return the arms still worth trying.

        A request the provider rejected (RequestRejectedError: 400, 404, 413, 422) is the caller's mistake:
        it is raised as is, and neither the arm nor its breaker learns anything from it."""
        if isinstance(error, RequestRejectedError):
            logger.info("uniscale: arm %s rejected the request (%s); not counted as a failure", arm.id, error)
            raise error
        logger.warning("uniscale: arm %s failed (%s); falling back", arm.id, error)
        failures.append((arm.id, error))
        tried = {arm_id for arm_id, _ in failures}
        remaining = [arm_id for arm_id in request.candidates if arm_id not in tried]
        give_up = not remaining or len(failures) > self.config.max_fallbacks
        with self._lock:
            self._learn_zero(decision)
            self._stats.arm_failed(arm.id)
            if give_up:
                self._stats.request_failed()
        self._record_breaker_failure(arm)
        self._autosave()
        if give_up:
            raise AllArmsFailedError(
                f"all {len(failures)} arms tried failed ({', '.join(a for a, _ in failures)}); last error: {error}",
                errors=list(failures),
            ) from error
        return remaining

    def _record_breaker_failure(self, arm: Arm) -> None:
        """Every failed call counts toward its model's breaker, before or after a first streamed token."""
        if self._breakers is not None and self._breakers.record_failure(arm.model.display_name):
            logger.warning("uniscale: circuit breaker opened for model %s", arm.model.display_name)

    async def _run_with_fallbacks(self, request: PreparedRequest) -> Outcome:
        remaining: list[str] = list(request.candidates)
        failures: list[tuple[str, ModelCallError]] = []
        while True:
            decision, arm = self._select(request, remaining)
            try:
                result = await run_strategy(
                    self._client, self._spec(arm), arm.strategy, request.openai_messages, request.options
                )
            except ModelCallError as error:
                remaining = self._learn_failure(request, decision, arm, error, failures)
                continue
            return Outcome(arm, decision, result, failures)

    def _finish(
        self, request: PreparedRequest, outcome: Outcome, run_id: str | None, parent_run_id: str | None = None
    ) -> tuple[Completion, PendingDecision]:
        """Record the answered decision and wrap the answer as a Completion."""
        pending = self._record(request, outcome, run_id, parent_run_id)
        result = outcome.result
        completion = Completion(
            text=result.text or "",
            tool_calls=list(result.tool_calls or []),
            finish_reason=result.finish_reason,
            model=outcome.arm.model.model,
            usage=plain_usage(result.usage),
            decision=decision_record(request, outcome, pending.decision_id, pending.run_id),
        )
        return completion, pending

    def _record(
        self, request: PreparedRequest, outcome: Outcome, run_id: str | None, parent_run_id: str | None = None
    ) -> PendingDecision:
        """Learn the cost, pace the budget, count the pull, and keep the decision for feedback."""
        if self._breakers is not None:
            self._breakers.record_success(outcome.arm.model.display_name)
        with self._lock:  # one cut: the cost learnt, the pull counted and the decision kept, or none of them
            return self._record_locked(request, outcome, run_id, parent_run_id)

    def _record_locked(
        self, request: PreparedRequest, outcome: Outcome, run_id: str | None, parent_run_id: str | None
    ) -> PendingDecision:
        usage = outcome.result.usage
        cost = float(usage["cost_usd"])
        if self._shared is None:  # shared: every replica's cost model and pacer learn it from the log
            self._cost_model.observe(
                outcome.arm.id,
                request.prompt_tokens,
                input_tokens=float(usage["input_tokens"]),
                output_tokens=float(usage["output_tokens"]),
                calls=float(usage["calls"]),
                latency_s=float(usage["latency_s"]),
            )
            with self._lock:
                if self._pacer is not None:
                    self._pacer.observe(cost)
        self._stats.answered(outcome.arm.id, cost)
        pending = PendingDecision(
            decision=outcome.decision,
            cost_usd=cost,
            reference_cost_usd=request.reference_cost_usd,
            cost_weight=request.cost_weight,
            run_id=run_id,
            request_id=request.request_id,
            parent_run_id=parent_run_id,
            implied_arms=self._implied_arms(outcome, request),
        )
        self._keep_pending(pending, usage, request.prompt_tokens)
        return pending

    def _implied_arms(self, outcome: Outcome, request: PreparedRequest) -> tuple[str, ...]:
        """Candidate arms of the same model that the answer's samples say would have answered the same."""
        details = outcome.result.details
        answers = details.get("sample_answers")
        if not self.config.side_observations or not answers or len(request.candidates) < 2:
            return ()
        space = self._arm_space
        sample_arms = [
            SampleArm(arm.id, arm.model.display_name, arm.strategy)
            for arm_id in request.candidates
            if (arm := space.get(arm_id)) is not None
        ]
        pulled = SampleArm(outcome.arm.id, outcome.arm.model.display_name, outcome.arm.strategy)
        implied = implied_arms(pulled, sample_arms, answers, str(details.get("extractor", "")))
        return same_answer_arms(details.get("answer"), implied)

    def _learn_zero(self, decision: Decision) -> None:
        """A failed arm teaches quality 0 (through the shared log when there is one)."""
        if self._shared is not None:
            self._shared.learn_failure(decision)
        else:
            self._policy.update(decision, 0.0)

    def _keep_pending(
        self, pending: PendingDecision, usage: Mapping[str, Any] | None = None, prompt_tokens: float = 0.0
    ) -> None:
        if self._shared is not None:
            dropped = self._shared.keep_pending(pending, usage, prompt_tokens)
        else:
            dropped = self._feedback.add(pending)
        if dropped:
            logger.info("uniscale: %d pending decisions expired or were evicted unscored", len(dropped))
