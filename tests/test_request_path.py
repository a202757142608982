"""The request path a LangChain user relies on (issue 11): each test names the bug it pins down.

Everything runs against the loopback OpenAI-compatible server (uniscale_lc/testing/openai_server.py).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from langchain_core.runnables import ConfigurableField
from pydantic import BaseModel, SecretStr

from uniscale_lc import ModelSpec, UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.errors import AllArmsFailedError, ConfigError, ModelCallError, RequestRejectedError
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(120)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def server(make_server: MakeServer) -> OpenAIServer:
    return make_server(
        [
            SimulatedModel("alpha", "alpha says hi", tool_call={"name": "get_weather", "arguments": {"city": "Oslo"}}),
            SimulatedModel("beta", "beta says hi"),
        ]
    )


def _client() -> ModelClient:
    return ModelClient(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02))


def _chat(server: OpenAIServer, models: Sequence[str] = ("alpha", "beta"), **fields: Any) -> UniScaleChat:
    specs = [spec_for(server, name) for name in models]
    return UniScaleChat(models=specs, client=_client(), **fields)


def _pulls(chat: UniScaleChat) -> dict[str, int]:
    rows = chat.stats()["arms"]
    return {arm: int(rows.get(arm, {}).get("pulls", 0)) for arm in chat.arm_space.ids}


def _failures(chat: UniScaleChat) -> dict[str, int]:
    rows = chat.stats()["arms"]
    return {arm: int(rows.get(arm, {}).get("failures", 0)) for arm in chat.arm_space.ids}


# ---------------------------------------------------------------- 1. strict tools


def test_bind_tools_strict_goes_inside_each_function_not_to_the_top_level(server: OpenAIServer) -> None:
    chat = _chat(server, ("alpha",))
    chat.bind_tools([TOOL], strict=True).invoke("weather in Oslo?")
    body = server.last_request("alpha")
    assert body is not None
    assert "strict" not in body
    assert body["tools"][0]["function"]["strict"] is True


# ---------------------------------------------------------------- 2. per-call routing controls


def test_cost_weight_per_call_routes_and_is_never_sent_to_the_provider(server: OpenAIServer) -> None:
    chat = _chat(server)
    message = chat.invoke("q", cost_weight=0.9)
    record = message.response_metadata["uniscale"]
    assert record["cost_weight"] == pytest.approx(0.9)
    body = server.last_request(message.response_metadata["model_name"])
    assert body is not None and "cost_weight" not in body
    # Through config["configurable"] too, and a budget per call is a routing control as well.
    message = chat.invoke("q", config={"configurable": {"cost_weight": 0.7}})
    assert message.response_metadata["uniscale"]["cost_weight"] == pytest.approx(0.7)
    message = chat.invoke("q", budget_usd_per_request=1.0)
    assert message.response_metadata["uniscale"]["budget_usd_per_request"] == pytest.approx(1.0)
    body = server.last_request(message.response_metadata["model_name"])
    assert body is not None and "budget_usd_per_request" not in body
    # The chat model's own default is untouched.
    assert chat.invoke("q").response_metadata["uniscale"]["cost_weight"] == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="cost_weight"):
        chat.invoke("q", cost_weight=-1)


def test_a_per_call_budget_keeps_to_arms_predicted_within_it(make_server: MakeServer) -> None:
    server = make_server([SimulatedModel("cheap", "c"), SimulatedModel("dear", "d")])
    specs = [
        spec_for(server, "cheap", input_usd_per_mtok=0.1, output_usd_per_mtok=0.1),
        spec_for(server, "dear", input_usd_per_mtok=1000.0, output_usd_per_mtok=1000.0),
    ]
    chat = UniScaleChat(models=specs, client=_client(), cost_weight=0.0)
    for _ in range(6):
        message = chat.invoke("a question of some length", budget_usd_per_request=1e-4)
        assert message.response_metadata["model_name"] == "cheap"


# ---------------------------------------------------------------- 3. 4xx caused by the request


@pytest.mark.parametrize("status", ["400", "413", "422"])
def test_a_request_rejected_by_the_provider_is_the_callers_error_not_the_arms(
    server: OpenAIServer, status: str
) -> None:
    chat = _chat(server, ("alpha",), max_fallbacks=0)
    server.set_failure("alpha", status)  # type: ignore[arg-type]
    for _ in range(6):  # more than the breaker's threshold
        with pytest.raises(RequestRejectedError) as caught:
            chat.invoke("q")
        assert caught.value.status_code == int(status)
        assert not isinstance(caught.value, AllArmsFailedError)
    assert _failures(chat) == {"alpha|single": 0}
    assert not chat.stats()["breakers"].get("alpha", {}).get("open", False)
    assert chat.stats()["breakers"].get("alpha", {}).get("consecutive_failures", 0) == 0
    server.set_failure("alpha", None)
    assert chat.invoke("q").content == "alpha says hi"


def test_an_unknown_provider_option_rejected_with_400_teaches_nothing(make_server: MakeServer) -> None:
    server = make_server([SimulatedModel("alpha", "a", strict_params=True)])
    chat = UniScaleChat(models=[spec_for(server, "alpha")], client=_client())
    with pytest.raises(RequestRejectedError, match="frobnicate"):
        chat.invoke("q", frobnicate=3)
    assert _failures(chat) == {"alpha|single": 0}
    assert chat.stats()["failed_requests"] == 0


def test_model_not_found_404_is_a_typed_error_and_no_arm_failure(server: OpenAIServer) -> None:
    specs = [spec_for(server, "no-such-model")]
    chat = UniScaleChat(models=specs, client=_client())
    with pytest.raises(RequestRejectedError) as caught:
        chat.invoke("q")
    assert caught.value.status_code == 404
    assert _failures(chat) == {"no-such-model|single": 0}


def test_a_server_error_still_falls_back_and_teaches(server: OpenAIServer) -> None:
    chat = _chat(server, max_fallbacks=1)
    # Untaught, beta's arm features give it the larger bonus, so it is tried first.
    assert chat.explain("q")[0]["arm"] == "beta|single"
    server.set_failure("beta", "500")
    messages = [chat.invoke("q") for _ in range(4)]
    assert {message.response_metadata["model_name"] for message in messages} == {"alpha"}
    assert messages[0].response_metadata["uniscale"]["fallbacks"][0]["arm"] == "beta|single"
    assert _failures(chat)["beta|single"] >= 1


# ---------------------------------------------------------------- 4. missing api_key_env


def test_a_model_whose_key_variable_is_missing_is_left_out_with_one_warning(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("UNISCALE_TEST_MISSING_KEY", raising=False)
    remote = ModelSpec(
        model="openai/gpt-4o-mini", name="remote", api_key_env="UNISCALE_TEST_MISSING_KEY", timeout_s=5.0
    )
    with caplog.at_level(logging.WARNING, logger="uniscale_lc"):
        chat = UniScaleChat(models=[remote, spec_for(server, "alpha")], client=_client())
    warnings = [r for r in caplog.records if "UNISCALE_TEST_MISSING_KEY" in r.getMessage()]
    assert len(warnings) == 1
    for _ in range(5):
        assert chat.invoke("q").response_metadata["model_name"] == "alpha"
    assert _pulls(chat)["remote|single"] == 0
    with pytest.raises(ConfigError, match="UNISCALE_TEST_MISSING_KEY"):
        chat.invoke("q", model="remote")
    with pytest.raises(ConfigError, match="UNISCALE_TEST_MISSING_KEY"):
        UniScaleChat(models=[remote], client=_client())


# ---------------------------------------------------------------- 5. configured copies share one learner


def test_configurable_fields_and_with_config_copies_share_one_learner(server: OpenAIServer) -> None:
    chat = _chat(server)
    configurable = chat.configurable_fields(cost_weight=ConfigurableField(id="cost_weight"))
    message = configurable.invoke("q", config={"configurable": {"cost_weight": 0.8}})
    assert message.response_metadata["uniscale"]["cost_weight"] == pytest.approx(0.8)
    result = chat.feedback(message, 1.0)  # feedback on the original learns it
    assert result.quality == 1.0
    bound = configurable.with_config(configurable={"cost_weight": 0.6})
    message = bound.invoke("q")
    assert message.response_metadata["uniscale"]["cost_weight"] == pytest.approx(0.6)
    chat.feedback(message, 0.5)
    assert sum(int(row["feedback"]) for row in chat.stats()["arms"].values()) == 2
    assert chat.invoke("q").response_metadata["uniscale"]["cost_weight"] == pytest.approx(0.2)


# ---------------------------------------------------------------- 6. clean exit


_EXIT_SCRIPT = """
import asyncio, os, sys
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
from uniscale_lc import ModelSpec, UniScaleChat
from uniscale_lc.client import ModelClient
spec = ModelSpec(model=sys.argv[2], api_base=sys.argv[1], gpu_usd_per_hour=0.0, timeout_s=10.0)
chat = UniScaleChat(models=[spec], client=ModelClient(transport=sys.argv[3]))
print(chat.invoke("hello").content)
print(asyncio.run(chat.ainvoke("hello")).content)
for chunk in chat.stream("hello"):
    pass
