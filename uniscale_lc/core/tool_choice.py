"""`tool_choice` in OpenAI's form, from what front-ends accept; shared by the LangChain and LlamaIndex faces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["openai_tool_choice"]


def openai_tool_choice(
    tool_choice: Any, tool_names: Sequence[str], where: str
) -> str | dict[str, Any] | None:
    """OpenAI's tool_choice: 'auto', 'none', 'required' (also 'any' and True), a bound tool's name as a
    function dict, or a dict as given; None and False mean the provider's default. `where` names the field
    in errors."""
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True or tool_choice == "any":
        return "required"
    if isinstance(tool_choice, str):
        if tool_choice in ("auto", "none", "required"):
            return tool_choice
        if tool_choice not in tool_names:
            raise ConfigError(
                f"{where}: got {tool_choice!r}, which is not a bound tool; "
                f"use one of {list(tool_names)}, 'auto', 'any', 'none' or 'required'"
            )
        return {"type": "function", "function": {"name": tool_choice}}
    if isinstance(tool_choice, dict):
        return tool_choice
    raise ConfigError(
        f"{where}: got {tool_choice!r}; use a tool name, 'auto', 'any', 'none', 'required', True or an "
        "OpenAI tool_choice dict"
    )
