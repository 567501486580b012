"""The Starlette app: the routes of the contract (docs/api.md) and its one error table.

`app` is the ASGI app (uvicorn, the native streaming runtime, Lambda Web Adapter); `handler` is
the buffered Mangum handler for plain invokes and `sam local invoke`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
from mangum import Mangum
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from handler.access import Access
from handler.credentials import CredentialStore
from handler.errors import (
    BODY_TOO_LARGE,
    INTERNAL_ERROR,
    MODEL_NOT_FOUND,
    UNSUPPORTED_MEDIA_TYPE,
    RelayError,
    error_payload,
    error_status,
    http_kind,
)
from handler.models import (
    caller_asked_for_usage,
    chat_upstream_params,
    completions_upstream_params,
    parse_json_object,
)
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
from handler.uichat import UiMessageStreamWire, chat_body_from_ui_messages

log = logging.getLogger("relay")
STATIC_DIR = Path(__file__).parent / "static"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' https: http://127.0.0.1:* http://localhost:*; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Every file of the page, and the page itself at `/`, goes out under these.
PAGE_HEADERS = {"content-security-policy": PAGE_CSP, "x-content-type-options": "nosniff"}
SSE_WIRE, TEXT_WIRE, PASSTHROUGH_WIRE = SseWire(), TextWire(), PassthroughWire()
RESPONSES_WIRE = ResponsesWire()
DEADLINE_MARGIN_S = 1.0
LAMBDA_MAX_TIMEOUT_S = 900.0


class RelayState:
    """Per-process parts shared by every request: settings, the secret cache, the client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.credentials = CredentialStore(settings)
        self.access = Access(settings)
        self.upstream = Upstream(settings, self.credentials)
        self.quota = Quota(settings)


class RelayCall(NamedTuple):
    """What a relay route gets: the per-process parts, who is calling (`handler/access.py`)
    and the caller's JSON body."""

    state: RelayState
    caller: str
    body: dict[str, Any]


async def relay_call(request: Request) -> RelayCall:
    """The relay routes' one dependency: who is calling first, then the body. (The caller's
    limits come later, in `_admit`, once the route has checked the body against the policy.)"""
    state: RelayState = request.app.state.relay
    # The credentials first: they hold the client tokens.
    caller = await state.access.identify(request.scope, await state.credentials.aget())
    request_log(request.scope).caller = caller
    return RelayCall(state, caller, await _json_body(request, state))


async def _admit(request: Request, call: RelayCall) -> None:
    """Count the request against its caller's limits (handler/quota.py), or raise the 429 or
    503: the last step before the upstream call, so a request the policy refuses (and init's
    warm-up request, which is one) uses none of the caller's limit."""
    quota = call.state.quota
    if quota.enabled:
        request.scope["state"][ADMISSION_KEY] = await quota.admit(call.caller)


async def _json_body(request: Request, state: RelayState) -> dict[str, Any]:
    """The request body as a JSON object, within `MAX_BODY_BYTES`."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise RelayError(UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
    limit = state.settings.max_body_bytes
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


RelayEndpoint = Callable[[Request, RelayCall], Awaitable[Response]]


def relay_route(path: str, endpoint: RelayEndpoint) -> Route:
    """A `POST` route of the relay: `endpoint` gets the request and its `relay_call`."""

    async def with_call(request: Request) -> Response:
        return await endpoint(request, await relay_call(request))

    return Route(path, with_call, methods=["POST"], name=endpoint.__name__)


def _wants_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


async def chat(request: Request, call: RelayCall) -> Response:
    """`POST /chat`: SSE frames for `Accept: text/event-stream`, plain text otherwise."""
    deltas, record = await _open_chat(request, call, call.body)
    wire = SSE_WIRE if _wants_sse(request) else TEXT_WIRE
    return await _stream(wire, deltas, record, call.state.settings)


async def ui_chat(request: Request, call: RelayCall) -> Response:
    """`POST /api/chat`: `useChat`'s UI messages in, the AI SDK's UI message stream out, under
    the same policy as `/chat` (the body is checked as the `/chat` body it amounts to)."""
    deltas, record = await _open_chat(request, call, chat_body_from_ui_messages(call.body))
    wire = UiMessageStreamWire(f"msg-{record.request_id}")
    return await _stream(wire, deltas, record, call.state.settings)


async def _open_chat(
    request: Request, call: RelayCall, body: dict[str, Any]
) -> tuple[ChatDeltas, RequestLog]:
    """Check a `/chat` body against the policy and start the upstream's streamed answer."""
    state, settings = call.state, call.state.settings
    params = chat_upstream_params(body, settings)
    record = request_log(request.scope)
    record.model = params["model"]
    if settings.log_prompts:
        record.prompt = params["messages"]
    await _admit(request, call)
    response = await state.upstream.open(params, call.caller)
    record.upstream_request_id = upstream_request_id(response)
    return ChatDeltas(response, settings), record


