"""The streaming runtime's side of a response, with a small ASGI app of the test's own as its
input and the runtime-API emulator on the other end: `Set-Cookie` headers go into the prelude's
`cookies` (as a function URL wants them), and a reader that does not keep up makes the app wait
(back-pressure) instead of piling the answer up in memory."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import Future

import uvloop

from handler.runtime import Runtime
from handler.runtime_api import RuntimeApi
from handler.settings import Settings
from tests.runtime_process import ROOT

URL_EVENT = json.loads((ROOT / "events" / "chat.json").read_text())
CHUNK = b"z" * 65536
CHUNKS = 512  # 32 MiB: far more than the socket buffers between the runtime and the emulator


class StreamingApp:
    """Answers every request with two cookies and `chunks` chunks, as fast as `send` lets it;
    `sent` counts the chunks `send` has accepted so far."""

    def __init__(self, chunks: int, chunk: bytes = CHUNK) -> None:
        self.chunks, self.chunk, self.sent = chunks, chunk, 0

    async def __call__(self, scope, receive, send) -> None:
        await receive()
        headers = [
            (b"content-type", b"text/plain"),
            (b"set-cookie", b"session=abc; Path=/; HttpOnly"),
            (b"x-answer", b"1"),
            (b"Set-Cookie", b"theme=dark; Max-Age=60"),
            (b"X-Answer", b"2"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(self.chunks):
            await send({"type": "http.response.body", "body": self.chunk, "more_body": True})
            self.sent += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class TrailersApp:
    """Declares trailers (the ASGI `http.response.trailers` extension) and ends with an empty
    trailers message, as an app that only adds trailers on failure does on success."""

    async def __call__(self, scope, receive, send) -> None:
        await receive()
        headers = [(b"content-type", b"text/plain")]
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers, "trailers": True}
        )
        await send({"type": "http.response.body", "body": b"all of it", "more_body": False})
        await send({"type": "http.response.trailers", "headers": []})


class FailingApp:
    """Raises `ValueError` before its response (`sent` 0), after a first chunk (1), or returns
    without ending its body (`ends` False)."""

    def __init__(self, sent: int, ends: bool = False) -> None:
        self.sent, self.ends = sent, ends

    async def __call__(self, scope, receive, send) -> None:
        await receive()
        if self.sent:
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
        if not self.ends:
            raise ValueError("the app broke")


def run_one_invocation(runtime_api, app) -> Future:
    """The runtime takes one event from the emulator and answers it with `app`, in a thread."""
    settings = Settings(_env_file=None, openai_api_key="sk-unused", allow_anonymous=True)

    async def one() -> None:
        api = RuntimeApi(runtime_api.address)
        headers, body = await api.next_invocation()
        await Runtime(api, app, settings).invoke(api, headers, body)

    future: Future = Future()

    def run() -> None:
        try:  # on uvloop, the loop the runtime runs on (handler/runtime.py)
            future.set_result(asyncio.run(one(), loop_factory=uvloop.new_event_loop))
        except BaseException as exc:
            future.set_exception(exc)

    # A daemon thread: a runtime that hangs fails its test instead of holding pytest at exit.
    threading.Thread(target=run, daemon=True).start()
    return future


def test_set_cookie_headers_go_into_the_preludes_cookies(runtime_api):
    app = StreamingApp(chunks=2, chunk=b"hello ")
    invocation = runtime_api.invoke(URL_EVENT)
    run_one_invocation(runtime_api, app).result(30)
    prelude, body = invocation.wait(30).prelude_and_body()
    assert prelude["statusCode"] == 200
    assert prelude["cookies"] == ["session=abc; Path=/; HttpOnly", "theme=dark; Max-Age=60"]
    assert "set-cookie" not in {name.lower() for name in prelude["headers"]}
    assert prelude["headers"]["x-answer"] == "1, 2"  # repeated headers joined, as HTTP allows
    assert body == b"hello hello "


def test_an_answer_ending_with_empty_trailers_is_complete(runtime_api):
    invocation = runtime_api.invoke(URL_EVENT)
    run_one_invocation(runtime_api, TrailersApp()).result(30)
    prelude, body = invocation.wait(30).prelude_and_body()
    assert (prelude["statusCode"], body) == (200, b"all of it")
    assert invocation.zero_chunk
    assert invocation.trailers == {}  # no Lambda error trailers: the answer is whole


def test_a_response_lambda_never_acknowledges_does_not_hold_the_runtime(runtime_api):
    """The runtime waits for Lambda's 202 after the last chunk; a connection closed instead
    ends that wait, so the poller goes on to the next event."""
    invocation = runtime_api.invoke(URL_EVENT, acknowledge=False)
    done = run_one_invocation(runtime_api, StreamingApp(chunks=1, chunk=b"whole"))
    done.result(30)  # returned: not stuck waiting for an answer that will never come
    assert invocation.wait(30).prelude_and_body()[1] == b"whole"


def test_an_app_failing_before_its_response_is_reported_to_error_with_its_type(runtime_api):
    invocation = runtime_api.invoke(URL_EVENT)
    run_one_invocation(runtime_api, FailingApp(sent=0)).result(30)
    invocation.wait(30)
    assert invocation.kind == "error"
    assert invocation.request_headers["lambda-runtime-function-error-type"] == "Function.ValueError"
    assert json.loads(invocation.raw)["errorType"] == "ValueError"


def test_an_app_failing_mid_answer_ends_it_with_lambdas_error_trailers(runtime_api):
    invocation = runtime_api.invoke(URL_EVENT)
    run_one_invocation(runtime_api, FailingApp(sent=1)).result(30)
    _, body = invocation.wait(30).prelude_and_body()
    assert invocation.kind == "response" and body == b"first"
    assert invocation.trailers["lambda-runtime-function-error-type"] == "Function.StreamError"
    assert invocation.error_trailer_body()["errorType"] == "ValueError"


def test_an_app_returning_before_its_body_ended_is_an_incomplete_response(runtime_api):
    invocation = runtime_api.invoke(URL_EVENT)
    run_one_invocation(runtime_api, FailingApp(sent=1, ends=True)).result(30)
    _, body = invocation.wait(30).prelude_and_body()
    assert body == b"first"
    assert invocation.trailers["lambda-runtime-function-error-type"] == "Function.StreamError"
    assert invocation.error_trailer_body()["errorType"] == "IncompleteResponse"


def test_a_reader_that_does_not_keep_up_makes_the_app_wait(runtime_api):
    app = StreamingApp(chunks=CHUNKS)
    gate = threading.Event()
    invocation = runtime_api.invoke(URL_EVENT, read_gate=gate)
    done = run_one_invocation(runtime_api, app)
    try:
        # Wait until the app stops getting anywhere (or has sent everything, which is the bug).
        seen, still_since = -1, time.monotonic()
        deadline = time.monotonic() + 60
        while app.sent < CHUNKS and time.monotonic() - still_since < 1.0:
            assert time.monotonic() < deadline, "the app neither finished nor stalled"
            if app.sent != seen:
                seen, still_since = app.sent, time.monotonic()
            time.sleep(0.02)
        held_back = app.sent
        assert held_back < CHUNKS // 2, (
            f"{held_back} of {CHUNKS} chunks accepted by a stalled reader"
        )
    finally:
        gate.set()
    done.result(60)
    _, body = invocation.wait(60).prelude_and_body()
    assert len(body) == CHUNKS * len(CHUNK)
    assert app.sent == CHUNKS
