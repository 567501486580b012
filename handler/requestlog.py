"""One structured JSON log line per request, written when the response has fully ended.

Routes fill in `RequestLog` fields as they learn them; the middleware adds status and timing,
and the CloudWatch metrics of the request (handler/metrics.py). Prompts and completions are never
included unless `LOG_PROMPTS=true`.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from handler.metrics import embedded_metrics

log = logging.getLogger("relay.request")


# The estimate of prompt tokens when a stream ended without the upstream's usage: OpenAI's
# tokenizers average about four characters of English per token, and the request body's bytes
# (JSON around the messages included) are a slight over-count of the prompt's characters.
BODY_BYTES_PER_TOKEN = 4


@dataclass(frozen=True)
class TokenCount:
    """A request's tokens: the upstream's `usage`, or an estimate (`estimated`) without one."""

    prompt: int
    completion: int
    estimated: bool

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@dataclass
class RequestLog:
    request_id: str
    route: str
    # Who is calling (handler/access.py): `token:<8 hex>`, `jwt:<sub>`, `iam:<arn>`, `anonymous`.
    caller: str = "anonymous"
    caller_arn: str | None = None  # an IAM caller's full ARN (`caller` is keyed by its role)
    plan: str | None = None  # the caller's plan (handler/plans.py), once the caller is known
    trace_id: str | None = None  # the invocation's X-Ray trace id, on Lambda
    # The upstream's id of its answer (OpenAI's `x-request-id`): what OpenAI's support asks for.
    upstream_request_id: str | None = None
    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    model: str | None = None
    outcome: str = "ok"
    error_type: str | None = None
    ttft_ms: float | None = None
    chunks: int = 0
    usage: dict | None = None
    request_bytes: int | None = None
    charged_tokens: int | None = None  # what the caller's budget was charged (handler/quota.py)
    prompt: Any = None
    completion: str | None = None

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = round((time.perf_counter() - self.started) * 1000, 2)

    def token_count(self) -> TokenCount | None:
        """What the request cost in tokens: the upstream's `usage` (Chat Completions or Responses
        names), else, when the upstream answered (status 200) but the stream ended without usage,
        an estimate: body bytes / 4 for the prompt, one token per streamed delta (OpenAI sends
        about one token per chunk). None when no answer began: nothing was generated."""
        usage = self.usage or {}
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(prompt, int) and isinstance(completion, int):
            return TokenCount(prompt, completion, estimated=False)
        if self.status != 200:
            return None
        prompt = math.ceil((self.request_bytes or 0) / BODY_BYTES_PER_TOKEN)
        return TokenCount(prompt, self.chunks, estimated=True)

    def line(self, metrics_namespace: str | None = None) -> str:
        """The JSON log line; with a namespace, also a CloudWatch embedded-metric document."""
        record = dict(vars(self))
        started = record.pop("started")
        record["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
        if record["prompt"] is None:
            del record["prompt"]
        if record["completion"] is None:
            del record["completion"]
        for optional in ("charged_tokens", "caller_arn", "plan"):
            if record[optional] is None:
                del record[optional]
        if metrics_namespace:
            record.update(embedded_metrics(self, metrics_namespace, self.token_count()))
        return orjson.dumps(record).decode()


def request_log(scope: dict) -> RequestLog:
    return scope["state"]["request_log"]


class RequestLogMiddleware:
    """Creates the request's `RequestLog` and `X-Request-Id`, and writes the line at the end."""

    def __init__(self, app: Any, metrics_namespace: str | None = None) -> None:
        self.app = app
        self.metrics_namespace = metrics_namespace

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = scope.get("aws.context")
        request_id = getattr(context, "aws_request_id", None) or uuid.uuid4().hex
        record = RequestLog(
            request_id=request_id,
            route=f"{scope['method']} {scope['path']}",
            trace_id=getattr(context, "trace_id", None),
        )
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
            log.info(record.line(self.metrics_namespace))
