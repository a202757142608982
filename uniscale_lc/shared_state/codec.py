"""Versioned JSON payloads of the shared store: update batches, snapshots, pending decisions, results.

Same data safety as the state file (`store.py`): no pickle, every payload carries its format and
version, its size is checked before it is parsed, and every field is validated after; a payload that
fails any check raises `StateError` and is never half-applied. Floats travel as JSON numbers (Python
writes the shortest text that reads back to the same bits), so every replica folds identical values;
arrays in snapshots travel as base64 of their little-endian bytes (exact, and 2.7x smaller than text).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StateError
from ..feedback import FeedbackResult, PendingDecision
from ..store import _flatten, _restore

__all__ = [
    "FORMAT",
    "MAX_BATCH_BYTES",
    "MAX_PENDING_BYTES",
    "MAX_SNAPSHOT_BYTES",
    "VERSION",
    "Batch",
    "CostObservation",
    "RewardUpdate",
    "Snapshot",
    "UpdateEvent",
    "decode_batch",
    "decode_pending",
    "decode_result",
    "decode_snapshot",
    "encode_batch",
    "encode_pending",
    "encode_result",
    "encode_snapshot",
]

FORMAT = "uniscale-lc-shared"
VERSION = 1
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_PENDING_BYTES = 1024 * 1024
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
MAX_CONTEXT_DIM = 1 << 16
MAX_ID_CHARS = 512
MAX_EVENTS_PER_BATCH = 4096
_ALLOWED_DTYPES = ("<f8", "<i8", "<u8", "|b1", "<f4", "<i4", "<u4")


@dataclass(frozen=True)
class RewardUpdate:
    """One `policy.update(decision, reward)`: exactly what the policy receives, nothing more."""

    context: np.ndarray
    arm_id: str
    reward: float


@dataclass(frozen=True)
class CostObservation:
    """One answered request's usage: feeds the cost model and the budget pacer of every replica."""

    arm_id: str
    prompt_tokens: float
    input_tokens: float
    output_tokens: float
    calls: float
    latency_s: float
    cost_usd: float


UpdateEvent = RewardUpdate | CostObservation
_COST_FIELDS = ("prompt_tokens", "input_tokens", "output_tokens", "calls", "latency_s", "cost_usd")


@dataclass(frozen=True)
class Batch:
    """Events that are applied together, once: `batch_id` is the idempotence key of the commit."""

    batch_id: str
    origin: str
    events: tuple[UpdateEvent, ...]

    @property
    def reward_updates(self) -> int:
        return sum(isinstance(event, RewardUpdate) for event in self.events)


