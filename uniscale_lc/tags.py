"""Request tags as policy features: what the application knows about a request that the prompt may not say.

An application often knows which of its features, prompt templates, tenants or task types a request comes
from. Such a tag routes where prompt words do not: on RouteLLM's MMLU the subject decides whether the weak
model suffices, and hashed prompt n-grams dilute it (docs/features.md, "Request tags"). A tag becomes one
signed entry in a block of `buckets` context features (CRC-32, so the same in every process), the block
scaled to unit norm; no tags give a zero block, so untagged requests are predicted from the prompt alone.

Pure functions over data, used by the live path (`core/engine.py`) and the replay (`replay/runner.py`) alike.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["MAX_TAGS", "MAX_TAG_BUCKETS", "check_tags", "tag_features"]

MAX_TAG_BUCKETS = 4096
MAX_TAGS = 32
_MAX_TAG_CHARS = 200


def check_tags(value: Any, owner: str = "tags") -> tuple[str, ...]:
    """A request's tags as a tuple of strings: None, one string, or a sequence of non-empty strings."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(
            f"{owner}: got {type(value).__name__}; pass a string or a list of strings, e.g. ['billing']"
        )
    if len(items) > MAX_TAGS:
        raise ConfigError(f"{owner}: got {len(items)} tags; pass at most {MAX_TAGS}")
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip() or len(item) > _MAX_TAG_CHARS:
            raise ConfigError(
                f"{owner}[{index}]: got {item!r:.60}; each tag is a non-empty string of at most "
                f"{_MAX_TAG_CHARS} characters"
            )
        checked.append(item.strip())
    return tuple(dict.fromkeys(checked))  # a repeated tag counts once


def tag_features(tags: Sequence[str], buckets: int) -> np.ndarray:
    """The `buckets` context features of some (checked) tags: signed hashed one-hots, unit norm (zeros if none)."""
    block = np.zeros(buckets, dtype=np.float64)
    if not tags or buckets == 0:
        return block
    for tag in tags:
        code = zlib.crc32(b"tag:" + tag.encode("utf-8"))
        block[code % buckets] += 1.0 if (code >> 31) & 1 else -1.0
    norm = float(np.linalg.norm(block))
    return block / norm if norm > 0 else block  # two tags can cancel in one bucket: then no signal
