"""A stream the ASGI server cuts short still closes the upstream at once (handler/streaming.py):
a request task the server cancels while the route waits for the first token or in the middle of
the stream (uvicorn does so when its graceful-shutdown timeout runs out, other servers on a
hang-up), and a `send` that raises on the first frame (ASGI 2.4 lets a server raise an `OSError`
for a closed connection).

The relay's own servers do neither, so the server here is the smallest ASGI one that does: it
hands the real app one `/chat` request and either cancels the app's task or fails the first
body message. The upstream is the fake OpenAI on loopback, which notes when the relay hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson

from devtools.scripts import Script
from handler.app import create_app
from handler.init import post_scope
from handler.settings import Settings
from tests.conftest import TEST_KEY
from tests.helpers import run_coroutine

HANG_UP_WAIT_S = 10  # how long the upstream is watched for the relay's hang-up


class ClientGone(OSError):
    """What this server's `send` raises for a connection its client has closed."""


def chat_scope() -> dict:
    """One `/chat` request as a server speaking ASGI 2.4 hands it to the app."""
    headers = [(b"content-type", b"application/json"), (b"accept", b"text/event-stream")]
    return {**post_scope("/chat", headers), "asgi": {"version": "3.0", "spec_version": "2.4"}}


def relay_app(upstream):
    return create_app(
        Settings(
            _env_file=None,
            openai_api_key=TEST_KEY,
            openai_base_url=upstream.base_url,
            allow_anonymous=True,
            upstream_timeout_s=60,
            ping_interval_s=30,  # the route's wait for the first frame lasts until the first ping
        )
    )


def one_request_body():
    """`receive` for one request: its body, then nothing (the client never hangs up)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": orjson.dumps({"prompt": "hi"})}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def until(condition, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the stream never got that far"
        await asyncio.sleep(0.01)


def cancelled(upstream, when) -> tuple[bool, list[dict]]:
    """The app's task for one `/chat` request, cancelled once `when(messages)` returns (the
    messages sent so far): whether the upstream then saw the relay hang up, and the messages.
    The upstream is watched before the app shuts down, which closes the upstream pool: that,
    or the loop's end, would close anything left behind."""
    app = relay_app(upstream)
    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    async def run() -> bool:
        async with app.router.lifespan_context(app):
            task = asyncio.ensure_future(app(chat_scope(), one_request_body(), send))
            await when(messages)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return await asyncio.to_thread(upstream.last.hung_up.wait, HANG_UP_WAIT_S)

    return run_coroutine(run()), messages


def test_a_request_cancelled_while_waiting_for_the_first_token_closes_the_upstream(upstream):
    upstream.enqueue(Script(tokens=["late"], first_delay_s=60))

    async def waiting_for_the_first_frame(messages: list[dict]) -> None:
        await until(lambda: upstream.requests)
        await asyncio.sleep(0.2)

    hung_up, messages = cancelled(upstream, waiting_for_the_first_frame)
    assert hung_up
    assert messages == []  # cancelled before the headers
    assert upstream.last.tokens_sent == 0


def test_a_request_cancelled_in_the_middle_of_the_stream_closes_the_upstream(upstream):
    """Cancelled while the stream waits for the next token: the frames' task is cancelled with
    it, not awaited to the end of the answer (20 s away here)."""
    upstream.enqueue(Script(tokens=["first", "never"], delay_s=20))

    async def after_the_first_frame(messages: list[dict]) -> None:
        await until(lambda: any(m["type"] == "http.response.body" for m in messages))

    hung_up, messages = cancelled(upstream, after_the_first_frame)
    assert hung_up
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert b"first" in messages[1]["body"]
    assert upstream.last.tokens_sent == 1


def test_a_send_that_fails_on_the_first_frame_closes_the_upstream(upstream):
    upstream.enqueue(Script(tokens=["first", "never"], delay_s=60))
    app = relay_app(upstream)
    messages: list[dict] = []
    raised: list[BaseException] = []

    async def first_frame_refused() -> bool:
        async def send(message: dict) -> None:
            if message["type"] == "http.response.body":
                raise ClientGone("the client has gone")
            messages.append(message)

        async with app.router.lifespan_context(app):
            try:
                await app(chat_scope(), one_request_body(), send)
            except ClientGone as exc:
                # Kept until the upstream is looked at: dropped, its traceback's frames could be
                # collected and the abandoned stream closed by the garbage collector instead.
                raised.append(exc)
            return await asyncio.to_thread(upstream.last.hung_up.wait, HANG_UP_WAIT_S)

    assert run_coroutine(first_frame_refused())
    assert [m["type"] for m in messages] == ["http.response.start"]
    assert [type(exc) for exc in raised] == [ClientGone]
    assert upstream.last.tokens_sent == 1
