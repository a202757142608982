"""OpenAI chat-format messages as the core sees them: validation and the text the featurizer reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["as_messages", "featurized_text", "message_text", "prompt_text"]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def as_messages(messages: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The caller's messages as a list of OpenAI dicts; a bare string is one user message.

    Refused before any arm is called (a caller's mistake never teaches the arms anything).
    """
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not messages:
        raise ConfigError(
            f"messages: got {messages!r:.80}; pass a non-empty list of OpenAI chat messages, "
            "e.g. [{'role': 'user', 'content': 'Hello'}]"
        )
    plain: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ConfigError(
                f"messages[{index}]: got {type(message).__name__}; pass a dict such as "
                "{'role': 'user', 'content': 'Hello'}"
            )
        role = message.get("role")
        if role not in _ROLES:
            raise ConfigError(f"messages[{index}].role: got {role!r}; use one of {sorted(_ROLES)}")
        plain.append(dict(message))
    return plain


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text: string content, or its text parts joined (LangChain's `BaseMessage.text` rule)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part
            if isinstance(part, str)
            else part["text"]
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
            else ""
            for part in content
        )
    return ""


def featurized_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the featurizer sees: the last user message, or every message's text if there is none.

    Why the last user message: it is what the request asks; long histories would otherwise swamp the
    features and make the same question look different in every conversation.
    """
    for message in reversed(messages):
        if message.get("role") == "user":
            text = message_text(message)
            if text.strip():
                return text
    return prompt_text(messages)


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Every message's text, one per line: what the prompt's token count is estimated from."""
    return "\n".join(message_text(message) for message in messages)