async def chat_completions(request: Request, call: RelayCall) -> Response:
    """`POST /v1/chat/completions`: OpenAI's API; streamed bytes pass through unchanged."""
    settings = call.state.settings
    params = completions_upstream_params(call.body, settings)
    drop_usage = not caller_asked_for_usage(call.body)

    def chunks(response: aiohttp.ClientResponse) -> StreamSource[bytes]:
        return PassthroughBytes(response, settings, drop_usage_chunk=drop_usage)

    return await _forward(request, call, params, "/chat/completions", chunks, PASSTHROUGH_WIRE)


async def responses(request: Request, call: RelayCall) -> Response:
    """`POST /v1/responses`: OpenAI's Responses API; streamed events pass through unchanged."""
    settings = call.state.settings
    params = responses_upstream_params(call.body, settings)

    def events(response: aiohttp.ClientResponse) -> StreamSource[bytes]:
        return ResponseEvents(response, settings)

    return await _forward(request, call, params, "/responses", events, RESPONSES_WIRE)


async def _forward(
    request: Request,
    call: RelayCall,
    params: dict[str, Any],
    endpoint: str,
    source_for: Callable[[aiohttp.ClientResponse], StreamSource[bytes]],
    wire: WireFormat,
) -> Response:
    """Send a checked OpenAI request to `endpoint`: its JSON answer, or its SSE bytes as they
    come, read by `source_for(response)` and framed by `wire`."""
    state, settings = call.state, call.state.settings
    record = request_log(request.scope)
    record.model = params["model"]
    if settings.log_prompts:
        # Chat Completions' prompt, or the Responses API's.
        record.prompt = params.get("messages", params.get("input"))
    stream = params["stream"]
    answer_within_s = None
    if not stream:
        # A whole answer comes in one piece at the end, so no per-read timeout can bound it:
        # the function's own deadline does (off Lambda, the longest a Lambda function may run).
        answer_within_s = invocation_time_left(request.scope, DEADLINE_MARGIN_S)
        if answer_within_s is None:
            answer_within_s = LAMBDA_MAX_TIMEOUT_S
    await _admit(request, call)
    response = await state.upstream.open(
        params, call.caller, answer_within_s=answer_within_s, endpoint=endpoint
    )
    record.upstream_request_id = upstream_request_id(response)
    if not stream:
        content = await state.upstream.read_answer(response)
        record.usage = answer_usage(content)
        return Response(content, media_type="application/json")
    return await _stream(wire, source_for(response), record, settings)


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


async def authorized(request: Request) -> RelayState:
    """The dependency of routes without a body (`GET /v1/models`): who is calling, as for the
    relay routes (same access rule), and nothing else."""
    state: RelayState = request.app.state.relay
    caller = await state.access.identify(request.scope, await state.credentials.aget())
    request_log(request.scope).caller = caller
    return state


