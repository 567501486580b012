"""The native Lambda streaming runtime: polls the runtime API and streams the ASGI app's answer.

Mangum turns each event into an ASGI scope and body (its own event adapters); the new part is
only the transport: every `http.response.body` message becomes one HTTP chunk of Lambda's
streaming response, written the moment the app sends it. Started by handler/bin/streaming-runtime.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import sys
import time
import traceback
from typing import Any

import orjson

API_VERSION = "2018-06-01"
STREAM_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_END = b"\0" * 8
CRLF = b"\r\n"

log = logging.getLogger("relay.runtime")


class LambdaContext:
    """The context object handlers expect, built from one invocation's runtime API headers."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.aws_request_id = headers["lambda-runtime-aws-request-id"]
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn", "")
        self.tenant_id = headers.get("lambda-runtime-aws-tenant-id")
        self.trace_id = headers.get("lambda-runtime-trace-id")
        self.client_context = _json_header(headers.get("lambda-runtime-client-context"))
        self.identity = _json_header(headers.get("lambda-runtime-cognito-identity"))
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0"))

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def _json_header(value: str | None) -> Any:
    return orjson.loads(value) if value else None


class RuntimeApi:
    """HTTP/1.1 to the runtime API: a kept-alive connection for `/next` and buffered posts,
    a fresh one for each streamed response (closed once Lambda has acknowledged it)."""

    def __init__(self, address: str) -> None:
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def _request_head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"{method} /{API_VERSION}{path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await self._connection()
        head = {"Content-Length": str(len(body)), **(headers or {})}
        writer.write(self._request_head(method, path, head) + body)
        try:
            return await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            self._writer = None
            raise

    async def next_invocation(self) -> tuple[dict[str, str], bytes]:
        status, headers, body = await self.request("GET", "/runtime/invocation/next")
        if status != 200:
            raise RuntimeError(f"runtime API answered {status} to /next")
        return headers, body

    async def post_json(self, path: str, payload: Any, headers: dict | None = None) -> None:
        content = {"Content-Type": "application/json", **(headers or {})}
        await self.request("POST", path, orjson.dumps(payload), content)

    def connect(self) -> asyncio.Task:
        """A fresh connection for a streamed response, opened in the background: the app's
        own work (the upstream call) hides the connect from the time to first byte."""
        return asyncio.ensure_future(asyncio.open_connection(self.host, self.port))

    async def open_stream(self, request_id: str, connecting: asyncio.Task) -> StreamedResponse:
        reader, writer = await connecting
        writer.write(
            self._request_head(
                "POST",
                f"/runtime/invocation/{request_id}/response",
                {
                    "Lambda-Runtime-Function-Response-Mode": "streaming",
                    "Transfer-Encoding": "chunked",
                    "Content-Type": STREAM_CONTENT_TYPE,
                    "Trailer": "Lambda-Runtime-Function-Error-Type, "
                    "Lambda-Runtime-Function-Error-Body",
                },
            )
        )
        return StreamedResponse(reader, writer)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split(" ", 2)[1]), headers, body


class StreamedResponse:
    """One streamed invocation response: a chunked POST body, written as the app sends it."""

    _DRAIN_ABOVE = 64 * 1024

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport

    async def write(self, data: bytes) -> None:
        """One HTTP chunk per call, straight to the socket; wait only if the socket is behind."""
        if data:
            self._writer.writelines((b"%x\r\n" % len(data), data, CRLF))
            if self._transport.get_write_buffer_size() > self._DRAIN_ABOVE:
                await self._writer.drain()

    async def finish(self, error_type: str | None = None, error: dict | None = None) -> None:
        """The zero-length chunk (with Lambda's error trailers if it failed), then close."""
        ending = b"0\r\n"
        if error_type is not None:
            encoded = base64.b64encode(orjson.dumps(error)).decode()
            ending += (
                f"Lambda-Runtime-Function-Error-Type: {error_type}\r\n"
                f"Lambda-Runtime-Function-Error-Body: {encoded}\r\n"
            ).encode()
        self._writer.write(ending + CRLF)
        try:
            await self._writer.drain()
            await read_response(self._reader)
        finally:
            self._writer.close()


