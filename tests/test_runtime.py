"""The native streaming runtime (`python -m handler.runtime`) against the runtime-API emulator
and the fake OpenAI upstream: the bytes on the wire are Lambda's streaming format, chunk by
chunk."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from devtools.scripts import Script
from handler.access import safety_identifier
from tests.conftest import TEST_KEY
from tests.helpers import deltas_text, parse_sse
from tests.runtime_process import ended_before_its_deadline

ROOT = Path(__file__).resolve().parent.parent
CHAT_EVENT = json.loads((ROOT / "events" / "chat.json").read_text())
TEXT_EVENT = json.loads((ROOT / "events" / "chat-text.json").read_text())
COMPLETIONS_EVENT = json.loads((ROOT / "events" / "completions.json").read_text())
UI_CHAT_EVENT = json.loads((ROOT / "events" / "ui-chat.json").read_text())
RESPONSES_EVENT = json.loads((ROOT / "events" / "responses.json").read_text())
HEALTHZ_EVENT = json.loads((ROOT / "events" / "healthz.json").read_text())


def with_body(event: dict, body: dict | str) -> dict:
    event = copy.deepcopy(event)
    event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


def test_streamed_answer_is_prelude_nuls_and_one_chunk_per_frame(start_runtime, upstream):
    tokens = [f"tok{i}\n" if i % 3 == 0 else f" wörd{i}" for i in range(8)]
    upstream.enqueue(Script(tokens=tokens, delay_s=0.05))
    runtime = start_runtime()
    invocation = runtime.invoke(CHAT_EVENT)

    headers = invocation.request_headers
    assert invocation.kind == "response"
    assert headers["lambda-runtime-function-response-mode"] == "streaming"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    assert headers["trailer"] == (
        "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"
    )
    prelude, body = invocation.prelude_and_body()
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    assert prelude["headers"]["x-request-id"] == invocation.request_id
    assert prelude["cookies"] == []
    assert invocation.chunks[0][1] == json.dumps(prelude, separators=(",", ":")).encode() + (
        b"\0" * 8
    )

    events = parse_sse(body.decode())
    assert deltas_text(events) == "".join(tokens)
    assert events[-1][0] == "done"
    # Each SSE frame is its own HTTP chunk, and they arrived spread over time...
    frames = [piece for _, piece in invocation.chunks[1:]]
    assert frames[:8] == [
        b'data: {"delta":' + json.dumps(t, ensure_ascii=False).encode() + b"}\n\n" for t in tokens
    ]
    times = [at for at, _ in invocation.chunks[1:9]]
    assert times[-1] - times[0] > 0.3
    # ...the first one in the first half of the upstream's answer, not with the last.
    call = upstream.last
    assert invocation.chunks[1][0] < call.received_at + (call.finished_at - call.received_at) / 2
    assert invocation.zero_chunk and invocation.trailers == {}
    assert invocation.connection_closed


def test_a_hang_up_on_the_response_stream_closes_the_upstream_at_once(start_runtime, upstream):
    """Lambda closes the response connection when the caller leaves: the app hears
    `http.disconnect` and the upstream call is closed at once, not run to its end (20 s)."""
    upstream.enqueue(Script(tokens=[f"t{i} " for i in range(400)], delay_s=0.05))
    runtime = start_runtime()
    invocation = runtime.invoke(CHAT_EVENT, hang_up_after_chunks=3)
    assert invocation.hung_up_at is not None
    call = upstream.last
    assert call.hung_up.wait(10)
    assert call.hung_up_at > invocation.hung_up_at
    assert call.tokens_sent < 200 and call.finished_at is None
    # The poller is free again and the next invocation streams as usual.
    upstream.enqueue(Script(tokens=["still ", "here"]))
    _, body = runtime.invoke(CHAT_EVENT).prelude_and_body()
    assert deltas_text(parse_sse(body.decode())) == "still here"
    [left, answered] = runtime.request_logs(2)
    assert (left["request_id"], left["outcome"]) == (invocation.request_id, "client_disconnected")
    assert answered["outcome"] == "ok"


def test_a_connection_closed_while_idle_before_the_response_is_no_hang_up(
    start_runtime, runtime_api, upstream
):
    """The runtime opens the response connection early; if the runtime API closes it before
    the response begins, nobody was answered yet: the answer goes out on a new connection."""
    runtime = start_runtime()
    runtime.invoke(HEALTHZ_EVENT)  # started, so the idle limit below meets only the stream
    runtime_api.emulator.idle_close_s = 0.2
    tokens = ["after ", "a ", "pause"]
    upstream.enqueue(Script(tokens=tokens, headers_delay_s=0.6))
    invocation = runtime.invoke(CHAT_EVENT)
    assert runtime_api.emulator.idle_closes >= 1
    _, body = invocation.prelude_and_body()
    events = parse_sse(body.decode())
    assert deltas_text(events) == "".join(tokens) and events[-1][0] == "done"
    assert invocation.trailers == {}
    assert runtime.request_logs(1)[-1]["outcome"] == "ok"


def test_mid_stream_failure_ends_with_error_trailers(start_runtime, upstream):
    upstream.enqueue(Script(tokens=list("abcdef"), delay_s=0.02, die_after=3))
    invocation = start_runtime().invoke(CHAT_EVENT)
    _, body = invocation.prelude_and_body()
    events = parse_sse(body.decode())
    assert deltas_text(events) == "abc"
    assert events[-1][0] == "error"
    assert invocation.trailers["lambda-runtime-function-error-type"] == "Function.StreamError"
    assert invocation.error_trailer_body()["errorType"] == "upstream_error"


def test_plain_text_failure_mid_stream_ends_with_error_trailers(start_runtime, upstream):
    upstream.enqueue(Script(tokens=list("abcdef"), delay_s=0.02, die_after=3))
    invocation = start_runtime().invoke(TEXT_EVENT)
    _, body = invocation.prelude_and_body()
    assert body == b"abc"
    assert invocation.trailers["lambda-runtime-function-error-type"] == "Function.StreamError"
    assert invocation.error_trailer_body()["errorType"] == "StreamFailed"


def test_failure_before_the_response_goes_to_error(start_runtime):
    event = copy.deepcopy(CHAT_EVENT)
    event["isBase64Encoded"] = True
    event["body"] = "not base64 at all!"
    runtime = start_runtime()
    invocation = runtime.invoke(event)
    assert invocation.kind == "error"
    assert invocation.request_headers["lambda-runtime-function-error-type"].startswith("Function.")
    error = json.loads(invocation.raw)
    assert error["errorType"] and error["errorMessage"]
    # The runtime survives and answers the next invocation.
    assert runtime.invoke(CHAT_EVENT).prelude_and_body()[0]["statusCode"] == 200


def test_bad_configuration_is_reported_to_init_error(start_runtime, runtime_api):
    runtime = start_runtime(MAX_TOKENS_CAP="not-a-number")
    assert runtime_api.emulator.init_error_seen.wait(15)
    headers, error = runtime_api.emulator.init_errors[0]
    assert headers["lambda-runtime-function-error-type"] == "Runtime.ValidationError"
    assert "max_tokens_cap" in error["errorMessage"]
    assert "not-a-number" not in error["errorMessage"]  # names the field, not the value
    assert runtime.process.wait(10) == 1


def test_stream_ends_cleanly_before_the_deadline(start_runtime, runtime_api, upstream):
    upstream.enqueue(Script(tokens=[f"t{i} " for i in range(100)], delay_s=0.1))
    runtime = start_runtime()
    assert runtime_api.emulator.polled.wait(30)  # the deadline counts from the event, not init
    invocation = runtime.invoke(CHAT_EVENT, deadline_in_s=1.5)
    _, body = invocation.prelude_and_body()
    events = parse_sse(body.decode())
    assert deltas_text(events)  # some of the answer came through
    assert events[-1][0] == "error"
    assert events[-1][1]["error"] == {
        "type": "upstream_timeout",
        "message": "the answer was cut short by the function's time limit",
    }
    assert invocation.zero_chunk
    assert ended_before_its_deadline(invocation)
    assert invocation.trailers["lambda-runtime-function-error-type"] == "Function.StreamError"
    assert upstream.last.hung_up.wait(10)  # and the upstream was told to stop
    assert upstream.last.finished_at is None


def test_a_non_string_text_part_is_a_400_not_a_stream_error(start_runtime, upstream):
    body = {
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}],
    }
    invocation = start_runtime().invoke(with_body(COMPLETIONS_EVENT, body))
    prelude, answer = invocation.prelude_and_body()
    assert prelude["statusCode"] == 400
    assert json.loads(answer)["error"]["param"] == "messages[0].content[0].text"
    assert invocation.trailers == {}
    # Nothing went upstream but init's connection warm-up (a GET without the key).
    assert [(r.method, r.path) for r in upstream.requests] == [("GET", "/v1/models")]


def test_a_non_streamed_answer_may_take_longer_than_the_token_timeout(start_runtime, upstream):
    """Bounded by the invocation's deadline, not by UPSTREAM_TIMEOUT_S per read."""
    runtime = start_runtime(UPSTREAM_TIMEOUT_S="0.3")
    upstream.enqueue(Script(tokens=["late ", "but whole"], headers_delay_s=0.8))
    body = {"stream": False, "messages": [{"role": "user", "content": "x"}]}
    prelude, answer = runtime.invoke(with_body(COMPLETIONS_EVENT, body)).prelude_and_body()
    assert prelude["statusCode"] == 200
    assert json.loads(answer)["choices"][0]["message"]["content"] == "late but whole"

    upstream.enqueue(Script(headers_delay_s=5))
    invocation = runtime.invoke(with_body(COMPLETIONS_EVENT, body), deadline_in_s=2.0)
    prelude, answer = invocation.prelude_and_body()
    assert prelude["statusCode"] == 504
    assert json.loads(answer)["error"]["type"] == "upstream_timeout"
    assert ended_before_its_deadline(invocation)  # before Lambda's cut-off


