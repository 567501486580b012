"""The FastAPI app: the contract's routes (docs/api.md), their dependencies, the one error table.

`app` is the ASGI app (uvicorn, the native streaming runtime, Lambda Web Adapter); `handler` is
the buffered Mangum handler for plain invokes and `sam local invoke`. Routes of your own reuse
the relay's caller identity and limits through `Caller` and `Admitted` (docs/extending.md).
"""

# No `from __future__ import annotations`: `admitted_after` builds a dependency whose
# annotation names the route's own check, which FastAPI must see as an object, not a string.

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypeVar

# Before any `fastapi` import: FastAPI's OpenAPI models are then built on first use.
import handler.fastapi_import

# isort: split
import aiohttp
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from mangum import Mangum
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from handler.access import Access
from handler.credentials import CredentialStore
from handler.errors import (
    BODY_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_JSON,
    MODEL_NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
    RelayError,
    error_payload,
    error_status,
    http_kind,
)
from handler.models import (
    ChatCompletionsRequest,
    ChatRequest,
    OpenAIErrorBody,
    RelayErrorBody,
    ResponsesRequest,
    UiChatRequest,
    caller_asked_for_usage,
    chat_upstream_params,
    completions_upstream_params,
    invalid_field,
    parse_json_object,
)
from handler.plans import Plan
from handler.policy import worst_case_tokens
from handler.quota import ADMISSION_KEY, Quota, QuotaChargeMiddleware
from handler.relay import (
    ChatDeltas,
    PassthroughBytes,
    Upstream,
    UpstreamRejected,
    answer_usage,
    upstream_request_id,
)
from handler.requestlog import RequestLog, RequestLogMiddleware, request_log
from handler.responses import ResponseEvents, ResponsesWire, responses_upstream_params
from handler.settings import Settings
from handler.sources import StreamSource
from handler.sse import PassthroughWire, SseWire, TextWire, WireFormat
from handler.streaming import invocation_time_left, start_stream
from handler.uichat import UiMessageStreamWire, chat_body_from_ui_messages, response_message_id

log = logging.getLogger("relay")
STATIC_DIR = Path(__file__).parent / "static"
# The page keeps its bearer token in localStorage, so it may talk only to its own site and the
# one relay it is configured with (`PAGE_RELAY_URL`): a script that got in could not send the
# token anywhere else.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{relay}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def page_headers(settings: Settings) -> dict[str, str]:
    """The headers of the page and of every file under `/static`."""
    relay = f" {settings.page_relay_origin}" if settings.page_relay_origin else ""
    csp = PAGE_CSP.format(relay=relay)
    return {"content-security-policy": csp, "x-content-type-options": "nosniff"}


SSE_WIRE, TEXT_WIRE, PASSTHROUGH_WIRE = SseWire(), TextWire(), PassthroughWire()
RESPONSES_WIRE = ResponsesWire()
DEADLINE_MARGIN_S = 1.0
LAMBDA_MAX_TIMEOUT_S = 900.0
M = TypeVar("M", bound=BaseModel)


