"""The native runtime behind an API Gateway REST API whose integration streams: REST proxy events
(payload 1.0) get the same streamed answer as function URL events when `STREAM_EVENTS`
includes `rest`, through Mangum's REST adapter, on the runtime-API emulator."""

from __future__ import annotations

import copy
import json

import pytest

from devtools.scripts import Script
from handler.settings import Settings
from tests.helpers import deltas_text, parse_sse
from tests.runtime_process import ROOT, ended_before_its_deadline

REST_EVENT = json.loads((ROOT / "events" / "chat-rest.json").read_text())
STREAMING_REST = {"STREAM_EVENTS": "url,rest"}
DEFAULT_MODEL = Settings.model_fields["default_model"].default


def rest_event(
    path: str = "/chat", body: dict | str | None = None, method: str = "POST", **headers: str
) -> dict:
    """The sample REST proxy event for another path, body or headers (both header maps)."""
    event = copy.deepcopy(REST_EVENT)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["requestContext"]["path"] = f"/live{path}"
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    for name, value in headers.items():
        name = name.replace("_", "-")
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    return event


def test_rest_events_stream_one_chunk_per_frame(start_runtime, upstream):
    tokens = [f" word{i}" for i in range(8)]
    upstream.enqueue(Script(tokens=tokens, delay_s=0.05))
    invocation = start_runtime(**STREAMING_REST).invoke(rest_event())
    assert invocation.streamed
    prelude, body = invocation.prelude_and_body()
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    assert prelude["headers"]["x-request-id"] == invocation.request_id
    events = parse_sse(body.decode())
    assert deltas_text(events) == "".join(tokens)
    assert events[-1][0] == "done"
    times = [at for at, _ in invocation.chunks[1:9]]
    assert times[-1] - times[0] > 0.3  # frames went out as they came...
    call = upstream.last  # ...the first in the first half of the upstream's answer
    assert invocation.chunks[1][0] < call.received_at + (call.finished_at - call.received_at) / 2
    assert invocation.zero_chunk and invocation.trailers == {}


@pytest.mark.parametrize(
    ("event", "status", "content_type"),
    [
        (rest_event(accept="text/plain"), 200, "text/plain; charset=utf-8"),
        (
            rest_event(
                "/v1/chat/completions",
                {
                    "model": DEFAULT_MODEL,
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            ),
            200,
            "text/event-stream; charset=utf-8",
        ),
        (rest_event(body={"prompt": ""}), 422, "application/json"),
        (rest_event(body="{oops"), 400, "application/json"),
        (rest_event("/nowhere"), 404, "application/json"),
    ],
    ids=["plain-text", "v1-passthrough", "422", "400", "404"],
)
def test_every_mode_streams_on_the_rest_door_with_its_status(
    start_runtime, upstream, event, status, content_type
):
    upstream.default = Script(tokens=["Hello", " there"])
    invocation = start_runtime(**STREAMING_REST).invoke(event)
    prelude, body = invocation.prelude_and_body()
    assert (prelude["statusCode"], prelude["headers"]["content-type"]) == (status, content_type)
    if status != 200:
        assert json.loads(body)["error"]["type"]
    elif content_type.startswith("text/plain"):
        assert body == b"Hello there"
    else:
        assert body.rstrip().endswith(b"data: [DONE]") and b'"content":" there"' in body
    assert invocation.trailers == {}


def test_rest_stream_ends_cleanly_before_the_deadline(start_runtime, upstream):
    runtime = start_runtime(**STREAMING_REST)
    assert (
        runtime.invoke(rest_event("/healthz", method="GET")).kind == "response"
    )  # started: the deadline below is the stream's alone
    upstream.enqueue(Script(tokens=[f"t{i} " for i in range(100)], delay_s=0.1))
    invocation = runtime.invoke(rest_event(), deadline_in_s=1.5)
    events = parse_sse(invocation.prelude_and_body()[1].decode())
    assert deltas_text(events)
    assert events[-1][1]["error"]["type"] == "upstream_timeout"
    assert invocation.trailers["lambda-runtime-function-error-type"] == "Function.StreamError"
    assert ended_before_its_deadline(invocation)
    assert upstream.last.hung_up.wait(10)
    assert upstream.last.finished_at is None


def test_rest_mid_stream_failure_ends_with_error_trailers(start_runtime, upstream):
    upstream.enqueue(Script(tokens=list("abcdef"), delay_s=0.02, die_after=3))
    invocation = start_runtime(**STREAMING_REST).invoke(rest_event())
    events = parse_sse(invocation.prelude_and_body()[1].decode())
    assert deltas_text(events) == "abc" and events[-1][0] == "error"
    assert invocation.error_trailer_body()["errorType"] == "upstream_error"


def test_the_relays_own_auth_still_applies_behind_the_api_key(start_runtime, upstream):
    """The API key admits a caller to the REST API; the relay still wants its bearer token."""
    runtime = start_runtime(
        CLIENT_TOKENS="client-token-rest-1", ALLOW_ANONYMOUS="", **STREAMING_REST
    )
    refused = runtime.invoke(rest_event())
    prelude, body = refused.prelude_and_body()
    assert prelude["statusCode"] == 401
    assert json.loads(body)["error"]["type"] == "unauthorized"
    # Only init's warm-up of the upstream connection (handler/init.py), no model call.
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/v1/models")]
    admitted = runtime.invoke(rest_event(authorization="Bearer client-token-rest-1"))
    assert admitted.prelude_and_body()[0]["statusCode"] == 200


def test_rest_events_are_buffered_unless_configured(start_runtime, upstream):
    """A REST integration that does not stream wants Mangum's classic JSON: the default."""
    upstream.default = Script(tokens=["all ", "at ", "once"])
    invocation = start_runtime().invoke(rest_event())
    assert not invocation.streamed
    result = invocation.buffered_result()
    assert result["statusCode"] == 200
    assert deltas_text(parse_sse(result["body"])) == "all at once"


def test_an_unknown_stream_event_kind_is_a_configuration_error(start_runtime, runtime_api):
    runtime = start_runtime(STREAM_EVENTS="url,websocket")
    assert runtime_api.emulator.init_error_seen.wait(15)
    _, error = runtime_api.emulator.init_errors[0]
    assert "stream_events" in error["errorMessage"]
    assert runtime.process.wait(10) == 1