def _prelude(message: dict) -> bytes:
    """The JSON prelude of an HTTP integration response, and the eight NULs that end it."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in message.get("headers", ()):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "set-cookie":
            cookies.append(value)
        elif name in headers:
            headers[name] += ", " + value
        else:
            headers[name] = value
    prelude = {"statusCode": message["status"], "headers": headers, "cookies": cookies}
    return orjson.dumps(prelude) + PRELUDE_END


class StreamingCycle:
    """One HTTP invocation run through the ASGI app, its answer streamed to the runtime API."""

    def __init__(self, api: RuntimeApi, request_id: str, body: bytes) -> None:
        self._api = api
        self._request_id = request_id
        self._body = body
        self._stream: StreamedResponse | None = None
        self._connecting: asyncio.Task | None = None
        self._complete = asyncio.Event()
        self._sent_request = False
        self._trailers_expected = False
        self.failure: dict | None = None

    async def receive(self) -> dict:
        if not self._sent_request:
            self._sent_request = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._complete.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            await self._stream.write(message.get("body", b""))
            if not message.get("more_body", False) and not self._trailers_expected:
                self._complete.set()
        elif kind == "http.response.start":
            self._stream = await self._api.open_stream(self._request_id, self._connecting)
            self._trailers_expected = bool(message.get("trailers"))
            await self._stream.write(_prelude(message))
        elif kind == "http.response.trailers":
            for name, value in message.get("headers", ()):
                if name.lower() == b"relay-error-type":
                    self.failure = {
                        "errorType": value.decode(),
                        "errorMessage": "the stream ended with an error event",
                    }
            if not message.get("more_trailers", False):
                self._complete.set()

    async def run(self, app: Any, scope: dict) -> None:
        scope.setdefault("extensions", {})["http.response.trailers"] = {}
        self._connecting = self._api.connect()
        try:
            await app(scope, self.receive, self.send)
        except Exception as exc:
            if self._stream is None:
                await self._drop_connection()
                raise  # nothing written yet: the caller reports it to /error
            self.failure = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
        if self._stream is None:
            await self._drop_connection()
            raise RuntimeError("the app returned without a response")
        if not self._complete.is_set() and self.failure is None:
            self.failure = {"errorType": "IncompleteResponse", "errorMessage": "body not ended"}
        self._complete.set()
        if self.failure is None:
            await self._stream.finish()
        else:
            await self._stream.finish("Function.StreamError", self.failure)

    async def _drop_connection(self) -> None:
        """The app failed before its response began: the pre-opened connection goes unused."""
        connecting = self._connecting
        if not connecting.done():
            connecting.cancel()
        try:
            _, writer = await connecting
        except (asyncio.CancelledError, OSError):
            return
        writer.close()


def _streams(event: Any) -> bool:
    """Function URL events get the streaming answer; other HTTP events (API Gateway, ALB,
    a test `Invoke`) expect the classic buffered `{statusCode, headers, body}`."""
    context = event.get("requestContext") if isinstance(event, dict) else None
    domain = (context or {}).get("domainName", "")
    return event.get("version") == "2.0" and ".lambda-url." in domain


def _error_payload(exc: BaseException) -> dict:
    return {
        "errorMessage": str(exc) or type(exc).__name__,
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


class Runtime:
    """The invocation loop: one process, one event loop, one app for every invocation."""

    def __init__(self, api: RuntimeApi, app: Any, debug: bool = False) -> None:
        from mangum import Mangum
        from mangum.protocols import HTTPCycle

        self.api = api
        self.app = app
        self.mangum = Mangum(app, lifespan="off")
        self._buffered_cycle = HTTPCycle
        self._debug = debug

    async def serve_forever(self) -> None:
        while True:
            headers, body = await self.api.next_invocation()
            await self.invoke(headers, body)

    async def invoke(self, headers: dict[str, str], body: bytes) -> None:
        context = LambdaContext(headers)
        request_id = context.aws_request_id
        if context.trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = context.trace_id
        try:
            event = orjson.loads(body)
            handler = self.mangum.infer(event, context)
            if _streams(event):
                await StreamingCycle(self.api, request_id, handler.body).run(
                    self.app, handler.scope
                )
            else:
                result = await self._buffered(handler)
                await self.api.post_json(f"/runtime/invocation/{request_id}/response", result)
        except Exception as exc:
            log.error("invocation %s failed before its response: %r", request_id, exc)
            await self.api.post_json(
                f"/runtime/invocation/{request_id}/error",
                _error_payload(exc),
                {"Lambda-Runtime-Function-Error-Type": f"Function.{type(exc).__name__}"},
            )
        finally:
            if self._debug:
                tasks, trace = len(asyncio.all_tasks()), os.environ.get("_X_AMZN_TRACE_ID")
                loop = type(asyncio.get_running_loop())
                log.warning(
                    "runtime-debug invocation=%s trace=%s loop=%s.%s tasks=%d",
                    *(request_id, trace, loop.__module__, loop.__qualname__, tasks),
                )
            os.environ.pop("_X_AMZN_TRACE_ID", None)

    async def _buffered(self, handler: Any) -> dict:
        """Mangum's own buffered answer, run on this runtime's event loop."""
        cycle = self._buffered_cycle(handler.scope, handler.body)
        await cycle.run(self.app)
        return handler({"status": cycle.status, "headers": cycle.headers, "body": cycle.body})


async def _report_init_error(api: RuntimeApi, exc: BaseException) -> None:
    payload = _error_payload(exc)
    if type(exc).__name__ == "ValidationError":  # pydantic: name the fields, not their values
        errors = exc.errors(include_url=False, include_input=False)
        payload["errorMessage"] = "invalid configuration: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors
        )
    await api.post_json(
        "/runtime/init/error",
        payload,
        {"Lambda-Runtime-Function-Error-Type": f"Runtime.{type(exc).__name__}"},
    )


async def main() -> int:
    api = RuntimeApi(os.environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        from handler import init

        steps = init.InitSteps()
        secret = init.start_secret_read(steps)
        with steps.step("app"):
            from handler.app import app
        await init.warm(app, secret, steps)
    except Exception as exc:
        log.error("initialisation failed: %s", type(exc).__name__)
        await _report_init_error(api, exc)
        return 1
    # Like AWS_LAMBDA_RUNTIME_API, a variable of the runtime protocol, not a relay setting.
    snapshotted = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start"
    if snapshotted and not await _restore(api, app, init.after_restore):
        return 1
    await Runtime(api, app, debug=app.state.relay.settings.relay_runtime_debug).serve_forever()
    return 0


async def _restore(api: RuntimeApi, app: Any, after_restore: Any) -> bool:
    """SnapStart's handshake: `/restore/next` returns once this process runs again from the
    snapshot; then the after-restore work, its failure reported to `/restore/error`."""
    status, _, _ = await api.request("GET", "/runtime/restore/next")
    if status != 200:
        raise RuntimeError(f"runtime API answered {status} to /restore/next")
    try:
        await after_restore(app)
    except Exception as exc:
        log.error("after-restore work failed: %s", type(exc).__name__)
        await api.post_json(
            "/runtime/restore/error",
            _error_payload(exc),
            {"Lambda-Runtime-Function-Error-Type": f"Runtime.{type(exc).__name__}"},
        )
        return False
    return True


def _loop_factory() -> Any:
    """uvloop's event loop: measured here, about a quarter less CPU per invocation than
    asyncio's own. asyncio's loop if uvloop is missing (a platform without its wheel)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(asyncio.run(main(), loop_factory=_loop_factory()))