def _model_object(model: str) -> dict[str, Any]:
    # The relay knows no creation dates; `created` is a required integer in OpenAI's format.
    return {"id": model, "object": "model", "created": 0, "owned_by": "relay"}


async def list_models(request: Request) -> Response:
    """`GET /v1/models`: the allow-list in OpenAI's list format, the default model first."""
    settings = (await authorized(request)).settings
    others = sorted(settings.model_allow_list - {settings.default_model})
    models = (
        [settings.default_model, *others]
        if settings.default_model in settings.model_allow_list
        else others
    )
    return JSONResponse({"object": "list", "data": [_model_object(model) for model in models]})


async def retrieve_model(request: Request) -> Response:
    """`GET /v1/models/{id}`: one allowed model, or OpenAI's `404 model_not_found`."""
    state = await authorized(request)
    model_id = request.path_params["model_id"]
    if model_id not in state.settings.model_allow_list:
        message = f"the model '{model_id}' is not offered by this relay"
        raise RelayError(MODEL_NOT_FOUND, message, param="model")
    return JSONResponse(_model_object(model_id))


async def healthz(request: Request) -> Response:
    """Liveness: touches neither the secret nor the upstream."""
    return JSONResponse({"status": "ok"})


async def page(request: Request) -> Response:
    """The demo chat page, same origin as the API, under a strict Content-Security-Policy."""
    html = (STATIC_DIR / "index.html").read_bytes()
    return Response(html, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


class PageFiles(StaticFiles):
    """The page's files under `/static`, each with the page's headers: `/static/index.html`
    is the same page as `/` and must not be framed or run scripts the CSP forbids."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
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
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    # Servers with a lifespan (uvicorn) close the upstream and DynamoDB pools on shutdown;
    # Lambda never shuts the app down, so there they live as long as the environment.
    yield
    await app.state.relay.upstream.close()
    await app.state.relay.quota.close()


class RelayApp(Starlette):
    """Starlette with the request log outermost: Starlette puts the catch-all 500 handler
    (`ServerErrorMiddleware`) outside every added middleware, so an unexpected failure would
    otherwise leave without its `X-Request-Id` and log no error type."""

    def build_middleware_stack(self) -> Any:
        stack = super().build_middleware_stack()
        relay: RelayState = self.state.relay
        if relay.quota.enabled:
            # Inside the log: the line is written once the request's tokens are charged.
            stack = QuotaChargeMiddleware(stack, relay.quota)
        return RequestLogMiddleware(stack, relay.settings.metrics_namespace)


def _routes() -> list[Route | Mount]:
    """The contract's routes (docs/api.md) and no others: no generated schema or docs pages,
    which would describe the relay's internals to anyone who asks."""
    return [
        relay_route("/chat", chat),
        relay_route("/api/chat", ui_chat),
        relay_route("/v1/chat/completions", chat_completions),
        relay_route("/v1/responses", responses),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/", page, methods=["GET"]),
        Mount("/static", PageFiles(directory=STATIC_DIR), name="static"),
    ]


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; tests pass their own `Settings`, Lambda and `make dev` use the environment.

    Starlette, not FastAPI: the relay reads and checks its bodies itself (handler/models.py),
    so FastAPI's parameters, response models and OpenAPI schema went unused, and importing it
    was a quarter of init's CPU (docs/architecture.md, "Cold start")."""
    settings = settings or Settings()
    app = RelayApp(
        routes=_routes(),
        lifespan=_lifespan,
        exception_handlers={
            UpstreamRejected: _upstream_rejected,
            RelayError: _relay_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.relay = RelayState(settings)
    app.state.relay.access.log_startup()
    if settings.cors_origins:
        # Off Lambda, and on Lambda behind the REST API, the only door the template gives
        # CORS_ORIGINS to: a function URL answers CORS itself (doubled headers break it).
        from starlette.middleware.cors import CORSMiddleware

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
