"""The upstream side: one HTTP connection pool per process, the streamed call, and what it yields.

`Upstream.open` starts a chat completion (refreshing the key once on a 401) and maps every
upstream failure to a `RelayError`. `ChatDeltas` turns the raw SSE bytes into batches of text
deltas, one batch per socket read; `PassthroughBytes` forwards the bytes untouched.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from handler.access import safety_identifier
from handler.credentials import Credentials, CredentialStore
from handler.errors import (
    MODEL_UNAVAILABLE,
    UPSTREAM_AUTH,
    UPSTREAM_ERROR,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_REJECTED,
    UPSTREAM_TIMEOUT,
    ErrorKind,
    RelayError,
    failure_from,
    invalid_request,
)
from handler.settings import Settings
from handler.sources import StreamSummary, ToolCall, ToolCallPiece, WithToolCalls
from handler.timeouts import exact_timeout

log = logging.getLogger("relay.upstream")

OPENAI_BASE_URL = "https://api.openai.com/v1"
USER_AGENT = f"streaming-chat-relay aiohttp/{aiohttp.__version__}"

# What a caller may say about its end user; the relay says it instead (`safety_identifier`).
CALLER_FIELDS = frozenset({"user", "safety_identifier"})

_DATA = b"data:"
_DONE = b"[DONE]"


class UpstreamRejected(RelayError):
    """The upstream refused the request itself (a 4xx other than auth and rate limits); a
    model it does not serve (`model_not_found`) is `MODEL_UNAVAILABLE`, the operator's to fix."""

    def __init__(
        self, status: int, body: bytes, message: str, kind: ErrorKind = UPSTREAM_REJECTED
    ) -> None:
        super().__init__(kind, message)
        self.upstream_status = status
        self.upstream_body = body

    @property
    def passed_on(self) -> tuple[str, str]:
        """(outcome, error type) for the log when the upstream's answer is passed on (/v1/*):
        the caller's mistake as OpenAI judged it, unless the model itself is gone."""
        if self.kind is MODEL_UNAVAILABLE:
            return self.kind.outcome, self.kind.type
        return "rejected", "upstream_rejected"


class _Unauthorized(Exception):
    """The upstream answered 401: the key may have been rotated."""

    upstream_request_id: str | None = None


