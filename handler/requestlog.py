"""One structured JSON log line per request, written when the response has fully ended.

Routes fill in `RequestLog` fields as they learn them; the middleware adds status and timing.
Prompts and completions are never included unless `LOG_PROMPTS=true`.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger("relay.request")


@dataclass
class RequestLog:
    request_id: str
    route: str
    # Who is calling (handler/access.py): `token:<8 hex>`, `jwt:<sub>`, `iam:<arn>`, `anonymous`.
    caller: str = "anonymous"
    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    model: str | None = None
    outcome: str = "ok"
    error_type: str | None = None
    ttft_ms: float | None = None
    chunks: int = 0
    usage: dict | None = None
    prompt: Any = None
    completion: str | None = None

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = round((time.perf_counter() - self.started) * 1000, 2)

    def line(self) -> str:
        record = dict(vars(self))
        started = record.pop("started")
        record["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
        if record["prompt"] is None:
            del record["prompt"]
        if record["completion"] is None:
            del record["completion"]
        return orjson.dumps(record).decode()


def request_log(scope: dict) -> RequestLog:
    return scope["state"]["request_log"]


class RequestLogMiddleware:
    """Creates the request's `RequestLog` and `X-Request-Id`, and writes the line at the end."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = scope.get("aws.context")
        request_id = getattr(context, "aws_request_id", None) or uuid.uuid4().hex
        record = RequestLog(request_id=request_id, route=f"{scope['method']} {scope['path']}")
        scope.setdefault("state", {})["request_log"] = record
        header = (b"x-request-id", request_id.encode())

        async def send_with_request_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
                if record.status >= 400 and record.outcome == "ok":
                    record.outcome = "rejected"
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception:
            record.outcome = "error"
            record.status = record.status or 500
            raise
        finally:
            log.info(record.line())
