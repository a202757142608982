"""Building the request: litellm imported once, what a `ModelSpec` means to it, and the keyword dict sent.

Both transports send the same dict (transport_openai.py takes litellm's keywords), so the model name, key,
timeout and the arguments the client owns are decided here once. Also the byte cap on a response, which
depends only on the request. Naming and key rules: docs/client.md ("Model names and local vLLM", "API keys").
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from .client_loop import _BACKGROUND
from .errors import field_error
from .loop_cleanup import register_exit_hook_before_litellms
from .model_spec import ModelSpec
from .prices import lookup_usd_per_mtok
from .redact import remember_secret
from .transport_openai import served_model_name

# Sent when a loopback server needs no key: the OpenAI client refuses to start without one.
DUMMY_LOCAL_KEY = "EMPTY"
DEFAULT_PROVIDER_FOR_API_BASE = "hosted_vllm"
# Arguments the client owns; `extra` may not override them.
_RESERVED_KWARGS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "api_key",
        "api_base",
        "base_url",
        "timeout",
        "max_retries",
        "num_retries",
        "n",
    }
)

# Bytes read per response, while reading: `RESPONSE_OVERHEAD_BYTES + n * max_tokens * RESPONSE_BYTES_PER_TOKEN`
# (a streamed token costs one JSON event of a few hundred bytes, more with top logprobs), or the client's
# `max_response_bytes` when `max_tokens` is unset. A body past the cap is cut off: a broken endpoint.
RESPONSE_OVERHEAD_BYTES = 64 * 1024
RESPONSE_BYTES_PER_TOKEN = 4096
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


def response_byte_cap(max_tokens: int | None, n: int, default: int = DEFAULT_MAX_RESPONSE_BYTES) -> int:
    """How many bytes of one response are read before it is refused (see RESPONSE_BYTES_PER_TOKEN)."""
    if max_tokens is None:
        return default
    return RESPONSE_OVERHEAD_BYTES + max(1, n) * max(1, max_tokens) * RESPONSE_BYTES_PER_TOKEN


_litellm_module: ModuleType | None = None


def _litellm() -> ModuleType:
    """Import litellm on first use: it takes seconds and must not fetch its price map from the internet."""
    global _litellm_module
    if _litellm_module is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # Stop litellm printing "Give Feedback / Get Help" to stdout on every failed call; we log instead.
        litellm.suppress_debug_info = True
        _litellm_module = litellm
        # Registered again after litellm's exit hooks, so the background loop drains (litellm's logging
        # worker and sessions included) before those run (loop_cleanup.py says why that matters).
        register_exit_hook_before_litellms(litellm, _BACKGROUND.close)
    return _litellm_module


def litellm_model_name(model: str, api_base: str | None, providers: frozenset[str]) -> str:
    """The name to send to litellm.

    A name whose first path segment is a litellm provider (`openai/x`, `hosted_vllm/x`, `anthropic/x`) is
    sent as is. Otherwise, with an `api_base`, the server is taken to be vLLM (or another OpenAI-compatible
    server) and the name becomes `hosted_vllm/<model>`, so `Qwen/Qwen2.5-7B` is served as itself. Without an
    `api_base` the name is left to litellm's own inference (`gpt-4o-mini` -> openai).
    """
    prefix = model.split("/", 1)[0] if "/" in model else None
    if prefix is not None and prefix in providers:
        return model
    if api_base:
        return f"{DEFAULT_PROVIDER_FOR_API_BASE}/{model}"
    return model


def is_loopback(api_base: str | None) -> bool:
    """Whether `api_base` names this machine (a local server needs no key)."""
    return _is_loopback(api_base)


def _is_loopback(api_base: str | None) -> bool:
    if not api_base:
        return False
    host = urlsplit(api_base).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class _Target:
    """What a spec means for litellm, worked out once per spec (provider lookups are not free)."""

    litellm_model: str
    supports_n: bool
    loopback: bool
    use_litellm_cost: bool
    provider: str | None = None
    # Set for OpenAI-compatible endpoints: the name sent through the openai SDK (transport_openai.py).
    served_model: str | None = None


def _resolve_target(spec: ModelSpec, *, openai_sdk: bool = True) -> _Target:
    litellm = _litellm()
    providers = frozenset(str(getattr(p, "value", p)) for p in litellm.provider_list)
    name = litellm_model_name(spec.model, spec.api_base, providers)
    try:
        supported = litellm.get_supported_openai_params(model=name) or []
    except Exception:  # an unknown provider: assume the conservative answer
        supported = []
    # litellm's per-call cost is trusted only while the spec's prices are litellm's own (not overridden), and
    # never for self-hosted specs, whose cost is GPU time.
    table_prices = lookup_usd_per_mtok(name)
    own_prices = (spec.input_usd_per_mtok, spec.output_usd_per_mtok)
    use_litellm_cost = not spec.self_hosted and table_prices is not None and table_prices == own_prices
    try:
        provider: str | None = litellm.get_llm_provider(model=name, api_base=spec.api_base)[1]
    except Exception:
        provider = None
    return _Target(
        litellm_model=name,
        supports_n="n" in supported,
        loopback=_is_loopback(spec.api_base),
        use_litellm_cost=use_litellm_cost,
        provider=provider,
        served_model=served_model_name(name, provider) if openai_sdk else None,
    )


def _api_key(spec: ModelSpec, target: _Target) -> str | None:
    key = spec.resolved_api_key()
    if key:
        remember_secret(key)  # so an echo of it is scrubbed from every log line too, ours or a library's
        return key
    if target.loopback:
        return DUMMY_LOCAL_KEY
    if spec.api_key_env:
        raise field_error(
            "ModelSpec",
            "api_key_env",
            spec.api_key_env,
            "that environment variable is not set or empty; export it before calling the model",
        )
    return None  # litellm falls back to the provider's usual variable (OPENAI_API_KEY, ...)


def _request_kwargs(
    spec: ModelSpec,
    target: _Target,
    messages: list[dict[str, Any]],
    temperature: float | None,
    max_tokens: int | None,
    logprobs: bool,
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None,
    stop: str | list[str] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": target.litellm_model,
        "messages": messages,
        "timeout": spec.timeout_s,
        "max_retries": 0,  # we retry; the OpenAI SDK would otherwise retry twice more inside each attempt
    }
    if spec.api_base:
        kwargs["api_base"] = spec.api_base
    key = _api_key(spec, target)
    if key is not None:
        kwargs["api_key"] = key
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if logprobs:
        kwargs["logprobs"] = True
    if tools:
        kwargs["tools"] = tools
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
    if stop is not None:
        kwargs["stop"] = stop
    if extra:
        clash = sorted(_RESERVED_KWARGS.intersection(extra))
        if clash:
            raise field_error(
                "ModelClient",
                "extra",
                clash,
                "these are set by the client; use the ModelSpec or arguments",
            )
        kwargs.update(extra)
    return kwargs
