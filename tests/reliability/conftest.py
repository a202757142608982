"""Fixtures shared by the reliability tests (helpers that are not fixtures live in reliability_helpers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from reliability_helpers import fault_models

from uniscale_lc.testing.openai_server import OpenAIServer


@pytest.fixture
def fault_server() -> Iterator[OpenAIServer]:
    """The loopback server with PRIMARY and BACKUP, fresh per test (faults set by one never leak)."""
    with OpenAIServer(models=fault_models()) as running:
        yield running


@pytest.fixture
def quiet_fallbacks(caplog: pytest.LogCaptureFixture) -> None:
    """Fallback warnings are expected in these tests: keep only errors."""
    caplog.set_level(logging.ERROR, logger="uniscale_lc")
