"""`ModelSpec`: one model reachable through litellm, with its prices and serving facts."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .prices import lookup_usd_per_mtok

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ModelSpec(BaseModel):
    """A model the router may call: its name, where it is served, its prices and its key.

    The key is either named (`api_key_env`, read at call time) or given as a `SecretStr` (`api_key`, as
    LangChain's chat models take it): never serialised, never in a repr, a log or a state file.

    Prices default to litellm's table; a self-hosted server may instead give `gpu_usd_per_hour`, in which
    case its cost is latency times that rate.
    """

    # hide_input_in_errors: pydantic would otherwise print the bad value, e.g. a key pasted into
    # api_key_env or passed as an unknown field, into the ValidationError text and logs.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    model: str = Field(
        min_length=1, description="litellm model name, e.g. 'gpt-4o-mini' or 'hosted_vllm/qwen'"
    )
    name: str | None = Field(default=None, description="short name used in arm ids; default: `model`")
    api_base: str | None = Field(default=None, description="base URL, e.g. 'http://127.0.0.1:8000/v1'")
    api_key_env: str | None = Field(default=None, description="name of the environment variable with the key")
    api_key: SecretStr | None = Field(
        default=None, exclude=True, repr=False, description="the key itself; wins over api_key_env"
    )
    input_usd_per_mtok: float | None = Field(default=None, ge=0)
    output_usd_per_mtok: float | None = Field(default=None, ge=0)
    params_b: float | None = Field(default=None, gt=0, description="parameters in billions, if known")
    gpu_usd_per_hour: float | None = Field(default=None, ge=0, description="self-hosted: price of the server")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="in-flight calls allowed to this model"
    )
    timeout_s: float = Field(default=60.0, gt=0, le=3600, description="per-call timeout")
    supports_tools: bool = Field(default=True, description="whether tool calls may be sent to this model")
    supports_response_format: bool = Field(
        default=True,
        description="whether `response_format` (JSON mode / JSON schema) may be sent to this model",
    )

    @field_validator("api_base")
    @classmethod
    def _check_api_base(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"api_base must be an http:// or https:// URL with a host, e.g. 'http://{value.split('://')[-1]}'"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            # Never echo the value: a user may have pasted the key itself here.
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits, underscores), "
                "not the key itself; e.g. api_key_env='OPENAI_API_KEY'"
            )
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and ("|" in value or not value.strip()):
            raise ValueError("must be non-empty and must not contain '|' (the arm id separator)")
        return value

    @model_validator(mode="after")
    def _resolve_prices(self) -> ModelSpec:
        if "|" in self.model:
            raise ValueError("model must not contain '|' (the arm id separator); set name= for a short alias")
        given = (self.input_usd_per_mtok, self.output_usd_per_mtok)
        if given[0] is not None and given[1] is not None:
            return self
        if given[0] is not None or given[1] is not None:
            raise ValueError("give both input_usd_per_mtok and output_usd_per_mtok, or neither")
        looked_up = lookup_usd_per_mtok(self.model)
        if looked_up is not None:
            object.__setattr__(self, "input_usd_per_mtok", looked_up[0])
            object.__setattr__(self, "output_usd_per_mtok", looked_up[1])
            return self
        if self.gpu_usd_per_hour is not None:
            object.__setattr__(self, "input_usd_per_mtok", 0.0)
            object.__setattr__(self, "output_usd_per_mtok", 0.0)
            return self
        raise ValueError(
            f"input_usd_per_mtok: no price for {self.model!r} in litellm's table; pass "
            "input_usd_per_mtok/output_usd_per_mtok, or gpu_usd_per_hour for a self-hosted server"
        )

    @property
    def display_name(self) -> str:
        """The name used in arm ids."""
        return self.name or self.model

    @property
    def self_hosted(self) -> bool:
        return self.gpu_usd_per_hour is not None

    @property
    def blended_usd_per_mtok(self) -> float:
        """One price for arm features: input and output weighted 1:3, a typical chat ratio in cost terms."""
        return (float(self.input_usd_per_mtok or 0.0) + 3.0 * float(self.output_usd_per_mtok or 0.0)) / 4.0

    def resolved_api_key(self) -> str | None:
        """The key to send: `api_key` if given, else `api_key_env` read from the environment now."""
        if self.api_key is not None:
            return self.api_key.get_secret_value() or None
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def key_missing(self) -> bool:
        """A key variable is named but unset or empty (and no key is given): calls would fail."""
        return self.api_key is None and bool(self.api_key_env) and not os.environ.get(self.api_key_env or "")
