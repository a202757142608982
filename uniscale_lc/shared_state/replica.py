"""One replica's view of the shared state: writes go to the Redis log, the local copy is the fold of it.

Decisions never wait on Redis: they read the local fold. A background thread tails the log (XREAD
BLOCK) and applies every batch in the log's order, its own included, so every replica's policy is the
one a single learner would have after the same updates in that order. Writes off the request path
(pending decisions, usage, failed arms) go through a bounded outbox that a writer thread empties; while
Redis is unreachable they wait there (counted in `stats()`) and are replayed in order when it is back;
the commit script's done-keys make a replay of an already-applied write a no-op.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, StateError
from ..feedback import DEFAULT_TTL_S, FeedbackResult, PendingDecision, normalise_key
from .codec import (
    MAX_SNAPSHOT_BYTES,
    Batch,
    decode_batch,
    decode_pending,
    decode_result,
    decode_snapshot,
    encode_batch,
    encode_pending,
    encode_result,
    encode_snapshot,
)
from .fold import LearnerFold
from .redis_store import RedisStore, StoreUnavailable, parse_store_url

__all__ = ["CommitOutcome", "SharedState"]

logger = logging.getLogger("uniscale_lc.shared_state")

DEFAULT_MAX_BUFFERED = 10_000
DEFAULT_SNAPSHOT_EVERY = 1_000
DEFAULT_DEDUP_TTL_S = 24 * 3600.0
DEFAULT_MAX_GROUP = 10_000  # decisions kept under one request id (the local store's max_pending)
_READ_COUNT = 512


class _Gap(Exception):
    """The log no longer holds the entries right after this replica's position (compacted)."""

    def __init__(self, seq: int):
        super().__init__(seq)
        self.seq = seq


@dataclass(frozen=True)
class CommitOutcome:
    """`applied`: appended now; `duplicate`: committed before (`result` is the first one); else buffered."""

    status: str  # "applied" | "duplicate" | "buffered"
    result: FeedbackResult | None = None


@dataclass(frozen=True)
class _PendingWrite:
    pending: PendingDecision
    usage: tuple[str, bytes] | None = None  # (batch id, encoded batch) of the answer's usage


@dataclass(frozen=True)
class _Commit:
    batch_id: str
    payload: bytes  # encoded when committed, so a bad batch fails its caller, never the replay
    result: bytes
    pending_id: str


