"""Refuse a request that no provider could take, before any arm is called.

Call options that are not JSON (`seed=object()`, a set, bytes), carry NaN or infinity, or tools without a
`function` would be sent to every arm, fail there and be taught as the arms' failures (opening the
breakers of healthy models). They are the caller's mistake: a `ConfigError` naming the option, nothing
called, nothing learnt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .results import RequestOptions

__all__ = ["check_request"]

_FIX = "pass plain JSON values (str, int, float, bool, None, lists, dicts with str keys), no NaN or infinity"


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a repr that raises (or an int too long to print) must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _json_problem(value: Any) -> str | None:
    """Why `value` is not strict JSON (NaN and infinity refused, keys must be strings), or None."""
    try:
        json.dumps(value, allow_nan=False, check_circular=True)
    except (TypeError, ValueError, RecursionError) as exc:
        return str(exc)[:120]
    return _non_str_key(value)


def _non_str_key(value: Any, depth: int = 0) -> str | None:
    # json.dumps turns int and float keys into strings silently; a provider would get other keys than sent.
    if depth > 64:
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"key {_shown(key)} is not a string"
            problem = _non_str_key(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            problem = _non_str_key(item, depth + 1)
            if problem:
                return problem
    return None


def _check_tools(tools: Sequence[Any]) -> None:
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, Mapping):
            raise ConfigError(f"{where}: got {_shown(tool)}; a tool is a dict in OpenAI format")
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, Mapping):
            raise ConfigError(
                f"{where}: needs type 'function' and a 'function' dict with its name and parameters "
                f"(got keys {sorted(map(str, tool))[:8]}); bind_tools() converts tools to this format"
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.function.name: got {_shown(name)}; give the tool a non-empty name")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ConfigError(
                f"{where}.function.parameters: got {_shown(parameters)}; use a JSON schema dict"
            )
        problem = _json_problem(tool)
        if problem:
            raise ConfigError(f"{where}: not JSON ({problem}); {_FIX}")


def check_request(messages: Sequence[Mapping[str, Any]], options: RequestOptions) -> None:
    """Raise `ConfigError` for a request no provider could take; return None when it can be sent."""
    if options.temperature is not None and (
        isinstance(options.temperature, bool)
        or not isinstance(options.temperature, int | float)
        or not math.isfinite(options.temperature)
        or options.temperature < 0
    ):
        raise ConfigError(f"temperature: got {_shown(options.temperature)}; use a finite number >= 0")
    if options.max_tokens is not None and (
        isinstance(options.max_tokens, bool)
        or not isinstance(options.max_tokens, int)
        or options.max_tokens < 1
    ):
        raise ConfigError(
            f"max_tokens: got {_shown(options.max_tokens)}; use an int >= 1, or None for no limit"
        )
    if options.stop is not None and not all(isinstance(item, str) for item in options.stop):
        raise ConfigError(f"stop: got {_shown(options.stop)}; use a string or a list of strings")
    if options.tools:
        _check_tools(options.tools)
    if options.tool_choice is not None:
        problem = _json_problem(options.tool_choice)
        if problem:
            raise ConfigError(f"tool_choice: not JSON ({problem}); use 'auto', 'none', 'required' or a dict")
    for key, value in (options.extra or {}).items():
        problem = _json_problem(value)
        if problem:
            raise ConfigError(f"call option {_shown(key)}: got {_shown(value)}, not JSON ({problem}); {_FIX}")
    for index, message in enumerate(messages):
        if all(value is None or isinstance(value, str) for value in message.values()):
            continue  # the common case, plain text: nothing to encode (keeps this check at microseconds)
        problem = _json_problem(dict(message))
        if problem:
            raise ConfigError(
                f"messages[{index}]: not JSON ({problem}); message contents must be text or content parts"
            )
