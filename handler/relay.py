"""The upstream side: one OpenAI client per process, the streamed call, and what it yields.

`Upstream.open` starts a chat completion (refreshing the key once on a 401) and maps every
upstream failure to a `RelayError`. `ChatDeltas` turns the raw SSE bytes into batches of text
deltas, one batch per socket read; `PassthroughBytes` forwards the bytes untouched.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import orjson
from openai import AsyncOpenAI

from handler.credentials import Credentials, CredentialStore
from handler.errors import RelayError, upstream_error, upstream_timeout
from handler.settings import Settings

log = logging.getLogger("relay.upstream")

_DATA = b"data:"
_DONE = b"[DONE]"


class UpstreamRejected(RelayError):
    """The upstream refused the request itself (a 4xx other than auth and rate limits)."""

    def __init__(self, status: int, body: bytes, message: str) -> None:
        super().__init__(502, "upstream_error", message, outcome="upstream_error")
        self.upstream_status = status
        self.upstream_body = body


class _Unauthorized(Exception):
    """The upstream answered 401: the key may have been rotated."""


class Upstream:
    """Calls the OpenAI-compatible upstream over one pooled HTTP client for the process.

    The `AsyncOpenAI` client holds the configuration (base URL, key, organization, project, the
    SDK's headers) and owns the connection pool. Requests go out through that pool directly:
    the SDK's request building (typed-dict transforms, options, retries) cost about 1.3 ms per
    request here, more than everything else the relay adds to the time to first token.
    """

    def __init__(self, settings: Settings, credentials: CredentialStore) -> None:
        self._settings = settings
        self._credentials = credentials
        self._base: AsyncOpenAI | None = None
        self._http: httpx2.AsyncClient | None = None
        self._url = ""
        self._headers: dict[str, str] = {}
        self._headers_for: Credentials | None = None

    def _prepare(self, creds: Credentials) -> None:
        """The pool on first use; the request headers again whenever the credentials change."""
        if self._headers_for is creds:
            return
        if self._base is None:
            timeout = self._settings.upstream_timeout_s
            self._http = httpx2.AsyncClient(
                # `read` also bounds a stall between two chunks mid-stream.
                timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
                limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
            )
            self._base = client = AsyncOpenAI(
                api_key=creds.api_key,
                organization=creds.organization,
                project=creds.project,
                base_url=self._settings.openai_base_url,
                max_retries=0,
                http_client=self._http,
            )
            self._url = str(client.base_url.join("chat/completions"))
        else:
            # A rotated key: same connection pool, new auth headers.
            client = self._base.with_options(
                api_key=creds.api_key, organization=creds.organization, project=creds.project
            )
        headers = {**client.default_headers, **client.auth_headers}
        self._headers = {k: v for k, v in headers.items() if isinstance(v, str)}  # no `Omit`s
        self._headers_for = creds

    async def open(self, params: dict[str, Any]) -> httpx2.Response:
        """Send the request and return the streaming HTTP response once its status is 2xx."""
        try:
            return await self._send(self._credentials.get(), params)
        except _Unauthorized:
            if not self._credentials.refreshable:
                raise _upstream_auth() from None
            log.info("upstream answered 401; re-reading the secret once")
            try:
                return await self._send(self._credentials.get(refresh=True), params)
            except _Unauthorized:
                raise _upstream_auth() from None

    async def _send(self, creds: Credentials, params: dict[str, Any]) -> httpx2.Response:
        self._prepare(creds)
        request = self._http.build_request(
            "POST", self._url, content=orjson.dumps(params), headers=self._headers
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx2.TimeoutException:
            raise upstream_timeout(self._settings.upstream_timeout_s) from None
        except httpx2.TransportError:
            raise upstream_error("could not reach the model") from None
        status = response.status_code
        if status < 300:
            return response
        try:
            body = await response.aread()
        except httpx2.HTTPError:
            body = b""
        finally:
            await response.aclose()
        if status == 401:
            raise _Unauthorized
        if status == 403:
            raise _upstream_auth()
        if status == 429:
            retry_after = response.headers.get("retry-after")
            raise RelayError(
                429,
                "upstream_rate_limited",
                "the model is rate limited; retry later",
                headers={"Retry-After": retry_after} if retry_after else None,
                outcome="upstream_error",
            )
        if status >= 500:
            raise upstream_error(f"the model's server failed (HTTP {status})")
        raise UpstreamRejected(status, body, f"the model rejected the request (HTTP {status})")


def _upstream_auth() -> RelayError:
    return RelayError(
        502,
        "upstream_auth",
        "the model provider rejected the relay's key",
        outcome="upstream_error",
    )


async def close_response(response: httpx2.Response) -> None:
    """Close the upstream response even inside a cancelled scope, so generation stops now."""
    with anyio.CancelScope(shield=True):
        await response.aclose()


def _stream_failure(exc: Exception, settings: Settings) -> RelayError:
    if isinstance(exc, RelayError):
        return exc
    if isinstance(exc, httpx2.TimeoutException):
        return upstream_timeout(settings.upstream_timeout_s)
    return upstream_error("the model's stream broke off")


class ChatDeltas:
    """The text deltas of one streamed completion, a list per upstream read.

    Parses the SSE lines itself (orjson on each `data:` payload) rather than building an SDK
    model per chunk: this is the per-token hot path. After the iteration, `finish_reason`,
    `model` and `usage` describe the completion.
    """

    def __init__(self, response: httpx2.Response, settings: Settings) -> None:
        self.response = response
        self._settings = settings
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.deltas = 0
        # The completion text, kept only for the request log when LOG_PROMPTS=true.
        self.transcript: list[str] | None = [] if settings.log_prompts else None

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        pending = b""
        data: list[bytes] = []
        finished = False
        try:
            async for raw in self.response.aiter_bytes():
                lines = (pending + raw if pending else raw).split(b"\n")
                pending = lines.pop()
                batch: list[str] = []
                for line in lines:
                    if line[-1:] == b"\r":
                        line = line[:-1]
                    if line[:5] == _DATA:
                        data.append(line[5:])
                    elif not line and data:
                        finished |= self._take_event(b"\n".join(data), batch)
                        data = []
                if batch:
                    self.deltas += len(batch)
                    if self.transcript is not None:
                        self.transcript.extend(batch)
                    yield batch
        except Exception as exc:
            raise _stream_failure(exc, self._settings) from None
        if data:
            finished |= self._take_event(b"\n".join(data), [])
        if not finished and self.finish_reason is None:
            raise upstream_error("the model's stream ended before it finished")

    def _take_event(self, payload: bytes, batch: list[str]) -> bool:
        """Fold one SSE event into `batch`; True when it was the `[DONE]` marker."""
        if payload.strip() == _DONE:
            return True
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise upstream_error("the model sent a malformed chunk") from None
        if "error" in chunk:
            raise upstream_error("the model reported an error mid-stream")
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                if content:
                    batch.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if self.model is None:
            self.model = chunk.get("model")
        return False


class PassthroughBytes:
    """The upstream's SSE bytes, forwarded as read; checks only that `[DONE]` came at the end."""

    _TAIL = 4096

    def __init__(self, response: httpx2.Response, settings: Settings) -> None:
        self.response = response
        self._settings = settings
        self.deltas = 0
        self._tail = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for raw in self.response.aiter_bytes():
                self.deltas += raw.count(_DATA)
                self._tail = (self._tail + raw)[-self._TAIL :]
                yield raw
        except Exception as exc:
            raise _stream_failure(exc, self._settings) from None
        if not self._tail.rstrip().endswith(b"data: " + _DONE):
            raise upstream_error("the model's stream ended before [DONE]")
        self.deltas -= 1  # the [DONE] line is not a chunk

    @property
    def usage(self) -> dict | None:
        """Usage from the last chunk, when the caller asked for it with `stream_options`."""
        for line in reversed(self._tail.split(b"\n")):
            if line.startswith(_DATA) and b'"usage"' in line:
                try:
                    return orjson.loads(line[5:]).get("usage")
                except orjson.JSONDecodeError:
                    return None
        return None
