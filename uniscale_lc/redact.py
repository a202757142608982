"""Scrub API keys from text before it reaches an exception message or a log line."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"

# Key-shaped strings, whoever's they are: OpenAI-style `sk-...`, `Bearer <token>` headers, and
# `api_key=...` / `"api-key": "..."` assignments as they appear in reprs, URLs and JSON.
_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"(?i)((?:api[_-]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,;&}]{4,}"),
)
_MIN_SECRET_LENGTH = 4  # shorter "secrets" (e.g. a dummy "x") would shred ordinary words


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return `text` with every given secret value and every key-shaped string replaced by `***`.

    `secrets` are exact values (e.g. the key read from the environment); values shorter than 4 characters
    are ignored so that a dummy key cannot mangle the message.
    """
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    text = _PATTERNS[0].sub(REDACTED, text)
    text = _PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, text)
    return _PATTERNS[2].sub(lambda m: m.group(1) + REDACTED, text)