def test_twenty_warm_invocations_reuse_everything(start_runtime, upstream, secrets):
    first_key, rotated_key = TEST_KEY, "sk-test-rotated-key-9876543210zyxwvu"
    arn = secrets.create_secret(Name="relay-test/runtime", SecretString=first_key)["ARN"]
    runtime = start_runtime(
        OPENAI_API_KEY="",
        OPENAI_SECRET_ID=arn,
        AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"],
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        RELAY_RUNTIME_DEBUG="1",
    )
    process = psutil.Process(runtime.process.pid)
    counts = []
    for index in range(20):
        invocation = runtime.invoke(CHAT_EVENT)
        assert invocation.prelude_and_body()[0]["statusCode"] == 200
        if index == 0:
            # A warm invocation must not read the secret again: change it, nobody may notice.
            secrets.put_secret_value(SecretId=arn, SecretString=rotated_key)
        if index in (1, 19):
            counts.append((process.num_fds(), len(process.net_connections("tcp"))))
    assert counts[0] == counts[1], counts
    warm_up, *chats = upstream.requests
    assert (warm_up.method, warm_up.path) == ("GET", "/v1/models")  # opened during init...
    assert "authorization" not in warm_up.headers  # ...without the key
    assert {r.headers["authorization"] for r in chats} == {f"Bearer {first_key}"}
    # One pooled upstream connection, the one init opened, for every invocation.
    assert len({r.peer for r in upstream.requests}) == 1
    output = runtime.stop()
    debug = [line for line in output.splitlines() if "runtime-debug" in line]
    tasks = [int(line.split("tasks=", 1)[1].split()[0]) for line in debug]
    assert len(tasks) == 20 and tasks[1] == tasks[-1], tasks
    # Each invocation ran with its own trace id, in _X_AMZN_TRACE_ID too (one at a time: the
    # X-Ray SDK reads it there), on uvloop's event loop.
    trace = invocation.trace_id
    assert f"invocation={invocation.request_id} trace={trace} environ_trace={trace} " in debug[-1]
    assert " loop=uvloop.Loop " in debug[-1]
    # Off during init's imports, the collector runs again once init froze what it built.
    assert " gc_enabled=True " in debug[0]
    assert int(debug[0].rsplit("gc_frozen=", 1)[1]) > 10_000


