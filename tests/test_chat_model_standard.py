"""LangChain's standard chat model tests, run against UniScaleChat on the loopback OpenAI-compatible server.

The served models behave like a small real model would for these tests: they answer in text, and when
tools are offered they call the first one with arguments filled from its JSON schema (integers from the
prompt, strings from a quoted name in the prompt), so tool calling, structured output and agent loops
run for real over HTTP through litellm.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.strategies.config import MajorityVote, Single
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel, message_text

pytestmark = pytest.mark.timeout(120)

_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
_INTEGER = re.compile(r"-?\d+")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


_JSON_KEYS = re.compile(r"as a JSON with ((?:'[^']+'(?:,? and |, )?)+) keys")


def _answer(messages: list[dict[str, Any]], sample_index: int, rng: random.Random) -> str:
    text = _last_user_text(messages) or "nothing"
    asked = _JSON_KEYS.search(text)
    if asked:  # asked for JSON with named keys (JSON mode): answer with exactly that object
        return json.dumps({key: f"a {key} about cats" for key in re.findall(r"'([^']+)'", asked.group(1))})
    return f"Hello! I read your message: {text}"


def _fill(schema: dict[str, Any], text: str) -> Any:
    """A value for a JSON-schema property, taken from the prompt where the prompt has one."""
    kind = schema.get("type")
    if kind is None and "anyOf" in schema:
        kind = next((s.get("type") for s in schema["anyOf"] if s.get("type") != "null"), "string")
    if kind in ("integer", "number"):
        found = _INTEGER.search(text)
        return int(found.group()) if found else 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    quoted = _QUOTED.search(text)
    return (quoted.group(1) or quoted.group(2)) if quoted else "a pirate, arr"


def _tool_call(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], rng: random.Random
) -> dict[str, Any] | None:
    """Call the first tool, unless the last message is a tool result (then answer in text)."""
    if not tools or messages[-1].get("role") == "tool":
        return None
    function = tools[0].get("function") or {}
    properties = (function.get("parameters") or {}).get("properties") or {}
    text = _last_user_text(messages)
    arguments = {name: _fill(schema, text) for name, schema in properties.items()}
    return {"name": function.get("name"), "arguments": json.dumps(arguments, ensure_ascii=False)}


_server: OpenAIServer | None = None


def _api_base() -> str:
    """One server for the module, started on first use (the test classes read params as properties)."""
    global _server
    if _server is None:
        models = [
            SimulatedModel(name, _answer, tool_call=_tool_call, seed=index)
            for index, name in enumerate(("alpha", "beta"))
        ]
        _server = OpenAIServer(models=models).start()
    return _server.api_base


@pytest.fixture(scope="module", autouse=True)
def _stop_server() -> Iterator[None]:
    yield
    global _server
    if _server is not None:
        _server.stop()
        _server = None


def _params(api_base: str) -> dict[str, Any]:
    specs = [
        ModelSpec(model=name, api_base=api_base, gpu_usd_per_hour=1.0, timeout_s=10.0)
        for name in ("alpha", "beta")
    ]
    return {
        "models": specs,
        # A majority-vote arm too, so answers also come from a scaled strategy (one chunk when streamed);
        # calls with tools go to the Single arms only.
        "strategies": [Single(), MajorityVote(n=3, extractor="text", early_stop=True)],
        "client": ModelClient(retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05)),
    }


class TestUniScaleChatUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[UniScaleChat]:
        return UniScaleChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Unit tests never call a model: a port nobody listens on is enough.
        return _params("http://127.0.0.1:9/v1")

    @property
    def model_override_value(self) -> str:
        return "beta"


class TestUniScaleChatIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[UniScaleChat]:
        return UniScaleChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params(_api_base())

    @property
    def model_override_value(self) -> str:
        # `model=` per call pins the request to the arms of that model (see docs/chat_model.md).
        return "beta"

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        # with_structured_output(method="json_mode") sends response_format; the served models answer a
        # request for "a JSON with 'x' and 'y' keys" with that object, as a small real model would.
        return True

    # Left at their defaults (off) because the served models have no such inputs, not because of
    # UniScaleChat: image, audio, video and PDF inputs, Anthropic-format inputs. VCR tests are off: the
    # server is local and fast.


# ----------------------------------------------------------------------------- configuration checks


def _spec(name: str = "alpha") -> ModelSpec:
    return ModelSpec(model=name, api_base="http://127.0.0.1:9/v1", gpu_usd_per_hour=1.0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, r"UniScaleChat\.models: got no models"),
        ({"models": [_spec()], "strategies": ["single"]}, r"UniScaleChat\.strategies\[0\]: got str"),
        ({"models": [_spec()], "cost_weight": -1.0}, r"UniScaleChat\.cost_weight: got -1\.0"),
        ({"models": [_spec()], "cost_weight": 0.5, "budget_usd_per_request": 0.01}, "not both"),
        ({"models": [_spec()], "max_fallbacks": -1}, r"UniScaleChat\.max_fallbacks"),
        ({"models": [_spec()], "timeout": 0.0}, r"UniScaleChat\.timeout"),
        ({"models": [_spec()], "policy": object()}, r"UniScaleChat\.policy: got object without `bind`"),
        ({"models": [_spec()], "featurizer": "hashing"}, r"UniScaleChat\.featurizer"),
        ({"models": [_spec()], "openai_api_key": "sk-secret"}, r"openai_api_key: not a field; pass the key as api_key"),
        ({"models": [_spec(), _spec()]}, "duplicate arm id"),
    ],
)
def test_configuration_errors_name_the_field_and_the_fix(params: dict[str, Any], message: str) -> None:
    from uniscale_lc.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as caught:
        UniScaleChat(**params)
    assert "sk-secret" not in str(caught.value)


def test_bind_tools_needs_an_arm_that_takes_tools() -> None:
    from uniscale_lc.errors import ConfigError

    no_tools = ModelSpec(
        model="alpha", api_base="http://127.0.0.1:9/v1", gpu_usd_per_hour=1.0, supports_tools=False
    )
    chat = UniScaleChat(models=[no_tools, _spec("beta")], strategies=[Single(), MajorityVote(n=3)])
    bound = chat.bind_tools(
        [{"type": "function", "function": {"name": "f", "parameters": {}}}], tool_choice="f"
    )
    assert bound.kwargs["tool_choice"] == {"type": "function", "function": {"name": "f"}}  # type: ignore[attr-defined]
    assert chat._candidates(tools=True, model=None) == ("beta|single",)
    only_votes = UniScaleChat(models=[_spec()], strategies=[MajorityVote(n=3)])
    with pytest.raises(ConfigError, match="tools need a Single"):
        only_votes.bind_tools([{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(ConfigError, match="not a bound tool"):
        chat.bind_tools([{"type": "function", "function": {"name": "f", "parameters": {}}}], tool_choice="g")


def test_budget_pacer_adapts_the_cost_weight() -> None:
    chat = UniScaleChat(models=[_spec()], budget_usd_per_request=0.001)
    assert chat._pacer is not None and chat.stats()["cost_weight"] == chat._pacer.cost_weight
