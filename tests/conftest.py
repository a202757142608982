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