@pytest.mark.parametrize(
    ("event", "status", "content_type"),
    [
        (TEXT_EVENT, 200, "text/plain; charset=utf-8"),
        (COMPLETIONS_EVENT, 200, "text/event-stream; charset=utf-8"),
        (UI_CHAT_EVENT, 200, "text/event-stream; charset=utf-8"),
        (RESPONSES_EVENT, 200, "text/event-stream; charset=utf-8"),
        (with_body(CHAT_EVENT, {"prompt": ""}), 422, "application/json"),
        (with_body(CHAT_EVENT, "{oops"), 400, "application/json"),
    ],
    ids=["plain-text", "passthrough", "ui-message-stream", "responses", "422", "400"],
)
def test_every_mode_comes_through_with_its_status(
    start_runtime, upstream, event, status, content_type
):
    upstream.default = Script(tokens=["Hello", " there"])
    invocation = start_runtime().invoke(event)
    prelude, body = invocation.prelude_and_body()
    assert prelude["statusCode"] == status
    assert prelude["headers"]["content-type"] == content_type
    if event is TEXT_EVENT:
        assert body == b"Hello there"
    elif event is COMPLETIONS_EVENT:
        assert body.rstrip().endswith(b"data: [DONE]") and b'"content":" there"' in body
    elif event is UI_CHAT_EVENT:
        assert prelude["headers"]["x-vercel-ai-ui-message-stream"] == "v1"
        parts = [json.loads(line[6:]) for line in body.split(b"\n") if line[:7] == b"data: {"]
        kinds = [part["type"] for part in parts]
        assert kinds == [
            "start",
            "start-step",
            "text-start",
            "text-delta",
            "text-delta",
            "text-end",
            "finish-step",
            "finish",
        ]
        assert "".join(part.get("delta", "") for part in parts) == "Hello there"
        assert body.endswith(b"data: [DONE]\n\n")
    elif event is RESPONSES_EVENT:
        assert b"event: response.output_text.delta" in body
        assert b"event: response.completed" in body and b'"delta":" there"' in body
    else:
        assert json.loads(body)["error"]["type"] in {"invalid_request", "invalid_json"}
    assert invocation.trailers == {}