chat.close()
print("done")
"""


@pytest.mark.parametrize("transport", ["auto", "litellm"])
def test_invoke_then_close_exits_without_warnings_or_tracebacks(server: OpenAIServer, transport: str) -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONWARNINGS": "default"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_EXIT_SCRIPT), server.api_base, "alpha", transport],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("done")
    # The openai SDK's pools, and litellm's clients of a loop (uniscale_lc/loop_cleanup.py), close with
    # their loop: asyncio.run leaves no socket to the garbage collector.
    for text in ["Task was destroyed", "Event loop is closed", "Traceback", "Unclosed", "ResourceWarning"]:
        assert text not in done.stderr, done.stderr


def test_litellm_clients_of_a_loop_close_when_asyncio_run_ends(server: OpenAIServer) -> None:
    import asyncio
    import gc
    import warnings

    import litellm
    from litellm.caching.evicted_client_closer import running_loop_token

    chat = UniScaleChat(models=[spec_for(server, "alpha")], client=ModelClient(transport="litellm"))

    async def call() -> Any:
        await chat.ainvoke("hello")
        return running_loop_token()

    gc.collect()  # earlier tests' garbage is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        token = asyncio.run(call())
        cache = litellm.in_memory_llm_clients_cache
        left = [key for key in list(cache.cache_dict) if key.endswith(f"-{token}")]
        for key in left:  # what interpreter exit does to them: dropped, their sockets left to the collector
            cache.cache_dict.pop(key, None)
            cache.ttl_dict.pop(key, None)
        del cache
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == [] and left == []  # the loop's clients were closed and dropped at its end


# ---------------------------------------------------------------- 7. feedback on every decision of a run


def test_feedback_by_request_id_scores_every_decision_under_it(server: OpenAIServer) -> None:
    chat = _chat(server)
    config = {"metadata": {"uniscale_request_id": "agent-run-1"}}
    for _ in range(3):
        chat.invoke("step", config=config)  # type: ignore[arg-type]
    assert len(chat.pending_decisions) == 3
    result = chat.feedback("agent-run-1", 1.0)
    assert result.decisions == 3
    assert len(chat.pending_decisions) == 0
    assert sum(int(row["feedback"]) for row in chat.stats()["arms"].values()) == 3
    assert chat.feedback("agent-run-1", 1.0).duplicate


def test_feedback_by_parent_run_id_scores_every_model_call_under_it(server: OpenAIServer) -> None:
    import uuid

    from langchain_core.runnables import RunnableLambda

    chat = _chat(server)

    def agent(question: str) -> str:
        first = chat.invoke(question)
        second = chat.invoke(f"{question} again: {first.content}")
        return str(second.content)

    run_id = uuid.uuid4()
    RunnableLambda(agent).invoke("plan", config={"run_id": run_id})
    assert len(chat.pending_decisions) == 2
    assert chat.feedback(str(run_id), 0.75).decisions == 2
    assert len(chat.pending_decisions) == 0


# ---------------------------------------------------------------- 8. json_schema / json_mode


class Answer(BaseModel):
    answer: str
    confidence: int


def _json_answer(messages: list[dict[str, Any]], sample_index: int, rng: Any) -> str:
    return json.dumps({"answer": "42", "confidence": 9})


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_structured_output_honours_the_method_through_response_format(
    make_server: MakeServer, method: str
) -> None:
    server = make_server([SimulatedModel("alpha", _json_answer), SimulatedModel("beta", _json_answer)])
    no_json = spec_for(server, "beta", supports_response_format=False)
    chat = UniScaleChat(models=[spec_for(server, "alpha"), no_json], client=_client())
    structured = chat.with_structured_output(Answer, method=method)
    for _ in range(3):
        parsed = structured.invoke("what is the answer? reply in JSON")
        assert parsed == Answer(answer="42", confidence=9)
    body = server.last_request("alpha")
    assert body is not None and "tools" not in body
    assert server.request_count("beta") == 0
    expected = "json_schema" if method == "json_schema" else "json_object"
    assert body["response_format"]["type"] == expected
    if method == "json_schema":
        assert body["response_format"]["json_schema"]["schema"]["properties"].keys() == {"answer", "confidence"}
    raw = chat.with_structured_output(Answer, method=method, include_raw=True).invoke("json please")
    assert raw["parsed"] == Answer(answer="42", confidence=9) and raw["parsing_error"] is None


# ---------------------------------------------------------------- 9. errors that say what happened


def test_connection_refused_says_so_with_the_url() -> None:
    spec = ModelSpec(model="alpha", api_base="http://127.0.0.1:9/v1", gpu_usd_per_hour=0.0, timeout_s=5.0)
    for transport in ("auto", "litellm"):
        client = ModelClient(retry=RetryPolicy(max_attempts=2, base_delay_s=0.01), transport=transport)
        with pytest.raises(ModelCallError) as caught:
            client.complete(spec, [{"role": "user", "content": "q"}])
        message = str(caught.value)
        assert "connection refused" in message.lower() and "http://127.0.0.1:9/v1" in message, message
        assert "server error (500)" not in message


def test_an_api_base_without_a_scheme_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"api_base.*http://"):
        ModelSpec(model="alpha", api_base="127.0.0.1:8000/v1", gpu_usd_per_hour=0.0)


def test_missing_credentials_say_so_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = ModelSpec(model="gpt-4o-mini", timeout_s=5.0)
    client = ModelClient(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01))
    with pytest.raises(ConfigError, match="OPENAI_API_KEY") as caught:
        client.complete(spec, [{"role": "user", "content": "q"}])
    assert "attempts" not in str(caught.value) and "500" not in str(caught.value)


# ---------------------------------------------------------------- 10. api_key as a SecretStr


def test_api_key_is_accepted_as_a_secret_and_never_shown(server: OpenAIServer) -> None:
    from langchain_core.load import dumps

    remote = ModelSpec(model="alpha", name="keyed", api_base=server.api_base, gpu_usd_per_hour=0.0)
    chat = UniScaleChat(models=[remote], client=_client(), api_key="sk-chat-secret")  # type: ignore[arg-type]
    assert isinstance(chat.api_key, SecretStr)
    chat.invoke("q")
    assert server.last_request_headers("alpha").get("Authorization") == "Bearer sk-chat-secret"
    own = ModelSpec(
        model="alpha", api_base=server.api_base, gpu_usd_per_hour=0.0, api_key=SecretStr("sk-spec-secret")
    )
    chat2 = UniScaleChat(models=[own], client=_client(), api_key="sk-chat-secret")  # type: ignore[arg-type]
    chat2.invoke("q")
    assert server.last_request_headers("alpha").get("Authorization") == "Bearer sk-spec-secret"
    shown = " ".join(
        [repr(chat), str(chat), repr(own), own.model_dump_json(), json.dumps(chat.model_dump(), default=str)]
    )
    shown += dumps(chat) + str(chat._identifying_params)
    assert "sk-chat-secret" not in shown and "sk-spec-secret" not in shown


def test_api_key_refuses_a_non_string() -> None:
    with pytest.raises((ConfigError, ValueError)):
        UniScaleChat(
            models=[ModelSpec(model="alpha", api_base="http://127.0.0.1:9/v1", gpu_usd_per_hour=0.0)],
            api_key=123,  # type: ignore[arg-type]
        )


# ---------------------------------------------------------------- 11. metadata and explain


def test_model_name_names_the_model_that_answered_after_a_fallback(server: OpenAIServer) -> None:
    chat = _chat(server, max_fallbacks=1, cost_weight=0.0)
    server.set_failure("beta", "500")  # tried first (see test_a_server_error_still_falls_back_and_teaches)
    for _ in range(3):
        message = chat.invoke("q")
        assert message.response_metadata["model_name"] == "alpha"
        streamed = None
        for chunk in chat.stream("q"):
            streamed = chunk if streamed is None else streamed + chunk
        assert streamed is not None and streamed.response_metadata["model_name"] == "alpha"
    assert _failures(chat)["beta|single"] >= 1


def test_ls_params_name_the_provider_and_the_pinned_or_only_model(server: OpenAIServer) -> None:
    chat = _chat(server)
    params = chat._get_ls_params()
    assert params["ls_provider"] == "uniscale" and params["ls_model_name"] == "uniscale"
    assert chat._get_ls_params(model="beta")["ls_model_name"] == "beta"
    one = _chat(server, ("alpha",))
    assert one._get_ls_params()["ls_model_name"] == "alpha"


def test_explain_predicted_quality_stays_in_the_unit_interval(server: OpenAIServer) -> None:
    chat = _chat(server)
    for _ in range(12):
        message = chat.invoke("the same question")
        chat.feedback(message, 1.0)
    for row in chat.explain("the same question"):
        assert 0.0 <= row["predicted_quality"] <= 1.0, row


# ---------------------------------------------------------------- overhead: one eligible arm


def test_one_eligible_arm_needs_no_policy_decision(server: OpenAIServer) -> None:
    chat = _chat(server)
    calls: list[int] = []
    original = chat._policy.select

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    chat._policy.select = counting  # type: ignore[method-assign]
    message = chat.invoke("q", model="beta")
    assert calls == []
    assert message.response_metadata["uniscale"]["arm"] == "beta|single"
    chat.feedback(message, 1.0)  # still learnt
    assert chat.stats()["arms"]["beta|single"]["feedback"] == 1  # still learnt
    chat.invoke("q")
    assert calls == [1]


async def test_calls_spill_to_further_pools_past_a_few_in_flight(make_server: MakeServer) -> None:
    """httpx scans every connection of a pool per request: no pool is let grow past about SHARD_IN_FLIGHT."""
    import asyncio

    from uniscale_lc.transport_openai import SHARD_IN_FLIGHT

    server = make_server([SimulatedModel("slow", "ok", latency_s=0.3)])
    client = ModelClient(transport="auto")
    spec = spec_for(server, "slow", timeout_s=30.0)
    user = [{"role": "user", "content": "q"}]
    await client.acomplete(spec, user)
    [pools] = [pools for per_loop in client._openai._clients.values() for pools in per_loop.values()]
    assert len(pools.clients) == 1  # one call at a time: one pool
    answers = await asyncio.gather(*(client.acomplete(spec, user) for _ in range(3 * SHARD_IN_FLIGHT)))
    assert [answer.texts for answer in answers] == [["ok"]] * (3 * SHARD_IN_FLIGHT)
    assert len(pools.clients) == 3 and pools.in_flight == [0, 0, 0]
    await client.aclose()
