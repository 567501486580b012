"""The native Lambda streaming runtime: polls the runtime API and streams the ASGI app's answer.

Mangum turns each event into an ASGI scope and body (its own event adapters); the new part is
only the transport (handler/runtime_api.py): every `http.response.body` message becomes one HTTP
chunk of Lambda's streaming response, written the moment the app sends it, and Lambda closing
that connection early reaches the app as `http.disconnect`. On Lambda Managed Instances
(`AWS_LAMBDA_MAX_CONCURRENCY`) one process runs that many pollers on one event loop.
Started by handler/bin/streaming-runtime.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
import traceback
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson

from handler.runtime_api import RuntimeApi, StreamedResponse

if TYPE_CHECKING:
    from handler.settings import Settings

PRELUDE_END = b"\0" * 8

log = logging.getLogger("relay.runtime")

# The invocation the current task serves. Pollers run side by side on one loop, so anything
# per invocation (request id, trace id, deadline) is reached through this, never os.environ.
current_invocation: ContextVar[LambdaContext | None] = ContextVar("invocation", default=None)


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
    """One HTTP invocation run through the ASGI app, its answer streamed to the runtime API.

    The app hears `http.disconnect` when its response has ended, or as soon as Lambda closes
    the response connection (the caller hung up), so that it stops the upstream call at once."""

    def __init__(self, api: RuntimeApi, request_id: str, body: bytes) -> None:
        self._api = api
        self._request_id = request_id
        self._body = body
        self._stream: StreamedResponse | None = None
        self._connecting: asyncio.Task | None = None
        self._disconnected = asyncio.Event()
        self._complete = False
        self._sent_request = False
        self._trailers_expected = False
        self.hung_up = False
        self.failure: dict | None = None

    async def receive(self) -> dict:
        if not self._sent_request:
            self._sent_request = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            await self._stream.write(message.get("body", b""))
            if not message.get("more_body", False) and not self._trailers_expected:
                self._end()
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
                self._end()

    def _end(self) -> None:
        self._complete = True
        self._disconnected.set()

    def _caller_hung_up(self) -> None:
        if not self._complete:
            self.hung_up = True
            self._disconnected.set()

    async def run(self, app: Any, scope: dict) -> None:
        scope.setdefault("extensions", {})["http.response.trailers"] = {}
        self._connecting = self._api.connect(self._caller_hung_up)
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
        if self.hung_up:
            log.info("invocation %s: Lambda closed the response stream early", self._request_id)
            return
        if not self._complete and self.failure is None:
            self.failure = {"errorType": "IncompleteResponse", "errorMessage": "body not ended"}
        self._end()
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
            stream = await connecting
        except (asyncio.CancelledError, OSError):
            return
        stream.close()


def _error_payload(exc: BaseException) -> dict:
    return {
        "errorMessage": str(exc) or type(exc).__name__,
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


class Runtime:
    """The invocation loop: one process, one event loop, one app for every invocation.

    With `AWS_LAMBDA_MAX_CONCURRENCY=N` (Lambda Managed Instances) N pollers, each with its own
    runtime API connection, share that loop, the app, its upstream pool and its secret cache."""

    def __init__(self, api: RuntimeApi, app: Any, settings: Settings) -> None:
        from mangum import Mangum
        from mangum.handlers import APIGateway, HTTPGateway
        from mangum.protocols import HTTPCycle

        self.api = api
        self.app = app
        self.mangum = Mangum(app, lifespan="off")
        self._buffered_cycle = HTTPCycle
        # Which Mangum adapters answer with a stream: function URLs (payload 2.0) and, when
        # configured, API Gateway REST proxy events (payload 1.0). Nothing in a REST event says
        # whether its integration streams, so that comes from configuration (STREAM_EVENTS).
        self._url_adapter = HTTPGateway if "url" in settings.stream_events else None
        self._rest_adapter = APIGateway if "rest" in settings.stream_events else None
        self.concurrency = settings.aws_lambda_max_concurrency
        # One invocation at a time: the X-Ray SDK reads the trace id from the environment, as
        # under AWS's runtime. With several at once a process-wide variable would be wrong for
        # all but one of them, so it is left unset and the trace id is per invocation only.
        self._trace_in_environ = self.concurrency == 1
        self._debug = settings.relay_runtime_debug

    async def serve_forever(self) -> None:
        if self.concurrency == 1:
            await self._poll(self.api)
            return
        apis = [self.api] + [RuntimeApi(self.api.address) for _ in range(self.concurrency - 1)]
        await asyncio.gather(*(self._poll(api) for api in apis))

    async def _poll(self, api: RuntimeApi) -> None:
        while True:
            headers, body = await api.next_invocation()
            await self.invoke(api, headers, body)

    def _streams(self, handler: Any) -> bool:
        """Function URL events (and REST events, if configured) get the streaming answer; other
        HTTP events (HTTP APIs, ALB, a test `Invoke`) expect the classic buffered JSON."""
        adapter = type(handler)
        if adapter is self._url_adapter:
            event = handler.event
            domain = event["requestContext"].get("domainName", "")
            return event.get("version") == "2.0" and ".lambda-url." in domain
        return adapter is self._rest_adapter

    async def invoke(self, api: RuntimeApi, headers: dict[str, str], body: bytes) -> None:
        context = LambdaContext(headers)
        request_id = context.aws_request_id
        token = current_invocation.set(context)
        if self._trace_in_environ and context.trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = context.trace_id
        try:
            event = orjson.loads(body)
            handler = self.mangum.infer(event, context)
            if self._streams(handler):
                await StreamingCycle(api, request_id, handler.body).run(self.app, handler.scope)
            else:
                result = await self._buffered(handler)
                await api.post_json(f"/runtime/invocation/{request_id}/response", result)
        except Exception as exc:
            log.error("invocation %s failed before its response: %r", request_id, exc)
            await api.post_json(
                f"/runtime/invocation/{request_id}/error",
                _error_payload(exc),
                {"Lambda-Runtime-Function-Error-Type": f"Function.{type(exc).__name__}"},
            )
        finally:
            if self._debug:
                self._debug_line()
            if self._trace_in_environ:
                os.environ.pop("_X_AMZN_TRACE_ID", None)
            current_invocation.reset(token)

    def _debug_line(self) -> None:
        """What the warm-path tests check: tasks alive, the trace id this invocation saw (and
        the process-wide one), the loop in use, the collector's state after init."""
        context = current_invocation.get()
        loop = type(asyncio.get_running_loop())
        log.warning(
            "runtime-debug invocation=%s trace=%s environ_trace=%s loop=%s.%s tasks=%d"
            " gc_enabled=%s gc_frozen=%d",
            context.aws_request_id,
            context.trace_id,
            os.environ.get("_X_AMZN_TRACE_ID"),
            loop.__module__,
            loop.__qualname__,
            len(asyncio.all_tasks()),
            gc.isenabled(),
            gc.get_freeze_count(),
        )

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
    # The collector stays off while init builds what lasts for the process: collections during
    # the imports walk an ever larger heap and free almost nothing. init.warm freezes what init
    # built and turns it back on.
    gc.disable()
    try:
        from handler import aiohttp_import

        aiohttp_import.import_aiohttp()  # first: everything after it imports aiohttp
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
    await Runtime(api, app, app.state.relay.settings).serve_forever()
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