class RelayState:
    """Per-process parts shared by every request: settings, the secret cache, the client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.credentials = CredentialStore(settings)
        self.access = Access(settings)
        self.upstream = Upstream(settings, self.credentials)
        self.quota = Quota(settings, plans_limited=self.access.plans.any_limited)


class Caller(NamedTuple):
    """Who is calling (handler/access.py: `token:…`, `jwt:…`, `iam:…`, `anonymous`), their
    plan (handler/plans.py) and the per-process parts every route shares."""

    state: RelayState
    identity: str
    plan: Plan

    @property
    def settings(self) -> Settings:
        """The settings the caller's requests are held to: their plan's (the global settings
        on the plan `default`)."""
        return self.plan.settings


async def identify(request: Request) -> Caller:
    """Who is calling, by the relay's access rule, or `401 unauthorized` (FastAPI solves it
    once per request, however many dependencies name it)."""
    state: RelayState = request.app.state.relay
    # The credentials first: they hold the client tokens.
    who = await state.access.identify(request.scope, await state.credentials.aget())
    record = request_log(request.scope)
    record.caller, record.plan = who.identity, who.plan.name
    return Caller(state, who.identity, who.plan)


CallerDep = Annotated[Caller, Depends(identify)]


async def admit(request: Request, caller: CallerDep) -> Caller:
    """Count the request against its caller's limits (handler/quota.py), or raise the 429 or
    503. The charge for its tokens follows when the response has ended (`RequestLog.usage`)."""
    await _admit(request, caller)
    return caller


async def _admit(
    request: Request, caller: Caller, model_params: dict[str, Any] | None = None
) -> None:
    """The admission under the caller's plan. A model call (`model_params`, its upstream
    request) reserves its worst case (`policy.worst_case_tokens`) against the budget until the
    response settles it, and takes one of the caller's stream slots (`MAX_CONCURRENT_STREAMS`),
    held at most until the invocation's deadline, when a crashed environment's lapses. Without
    limits it costs nothing: not even the worst case is counted."""
    quota = caller.state.quota
    if quota.enabled:
        reserve_tokens, hold_s = 0, None
        if model_params is not None:
            reserve_tokens = worst_case_tokens(model_params, caller.settings)
            hold_s = invocation_time_left(request.scope, 0.0)
            hold_s = LAMBDA_MAX_TIMEOUT_S if hold_s is None else hold_s
        admission = await quota.admit(caller.identity, reserve_tokens, caller.settings, hold_s)
        request.scope["state"][ADMISSION_KEY] = admission


# For routes of your own: who is calling, and that the call is within the caller's limits.
Admitted = Annotated[Caller, Depends(admit)]


class RelayCall(NamedTuple):
    """A checked model request: who is calling, the body as sent, what goes upstream."""

    caller: Caller
    data: dict[str, Any]
    params: dict[str, Any]
    record: RequestLog


def admitted_after(check: Callable[..., Awaitable[RelayCall]]) -> Any:
    """A dependency that runs `check` (the route's body: its model, then the cost policy),
    then `admit`: the last step before the upstream call, so a request the policy refuses (and
    init's warm-up request, which is one) uses none of the caller's limit. `check`'s failure,
    a body that does not fit its model included, skips the admission."""

    async def checked_and_admitted(
        request: Request, call: Annotated[RelayCall, Depends(check)]
    ) -> RelayCall:
        # A model request reserves its worst case (prompt and completion limit), so a stream
        # cut short is charged what it may have cost (handler/quota.py settles it).
        await _admit(request, call.caller, call.params)
        return call

    return Depends(checked_and_admitted)


async def read_json_body(request: Request, settings: Settings) -> dict[str, Any]:
    """The request body as the relay takes it: `application/json` within `MAX_BODY_BYTES`, a
    JSON object (415, 413, 400 otherwise). Read only once the caller is known."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise RelayError(UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise _body_too_large(limit)
    # The size estimates the prompt's tokens when a stream ends without usage (requestlog.py).
    request_log(request.scope).request_bytes = len(body)
    return parse_json_object(bytes(body))


def _body_too_large(limit: int) -> RelayError:
    return RelayError(BODY_TOO_LARGE, f"the body is over {limit} bytes")


def as_model(model: type[M], data: dict[str, Any]) -> M:
    """`data` as `model`, or FastAPI's `RequestValidationError` (the error table's
    `invalid_request`, naming the field).

    A route's model is checked here, not declared as a FastAPI body parameter: FastAPI would
    then read and parse the body before any dependency, so before the caller is known and
    without the relay's size limit, and its parameter fields import `pydantic.v1` during init.
    The OpenAPI document names the model all the same (`request_body`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


def body_as(model: type[M]) -> Any:
    """A dependency for routes of your own: the JSON body as `model`, read once the caller is
    known (`identify`), within `MAX_BODY_BYTES`."""

    async def read_body(request: Request, caller: CallerDep) -> M:
        return as_model(model, await read_json_body(request, caller.state.settings))

    return Depends(read_body)


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route whose body is checked against `model`."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class RelayRoute(APIRoute):
    """FastAPI's route, but a `GET` route answers `HEAD` too (the same status and headers; the
    server leaves out the body), as the contract says for `/healthz`."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return super().matches(self._head_as_get(scope))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().handle(self._head_as_get(scope), receive, send)

    def _head_as_get(self, scope: Scope) -> Scope:
        if scope["type"] == "http" and scope["method"] == "HEAD" and "GET" in self.methods:
            return {**scope, "method": "GET"}
        return scope


def _checked(
    request: Request, caller: Caller, data: dict[str, Any], params: dict[str, Any]
) -> RelayCall:
    record = request_log(request.scope)
    record.model = params["model"]
    if caller.state.settings.log_prompts:
        # Chat Completions' prompt, or the Responses API's.
        record.prompt = params.get("messages", params.get("input"))
    return RelayCall(caller, data, params, record)


# Each route's body, one dependency after `identify`: read, checked against the route's model,
# then against the cost policy (handler/policy.py), which builds the upstream request. The
# policy reads the body as sent, which is what goes upstream; the model has typed what it reads.


async def checked_chat(request: Request, caller: CallerDep) -> RelayCall:
    """`/chat`'s body."""
    data = await read_json_body(request, caller.settings)
    chat = as_model(ChatRequest, data)
    params = chat_upstream_params(chat, caller.settings, events=_wants_sse(request))
    return _checked(request, caller, data, params)


async def checked_ui_chat(request: Request, caller: CallerDep) -> RelayCall:
    """`/api/chat`'s UI messages, checked as the `/chat` body they amount to."""
    data = await read_json_body(request, caller.settings)
    as_model(UiChatRequest, data)
    chat = as_model(ChatRequest, chat_body_from_ui_messages(data))
    return _checked(request, caller, data, chat_upstream_params(chat, caller.settings))


async def checked_completions(request: Request, caller: CallerDep) -> RelayCall:
    """A Chat Completions body."""
    data = await read_json_body(request, caller.settings)
    as_model(ChatCompletionsRequest, data)
    params = completions_upstream_params(data, caller.settings)
    return _checked(request, caller, data, params)


async def checked_responses(request: Request, caller: CallerDep) -> RelayCall:
    """A Responses API body."""
    data = await read_json_body(request, caller.settings)
    as_model(ResponsesRequest, data)
    params = responses_upstream_params(data, caller.settings)
    return _checked(request, caller, data, params)


def _wants_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


# What each error status means (docs/api.md, "Errors before the stream starts").
_ERROR_MEANINGS = {
    400: "the body is not JSON (on /v1: any invalid request, `code` saying which)",
    401: "no acceptable credentials (`WWW-Authenticate` says why)",
    404: "no such model or route",
    413: "the body is over MAX_BODY_BYTES",
    415: "the body is not application/json",
    422: "the body breaks the contract or the cost policy (`invalid_request`)",
    429: "over the caller's limits (`Retry-After`), or the upstream's",
    500: "an unexpected failure of the relay",
    502: "the upstream failed or refused the relay's key",
    503: "the secret, the sign-in keys or the quota table cannot be read",
    504: "no token from the upstream in time",
}


def _error_responses(model: type[BaseModel], *statuses: int) -> dict[int | str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        status: {
            "description": _ERROR_MEANINGS[status],
            "content": {"application/json": {"schema": schema}},
        }
        for status in statuses
    }


_TEXT = {"schema": {"type": "string"}}
# Statuses the relay's own failures take on every model route.
_RELAY_FAILURES = (401, 429, 500, 502, 503, 504)
CHAT_ERRORS = _error_responses(RelayErrorBody, 400, 413, 415, 422, *_RELAY_FAILURES)
OPENAI_ERRORS = {
    **_error_responses(OpenAIErrorBody, 400, *_RELAY_FAILURES),
    "4XX": {"description": "the upstream refused the request: its own status and body"},
}


def model_route(
    body: type[BaseModel], errors: dict[int | str, Any], answer: str, content: dict[str, Any]
) -> dict[str, Any]:
    """The OpenAPI side of a model route: its body's model, its answer, its errors."""
    return {
        "response_class": Response,
        "openapi_extra": request_body(body),
        "responses": {200: {"description": answer, "content": content}, **errors},
    }


router = APIRouter(route_class=RelayRoute)


@router.post(
    "/chat",
    **model_route(
        ChatRequest,
        CHAT_ERRORS,
        "the answer as it is generated: SSE for `Accept: text/event-stream`, else plain text",
        {"text/event-stream": _TEXT, "text/plain": _TEXT},
    ),
)
async def chat(
    request: Request, call: Annotated[RelayCall, admitted_after(checked_chat)]
) -> Response:
    """The answer as Server-Sent Events for `Accept: text/event-stream`, else as plain text."""
    deltas = await _open_chat(call)
    wire = SSE_WIRE if _wants_sse(request) else TEXT_WIRE
    return await _stream(wire, deltas, call.record, call.caller.state.settings)


@router.post(
    "/api/chat",
    **model_route(
        UiChatRequest,
        CHAT_ERRORS,
        "the AI SDK's UI message stream (protocol v1)",
        {"text/event-stream": _TEXT},
    ),
)
async def ui_chat(call: Annotated[RelayCall, admitted_after(checked_ui_chat)]) -> Response:
    """The Vercel AI SDK's `useChat`: UI messages in, its UI message stream out, under the
    `/chat` policy."""
    deltas = await _open_chat(call)
    wire = UiMessageStreamWire(response_message_id(call.data, call.record.request_id))
    return await _stream(wire, deltas, call.record, call.caller.state.settings)


async def _open_chat(call: RelayCall) -> ChatDeltas:
    """Start the upstream's streamed answer to a checked `/chat` request."""
    state = call.caller.state
    response = await state.upstream.open(call.params, call.caller.identity)
    call.record.upstream_request_id = upstream_request_id(response)
    return ChatDeltas(response, state.settings)


@router.post(
    "/v1/chat/completions",
    **model_route(
        ChatCompletionsRequest,
        OPENAI_ERRORS,
        "OpenAI's answer: JSON, or its SSE chunks with `stream: true`",
        {"application/json": {"schema": {"type": "object"}}, "text/event-stream": _TEXT},
    ),
)
async def chat_completions(
    call: Annotated[RelayCall, admitted_after(checked_completions)], request: Request
) -> Response:
    """OpenAI's Chat Completions; streamed bytes pass through unchanged."""
    settings = call.caller.state.settings
    drop_usage = not caller_asked_for_usage(call.data)

    def chunks(response: aiohttp.ClientResponse) -> StreamSource[bytes]:
        return PassthroughBytes(response, settings, drop_usage_chunk=drop_usage)

    return await _forward(request, call, "/chat/completions", chunks, PASSTHROUGH_WIRE)


@router.post(
    "/v1/responses",
    **model_route(
        ResponsesRequest,
        OPENAI_ERRORS,
        "OpenAI's answer: JSON, or its SSE events with `stream: true`",
        {"application/json": {"schema": {"type": "object"}}, "text/event-stream": _TEXT},
    ),
)
async def responses(
    call: Annotated[RelayCall, admitted_after(checked_responses)], request: Request
) -> Response:
    """OpenAI's Responses API; streamed events pass through unchanged."""
    settings = call.caller.state.settings

    def events(response: aiohttp.ClientResponse) -> StreamSource[bytes]:
        return ResponseEvents(response, settings)

    return await _forward(request, call, "/responses", events, RESPONSES_WIRE)


async def _forward(
    request: Request,
    call: RelayCall,
    endpoint: str,
    source_for: Callable[[aiohttp.ClientResponse], StreamSource[bytes]],
    wire: WireFormat,
) -> Response:
    """Send a checked OpenAI request to `endpoint`: its JSON answer, or its SSE bytes as they
    come, read by `source_for(response)` and framed by `wire`."""
    state, params = call.caller.state, call.params
    stream = params["stream"]
    answer_within_s = None
    if not stream:
        # A whole answer comes in one piece at the end, so no per-read timeout can bound it:
        # the function's own deadline does (off Lambda, the longest a Lambda function may run).
        answer_within_s = invocation_time_left(request.scope, DEADLINE_MARGIN_S)
        if answer_within_s is None:
            answer_within_s = LAMBDA_MAX_TIMEOUT_S
    response = await state.upstream.open(
        params, call.caller.identity, answer_within_s=answer_within_s, endpoint=endpoint
    )
    call.record.upstream_request_id = upstream_request_id(response)
    if not stream:
        content = await state.upstream.read_answer(response)
        call.record.usage = answer_usage(content)
        return Response(content, media_type="application/json")
    return await _stream(wire, source_for(response), call.record, state.settings)


async def _stream(
    wire: WireFormat, source: StreamSource[Any], record: RequestLog, settings: Settings
) -> Response:
    return await start_stream(
        wire,
        source,
        record=record,
        timeout_s=settings.upstream_timeout_s,
        ping_interval_s=settings.ping_interval_s,
        deadline_margin_s=DEADLINE_MARGIN_S,
    )


def _model_object(model: str) -> dict[str, Any]:
    # The relay knows no creation dates; `created` is a required integer in OpenAI's format.
    return {"id": model, "object": "model", "created": 0, "owned_by": "relay"}


_MODEL_OBJECT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
    "required": ["id", "object", "created", "owned_by"],
}
_MODEL_LIST = {
    "type": "object",
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": _MODEL_OBJECT},
    },
    "required": ["object", "data"],
}


