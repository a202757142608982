"""Scrub API keys from text before it reaches an exception message or a log line.

A provider that echoes a key rarely echoes it verbatim: JSON escapes `/` as `\\/`, URLs percent-encode `+`
and `/`, messages get cut mid-key, and masks keep a few of its characters (`Tk9****uGs1`, litellm's
`Authorization: Be****s1`). So a known key is removed in every encoded form and as any fragment of
`MIN_FRAGMENT` or more characters, and every masked token (key characters around a run of asterisks) goes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "RedactingFilter", "install_log_redaction", "redact", "remember_secret"]

REDACTED = "***"

# Key-shaped strings, whoever's they are: OpenAI-style `sk-...`, `Bearer <token>` headers, and
# `api_key=...` / `"api-key": "..."` assignments as they appear in reprs, URLs and JSON.
_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"(?i)((?:api[_-]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,;&}]{4,}"),
)
# A masked secret: key characters (any of them) next to a run of 3+ asterisks, e.g. `Tk9****uGs1`, `Be****s1`.
_MASKED = re.compile(r"[A-Za-z0-9_\-+/%\\]*\*{3,}[A-Za-z0-9_\-+/%\\]*")
_MIN_SECRET_LENGTH = 4  # shorter "secrets" (e.g. a dummy "x") would shred ordinary words
MIN_FRAGMENT = 6  # a run this long of a known key's characters is taken as (part of) the key

_known_lock = threading.Lock()
_known: set[str] = set()


def remember_secret(secret: str | None) -> None:
    """Add a key to those every later `redact` call (and the log filter) removes: the client calls this for
    each key it sends, so a provider's echo in a library's own log line is caught too."""
    if secret and len(secret) >= _MIN_SECRET_LENGTH:
        with _known_lock:
            _known.add(secret)


def _encodings(secret: str) -> set[str]:
    """The forms a key takes when echoed: raw, JSON-escaped (with and without `\\/`), percent-encoded."""
    escaped = json.dumps(secret)[1:-1]
    forms = {secret, escaped, escaped.replace("/", "\\/"), quote(secret, safe=""), quote_plus(secret)}
    forms |= {form.replace("%2F", "%2f").replace("%2B", "%2b") for form in forms if "%" in form}
    return {form for form in forms if form}


def _scrub_fragments(text: str, form: str) -> str:
    """Replace every maximal run of `text` made of `MIN_FRAGMENT`-character pieces of `form`."""
    size = min(MIN_FRAGMENT, len(form))
    pieces = {form[index : index + size] for index in range(len(form) - size + 1)}
    covered: list[tuple[int, int]] = []
    for piece in pieces:
        start = text.find(piece)
        while start != -1:
            covered.append((start, start + size))
            start = text.find(piece, start + 1)
    if not covered:
        return text
    covered.sort()
    out: list[str] = []
    position = 0
    run_start, run_end = covered[0]
    for start, end in [*covered[1:], (len(text) + 1, len(text) + 1)]:
        if start <= run_end:
            run_end = max(run_end, end)
            continue
        out.append(text[position:run_start])
        out.append(REDACTED)
        position = run_end
        run_start, run_end = start, end
    out.append(text[position:])
    return "".join(out)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return `text` with every given or remembered secret (in any encoding, or any fragment of it), every
    masked token and every key-shaped string replaced by `***`.

    `secrets` are exact values (e.g. the key read from the environment); values shorter than 4 characters
    are ignored so that a dummy key cannot mangle the message.
    """
    with _known_lock:
        known = set(_known)
    for secret in {*known, *(s for s in secrets if s)}:
        if len(secret) < _MIN_SECRET_LENGTH:
            continue
        for form in sorted(_encodings(secret), key=len, reverse=True):
            if form in text:
                text = text.replace(form, REDACTED)
            if len(form) >= MIN_FRAGMENT:
                text = _scrub_fragments(text, form)
    text = _MASKED.sub(lambda m: REDACTED if m.group(0) != REDACTED else m.group(0), text)
    text = _PATTERNS[0].sub(REDACTED, text)
    text = _PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, text)
    return _PATTERNS[2].sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Redacts a record's message (arguments merged in) and its traceback text before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: leave it to logging's own handling
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


# Loggers that may print request headers or provider error bodies (litellm's debug curl line among them).
_LIBRARY_LOGGERS = (
    "LiteLLM",
    "LiteLLM Router",
    "LiteLLM Proxy",
    "litellm",
    "openai",
    "openai._base_client",
    "httpx",
    "httpx2",
    "httpcore",
    "aiohttp.client",
)
_installed = False


def install_log_redaction() -> None:
    """Put a `RedactingFilter` on the libraries' loggers (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactingFilter) for existing in logger.filters):
            logger.addFilter(RedactingFilter())