def test_other_http_events_get_the_buffered_result(start_runtime, upstream):
    """An API Gateway (non-function-URL) event expects the classic buffered JSON."""
    event = copy.deepcopy(CHAT_EVENT)
    event["requestContext"]["domainName"] = "abc123.execute-api.us-east-1.amazonaws.com"
    upstream.default = Script(tokens=["all ", "at ", "once"])
    invocation = start_runtime().invoke(event)
    assert not invocation.streamed
    result = invocation.buffered_result()
    assert result["statusCode"] == 200
    assert deltas_text(parse_sse(result["body"])) == "all at once"


def test_non_http_event_is_an_error(start_runtime):
    invocation = start_runtime().invoke({"source": "aws.events", "detail": {}})
    assert invocation.kind == "error"
    assert "unable to infer" in json.loads(invocation.raw)["errorMessage"]


def test_sam_local_hands_over_to_the_standard_runtime():
    wrapper = ROOT / "handler" / "bin" / "streaming-runtime"
    env = {"PATH": os.environ["PATH"], "AWS_SAM_LOCAL": "true"}
    result = subprocess.run(
        [str(wrapper), "echo", "standard-runtime"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.strip() == "standard-runtime"


def test_exec_wrapper_starts_the_streaming_runtime(runtime_api, upstream):
    """Without AWS_SAM_LOCAL the wrapper ignores the managed bootstrap and runs ours."""
    wrapper = ROOT / "handler" / "bin" / "streaming-runtime"
    env = {
        "PATH": os.environ["PATH"],
        "RELAY_PYTHON": sys.executable,
        "LAMBDA_TASK_ROOT": str(ROOT),
        "AWS_LAMBDA_RUNTIME_API": runtime_api.address,
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": upstream.base_url,
        "ALLOW_ANONYMOUS": "true",
    }
    process = subprocess.Popen([str(wrapper), "/var/runtime/bootstrap"], env=env)
    try:
        invocation = runtime_api.invoke(CHAT_EVENT).wait()
        assert invocation.streamed
        assert invocation.prelude_and_body()[0]["statusCode"] == 200
    finally:
        process.kill()
        process.wait(10)


def test_iam_function_url_caller_is_the_signed_arn_and_missing_one_is_401(start_runtime, upstream):
    """With URL_AUTH_TYPE=AWS_IAM the function URL has verified the SigV4 signature; the caller
    is the ARN it put in the event (scope["aws.event"]), hashed on its way to OpenAI."""
    arn = "arn:aws:iam::123456789012:role/frontend"
    signed = copy.deepcopy(CHAT_EVENT)
    signed["requestContext"]["authorizer"] = {
        "iam": {"accountId": "123456789012", "userArn": arn, "userId": "AROAEXAMPLE"}
    }
    runtime = start_runtime(URL_AUTH_TYPE="AWS_IAM", ALLOW_ANONYMOUS="")
    prelude, _ = runtime.invoke(signed).prelude_and_body()
    assert prelude["statusCode"] == 200
    assert upstream.last.body["safety_identifier"] == safety_identifier(TEST_KEY, f"iam:{arn}")
    assert runtime.invoke(CHAT_EVENT).prelude_and_body()[0]["statusCode"] == 401
    assert [r.method for r in upstream.requests] == ["GET", "POST"]  # init's warm-up, one chat
    lines = [json.loads(line) for line in runtime.stop().splitlines() if '"caller"' in line]
    assert [line["caller"] for line in lines] == [f"iam:{arn}", "anonymous"]
    assert [line["status"] for line in lines] == [200, 401]
