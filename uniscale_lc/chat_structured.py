"""`with_structured_output` for `UniScaleChat`, with the three methods ChatOpenAI offers.

- `function_calling` (default): the schema as a forced tool call (`strict` goes inside the function);
- `json_schema`: `response_format={"type": "json_schema", ...}`, the model's text parsed as JSON;
- `json_mode`: `response_format={"type": "json_object"}`; the prompt must ask for the JSON shape.

The JSON methods restrict a request to arms whose `ModelSpec.supports_response_format` is True (the
router filters on the `response_format` option), so no arm is sent an option it cannot take.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_function, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from .errors import ConfigError

__all__ = ["STRUCTURED_OUTPUT_METHODS", "json_schema_response_format", "structured_output"]

STRUCTURED_OUTPUT_METHODS = ("function_calling", "json_schema", "json_mode")


def json_schema_response_format(schema: Any, strict: bool | None) -> dict[str, Any]:
    """OpenAI's `response_format` for a schema (a pydantic class, a JSON schema or a function dict)."""
    if isinstance(schema, dict) and schema.get("type") == "json_schema" and "json_schema" in schema:
        response_format = dict(schema)
        response_format["json_schema"] = dict(schema["json_schema"])
    elif isinstance(schema, dict) and "name" in schema and "schema" in schema:
        response_format = {"type": "json_schema", "json_schema": dict(schema)}
    else:
        function = convert_to_openai_function(schema, strict=strict)
        function["schema"] = function.pop("parameters")
        response_format = {"type": "json_schema", "json_schema": function}
    if strict is not None:
        response_format["json_schema"]["strict"] = strict
    return response_format


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def structured_output(
    chat: BaseChatModel, schema: Any, *, method: str, include_raw: bool, strict: bool | None
) -> Runnable[Any, Any]:
    """The runnable `with_structured_output` returns: the bound model, then a parser of its answer."""
    if method not in STRUCTURED_OUTPUT_METHODS:
        raise ConfigError(
            f"UniScaleChat.with_structured_output.method: got {method!r}; use one of "
            f"{list(STRUCTURED_OUTPUT_METHODS)}"
        )
    if schema is None and method != "json_mode":
        raise ConfigError(
            f"UniScaleChat.with_structured_output.schema: method={method!r} needs a schema (a pydantic "
            "class or a JSON schema dict); only json_mode takes none"
        )
    trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    llm: Runnable[Any, Any]
    parser: Runnable[Any, Any]
    if method == "function_calling":
        llm = chat.bind_tools([schema], tool_choice="any", strict=strict, ls_structured_output_format=trace)
        if _is_pydantic(schema):
            parser = PydanticToolsParser(tools=[schema], first_tool_only=True)
        else:
            name = convert_to_openai_tool(schema)["function"]["name"]
            parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
    else:
        if method == "json_schema":
            response_format = json_schema_response_format(schema, strict)
            trace["schema"] = convert_to_openai_tool(schema) if not isinstance(schema, dict) else schema
        else:
            response_format = {"type": "json_object"}
        llm = chat.bind(response_format=response_format, ls_structured_output_format=trace)
        parser = PydanticOutputParser(pydantic_object=schema) if _is_pydantic(schema) else JsonOutputParser()
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")
