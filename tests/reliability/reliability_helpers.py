"""Helpers shared by the reliability tests: a primary/backup pair on the loopback server, resource counts."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.features import HashingFeaturizer
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import LinUCB
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel

PRIMARY, BACKUP = "primary", "backup"
PRIMARY_ARM, BACKUP_ARM = f"{PRIMARY}|single", f"{BACKUP}|single"
PRIMARY_ANSWER, BACKUP_ANSWER = "the answer is 42", "the answer is probably 42"
CALL_TIMEOUT_S = (
    1.0  # what a "timeout" fault costs; generous, so a loaded CI machine never times out a healthy call
)
# Everything the server can inject, plus a refused connection (no server on the port at all).
SERVER_FAULTS = ("500", "429", "timeout", "malformed_json", "empty_choices", "truncated_stream", "oversized")
ALL_FAULTS = ("refused", *SERVER_FAULTS)


def fault_models() -> list[SimulatedModel]:
    return [
        SimulatedModel(PRIMARY, PRIMARY_ANSWER, retry_after_s=0.05, hang_s=30.0),
        SimulatedModel(BACKUP, BACKUP_ANSWER, retry_after_s=0.05, hang_s=30.0),
    ]


def fast_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05, jitter=0.5, max_retry_after_s=1.0)


def closed_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class Router:
    chat: UniScaleChat
    policy: LinUCB
    featurizer: HashingFeaturizer


def make_router(
    server: OpenAIServer,
    *,
    primary_api_base: str | None = None,
    prefer_primary: bool = True,
    **chat_fields: Any,
) -> Router:
    """A chat model over PRIMARY and BACKUP (Single each) that has learnt PRIMARY is better."""
    specs = [
        ModelSpec(
            model=PRIMARY,
            api_base=primary_api_base or server.api_base,
            timeout_s=CALL_TIMEOUT_S,
            gpu_usd_per_hour=0.0,
        ),
        ModelSpec(model=BACKUP, api_base=server.api_base, timeout_s=CALL_TIMEOUT_S, gpu_usd_per_hour=0.0),
    ]
    featurizer = HashingFeaturizer()
    policy = LinUCB(alpha=0.5, seed=0)
    chat_fields.setdefault("max_fallbacks", 1)
    chat = UniScaleChat(
        models=specs,
        policy=policy,
        featurizer=featurizer,
        client=ModelClient(retry=fast_retry(), seed=0),
        **chat_fields,
    )
    if prefer_primary:
        logged = []
        for index in range(40):
            x = featurizer.transform(f"warm-up question {index}")
            logged += [(x, PRIMARY_ARM, 1.0), (x, BACKUP_ARM, 0.6)]
        policy.warm_start(logged)
    return Router(chat, policy, featurizer)


def quality_of(message: Any) -> float:
    """The feedback a caller would give: PRIMARY's answer is the better one."""
    return 1.0 if str(message.content) == PRIMARY_ANSWER else 0.6


def open_fds() -> dict[str, int]:
    """Open file descriptors of this process by kind (`socket`, `pipe`, `anon_inode`, `file`)."""
    counts = {"socket": 0, "pipe": 0, "anon_inode": 0, "file": 0}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed between listdir and readlink (the listdir's own descriptor)
            continue
        kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
        counts[kind if kind in counts else "file"] += 1
    counts["total"] = sum(counts.values())
    return counts


def thread_names() -> list[str]:
    return sorted(thread.name for thread in threading.enumerate())
