"""The Redis side of the shared state: key layout, the Lua scripts that make each write atomic, and
typed calls over them. Every Redis error surfaces as `StoreUnavailable` (retry later) or `StateError`.

Keys (one hash tag per namespace, so a Redis Cluster keeps them in one slot):
    uniscale:{NS}:log        stream of update batches, fields s (sequence number) and e (payload)
    uniscale:{NS}:seq        last sequence number given out (INCR inside the commit script)
    uniscale:{NS}:snapshot   hash: seq, entry_id, payload (the folded state after entry `seq`)
    uniscale:{NS}:meta       what every replica must agree on (policy kind, dimensions, config)
    uniscale:{NS}:epoch      set once per store life: a new one means Redis lost its data
    uniscale:{NS}:done:ID    result of batch ID, for `dedup_ttl_s`: makes every commit exactly-once
    uniscale:{NS}:pending:ID a decision waiting for feedback, for the feedback TTL
    uniscale:{NS}:alias:KEY  run id -> decision id, for the feedback TTL
    uniscale:{NS}:group:KEY  sorted set (by creation time) of the decision ids made under a request id
                             or parent run id; lives for the feedback TTL after its newest member
    uniscale:{NS}:scored:KEY the last feedback on group KEY that found a member pending (quality, time
                             sent), for the feedback TTL: a member written after it, made before it, is
                             scored with it by its writer
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, StateError

__all__ = ["RedisStore", "StoreURL", "StoreUnavailable", "parse_store_url"]

T = TypeVar("T")

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Commit a batch once: a second commit with the same batch id (a replay after a lost reply, a second
# replica scoring the same decision) returns the first result and appends nothing.
_COMMIT = """
local previous = redis.call('GET', KEYS[3])
if previous then return {0, previous} end
local seq = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[1], '*', 's', seq, 'e', ARGV[1])
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[4])
return {1, id}
"""

# Keep a decision for feedback on any replica, unless it was already scored (a replayed write). KEYS:
# pending, done, ARGV[4] aliases (run id), ARGV[8] groups (request id, parent run id), then the groups'
# score marks. A group keeps its members for the feedback TTL after its newest one; a member older than
# the TTL or beyond the newest `max_group` is dropped (its own pending key expires with the same TTL).
# Returns {1, marks...}: the score marks of its groups (a feedback on the group that may have come before
# this write), or {0} when the decision was scored already.
_PUT_PENDING = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local aliases, groups = tonumber(ARGV[4]), tonumber(ARGV[8])
for i = 3, 2 + aliases do redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[2]) end
local out = {1}
for i = 3 + aliases, 2 + aliases + groups do
  redis.call('ZADD', KEYS[i], ARGV[5], ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[6])
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(tonumber(ARGV[7]) + 1))
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
  local mark = redis.call('GET', KEYS[i + groups])
  if mark then out[#out + 1] = mark end
end
return out
"""

# Find the decisions a key names: by decision id or run id one decision, by a group key (request id,
# parent run id) every member, oldest first; each as (status, decision id, value), status 'done' (value:
# its result) or 'pending' (value: the decision). Members that expired unscored are left out. When a
# group has a pending member, the feedback's score mark ARGV[3] is set in the same step, so a member
# written a moment later (its replica's writer) sees it: no member falls between the read and the mark.
_RESOLVE = """
local function look(id)
  local done = redis.call('GET', ARGV[1] .. 'done:' .. id)
  if done then return {'done', id, done} end
  local pending = redis.call('GET', ARGV[1] .. 'pending:' .. id)
  if pending then return {'pending', id, pending} end
  return false
end
local found = look(ARGV[2])
if found then return found end
local id = redis.call('GET', ARGV[1] .. 'alias:' .. ARGV[2])
if id then
  found = look(id)
  if found then return found end
end
local out = {}
local pending = false
for _, member in ipairs(redis.call('ZRANGE', ARGV[1] .. 'group:' .. ARGV[2], 0, -1)) do
  found = look(member)
  if found then
    out[#out + 1] = found[1]
    out[#out + 1] = found[2]
    out[#out + 1] = found[3]
    if found[1] == 'pending' then pending = true end
  end
end
if pending and ARGV[3] ~= '' then
  redis.call('SET', ARGV[1] .. 'scored:' .. ARGV[2], ARGV[3], 'PX', ARGV[4])
end
return out
"""

# Replace the snapshot only by a later one, then drop the log entries it covers.
_PUT_SNAPSHOT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
if current >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'entry_id', ARGV[2], 'payload', ARGV[3])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
return 1
"""

# Give a store without a snapshot its base state, the one the whole log is folded onto: the first
# replica's (moving from one process to a fleet), or after Redis lost its data, the state of the first
# replica that noticed. With a snapshot in place, only make sure new entries number above it.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local covered = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
  if tonumber(redis.call('GET', KEYS[2]) or '0') < covered then redis.call('SET', KEYS[2], covered) end
  return 0
end
redis.call('HSET', KEYS[1], 'seq', 0, 'entry_id', '0-0', 'payload', ARGV[1])
return 1
"""


