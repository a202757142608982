"""LangChain conventions on UniScaleChat: keys, per-call routing controls, structured output, typed errors.

Needs nothing but this package: two scripted models on a loopback server (uniscale_lc.testing; no real
LLM, no key, no network). A few seconds.

    python examples/request_options.py

Shows, in order: `api_key=` kept as a SecretStr (sent, never shown); `cost_weight` and
`budget_usd_per_request` per call (kwargs or config["configurable"]), recorded and never sent to the
provider; `with_structured_output(method="json_schema")` through `response_format`; a configured copy
sharing the original's learner; feedback by request id on every decision of a run; and a request the
provider refuses coming back as `RequestRejectedError` without counting against the model.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from langchain_core.runnables import ConfigurableField
from pydantic import BaseModel

from uniscale_lc import ModelSpec, RequestRejectedError, UniScaleChat
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel


class Answer(BaseModel):
    answer: str
    confidence: int


def json_answer(messages: list[dict], sample_index: int, rng: object) -> str:
    return json.dumps({"answer": "42", "confidence": 9})


def main() -> None:
    models = [
        SimulatedModel("small", json_answer, strict_params=True),  # refuses arguments OpenAI does not define
        SimulatedModel("large", json_answer, strict_params=True),
    ]
    with OpenAIServer(models=models) as server:
        specs = [
            ModelSpec(model="small", api_base=server.api_base, input_usd_per_mtok=0.1, output_usd_per_mtok=0.4),
            ModelSpec(model="large", api_base=server.api_base, input_usd_per_mtok=5.0, output_usd_per_mtok=15.0),
        ]
        chat = UniScaleChat(models=specs, api_key="sk-example-key")  # type: ignore[arg-type]
        print("api_key shown as:", repr(chat.api_key))
        message = chat.invoke("What is 6 x 7?")
        sent = server.last_request_headers(message.response_metadata["model_name"])["Authorization"]
        print("sent Authorization header:", sent[:12] + "...")

        for options in ({"cost_weight": 0.9}, {"budget_usd_per_request": 1e-5}):
            message = chat.invoke("What is 6 x 7?", **options)
            record = message.response_metadata["uniscale"]
            print(f"{options}: arm {record['arm']}, cost_weight {record['cost_weight']}, "
                  f"budget {record['budget_usd_per_request']}")
        message = chat.invoke("What is 6 x 7?", config={"configurable": {"cost_weight": 0.0}})
        print("config['configurable'] cost_weight:", message.response_metadata["uniscale"]["cost_weight"])

        structured = chat.with_structured_output(Answer, method="json_schema")
        print("json_schema:", structured.invoke("What is 6 x 7? Answer in JSON."))

        copy = chat.configurable_fields(cost_weight=ConfigurableField(id="cost_weight"))
        answer = copy.invoke("q", config={"configurable": {"cost_weight": 0.5}})
        print("feedback on the original for the copy's answer:", chat.feedback(answer, 1.0).quality)

        run = {"metadata": {"uniscale_request_id": "agent-run-7"}}
        for step in range(3):
            chat.invoke(f"step {step}", config=run)  # type: ignore[arg-type]
        print("decisions scored by one request id:", chat.feedback("agent-run-7", 0.5).decisions)

        try:
            chat.invoke("q", frobnicate=True)  # unknown to the provider: refused with 400
        except RequestRejectedError as error:
            print(f"RequestRejectedError (status {error.status_code}): {str(error)[:80]}...")
        failures = sum(int(arm["failures"]) for arm in chat.stats()["arms"].values())
        print("arm failures learnt from it:", failures)
        chat.close()


if __name__ == "__main__":
    main()