class Upstream:
    """Speaks OpenAI's Chat Completions API over one aiohttp connection pool for the process.

    The request is a single POST of a JSON body, so the relay sends it itself rather than
    through the `openai` SDK: measured here, the SDK's request building cost about 1.3 ms, and
    a streamed request took ~0.95 ms to its first token through the SDK's HTTP client (httpx2)
    against ~0.45 ms through aiohttp and ~0.3 ms on a bare socket (README, "Performance").
    Responses are read undecoded (`Accept-Encoding: identity`): a token must not wait in a
    decompressor, and the passthrough route forwards the very bytes the upstream sent.
    """

    def __init__(self, settings: Settings, credentials: CredentialStore) -> None:
        self._settings = settings
        self._credentials = credentials
        self._base_url = (settings.openai_base_url or OPENAI_BASE_URL).rstrip("/")
        timeout = settings.upstream_timeout_s
        # `sock_read` bounds the wait for the headers and for each chunk after them.
        self._timeout = exact_timeout(connect=min(timeout, 10.0), sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxy: str | None = None
        self._headers: dict[str, str] = {}
        self._headers_for: Credentials | None = None

    def _session_for(self, creds: Credentials) -> aiohttp.ClientSession:
        """The pool, made on first use inside the event loop; headers again for new credentials."""
        session = self._pool()
        if self._headers_for is not creds:
            headers = {
                **_key_header(self._settings, creds.api_key),
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Accept-Encoding": "identity",
                "User-Agent": USER_AGENT,
            }
            if creds.organization:
                headers["OpenAI-Organization"] = creds.organization
            if creds.project:
                headers["OpenAI-Project"] = creds.project
            self._headers, self._headers_for = headers, creds
        return session

    def _pool(self) -> aiohttp.ClientSession:
        session, loop = self._session, asyncio.get_running_loop()
        if session is None or self._loop is not loop:
            # One event loop per process in every server the relay runs under; a new loop
            # (a test harness) gets a pool of its own, the old loop's connections go with it.
            self._loop = loop
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0),
                timeout=self._timeout,
                auto_decompress=False,
                # One pool serves every caller: a cookie the upstream sets for one request
                # must not ride along on anyone else's.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._proxy = _environment_proxy(self._base_url)
        return session

    async def preconnect(self, timeout_s: float = 2.0) -> bool:
        """Open the pool and one kept-alive connection to the upstream, before any request needs
        it: at init the TCP and TLS handshakes run at full CPU, on the first request they would
        run throttled. An unauthenticated `GET /models` does it (any answer will do: only the
        connection is wanted, and no key is sent); True when a connection is now pooled."""
        session = self._pool()
        url = self._base_url + "/models"
        headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        try:
            async with session.get(
                url,
                headers=headers,
                proxy=self._proxy,
                timeout=exact_timeout(total=timeout_s),
            ) as response:
                await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.info("could not open an upstream connection ahead of time: %s", type(exc).__name__)
            return False
        return True

    async def close(self) -> None:
        """Close the pool and its connections (server shutdown, SnapStart restore); the next
        request opens a new one."""
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()

    async def open(
        self,
        params: dict[str, Any],
        caller: str,
        *,
        answer_within_s: float | None = None,
        endpoint: str = "/chat/completions",
    ) -> aiohttp.ClientResponse:
        """POST to an endpoint of the API (Chat Completions unless told, or `/responses`) and
        return the HTTP response once its status is 2xx.

        `caller` (handler/access.py) goes to OpenAI as a keyed hash in `safety_identifier`, in
        place of whatever the request said about its user. A stream is bounded per read by
        `UPSTREAM_TIMEOUT_S`; a whole (non-streamed) answer, which arrives only when it is
        complete, by `answer_within_s` for all of it."""
        timeout = None
        if answer_within_s is not None:
            # aiohttp reads a total of 0 as "no limit"; a spent deadline is not that.
            timeout = exact_timeout(
                total=max(answer_within_s, 0.001), connect=self._timeout.connect
            )
        url = self._base_url + endpoint
        creds = await self._credentials.aget()
        params = {k: v for k, v in params.items() if k not in CALLER_FIELDS}
        try:
            return await self._send(creds, url, params, caller, timeout)
        except _Unauthorized as refused:
            if not self._credentials.refreshable:
                raise _upstream_auth(401, refused) from None
            fresh = await self._credentials.refreshed(creds)
            if fresh is creds:  # re-read moments ago already: the key is simply wrong
                raise _upstream_auth(401, refused) from None
            try:
                return await self._send(fresh, url, params, caller, timeout)
            except _Unauthorized as again:
                raise _upstream_auth(401, again) from None

    async def read_answer(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body of a non-streamed answer, within the limit `open` was given."""
        try:
            return await response.read()
        except TimeoutError as exc:
            raise failure_from(UPSTREAM_TIMEOUT, _WHOLE_ANSWER_LATE, exc) from exc
        except aiohttp.ClientError as exc:
            raise failure_from(UPSTREAM_ERROR, "the model's answer broke off", exc) from exc
        finally:
            close_response(response)

    async def _send(
        self,
        creds: Credentials,
        url: str,
        params: dict[str, Any],
        caller: str,
        timeout: aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        session = self._session_for(creds)
        try:
            body = orjson.dumps(
                {**params, "safety_identifier": safety_identifier(creds.api_key, caller)}
            )
        except TypeError:
            # orjson writes at most 254 levels of nesting, and reads 1024.
            raise invalid_request("the body is nested too deeply") from None
        try:
            response = await session.post(
                url,
                data=body,
                headers=self._headers,
                proxy=self._proxy,
                timeout=timeout or self._timeout,
            )
        except TimeoutError as exc:
            if timeout is not None:
                raise failure_from(UPSTREAM_TIMEOUT, _WHOLE_ANSWER_LATE, exc) from exc
            seconds = self._settings.upstream_timeout_s
            message = f"the model sent no token within {seconds:g} s"
            raise failure_from(UPSTREAM_TIMEOUT, message, exc) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: a malformed OPENAI_BASE_URL, said as plainly as a refused connection.
            raise failure_from(UPSTREAM_ERROR, "could not reach the model", exc) from exc
        status = response.status
        if status < 300:
            return response
        try:
            body = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            body = b""
        finally:
            response.close()
        refusal = _refusal(status, response.headers, body)
        refusal.upstream_request_id = upstream_request_id(response)
        raise refusal


def _refusal(status: int, headers: Any, body: bytes) -> RelayError | _Unauthorized:
    """What an upstream answer of `status` (not 2xx) means for the relay."""
    if status == 401:
        return _Unauthorized()
    if status == 403:
        return _upstream_auth(403)
    # The upstream's answer is the cause; its body is not logged (an auth error quotes
    # part of the key, a rejection may quote the prompt).
    log.warning("upstream answered HTTP %d", status)
    if status == 429:
        retry_after = headers.get("retry-after")
        return RelayError(
            UPSTREAM_RATE_LIMITED,
            "the model is rate limited; retry later",
            headers={"Retry-After": retry_after} if retry_after else None,
        )
    if status >= 500:
        return RelayError(UPSTREAM_ERROR, f"the model's server failed (HTTP {status})")
    if _error_code(body) == "model_not_found":
        return UpstreamRejected(
            status, body, "the model is not available upstream", kind=MODEL_UNAVAILABLE
        )
    return UpstreamRejected(status, body, f"the model rejected the request (HTTP {status})")


def _error_code(body: bytes) -> object:
    """The `error.code` of an OpenAI error body, or None."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def upstream_request_id(response: aiohttp.ClientResponse) -> str | None:
    """OpenAI's id of its answer (`x-request-id`), what its support asks for; at most 200
    printable characters of it, as a header from any compatible server may hold anything."""
    value = response.headers.get("x-request-id")
    if not value or len(value) > 200 or not value.isprintable():
        return None
    return value


def _key_header(settings: Settings, api_key: str) -> dict[str, str]:
    """The key as the upstream wants it: OpenAI's bearer, or Azure OpenAI's `api-key`."""
    if settings.openai_key_header == "api-key":
        return {"api-key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


def _environment_proxy(url: str) -> str | None:
    """The proxy `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` choose for the upstream, read once.

    (aiohttp's `trust_env` would read them, and ~/.netrc, again on every request.)"""
    proxies = urllib.request.getproxies_environment()
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if scheme not in proxies or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxies[scheme]


def _upstream_auth(status: int, refused: _Unauthorized | None = None) -> RelayError:
    log.warning("upstream answered HTTP %d to the relay's key", status)
    error = RelayError(UPSTREAM_AUTH, "the model provider rejected the relay's key")
    error.upstream_request_id = refused.upstream_request_id if refused else None
    return error


_WHOLE_ANSWER_LATE = "the model's answer did not come before the function's time limit"


def answer_usage(answer: bytes) -> dict | None:
    """The `usage` of a non-streamed answer, for the request log; None when it has none."""
    try:
        usage = orjson.loads(answer).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def close_response(response: aiohttp.ClientResponse) -> None:
    """Drop the upstream connection unless the answer was read to its end (then it is back in
    the pool already): an abandoned stream must stop the generation now."""
    response.close()


def _stream_failure(exc: Exception, settings: Settings) -> RelayError:
    if isinstance(exc, RelayError):
        return exc
    if isinstance(exc, TimeoutError):
        seconds = settings.upstream_timeout_s
        return failure_from(UPSTREAM_TIMEOUT, f"the model sent no token within {seconds:g} s", exc)
    return failure_from(UPSTREAM_ERROR, "the model's stream broke off", exc)


def _broken_stream(message: str) -> RelayError:
    """A stream that parsed but did not end as the protocol says: `message` is the cause."""
    log.warning("%s", message)
    return RelayError(UPSTREAM_ERROR, message)


class ChatDeltas:
    """The text deltas of one streamed completion, a list per upstream read (a `StreamSource`).

    Parses the SSE lines itself (orjson on each `data:` payload) rather than building an SDK
    model per chunk: this is the per-token hot path.
    """

    def __init__(self, response: aiohttp.ClientResponse, settings: Settings) -> None:
        self.response = response
        self._settings = settings
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.deltas = 0
        # The completion text, kept only for the request log when LOG_PROMPTS=true.
        self.transcript: list[str] | None = [] if settings.log_prompts else None
        # Tool calls by their index in the answer: (id, name, argument pieces).
        self._calls: dict[int, tuple[str, str, list[str]]] = {}
        self._pieces_in_batch = False

    async def __aiter__(self) -> AsyncIterator[list[str]]:
        pending = b""
        data: list[bytes] = []
        finished = False
        try:
            async for raw in self.response.content.iter_any():
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
                    if self._pieces_in_batch:
                        self._pieces_in_batch = False
                        batch = WithToolCalls(batch)
                        if self.transcript is not None:
                            self.transcript.extend(t for t in batch if t.__class__ is str)
                    elif self.transcript is not None:
                        self.transcript.extend(batch)
                    yield batch
        except Exception as exc:
            raise _stream_failure(exc, self._settings) from exc
        if data:
            finished |= self._take_event(b"\n".join(data), [])
        if not finished and self.finish_reason is None:
            raise _broken_stream("the model's stream ended before it finished")

    def close(self) -> None:
        close_response(self.response)

    def summary(self) -> StreamSummary:
        transcript = self.transcript
        return StreamSummary(
            model=self.model,
            usage=self.usage,
            finish_reason=self.finish_reason,
            chunks=self.deltas,
            completion="".join(transcript) if transcript is not None else None,
            tool_calls=tuple(
                ToolCall(call_id, name, "".join(pieces))
                for call_id, name, pieces in self._calls.values()
            ),
        )

    def _take_event(self, payload: bytes, batch: list[str]) -> bool:
        """Fold one SSE event into `batch`; True when it was the `[DONE]` marker."""
        if payload.strip() == _DONE:
            return True
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise failure_from(UPSTREAM_ERROR, "the model sent a malformed chunk", exc) from exc
        if "error" in chunk:
            raise _broken_stream("the model reported an error mid-stream")
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                if content:
                    batch.append(content)
                elif delta.get("tool_calls"):  # never looked for beside text: OpenAI sends
                    self._take_tool_calls(delta["tool_calls"], batch)  # them apart
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if self.model is None:
            self.model = chunk.get("model")
        return False

    def _take_tool_calls(self, calls: object, batch: list) -> None:
        """Fold the `tool_calls` of one delta into `batch` as `ToolCallPiece`s. A call's first
        piece has its id and name (OpenAI's order); the later ones, only more arguments."""
        if not isinstance(calls, list):
            raise _broken_stream("the model sent malformed tool calls")
        for call in calls:
            if not isinstance(call, dict):
                raise _broken_stream("the model sent malformed tool calls")
            index = call.get("index", 0)
            function = call.get("function") or {}
            arguments = function.get("arguments") or ""
            if not isinstance(arguments, str):
                raise _broken_stream("the model sent tool call arguments that are not text")
            known = self._calls.get(index)
            if known is None:
                name = function.get("name")
                if not isinstance(name, str) or not name:
                    raise _broken_stream("the model sent a tool call without a name")
                call_id = call.get("id")
                if not isinstance(call_id, str) or not call_id:
                    call_id = f"call_{index}"  # compatible servers that send none
                known = self._calls[index] = (call_id, name, [])
                first = True
            elif not arguments:
                continue
            else:
                first = False
            known[2].append(arguments)
            batch.append(ToolCallPiece(known[0], known[1], arguments, first))
            self._pieces_in_batch = True


class PassthroughBytes:
    """The upstream's SSE bytes, forwarded as read; checks only that `[DONE]` came at the end.

    A `StreamSource`: the bytes are not parsed, so its summary has only the chunk count and
    the usage. The relay always asks a stream for its usage; when the caller did not,
    `drop_usage_chunk` takes that final usage-only chunk out of what is forwarded, and the
    `"usage":null` OpenAI then puts in every other chunk, without parsing them: a read goes
    out up to its last whole event (a client cannot use half an event anyway, and upstreams
    write whole ones), and only an event holding a `"usage"` object is parsed.
    """

    _TAIL = 4096

    def __init__(
        self, response: aiohttp.ClientResponse, settings: Settings, *, drop_usage_chunk: bool
    ) -> None:
        self.response = response
        self._settings = settings
        self._drop_usage_chunk = drop_usage_chunk
        self.deltas = 0
        self._tail = b""
        self._dropped_usage: dict | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = b""
        try:
            async for raw in self.response.content.iter_any():
                self.deltas += raw.count(_DATA)
                # Only the end matters: a big read need not be copied to keep it.
                self._tail = (
                    raw[-self._TAIL :]
                    if len(raw) >= self._TAIL
                    else (self._tail + raw)[-self._TAIL :]
                )
                if self._drop_usage_chunk:
                    if pending:
                        raw, pending = pending + raw, b""
                    if not raw.endswith(b"\n\n"):
                        complete = _complete_events_end(raw)
                        if complete < len(raw):
                            raw, pending = raw[:complete], raw[complete:]
                    # Once usage is asked for, OpenAI adds `"usage":null` to every chunk: the
                    # caller who did not ask gets the chunks OpenAI would have sent it. (Never
                    # from generated text: quotes inside a JSON string are escaped.)
                    raw = raw.replace(_NULL_USAGE_MEMBER, b"")
                    if _USAGE_KEY in raw:  # with the nulls gone, as a rule only the usage chunk
                        raw = self._without_usage_chunk(raw)
                    if not raw:
                        continue
                yield raw
        except Exception as exc:
            raise _stream_failure(exc, self._settings) from exc
        if pending:
            yield pending
        if not self._tail.rstrip().replace(b"data: ", _DATA).endswith(_DATA + _DONE):
            raise _broken_stream("the model's stream ended before [DONE]")
        self.deltas -= 1  # the [DONE] line is not a chunk

    def close(self) -> None:
        close_response(self.response)

    def summary(self) -> StreamSummary:
        return StreamSummary(
            model=None, usage=self._usage(), finish_reason=None, chunks=self.deltas
        )

    def _without_usage_chunk(self, events: bytes) -> bytes:
        """`events` (whole SSE events) less the usage-only chunk, whose usage is kept."""
        at = _usage_object_at(events)
        while at >= 0:
            start, end = _event_around(events, at)
            at = _usage_object_at(events, end)
            payload = b"\n".join(
                line[5:] for line in events[start:end].splitlines() if line.startswith(_DATA)
            )
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict) and not chunk.get("choices") and chunk.get("usage"):
                self._dropped_usage = chunk["usage"]
                self.deltas -= 1
                return events[:start] + events[end:]
        return events

    def _usage(self) -> dict | None:
        """Usage from the last chunk (the relay asks for it on every stream)."""
        if self._dropped_usage is not None:
            return self._dropped_usage
        for line in reversed(self._tail.split(b"\n")):
            if line.startswith(_DATA) and b'"usage"' in line:
                try:
                    return orjson.loads(line[5:]).get("usage")
                except orjson.JSONDecodeError:
                    return None
        return None


_USAGE_KEY = b'"usage"'
_NULL_USAGE_MEMBER = b',"usage":null'
_USAGE_OBJECT = re.compile(rb'"usage"[ \t\r\n]*:[ \t\r\n]*\{')


def _usage_object_at(data: bytes, start: int = 0) -> int:
    """Where a `"usage"` key holding an object starts in `data`, or -1: the key, any white
    space JSON allows around its colon, then `{`. Quotes inside JSON strings are escaped, so
    generated text cannot look like the key; `"usage": null`, which OpenAI puts in every chunk
    once usage is asked for, is passed over. (Called only for a read that holds the key: one
    search was measured cheaper there than finding the key and then looking after it.)"""
    found = _USAGE_OBJECT.search(data, start)
    return found.start() if found else -1


def _complete_events_end(data: bytes) -> int:
    """The offset just after the last blank line (the end of the last whole SSE event)."""
    if data.endswith(b"\n\n") or data.endswith(b"\n\r\n"):
        return len(data)
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


def _event_around(events: bytes, at: int) -> tuple[int, int]:
    """Start and end offsets of the whole SSE event in `events` that contains offset `at`."""
    before = max(events.rfind(b"\n\n", 0, at), events.rfind(b"\n\r\n", 0, at))
    start = 0 if before < 0 else events.index(b"\n", before + 1) + 1
    ends = [i for i in (events.find(b"\n\n", at), events.find(b"\n\r\n", at)) if i >= 0]
    if not ends:
        return start, len(events)
    after = min(ends)
    return start, events.index(b"\n", after + 1) + 1
