"""Configuration of the relay, read once from the environment (see the table in the README).

Every variable has a documented default; tests build their own `Settings` instead of patching.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """The relay's configuration; field names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    openai_secret_id: str | None = None
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = None
    default_model: str = "gpt-4o-mini"
    allowed_models: Annotated[list[str], NoDecode] = []
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    allow_client_system_prompt: bool = False
    max_tokens_cap: int = Field(default=1024, ge=1)
    upstream_token_limit_field: Literal["max_completion_tokens", "max_tokens"] = Field(
        default="max_completion_tokens",
        description="The field that carries the relay's own token limit upstream when the "
        "caller sent none; `max_tokens` only for compatible servers that predate the other.",
    )
    allowed_extra_fields: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(),
        description="Comma-separated request fields `/v1` passes on beyond its allow-list "
        "(docs/api.md); each one is the operator's explicit choice to pay for what it does.",
    )
    max_prompt_chars: int = Field(default=16000, ge=1)
    max_messages: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=65536, ge=1)
    upstream_timeout_s: float = Field(default=30.0, gt=0)
    ping_interval_s: float = Field(default=10.0, gt=0)
    secret_ttl_s: float = Field(default=300.0, ge=0)
    client_tokens: Annotated[list[str], NoDecode] = Field(default=[], repr=False)
    cors_origins: Annotated[list[str], NoDecode] = []
    log_prompts: bool = False
    aws_lambda_function_name: str | None = Field(
        default=None,
        description="Set by Lambda itself: the function's name. When present the app is on "
        "Lambda, where the function URL's CORS settings apply instead of CORS_ORIGINS.",
    )
    relay_runtime_debug: bool = Field(
        default=False,
        description="The native streaming runtime logs one line per invocation (trace id, "
        "event loop, live tasks): for diagnosing the runtime, off in normal operation.",
    )

    _split = field_validator(
        "allowed_models", "client_tokens", "cors_origins", "allowed_extra_fields", mode="before"
    )(_split_csv)

    @cached_property
    def model_allow_list(self) -> frozenset[str]:
        """The models a request may name: `ALLOWED_MODELS`, or just the default model."""
        return frozenset(self.allowed_models or [self.default_model])
