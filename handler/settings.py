"""Configuration of the relay, read once from the environment (see the table in the README).

Every variable has a documented default; tests build their own `Settings` instead of patching.
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from ipaddress import ip_address
from typing import Annotated, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from handler.aws import AwsEnvironment
from handler.tools import ChatTool, check_unique_names

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_sign_in_url(url: str) -> str:
    """A URL the relay trusts for keys: https, or http on a loopback host (tests, `make dev`)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute URL")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return url
    raise ValueError(f"{url!r} must use https (http only on a loopback host)")


class Settings(BaseSettings):
    """The relay's configuration; field names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    openai_secret_id: str | None = None
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_key_header: Literal["authorization", "api-key"] = Field(
        default="authorization",
        description="How the key goes upstream: `authorization` (`Bearer <key>`, OpenAI and "
        "most compatible servers) or `api-key` (Azure OpenAI's v1 API).",
    )
    default_model: str = "gpt-5.4-mini"
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
    chat_tools: Annotated[list[ChatTool], NoDecode] = Field(
        default=[],
        description="Function tools offered to the model on /chat and /api/chat, run by the "
        "caller's frontend: a JSON array of {name, description, parameters (JSON Schema)}.",
    )
    max_tool_steps: int = Field(
        default=8,
        ge=1,
        description="Tool round trips a conversation may hold; at this many the model may "
        "call no more tools, beyond it the request is refused.",
    )
    max_prompt_chars: int = Field(default=16000, ge=1)
    allow_images: bool = Field(
        default=False,
        description="Accept image parts on `/v1` (data: URLs), each counted against "
        'MAX_PROMPT_CHARS and the budget at its worst-case price (docs/api.md, "Media").',
    )
    allow_image_urls: bool = Field(
        default=False,
        description="With ALLOW_IMAGES, also accept https image URLs, which OpenAI fetches.",
    )
    allow_files: bool = Field(
        default=False,
        description="Accept file parts on `/v1` (inline data only), counted one token per "
        "character of their data.",
    )
    allow_audio: bool = Field(
        default=False,
        description="Accept audio parts (`input_audio`, wav or mp3) on `/v1/chat/completions`.",
    )
    max_messages: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=65536, ge=1)
    upstream_timeout_s: float = Field(default=30.0, gt=0)
    ping_interval_s: float = Field(default=10.0, gt=0)
    secret_ttl_s: float = Field(default=300.0, ge=0)
    secret_retry_after_s: float = Field(
        default=5.0,
        ge=0,
        description="A failed read of the secret is remembered this long: while Secrets Manager "
        "fails, a process calls it once per this interval, not once per request.",
    )
    secret_stale_s: float = Field(
        default=900.0,
        ge=0,
        description="How long past SECRET_TTL_S the last good secret keeps serving while "
        "reading it again fails (logged, metric `SecretServedStale`); then 503. 0 = never.",
    )
    client_tokens: Annotated[list[str], NoDecode] = Field(
        default=[],
        repr=False,
        description="Bearer tokens, only when the key comes from OPENAI_API_KEY; with a secret "
        "the tokens are its `client_tokens` and this is ignored (logged at startup).",
    )
    allow_anonymous: bool = Field(
        default=False,
        description="Let callers without credentials in. Off: with no access method configured "
        "the relay refuses everyone.",
    )
    url_auth_type: Literal["NONE", "AWS_IAM"] = Field(
        default="NONE",
        description="The function URL's AuthType, set by the template: with AWS_IAM the URL has "
        "checked every caller's SigV4 signature, and the caller is its IAM ARN.",
    )
    aws_lwa_invoke_mode: str | None = Field(
        default=None,
        description="Set by the template in Lambda Web Adapter mode only; there the request "
        "context comes in the adapter's `x-amzn-request-context` header.",
    )
    jwt_issuer: str | None = Field(
        default=None, description="Sign-in: the `iss` of accepted JWTs (https)."
    )
    jwt_audience: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Sign-in: accepted `aud` values (or `client_id`, Cognito's access tokens).",
    )
    jwks_url: str | None = Field(
        default=None,
        description="Sign-in: the issuer's keys; default: `jwks_uri` of its OIDC discovery.",
    )
    jwt_required_scopes: Annotated[list[str], NoDecode] = Field(
        default=[], description="Sign-in: scopes every JWT must carry (`scope` or `scp`)."
    )
    jwks_min_refetch_s: float = Field(
        default=60.0,
        ge=0,
        description="Sign-in: an unknown `kid` re-fetches the JWKS at most this often.",
    )
    jwks_max_age_s: float = Field(
        default=600.0,
        ge=0,
        description="Sign-in: the JWKS is fetched again once its Cache-Control max-age runs out, "
        "at least every JWKS_MIN_REFETCH_S and at most every this many seconds.",
    )
    jwt_leeway_s: int = Field(
        default=30, ge=0, le=60, description="Sign-in: clock skew allowed on `exp` and `nbf`."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Origins the app answers CORS for, preflights included. The template sets "
        "it only for the REST API door: a function URL answers CORS itself, from its own "
        "settings, and the app's headers would come twice.",
    )
    page_relay_url: str | None = Field(
        default=None,
        description="The one other relay the demo page may call (its Settings endpoint): its "
        "origin joins the page's CSP `connect-src`; unset, the page calls only its own site.",
    )
    log_prompts: bool = False
    openapi_docs: bool = Field(
        default=False,
        description="Serve the OpenAPI document at /openapi.json and its page at /docs "
        "(`make dev` does); off, both are 404 and docs/openapi.json is the published copy.",
    )
    fastapi_telemetry: bool = Field(
        default=False,
        description="FastAPI's own OpenTelemetry spans, metrics and logs (through the "
        "providers the process configured); off, FastAPI records nothing.",
    )
    aws_lambda_function_name: str | None = Field(
        default=None,
        description="Set by Lambda itself: the function's name (the app is on Lambda).",
    )
    relay_runtime_debug: bool = Field(
        default=False,
        description="The native streaming runtime logs one line per invocation (trace id, "
        "event loop, live tasks): for diagnosing the runtime, off in normal operation.",
    )
    # Per-caller limits (handler/quota.py). A limit of 0 is off; any limit needs the table.
    quota_table: str | None = Field(
        default=None, description="DynamoDB table of the per-caller counters (QUOTA_TABLE)"
    )
    rate_limit_per_minute: int = Field(
        default=0, ge=0, description="requests per caller per clock minute; 0 = no limit"
    )
    token_budget_per_day: int = Field(
        default=0, ge=0, description="prompt + completion tokens per caller per UTC day; 0 = none"
    )
    max_concurrent_streams: int = Field(
        default=0,
        ge=0,
        description="model requests one caller may have in flight at once; 0 = no limit",
    )
    plans: str = Field(
        default="",
        description='Caller plans, a JSON object {"<name>": {...}} (docs/api.md, "Plans"); '
        "each plan's unset fields are these settings, which are the plan `default`.",
    )
    jwt_plan_claim: str | None = Field(
        default=None,
        description="Sign-in: the claim whose first value naming a plan is the user's plan "
        "(`cognito:groups`, `scope`); no match: `default`.",
    )
    quota_fail_open: bool = Field(
        default=False,
        description="admit requests (with a warning) when DynamoDB cannot be reached",
    )
    aws_endpoint_url_dynamodb: str | None = Field(
        default=None,
        # The SDK's own variables, read as the SDK would: the service's first, then the common.
        validation_alias=AliasChoices("aws_endpoint_url_dynamodb", "aws_endpoint_url"),
        description="another DynamoDB endpoint for the quota table (moto locally); default AWS's",
    )
    metrics_namespace: str = Field(
        default="ChatRelay",
        pattern=r"^[A-Za-z0-9._/#:-]{1,255}$",
        description="CloudWatch namespace of the metrics in the request log line",
    )
    allow_store: bool = Field(
        default=False,
        description="Whether `/v1/responses` may ask OpenAI to store a response (`store: true`); "
        "off, every response is sent with `store: false`, so no prompt is kept at OpenAI.",
    )
    stream_events: Annotated[list[Literal["url", "rest"]], NoDecode] = Field(
        default=["url"],
        min_length=1,
        description="Events the native runtime answers with a stream: `url` (function URL) "
        "and/or `rest` (API Gateway REST API whose integration streams); others are buffered.",
    )
    aws_lambda_max_concurrency: int = Field(
        default=1,
        ge=1,
        description="Set by Lambda Managed Instances: how many invocations the native runtime "
        "serves at once, each on its own poller in the one process and event loop.",
    )

    _split = field_validator(
        "allowed_models",
        "client_tokens",
        "cors_origins",
        "allowed_extra_fields",
        "jwt_audience",
        "jwt_required_scopes",
        "stream_events",
        mode="before",
    )(_split_csv)

    @field_validator("chat_tools", mode="before")
    @classmethod
    def _tools_from_json(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return []  # the template passes an empty parameter as an empty string
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("CHAT_TOOLS must be a JSON array of tools") from None
        return value

    _unique_tools = field_validator("chat_tools")(check_unique_names)

    @field_validator("plans", mode="before")
    @classmethod
    def _plans_as_json(cls, value: object) -> object:
        # Tests and code may pass the plans as a dict; the environment gives JSON text.
        return orjson.dumps(value).decode() if isinstance(value, dict) else value

    @field_validator("jwt_issuer", "jwks_url", "page_relay_url", "jwt_plan_claim", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # The template passes empty parameters as empty strings.
        return value or None

    @field_validator("jwt_issuer", "jwks_url", "page_relay_url")
    @classmethod
    def _trusted_url(cls, value: str | None) -> str | None:
        return value if value is None else check_sign_in_url(value)

    @cached_property
    def page_relay_origin(self) -> str | None:
        """`PAGE_RELAY_URL`'s origin (scheme, host, port), as the page's CSP names it."""
        if not self.page_relay_url:
            return None
        parts = urlsplit(self.page_relay_url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}"

    @field_validator("page_relay_url")
    @classmethod
    def _plain_host(cls, value: str | None) -> str | None:
        # The origin goes into a CSP header: a host of anything but name characters could
        # widen or break the policy.
        parts = urlsplit(value) if value else None
        host = parts.hostname if parts else None
        if parts is not None and parts.port is None and ":" in (parts.netloc or ""):
            raise ValueError(f"{value!r}: the port is not a number")
        if host is not None and not re.fullmatch(r"[a-z0-9.-]+", host):
            raise ValueError(f"{value!r}: the host must be a plain DNS name or IPv4 address")
        return value

    @model_validator(mode="after")
    def _sign_in_is_complete(self) -> Settings:
        if self.jwt_issuer and not self.jwt_audience:
            raise ValueError("JWT_ISSUER needs JWT_AUDIENCE: an issuer signs tokens for many apps")
        if not self.jwt_issuer and (self.jwt_audience or self.jwks_url or self.jwt_required_scopes):
            raise ValueError("JWT_AUDIENCE, JWKS_URL and JWT_REQUIRED_SCOPES need JWT_ISSUER")
        return self

    @model_validator(mode="after")
    def _limits_need_a_table(self) -> Settings:
        # Fail closed: a limit that is set must never silently be no limit at all.
        if self.limited and not self.quota_table:
            raise ValueError(
                "RATE_LIMIT_PER_MINUTE, TOKEN_BUDGET_PER_DAY and MAX_CONCURRENT_STREAMS need "
                "QUOTA_TABLE"
            )
        return self

    @property
    def limited(self) -> bool:
        """Whether these settings set any per-caller limit."""
        return bool(
            self.rate_limit_per_minute or self.token_budget_per_day or self.max_concurrent_streams
        )

    @property
    def quotas_on(self) -> bool:
        """Whether requests are counted against per-caller limits at all (by these settings;
        a plan's limits turn the counting on too: `Plans.any_limited`)."""
        return bool(self.quota_table) and self.limited

    @cached_property
    def chat_tool_specs(self) -> dict[str, dict]:
        """`CHAT_TOOLS` as Chat Completions' `tools` entries, by name."""
        return {tool.name: tool.upstream() for tool in self.chat_tools}

    @cached_property
    def model_allow_list(self) -> frozenset[str]:
        """The models a request may name: `ALLOWED_MODELS`, or just the default model."""
        return frozenset(self.allowed_models or [self.default_model])


def aws_environment(service: str = "SECRETS_MANAGER") -> AwsEnvironment:
    """The AWS SDKs' standard variables for `service` (as in `AWS_ENDPOINT_URL_<SERVICE>`):
    not the relay's settings, so not in its table, but read here like every other variable.
    The credentials are the SDKs' chain's (handler/aws.py), read by awscrt itself."""
    env = os.environ
    return AwsEnvironment(
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        endpoint_url=env.get(f"AWS_ENDPOINT_URL_{service}") or env.get("AWS_ENDPOINT_URL"),
        use_fips=_true(env.get("AWS_USE_FIPS_ENDPOINT")),
        use_dualstack=_true(env.get("AWS_USE_DUALSTACK_ENDPOINT")),
        ca_bundle=env.get("AWS_CA_BUNDLE") or None,
    )


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"