def _json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@router.get(
    "/v1/models",
    response_class=Response,
    responses={
        200: _json_answer("the allow-list, the default model first", _MODEL_LIST),
        **_error_responses(OpenAIErrorBody, 401, 500, 503),
    },
)
async def list_models(caller: CallerDep) -> JSONResponse:
    """The caller's plan's allow-list in OpenAI's list format, the default model first."""
    models = caller.plan.models()
    return JSONResponse({"object": "list", "data": [_model_object(model) for model in models]})


@router.get(
    "/v1/models/{model_id:path}",
    response_class=Response,
    responses={
        200: _json_answer("one allowed model", _MODEL_OBJECT),
        **_error_responses(OpenAIErrorBody, 401, 404, 500, 503),
    },
    # Read from the path, not declared: a declared parameter is a pydantic field built at
    # init, and FastAPI's check of its annotation imports `pydantic.v1` (tens of ms).
    openapi_extra={
        "parameters": [
            {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ]
    },
)
async def retrieve_model(request: Request, caller: CallerDep) -> JSONResponse:
    """One allowed model, or OpenAI's `404 model_not_found`."""
    model_id = request.path_params["model_id"]
    if model_id not in caller.settings.model_allow_list:
        message = f"the model '{model_id}' is not offered by this relay"
        raise RelayError(MODEL_NOT_FOUND, message, param="model")
    return JSONResponse(_model_object(model_id))


_COUNT = {"type": ["integer", "null"], "minimum": 0}
_ME = {
    "type": "object",
    "properties": {
        "caller": {"type": "string"},
        "plan": {"type": "string"},
        "limits": {
            "type": "object",
            "properties": {
                "models": {"type": "array", "items": {"type": "string"}},
                "max_tokens_cap": {"type": "integer"},
                "rate_limit_per_minute": _COUNT,
                "token_budget_per_day": _COUNT,
                "max_concurrent_streams": _COUNT,
                "allow_client_system_prompt": {"type": "boolean"},
            },
        },
        "used": {
            "type": ["object", "null"],
            "properties": {
                name: _COUNT
                for name in (
                    "requests_this_minute",
                    "requests_today",
                    "tokens_today",
                    "streams_open",
                )
            },
        },
        "left": {
            "type": ["object", "null"],
            "properties": {
                name: _COUNT for name in ("requests_this_minute", "tokens_today", "streams")
            },
        },
    },
    "required": ["caller", "plan", "limits", "used", "left"],
}


def _left(limit: int, used: int) -> int | None:
    return max(0, limit - used) if limit else None


@router.get(
    "/me",
    response_class=Response,
    responses={
        200: _json_answer("the caller, their plan, its limits, what is used and left now", _ME),
        **_error_responses(RelayErrorBody, 401, 500, 503),
    },
)
async def me(caller: CallerDep) -> JSONResponse:
    """The caller as the relay knows them (the log line's id), their plan and its limits
    (null: none), and what they have used and have left now, from one read of their quota item
    (`used` and `left` are null when their plan counts nothing). Counts nothing itself."""
    settings = caller.settings
    usage = await caller.state.quota.usage(caller.identity, settings)
    used = left = None
    if usage is not None:
        used = asdict(usage)
        left = {
            "requests_this_minute": _left(
                settings.rate_limit_per_minute, usage.requests_this_minute
            ),
            "tokens_today": _left(settings.token_budget_per_day, usage.tokens_today),
            "streams": _left(settings.max_concurrent_streams, usage.streams_open),
        }
    limits = {
        "models": caller.plan.models(),
        "max_tokens_cap": settings.max_tokens_cap,
        "rate_limit_per_minute": settings.rate_limit_per_minute or None,
        "token_budget_per_day": settings.token_budget_per_day or None,
        "max_concurrent_streams": settings.max_concurrent_streams or None,
        "allow_client_system_prompt": settings.allow_client_system_prompt,
    }
    body = {"caller": caller.identity, "plan": caller.plan.name, "limits": limits}
    return JSONResponse({**body, "used": used, "left": left}, headers={"cache-control": "no-store"})


@router.get(
    "/healthz",
    response_class=Response,
    responses={
        200: _json_answer(
            "alive",
            {"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]},
        ),
        **_error_responses(RelayErrorBody, 500),
    },
)
async def healthz() -> JSONResponse:
    """Liveness: touches neither the secret nor the upstream."""
    return JSONResponse({"status": "ok"})


@router.get("/", include_in_schema=False)
async def page(request: Request) -> Response:
    """The demo chat page, same origin as the API, under a strict Content-Security-Policy."""
    html = (STATIC_DIR / "index.html").read_bytes()
    headers = page_headers(request.app.state.relay.settings)
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


class PageFiles(StaticFiles):
    """The page's files under `/static`, each with the page's headers: `/static/index.html`
    is the same page as `/` and must not be framed or run scripts the CSP forbids."""

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Any, **kwargs: Any
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, **kwargs)
        response.headers.update(page_headers(scope["app"].state.relay.settings))
        return response


# The one table from failures to HTTP responses (errors.py declares each kind's status).
def _openai_style(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _note_failure(request: Request, outcome: str, error: RelayError, error_type: str) -> None:
    record = request.scope.get("state", {}).get("request_log")
    if record is not None:
        record.outcome, record.error_type = outcome, error_type
        # The upstream answer's id, whichever of the two learnt it first.
        record.upstream_request_id = record.upstream_request_id or error.upstream_request_id
        error.upstream_request_id = record.upstream_request_id


def _error_response(request: Request, error: RelayError) -> JSONResponse:
    _note_failure(request, error.outcome, error, error.type)
    openai_style = _openai_style(request)
    return JSONResponse(
        error_payload(error, openai_style), error_status(error, openai_style), error.headers
    )


async def _relay_error(request: Request, exc: RelayError) -> JSONResponse:
    return _error_response(request, exc)


async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that does not fit its route's model: `invalid_request` naming the first field at
    fault (`param`, from the error's location), or `invalid_json` when FastAPI itself could
    not parse it (a route of your own outside `RelayRoute`)."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return _error_response(request, RelayError(INVALID_JSON, "the body is not valid JSON"))
    return _error_response(request, invalid_field(first, _openai_style(request)))


async def _upstream_rejected(request: Request, exc: UpstreamRejected) -> Response:
    """On /v1/* the upstream's own answer: the caller's mistake as OpenAI judged it, which
    OpenAI clients expect verbatim. On /chat an `upstream_error` like any other."""
    if not _openai_style(request):
        return _error_response(request, exc)
    outcome, error_type = exc.passed_on
    _note_failure(request, outcome, exc, error_type)
    return Response(exc.upstream_body, exc.upstream_status, media_type="application/json")


_HTTP_MESSAGES = {404: "no such route", 405: "method not allowed on this route"}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    error = RelayError(http_kind(exc.status_code), message, headers=exc.headers)
    return _error_response(request, error)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    error = RelayError(INTERNAL_ERROR, "the relay failed unexpectedly")
    return _error_response(request, error)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Servers with a lifespan (uvicorn) close the upstream and DynamoDB pools on shutdown;
    # Lambda never shuts the app down, so there they live as long as the environment.
    yield
    await app.state.relay.upstream.close()
    await app.state.relay.quota.close()


# The models the OpenAPI document's components describe: the bodies and the errors.
DOCUMENTED_MODELS = (
    ChatRequest,
    UiChatRequest,
    ChatCompletionsRequest,
    ResponsesRequest,
    RelayErrorBody,
    OpenAIErrorBody,
)


class RelayApp(FastAPI):
    """FastAPI with the request log outermost: Starlette puts the catch-all 500 handler
    (`ServerErrorMiddleware`) outside every added middleware, so an unexpected failure would
    otherwise leave without its `X-Request-Id` and log no error type. Its OpenAPI document
    carries the schemas of `DOCUMENTED_MODELS`, which its routes name by reference."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            _, schemas = models_json_schema(
                [(model, "validation") for model in DOCUMENTED_MODELS],
                ref_template="#/components/schemas/{model}",
            )
            document.setdefault("components", {})["schemas"] = schemas["$defs"]
            self.openapi_schema = document
        return self.openapi_schema

    def build_middleware_stack(self) -> Any:
        stack = super().build_middleware_stack()
        relay: RelayState = self.state.relay
        if relay.quota.enabled:
            # Inside the log: the line is written once the request's tokens are charged.
            stack = QuotaChargeMiddleware(stack, relay.quota)
        return RequestLogMiddleware(stack, relay.settings.metrics_namespace)


# FastAPI's own OpenTelemetry spans, metrics and logs: off unless FASTAPI_TELEMETRY=true.
TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own `Settings`, Lambda and `make dev` use the environment.

    The OpenAPI document and its docs page are served only with `OPENAPI_DOCS=true`: on a
    deployed relay they would describe it to anyone who asks (docs/openapi.json has it)."""
    settings = settings or Settings()
    docs = settings.openapi_docs
    app = RelayApp(
        title="Streaming chat relay",
        version="1",
        summary="OpenAI's chat models behind one function URL, streamed (docs/api.md).",
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        telemetry=None if settings.fastapi_telemetry else TELEMETRY_OFF,
        lifespan=_lifespan,
        exception_handlers={
            UpstreamRejected: _upstream_rejected,
            RelayError: _relay_error,
            RequestValidationError: _invalid_body,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.relay = RelayState(settings)
    app.state.relay.access.log_startup()
    # The relay's routes as the app's own, not `include_router`'s: FastAPI 0.163-0.165 includes a
    # router lazily, deriving the included routes' context on every request (about 130 Python
    # calls per request more, counted by bench/work.py's method).
    app.router.routes.extend(router.routes)
    app.mount("/static", PageFiles(directory=STATIC_DIR), name="static")
    if settings.cors_origins:
        # Off Lambda, and on Lambda behind the REST API, the only door the template gives
        # CORS_ORIGINS to: a function URL answers CORS itself (doubled headers break it).
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
            expose_headers=["x-request-id", "retry-after"],
        )
    return app


def _configure_logging() -> None:
    # Client libraries' debug logs may carry request details; keep them out of the logs.
    for noisy in ("aiohttp", "botocore", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    relay = logging.getLogger("relay")
    if relay.level == logging.NOTSET:
        relay.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not relay.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        relay.addHandler(handler)


_configure_logging()
app = create_app()
handler = Mangum(app, lifespan="off")