class StoreUnavailable(Exception):
    """Redis cannot be reached now; the caller buffers and retries."""


@dataclass(frozen=True)
class StoreURL:
    """A parsed `redis://HOST:PORT/DB?namespace=NAME` (the client URL has no namespace)."""

    client_url: str
    namespace: str
    shown: str  # the URL with any password replaced by ***, for errors, logs and stats


def parse_store_url(url: Any) -> StoreURL:
    """Validate a shared-state URL; the error names the field and the fix."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"shared_state: got {url!r}; pass a URL such as redis://127.0.0.1:6379/0")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"shared_state: scheme {parts.scheme!r} is not supported; use redis://HOST:PORT/DB "
            "(rediss:// for TLS, unix:///path/to/socket)"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    namespace = "default"
    kept = []
    for key, value in query:
        if key == "namespace":
            namespace = value
        else:
            kept.append((key, value))
    if not _NAMESPACE.match(namespace):
        raise ConfigError(
            f"shared_state: namespace {namespace!r} must be 1 to 64 letters, digits, '_', '.' or '-'"
        )
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    client_url = urlunsplit(parts._replace(query=urlencode(kept)))
    shown = urlunsplit(parts._replace(netloc=netloc, query=urlencode([("namespace", namespace)])))
    return StoreURL(client_url, namespace, shown)


class RedisStore:
    """Typed calls over one Redis namespace; thread-safe (redis-py's connection pool)."""

    def __init__(self, url: StoreURL, *, socket_timeout_s: float = 2.0, block_ms: int = 100):
        try:
            import redis
        except ImportError:
            raise ConfigError(
                "shared_state: the Redis client is not installed; pip install 'uniscale-lc[redis]'"
            ) from None
        self._redis_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._response_error = redis.exceptions.ResponseError
        self.url = url
        self.block_ms = block_ms
        self.client = redis.Redis.from_url(
            url.client_url,
            socket_timeout=socket_timeout_s + block_ms / 1000.0,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=0,
        )
        prefix = f"uniscale:{{{url.namespace}}}:"
        self.prefix = prefix
        self.log_key, self.seq_key = prefix + "log", prefix + "seq"
        self.snapshot_key, self.meta_key = prefix + "snapshot", prefix + "meta"
        self.epoch_key = prefix + "epoch"
        self._commit = self.client.register_script(_COMMIT)
        self._put_pending = self.client.register_script(_PUT_PENDING)
        self._resolve = self.client.register_script(_RESOLVE)
        self._put_snapshot = self.client.register_script(_PUT_SNAPSHOT)
        self._seed = self.client.register_script(_SEED)

    def call(self, operation: Callable[[], T]) -> T:
        """Run one Redis operation; connection trouble becomes `StoreUnavailable`."""
        try:
            return operation()
        except self._redis_errors as error:
            raise StoreUnavailable(f"{type(error).__name__}: {error}") from None
        except self._response_error as error:
            text = str(error)
            if text.startswith(("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY")):
                raise StoreUnavailable(text) from None
            raise StateError(
                f"shared_state: Redis at {self.url.shown} refused a command ({text[:200]})"
            ) from None

    # ------------------------------------------------------------------ writes

    def _commit_call(
        self, batch_id: str, payload: bytes, result: bytes, dedup_ttl_ms: int, pending_id: str
    ) -> tuple[list[str], list[Any]]:
        keys = [
            self.log_key,
            self.seq_key,
            self.prefix + "done:" + batch_id,
            self.prefix + "pending:" + pending_id,
        ]
        return keys, [payload, result, dedup_ttl_ms]

    def commit(
        self, batch_id: str, payload: bytes, result: bytes, dedup_ttl_ms: int, pending_id: str
    ) -> tuple[bool, bytes]:
        """(True, entry id) when appended now; (False, first result) when this batch was committed before."""
        keys, args = self._commit_call(batch_id, payload, result, dedup_ttl_ms, pending_id)
        applied, value = self.call(lambda: self._commit(keys=keys, args=args))
        return bool(applied), bytes(value)

    def commit_many(
        self, commits: Sequence[tuple[str, bytes, bytes, str]], dedup_ttl_ms: int
    ) -> list[tuple[bool, bytes]]:
        """`commit` of each (batch id, payload, result, pending id), in one pipelined round trip; each is
        exactly-once on its own (a group's feedback: one batch per decision under the key)."""

        def run() -> Any:
            pipe = self.client.pipeline(transaction=False)
            for batch_id, payload, result, pending_id in commits:
                keys, args = self._commit_call(batch_id, payload, result, dedup_ttl_ms, pending_id)
                self._commit(keys=keys, args=args, client=pipe)
            return pipe.execute()

        replies = self.call(run)
        return [(bool(applied), bytes(value)) for applied, value in replies]

    def put_pending(
        self,
        decision_id: str,
        aliases: Sequence[str],
        payload: bytes,
        ttl_ms: int,
        usage: tuple[str, bytes, int] | None = None,
        *,
        groups: Sequence[str] = (),
        created_ms: int = 0,
        max_group: int = 10_000,
    ) -> list[bytes]:
        """Keep a pending decision under its aliases (run id) and groups (request id, parent run id), and
        commit its usage batch (batch id, payload, dedup TTL), in one trip. Returns the score marks its
        groups hold (feedback on a group that reached the store before this decision did)."""
        keys = [self.prefix + "pending:" + decision_id, self.prefix + "done:" + decision_id]
        keys += [self.prefix + "alias:" + alias for alias in aliases]
        keys += [self.prefix + "group:" + group for group in groups]
        keys += [self.prefix + "scored:" + group for group in groups]
        args: list[Any] = [payload, ttl_ms, decision_id, len(aliases), created_ms, created_ms - ttl_ms]
        args += [max_group, len(groups)]
        if usage is None:
            reply = self.call(lambda: self._put_pending(keys=keys, args=args))
        else:
            usage_keys, usage_args = self._commit_call(usage[0], usage[1], b"1", usage[2], usage[0])

            def run() -> Any:
                pipe = self.client.pipeline(transaction=False)
                self._put_pending(keys=keys, args=args, client=pipe)
                self._commit(keys=usage_keys, args=usage_args, client=pipe)
                return pipe.execute()

            reply = self.call(run)[0]
        return [bytes(mark) for mark in list(reply or [])[1:]]

    def resolve(self, key: str, mark: bytes = b"", mark_ttl_ms: int = 1) -> list[tuple[str, str, bytes]]:
        """The decisions `key` names, as ('done', id, result) | ('pending', id, payload); [] when unknown.
        A decision id or run id names one, a group key (request id, parent run id) all its members; a
        group with a pending member gets the score `mark` (for `mark_ttl_ms`) in the same step."""
        args: list[Any] = [self.prefix, key, mark, mark_ttl_ms]
        reply = self.call(lambda: self._resolve(keys=[self.prefix], args=args))
        values = list(reply or [])
        return [
            (bytes(values[i]).decode(), bytes(values[i + 1]).decode(), bytes(values[i + 2]))
            for i in range(0, len(values) - 2, 3)
        ]

    def put_snapshot(self, seq: int, entry_id: str, payload: bytes) -> bool:
        keys = [self.snapshot_key, self.log_key]
        return bool(self.call(lambda: self._put_snapshot(keys=keys, args=[seq, entry_id, payload])))

    def seed(self, payload: bytes) -> bool:
        return bool(self.call(lambda: self._seed(keys=[self.snapshot_key, self.seq_key], args=[payload])))

    def agree_meta(self, meta: bytes) -> bytes:
        """Set the namespace's meta if unset; returns the meta in force (ours or an earlier replica's)."""

        def run() -> bytes:
            self.client.set(self.meta_key, meta, nx=True)
            value: Any = self.client.get(self.meta_key)
            return bytes(value or b"")

        return self.call(run)

    # ------------------------------------------------------------------ reads

    def ping(self) -> None:
        self.call(self.client.ping)

    def last_seq(self) -> int:
        return int(self.call(lambda: self.client.get(self.seq_key)) or 0)

    def epoch(self, candidate: str) -> tuple[str, int]:
        """(the store's epoch, its last seq): the epoch is set once (to `candidate` when unset), so a
        changed one means the data was lost and started again."""

        def run() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.epoch_key, candidate, nx=True)
            pipe.get(self.epoch_key)
            pipe.get(self.seq_key)
            return pipe.execute()

        _, epoch, seq = self.call(run)
        return bytes(epoch or b"").decode(), int(seq or 0)

    def snapshot_seq(self) -> int:
        return int(self.call(lambda: self.client.hget(self.snapshot_key, "seq")) or -1)

    def snapshot(self, max_bytes: int) -> tuple[int, str, bytes] | None:
        """(seq, entry id, payload) of the snapshot, refusing before transfer one over `max_bytes`."""
        size = int(self.call(lambda: self.client.hstrlen(self.snapshot_key, "payload")))
        if size == 0:
            return None
        if size > max_bytes:
            raise StateError(
                f"shared_state: the snapshot in {self.url.shown} is {size} bytes, over the {max_bytes}-byte limit"
            )
        values: Any = self.call(lambda: self.client.hmget(self.snapshot_key, ["seq", "entry_id", "payload"]))
        seq, entry_id, payload = values
        if seq is None or entry_id is None or payload is None:
            return None
        return int(seq), bytes(entry_id).decode(), bytes(payload)

    def read_after(self, entry_id: str, count: int, block: bool) -> list[tuple[str, int, bytes]]:
        """Up to `count` log entries after `entry_id` as (entry id, seq, payload); waits up to block_ms."""

        def run() -> Any:
            if block:
                return self.client.xread({self.log_key: entry_id}, count=count, block=self.block_ms)
            return [[self.log_key, self.client.xrange(self.log_key, min="(" + entry_id, count=count)]]

        reply = self.call(run) or []
        entries = []
        for _, items in reply:
            for raw_id, fields in items:
                seq = fields.get(b"s")
                entries.append(
                    (raw_id.decode(), int(seq) if seq is not None else -1, bytes(fields.get(b"e", b"")))
                )
        return entries

    def close(self) -> None:
        self.client.close()