class SharedState:
    """A replica on one Redis namespace. Build with `SharedState.connect(url, fold)`; thread-safe."""

    def __init__(
        self,
        store: RedisStore,
        fold: LearnerFold,
        *,
        replica_id: str | None = None,
        feedback_ttl_s: float = DEFAULT_TTL_S,
        dedup_ttl_s: float = DEFAULT_DEDUP_TTL_S,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        retry_interval_s: float = 0.2,
        max_group: int = DEFAULT_MAX_GROUP,
    ):
        if not isinstance(max_buffered, int) or max_buffered < 1:
            raise ConfigError(f"shared_state.max_buffered: got {max_buffered!r}; use an int >= 1")
        if not isinstance(max_group, int) or max_group < 1:
            raise ConfigError(f"shared_state.max_group: got {max_group!r}; use an int >= 1")
        if not isinstance(snapshot_every, int) or snapshot_every < 1:
            raise ConfigError(f"shared_state.snapshot_every: got {snapshot_every!r}; use an int >= 1")
        self.store = store
        self.fold = fold
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.feedback_ttl_ms = max(1, int(feedback_ttl_s * 1000))
        self.dedup_ttl_ms = max(1, int(dedup_ttl_s * 1000))
        self.max_buffered = max_buffered
        self.snapshot_every = snapshot_every
        self.retry_interval_s = retry_interval_s
        self.max_group = max_group
        self._apply_lock = threading.RLock()  # the log position and the fold move together
        self._outbox: collections.deque[_PendingWrite | _Commit] = collections.deque()
        self._outbox_lock = threading.Lock()
        self._outbox_ready = threading.Condition(self._outbox_lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.applied_seq = 0
        self.last_entry_id = "0-0"
        self.store_seq = 0
        self.connected = True
        self._last_snapshot_seq = 0
        self.epoch: str | None = None  # the store's, once seen
        # Called by the writer with a decision just written and its groups' score marks (feedback on the
        # group that reached the store first); set by SharedFeedback.
        self.on_late_member: Callable[[PendingDecision, list[bytes]], None] | None = None
        self._counters = collections.Counter[str]()

    # ------------------------------------------------------------------ start-up

    @classmethod
    def connect(cls, url: str, fold: LearnerFold, *, start: bool = True, **options: Any) -> SharedState:
        """Join the namespace at `url` (redis://HOST:PORT/DB?namespace=NAME); fold everything it holds.

        Raises `StateError` when Redis cannot be reached (a replica never starts without the shared
        policy) and `ConfigError` when the namespace holds a policy of another configuration.
        """
        parsed = parse_store_url(url)
        socket_timeout_s = float(options.pop("socket_timeout_s", 2.0))
        block_ms = int(options.pop("block_ms", 100))
        store = RedisStore(parsed, socket_timeout_s=socket_timeout_s, block_ms=block_ms)
        replica = cls(store, fold, **options)
        try:
            store.ping()
            replica._agree_meta()
            replica.epoch = store.epoch(uuid.uuid4().hex)[0]
            replica._seed_or_load()
        except StoreUnavailable as error:
            store.close()
            raise StateError(
                f"shared_state: cannot reach Redis at {parsed.shown} ({error}); start Redis or fix the URL, "
                "or leave shared_state unset to learn in this process alone"
            ) from None
        if start:
            replica.start()
        return replica

    def _agree_meta(self) -> None:
        ours = json.dumps(self.fold.fingerprint(), sort_keys=True, separators=(",", ":")).encode()
        theirs = self.store.agree_meta(ours)
        if theirs != ours:
            raise ConfigError(
                f"shared_state: the namespace at {self.store.url.shown} holds a policy configured as "
                f"{theirs.decode(errors='replace')[:400]}, this replica has {ours.decode()[:400]}; give every "
                "replica the same policy, featurizer and budget, or use another ?namespace="
            )

    def _seed_or_load(self) -> None:
        with self._apply_lock:
            # The first replica on an empty store seeds it with its state (fresh, or learnt and loaded from
            # a state file: the path from one process to a fleet), so that every replica, whatever it
            # loaded locally, starts from the same snapshot and folds the same log on top of it.
            if self.store.snapshot_seq() < 0:
                seed = encode_snapshot(
                    self.fold.state_dict(), seq=0, entry_id="0-0", updates=self.fold.updates
                )
                if self.store.seed(seed):
                    logger.info(
                        "uniscale: seeded the shared store (%d updates learnt before)", self.fold.updates
                    )
            self._load_snapshot()
            self._catch_up(block=False)

    def _load_snapshot(self) -> None:
        found = self.store.snapshot(MAX_SNAPSHOT_BYTES)
        if found is None:
            return
        seq, entry_id, payload = found
        if seq < self.applied_seq:
            return
        snapshot = decode_snapshot(payload)
        self.fold.load_state_dict(snapshot.state)
        self.applied_seq, self.last_entry_id = seq, entry_id
        self._last_snapshot_seq = seq
        self._counters["snapshots_loaded"] += 1

    def start(self) -> None:
        """Start the two threads: one tails the log into the fold, one writes what was queued."""
        if not self._threads:
            for job, name in ((self._tail_loop, "tail"), (self._write_loop, "write")):
                thread = threading.Thread(
                    target=job, name=f"uniscale-shared-{name}-{self.replica_id}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    # ------------------------------------------------------------------ the log

    def _catch_up(self, block: bool) -> int:
        """Apply every entry after the local position; returns how many. Raises `StoreUnavailable`."""
        applied = 0
        while True:
            entries = self.store.read_after(self.last_entry_id, _READ_COUNT, block=block and applied == 0)
            if not entries:
                return applied
            with self._apply_lock:
                try:
                    applied += self._apply_entries(entries)
                except _Gap as gap:
                    self._counters["gaps"] += 1
                    before = self.applied_seq
                    self._load_snapshot()
                    if self.applied_seq == before:
                        # No snapshot covers the hole: the store lost entries (Redis without persistence).
                        skipped = gap.seq - before - 1
                        self._counters["lost_entries"] += skipped
                        logger.error(
                            "uniscale: the shared log lost %d entries; continuing after them", skipped
                        )
                        self.applied_seq = gap.seq - 1
            if len(entries) < _READ_COUNT:
                return applied

    def _apply_entries(self, entries: list[tuple[str, int, bytes]]) -> int:
        applied = 0
        for entry_id, seq, payload in entries:
            if seq <= self.applied_seq:
                self.last_entry_id = entry_id  # already in the state (a snapshot covered it)
                continue
            if seq != self.applied_seq + 1:
                raise _Gap(seq)
            try:
                batch = decode_batch(payload)
            except StateError as error:
                self._counters["unreadable_entries"] += 1
                logger.error("uniscale: shared log entry %s skipped (%s)", entry_id, error)
            else:
                self.fold.apply(batch)
            self.applied_seq, self.last_entry_id = seq, entry_id
            self.store_seq = max(self.store_seq, seq)
            applied += 1
        return applied

    def sync(self) -> int:
        """Apply what the log holds now (read-your-writes after a commit); 0 when Redis is unreachable."""
        try:
            return self._catch_up(block=False)
        except StoreUnavailable:
            self._mark_down()
            return 0

    def _maybe_snapshot(self) -> None:
        if self.applied_seq - self._last_snapshot_seq < self.snapshot_every:
            return
        # Another replica may have just written one: skip the encoding unless the store's is old too.
        self._last_snapshot_seq = max(self._last_snapshot_seq, self.store.snapshot_seq())
        if self.applied_seq - self._last_snapshot_seq < self.snapshot_every:
            return
        with self._apply_lock:
            payload = encode_snapshot(
                self.fold.state_dict(),
                seq=self.applied_seq,
                entry_id=self.last_entry_id,
                updates=self.fold.updates,
            )
            seq, entry_id = self.applied_seq, self.last_entry_id
        if self.store.put_snapshot(seq, entry_id, payload):
            self._counters["snapshots_written"] += 1
        self._last_snapshot_seq = seq

    # ------------------------------------------------------------------ writes

    def _mark_down(self) -> None:
        if self.connected:
            logger.warning("uniscale: lost Redis at %s; serving from the local copy", self.store.url.shown)
        self.connected = False

    def _mark_up(self) -> None:
        self.connected = True
        self._counters["reconnects"] += 1
        logger.info("uniscale: Redis at %s is back; replaying buffered updates", self.store.url.shown)
        with self._outbox_ready:
            self._outbox_ready.notify_all()

    def _enqueue(self, item: _PendingWrite | _Commit) -> None:
        with self._outbox_ready:
            self._outbox.append(item)
            while len(self._outbox) > self.max_buffered:
                self._outbox.popleft()
                self._counters["dropped"] += 1
            self._outbox_ready.notify()

    def _write(self, item: _PendingWrite | _Commit) -> tuple[bool, bytes]:
        if isinstance(item, _PendingWrite):
            pending = item.pending
            aliases = [normalise_key(pending.run_id)] if pending.run_id else []
            usage = None if item.usage is None else (*item.usage, self.dedup_ttl_ms)
            marks = self.store.put_pending(
                pending.decision_id,
                aliases,
                encode_pending(pending),
                self.feedback_ttl_ms,
                usage,
                groups=pending.group_keys,
                created_ms=int(pending.created_at * 1000),
                max_group=self.max_group,
            )
            if marks and self.on_late_member is not None:
                try:  # never fails the write: the decision is in the store, pending, either way
                    self.on_late_member(pending, marks)
                except Exception:
                    logger.exception("uniscale: scoring a decision written after its group's feedback failed")
            return True, b""
        return self.store.commit(item.batch_id, item.payload, item.result, self.dedup_ttl_ms, item.pending_id)

    def _write_or_buffer(self, item: _PendingWrite | _Commit) -> tuple[bool, bytes] | None:
        """Write now when Redis is up; None when queued. Writes need no order among themselves: each is
        idempotent, and a pending decision written after its feedback's commit is refused by the script."""
        if self.connected:
            try:
                return self._write(item)
            except StoreUnavailable:
                self._mark_down()
        self._enqueue(item)
        return None

    def put_pending(
        self, pending: PendingDecision, usage: Batch | None = None, *, wait: bool = False
    ) -> None:
        """Keep a decision where any replica's feedback finds it, with the batch of what answering cost
        (cost model, pacer), in one round trip: queued for the writer thread (the request path never
        waits on Redis), or written before returning with `wait=True`."""
        item = _PendingWrite(pending, None if usage is None else (usage.batch_id, encode_batch(usage)))
        if wait:
            self._write_or_buffer(item)
        else:
            self._enqueue(item)

    def submit(self, batch: Batch) -> None:
        """Queue `batch` (e.g. a failed arm's reward-0 update) for the writer thread; never waits."""
        self._enqueue(_Commit(batch.batch_id, encode_batch(batch), b"1", batch.batch_id))

    def commit(
        self, batch: Batch, result: FeedbackResult | None = None, pending_id: str = ""
    ) -> CommitOutcome:
        """Append `batch` once; with `result`, also score pending decision `pending_id` once."""
        encoded = encode_result(result) if result is not None else b"1"
        item = _Commit(batch.batch_id, encode_batch(batch), encoded, pending_id or batch.batch_id)
        written = self._write_or_buffer(item)
        if written is None:
            return CommitOutcome("buffered")
        applied, previous = written
        if applied:
            return CommitOutcome("applied")
        self._counters["duplicates"] += 1
        first = decode_result(previous) if result is not None and previous != b"1" else None
        return CommitOutcome("duplicate", first)

    def commit_all(self, items: Sequence[tuple[Batch, FeedbackResult, str]]) -> list[CommitOutcome]:
        """`commit` of each (batch, result, pending id) in one round trip: the feedback on a group key
        (request id, parent run id) scores each decision under it once, whatever replica sent it."""
        commits = [
            _Commit(batch.batch_id, encode_batch(batch), encode_result(result), pending_id)
            for batch, result, pending_id in items
        ]
        written: list[tuple[bool, bytes]] | None = None
        if self.connected:
            try:
                written = self.store.commit_many(
                    [(c.batch_id, c.payload, c.result, c.pending_id) for c in commits], self.dedup_ttl_ms
                )
            except StoreUnavailable:
                self._mark_down()
        if written is None:  # each commit is idempotent: replaying all, some of which landed, is safe
            for commit in commits:
                self._enqueue(commit)
            return [CommitOutcome("buffered") for _ in commits]
        outcomes = []
        for applied, previous in written:
            if applied:
                outcomes.append(CommitOutcome("applied"))
                continue
            self._counters["duplicates"] += 1
            outcomes.append(CommitOutcome("duplicate", decode_result(previous) if previous != b"1" else None))
        return outcomes

    def resolve(self, key: str, mark: bytes = b"") -> list[PendingDecision | FeedbackResult]:
        """The pending decisions and earlier results that `key` names in the store, oldest first: one for
        a decision id or run id, every member for a group key; [] when unknown. A group with a pending
        member keeps `mark` (the feedback's score) for the feedback TTL, set in the same step.

        Raises `StoreUnavailable` when Redis cannot be reached (the caller falls back to its local copy).
        """
        if not self.connected:
            raise StoreUnavailable("Redis is unreachable; serving from the local copy")
        try:
            found = self.store.resolve(key, mark, self.feedback_ttl_ms)
        except StoreUnavailable:
            self._mark_down()
            raise
        decisions: list[PendingDecision | FeedbackResult] = []
        for status, _, value in found:
            if status == "done" and value != b"1":  # b"1": a usage or failure batch, not a feedback
                decisions.append(decode_result(value))
            elif status == "pending":
                decisions.append(decode_pending(value))
        return decisions

    def _flush_outbox(self) -> None:
        """Replay buffered writes in order; stops (keeping the rest) at the first connection error."""
        while True:
            with self._outbox_lock:
                if not self._outbox:
                    return
                item = self._outbox[0]
            applied, _ = self._write(item)
            with self._outbox_lock:
                if self._outbox and self._outbox[0] is item:
                    self._outbox.popleft()
            self._counters["replayed"] += 1
            if isinstance(item, _Commit) and not applied:
                self._counters["duplicates"] += 1

    # ------------------------------------------------------------------ the background thread

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            with self._outbox_ready:
                while not self._stop.is_set() and not (self._outbox and self.connected):
                    self._outbox_ready.wait(self.retry_interval_s)
            try:
                self._flush_outbox()
            except StoreUnavailable:
                self._mark_down()
            except Exception:  # the thread must survive anything; the item stays queued
                logger.exception("uniscale: shared-state writer error; retrying")
                self._stop.wait(self.retry_interval_s)

    def _tail_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.connected:
                    self.store.ping()
                    self._mark_up()
                self._catch_up(block=True)
                self._check_store_seq()
                self._maybe_snapshot()
            except StoreUnavailable:
                self._mark_down()
                self._stop.wait(self.retry_interval_s)
            except Exception:  # the thread must survive anything; the error is logged, state unchanged
                logger.exception("uniscale: shared-state thread error; retrying")
                self._stop.wait(self.retry_interval_s)

    def _check_store_seq(self) -> None:
        """Learn how far the log goes (for `behind`), and notice a store that lost its history."""
        position = self.applied_seq  # read first: the log only grows, so store_seq >= position unless reset
        epoch, store_seq = self.store.epoch(uuid.uuid4().hex)
        lost_all = self.epoch is not None and epoch != self.epoch
        self.epoch = epoch
        if lost_all or store_seq < position <= self.store_seq:  # counted once per reset
            logger.error(
                "uniscale: the shared log at %s restarts below this replica's position (%d < %d): Redis "
                "lost data (persistence off, or appendfsync everysec and a crash); re-basing on the store",
                self.store.url.shown,
                store_seq,
                position,
            )
            self._counters["store_resets"] += 1
            with self._apply_lock:
                # Start over on what the store holds now: the first replica to notice gives it its state
                # as the base, every replica loads that base and folds the log written since on top.
                self.applied_seq, self.last_entry_id, self._last_snapshot_seq = 0, "0-0", 0
                self.store_seq = store_seq
                self._agree_meta()
                self._seed_or_load()
            return
        self.store_seq = store_seq

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Poll `condition` (for tests and shutdown): True once it holds, False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return condition()

    def close(self, flush_timeout_s: float = 2.0) -> None:
        """Replay what is buffered (for at most `flush_timeout_s`), stop the thread, close the pool."""
        self.wait_until(lambda: not self.buffered, flush_timeout_s)
        self._stop.set()
        with self._outbox_ready:
            self._outbox_ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads = []
        if self.buffered:
            logger.warning(
                "uniscale: %d shared updates still buffered at close were not written", self.buffered
            )
        self.store.close()

    # ------------------------------------------------------------------ introspection

    @property
    def buffered(self) -> int:
        with self._outbox_lock:
            return len(self._outbox)

    def stats(self) -> dict[str, Any]:
        counters = self._counters
        return {
            "url": self.store.url.shown,
            "replica_id": self.replica_id,
            "connected": self.connected,
            "updates": self.fold.updates,
            "applied_seq": self.applied_seq,
            "behind": max(0, self.store_seq - self.applied_seq),
            "buffered": self.buffered,
            "max_buffered": self.max_buffered,
            **{
                name: counters[name]
                for name in (
                    "dropped",
                    "replayed",
                    "duplicates",
                    "reconnects",
                    "snapshots_written",
                    "snapshots_loaded",
                    "gaps",
                    "lost_entries",
                    "unreadable_entries",
                    "store_resets",
                )
            },
            "rejected_events": self.fold.rejected,
        }