def _dumps(kind: str, body: Mapping[str, Any], limit: int) -> bytes:
    """The versioned envelope of a payload; refused when over `limit` (readers refuse it too)."""
    payload = json.dumps(
        {"format": FORMAT, "v": VERSION, "type": kind, **body}, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")
    if len(payload) > limit:
        raise StateError(
            f"shared_state: a {kind} payload of {len(payload)} bytes is over the {limit}-byte limit "
            "(prune removed arms, or lower the featurizer's dimension)"
        )
    return payload


def _loads(data: bytes | str, kind: str, limit: int) -> dict[str, Any]:
    """The envelope of a payload of `kind`, checked: size first, then JSON, format, version, type."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > limit:
        raise StateError(f"shared_state: a {kind} payload of {len(raw)} bytes is over the {limit}-byte limit")
    try:
        envelope = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise StateError(
            f"shared_state: a {kind} payload is not valid JSON; the store holds foreign data"
        ) from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise StateError(f"shared_state: a {kind} payload is not in the {FORMAT} format")
    version = envelope.get("v")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StateError(
            f"shared_state: a {kind} payload has version {version!r}, which no uniscale-lc writes"
        )
    if version > VERSION:
        raise StateError(
            f"shared_state: a {kind} payload has version {version}; this uniscale-lc reads {VERSION} and "
            "older. Upgrade every replica to the same uniscale-lc release"
        )
    if envelope.get("type") != kind:
        raise StateError(f"shared_state: expected a {kind} payload, got {envelope.get('type')!r}")
    return envelope


def _identifier(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise StateError(f"shared_state: {field} must be a string of 1 to {MAX_ID_CHARS} characters")
    return value


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StateError(f"shared_state: {field} must be a finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------- update batches


def _event_dict(event: UpdateEvent) -> dict[str, Any]:
    if isinstance(event, RewardUpdate):
        context = np.asarray(event.context, dtype=np.float64)
        if context.ndim != 1 or not np.isfinite(context).all():
            raise StateError("shared_state: a reward update needs a finite 1-d context vector")
        return {"k": "reward", "x": context.tolist(), "a": event.arm_id, "r": float(event.reward)}
    return {"k": "cost", "a": event.arm_id, **{name: float(getattr(event, name)) for name in _COST_FIELDS}}


def _event_from(item: Any, where: str) -> UpdateEvent:
    if not isinstance(item, dict):
        raise StateError(f"shared_state: {where} is not an object")
    kind = item.get("k")
    arm_id = _identifier(item.get("a"), f"{where}.a")
    if kind == "reward":
        values = item.get("x")
        if not isinstance(values, list) or not 0 < len(values) <= MAX_CONTEXT_DIM:
            raise StateError(f"shared_state: {where}.x must be a list of 1 to {MAX_CONTEXT_DIM} numbers")
        # Exact types first: numpy would read "nan" or true as numbers.
        if not all(type(value) is float or type(value) is int for value in values):
            raise StateError(f"shared_state: {where}.x must hold finite numbers only")
        context = np.array(values, dtype=np.float64)
        if not np.isfinite(context).all():
            raise StateError(f"shared_state: {where}.x must hold finite numbers only")
        return RewardUpdate(context, arm_id, _finite(item.get("r"), f"{where}.r"))
    if kind == "cost":
        numbers = {name: _finite(item.get(name), f"{where}.{name}") for name in _COST_FIELDS}
        return CostObservation(arm_id=arm_id, **numbers)
    raise StateError(f"shared_state: {where}.k is {kind!r}; this uniscale-lc knows 'reward' and 'cost'")


def encode_batch(batch: Batch) -> bytes:
    if len(batch.events) > MAX_EVENTS_PER_BATCH:
        raise StateError(f"shared_state: a batch holds at most {MAX_EVENTS_PER_BATCH} events")
    events = [_event_dict(event) for event in batch.events]
    return _dumps("batch", {"id": batch.batch_id, "origin": batch.origin, "events": events}, MAX_BATCH_BYTES)


def decode_batch(data: bytes | str) -> Batch:
    envelope = _loads(data, "batch", MAX_BATCH_BYTES)
    events = envelope.get("events")
    if not isinstance(events, list) or len(events) > MAX_EVENTS_PER_BATCH:
        raise StateError(f"shared_state: batch.events must be a list of at most {MAX_EVENTS_PER_BATCH}")
    return Batch(
        batch_id=_identifier(envelope.get("id"), "batch.id"),
        origin=_identifier(envelope.get("origin"), "batch.origin"),
        events=tuple(_event_from(item, f"batch.events[{i}]") for i, item in enumerate(events)),
    )


# ---------------------------------------------------------------------- snapshots


def encode_snapshot(state: Mapping[str, Any], *, seq: int, entry_id: str, updates: int) -> bytes:
    """The folded state after entry `seq` (stream id `entry_id`) of the log, arrays as base64."""
    arrays: list[np.ndarray] = []
    tree = _flatten(dict(state), arrays, "state")
    encoded = []
    for array in arrays:
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        encoded.append(
            {
                "dtype": little.dtype.str,
                "shape": list(little.shape),
                "data": base64.b64encode(np.ascontiguousarray(little).tobytes()).decode("ascii"),
            }
        )
    body = {"seq": seq, "entry_id": entry_id, "updates": updates, "state": tree, "arrays": encoded}
    return _dumps("snapshot", body, MAX_SNAPSHOT_BYTES)


def _array_from(item: Any, index: int) -> np.ndarray:
    if not isinstance(item, dict) or item.get("dtype") not in _ALLOWED_DTYPES:
        raise StateError(f"shared_state: snapshot array {index} has no allowed numeric dtype")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise StateError(f"shared_state: snapshot array {index} has a malformed shape")
    dtype = np.dtype(item["dtype"])
    data = item.get("data")
    if not isinstance(data, str) or len(data) > MAX_SNAPSHOT_BYTES:
        raise StateError(f"shared_state: snapshot array {index} has no data")
    # Check the declared size against the text before decoding: a small payload cannot ask for terabytes.
    declared = math.prod(shape) * dtype.itemsize
    if len(data) % 4 or declared != len(data) // 4 * 3 - data[-2:].count("="):
        raise StateError(f"shared_state: snapshot array {index} declares {declared} bytes it does not hold")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise StateError(f"shared_state: snapshot array {index} is not valid base64") from None
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class Snapshot:
    state: dict[str, Any]
    seq: int
    entry_id: str
    updates: int


def decode_snapshot(data: bytes | str) -> Snapshot:
    envelope = _loads(data, "snapshot", MAX_SNAPSHOT_BYTES)
    seq, updates = envelope.get("seq"), envelope.get("updates")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (seq, updates)):
        raise StateError("shared_state: snapshot.seq and snapshot.updates must be integers >= 0")
    arrays = envelope.get("arrays")
    state = envelope.get("state")
    if not isinstance(arrays, list) or not isinstance(state, dict):
        raise StateError("shared_state: a snapshot needs a state object and an arrays list")
    restored = _restore(state, {index: _array_from(item, index) for index, item in enumerate(arrays)})
    entry_id = _identifier(envelope.get("entry_id"), "snapshot.entry_id")
    return Snapshot(restored, int(seq), entry_id, int(updates))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- pending decisions and results


def encode_pending(pending: PendingDecision) -> bytes:
    return _dumps("pending", {"pending": pending.to_dict()}, MAX_PENDING_BYTES)


def decode_pending(data: bytes | str) -> PendingDecision:
    envelope = _loads(data, "pending", MAX_PENDING_BYTES)
    item = envelope.get("pending")
    try:
        pending = PendingDecision.from_dict(item)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StateError("shared_state: a pending decision is malformed") from None
    context = pending.decision.context
    if context.ndim != 1 or not 0 < context.size <= MAX_CONTEXT_DIM or not np.isfinite(context).all():
        raise StateError("shared_state: a pending decision's context is not a finite vector")
    _identifier(pending.decision_id, "pending.decision_id")
    _identifier(pending.arm_id, "pending.arm_id")
    return pending


def encode_result(result: FeedbackResult) -> bytes:
    body = {"result": {k: v for k, v in result.to_dict().items() if k != "duplicate"}}
    return _dumps("result", body, MAX_PENDING_BYTES)


def decode_result(data: bytes | str) -> FeedbackResult:
    envelope = _loads(data, "result", MAX_PENDING_BYTES)
    item = envelope.get("result")
    if not isinstance(item, dict):
        raise StateError("shared_state: a feedback result is malformed")
    return FeedbackResult(
        decision_id=_identifier(item.get("decision_id"), "result.decision_id"),
        arm_id=_identifier(item.get("arm_id"), "result.arm_id"),
        quality=_finite(item.get("quality"), "result.quality"),
        reward=_finite(item.get("reward"), "result.reward"),
    )
