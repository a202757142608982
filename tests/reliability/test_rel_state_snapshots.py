"""Saved state is one consistent cut of a router that is serving, and saving it survives a full disk."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import fault_models

import uniscale_lc.router as router_module
from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.errors import StateError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(models=fault_models()) as running:
        yield running


def _chat(server: OpenAIServer, state_path: Path, **fields: Any) -> UniScaleChat:
    specs = [
        ModelSpec(model=name, api_base=server.api_base, timeout_s=5.0, gpu_usd_per_hour=0.0)
        for name in ("primary", "backup")
    ]
    return UniScaleChat(
        models=specs,
        client=ModelClient(retry=RetryPolicy(max_attempts=2, base_delay_s=0.01), seed=0),
        state_path=str(state_path),
        **fields,
    )


def _inconsistency(tree: dict[str, Any]) -> str | None:
    """Why a saved tree is not one cut of the router's state (no failures, no evictions), or None."""
    stats = tree["stats"]
    pending = len(tree["feedback"]["pending"])
    done = len(tree["feedback"]["done"])
    scored = sum(int(arm["feedback"]) for arm in stats["arms"].values())
    updates = sum(int(arm["updates"]) for arm in tree["policy"]["per_arm"].values())
    if stats["requests"] != pending + done:
        return f"requests {stats['requests']} != pending {pending} + scored {done}"
    if scored != done:
        return f"feedback count {scored} != decisions scored {done}"
    if updates != done:
        return f"policy updates {updates} != decisions scored {done}"
    return None


def test_every_autosave_is_one_consistent_cut(
    server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees: list[str | None] = []
    real_save = router_module.save_state

    def checking_save(path: Any, tree: dict[str, Any]) -> Any:
        trees.append(_inconsistency(tree))
        return real_save(path, tree)

    monkeypatch.setattr(router_module, "save_state", checking_save)
    chat = _chat(server, tmp_path / "state.npz", autosave_interval_s=0.001)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for step in range(30):
                message = chat.invoke(f"worker {index} question {step}")
                if step % 3:
                    chat.feedback(message, 0.8)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    chat.close()
    assert not errors, errors[:3]
    bad = [reason for reason in trees if reason is not None]
    print(
        f"\n8 threads x 30 requests + 160 feedbacks, background autosave: {len(bad)} of {len(trees)} "
        f"saved trees inconsistent{'; first: ' + bad[0] if bad else ''}"
    )
    assert len(trees) > 20
    assert not bad


def test_a_full_disk_is_a_state_error_and_autosave_logs_one_line(
    server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    chat = _chat(server, tmp_path / "state.npz", autosave_interval_s=0.0)

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    import uniscale_lc.store as store_module

    monkeypatch.setattr(store_module.os, "fsync", full_disk)
    with pytest.raises(StateError) as caught:
        chat.save()
    assert "No space left" in str(caught.value) or "ENOSPC" in str(caught.value)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="uniscale_lc"):
        chat.invoke("a question while the disk is full")
    records = [record for record in caplog.records if "autosave" in record.getMessage()]
    print(f"\nENOSPC: save() raised {type(caught.value).__name__}; autosave logged {len(records)} record(s)")
    assert records and all(record.exc_info is None for record in records)
    monkeypatch.undo()
    chat.close()
