"""Per-caller limits kept in DynamoDB: requests per clock minute and tokens per UTC day.

`Quota.admit` runs just before the upstream call: one conditional `UpdateItem` counts the
request only while the caller is under both limits and reserves the request's worst case
against the day's budget, so concurrent requests in any number of processes are admitted
exactly up to the limits. `QuotaChargeMiddleware` settles the reservation once the response
has ended: to the real usage when it is known, else (a stream cut short) the reservation stays.

One item per caller and UTC day (partition key `pk`, TTL attribute `expires_at`):
  `quota#<YYYY-MM-DD>#<caller>`: `tokens` charged (reservations included), `requests` admitted,
  `minute` (`HH:MM`, the last minute a request was admitted in) and `minute_requests` (how many
  in that minute): one counter, whatever the requests' spacing.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from handler.aws import AwsEnvironment
from handler.dynamodb import ConditionFailed, DynamoDB, DynamoDBFailed
from handler.errors import (
    CONCURRENCY_LIMITED,
    QUOTA_EXCEEDED,
    QUOTA_UNAVAILABLE,
    RATE_LIMITED,
    RelayError,
)
from handler.requestlog import RequestLog, request_log
from handler.settings import Settings, aws_environment

log = logging.getLogger("relay.quota")

DAY_S = 86_400
# A day's item stays readable for a while after the day (TTL deletes it within days).
ITEM_TTL_S = 2 * DAY_S
# One DynamoDB call must not hold a request for long: fail (closed or open) instead. Its
# attempts (up to 3, handler/aws.py) and the pauses between them all end within
# CONNECT_TIMEOUT_S + READ_TIMEOUT_S = 3 s: the most the check can delay a first token.
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 2.0
# Where `relay_call` leaves the `Admission` for the middleware: the request's ASGI state.
ADMISSION_KEY = "quota_admission"
# A caller at their stream cap may retry soon: streams end all the time.
CONCURRENCY_RETRY_AFTER_S = 1


def rate_limited(retry_after_s: int, limit: int) -> RelayError:
    return RelayError(
        RATE_LIMITED,
        f"over {limit} requests per minute; retry in {retry_after_s} s",
        headers={"Retry-After": str(retry_after_s)},
    )


def quota_exceeded(retry_after_s: int, budget: int) -> RelayError:
    return RelayError(
        QUOTA_EXCEEDED,
        f"today's budget of {budget} tokens is used up; it renews at 00:00 UTC",
        headers={"Retry-After": str(retry_after_s)},
    )


def concurrency_limited(cap: int) -> RelayError:
    return RelayError(
        CONCURRENCY_LIMITED,
        f"{cap} of your requests are in flight already; retry when one has ended",
        headers={"Retry-After": str(CONCURRENCY_RETRY_AFTER_S)},
    )


def quota_unavailable() -> RelayError:
    return RelayError(
        QUOTA_UNAVAILABLE, "the relay cannot check your limits right now; retry later"
    )


# The last minute each caller was admitted in, per process: the admission tries the update for
# that minute first, so a caller's requests within one minute, and its first one in a new
# minute, take one round trip (two when another process counted this minute first).
MINUTES_SEEN_SIZE = 4096


@dataclass(frozen=True)
class Admission:
    """A request let through: whose it was, which day's budget its tokens go to, when that
    day's item may expire (its TTL, kept as the admission set it), and the tokens reserved."""

    caller: str
    day: str
    expires_at: int
    reserved: int = 0
    budgeted: bool = False  # the caller's plan has a budget: the charge settles the reservation
    slot: str | None = None  # the stream slot taken, given back by the charge


@dataclass(frozen=True)
class Usage:
    """What a caller has used now (`GET /me`)."""

    requests_this_minute: int
    requests_today: int
    tokens_today: int
    streams_open: int


def stream_slots(item: dict[str, Any], now: float) -> tuple[list[str], list[str]]:
    """The item's stream slots (`<expiry>#<id>`), live and expired at `now`."""
    live, expired = [], []
    for slot in item.get("streams", {}).get("SS", []):
        expiry, _, _ = slot.partition("#")
        (live if expiry.isdigit() and int(expiry) > now else expired).append(slot)
    return live, expired


@dataclass(frozen=True)
class Window:
    """Where a moment falls: its UTC day, its minute of that day, and when each ends."""

    day: str
    minute: int  # 0 at 00:00 UTC
    minute_ends: float  # seconds since the epoch
    day_ends: int

    @property
    def expires_at(self) -> int:
        """The TTL of this day's items: readable for a while after the day ends."""
        return self.day_ends + ITEM_TTL_S

    @classmethod
    def at(cls, now: float) -> Window:
        day_start = int(now) // DAY_S * DAY_S
        minute = int(now - day_start) // 60
        day = datetime.fromtimestamp(day_start, UTC).strftime("%Y-%m-%d")
        return cls(day, minute, day_start + (minute + 1) * 60, day_start + DAY_S)


def item_key(day: str, caller: str) -> dict[str, Any]:
    """The key of `caller`'s item for the UTC day `day` (YYYY-MM-DD)."""
    return {"pk": {"S": f"quota#{day}#{caller}"}}


def minute_label(minute: int) -> str:
    """The `minute` attribute's value for a minute of the day: `09:15` for 09:15 UTC."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def settled_tokens(admission: Admission, record: RequestLog) -> int:
    """What a request finally costs its caller (docs/api.md, "Per-caller limits"): its usage
    when the upstream reported it; else, when the upstream was asked and may have billed (the
    answer began and was cut short, or it timed out), the reservation: the prompt's worst case
    plus the completion limit, since OpenAI bills the prompt of a cancelled stream and what it
    generated before it noticed. Nothing when the upstream refused or was not reached."""
    tokens = record.token_count()
    if tokens is not None and not tokens.estimated:
        return tokens.total
    if record.status == 200 or record.error_type == "upstream_timeout":
        if admission.reserved:
            return admission.reserved
        return tokens.total if tokens is not None else 0  # admitted without a reservation
    return 0


class Quota:
    """The limits of one process; a no-op (no DynamoDB client at all) unless `settings.quotas_on`
    or `plans_limited` (a plan sets a limit). `aws` defaults to the environment's keys and region
    (`aws_environment`). Each admission is held to the limits of the settings it is given: the
    caller's plan's."""

    def __init__(
        self, settings: Settings, aws: AwsEnvironment | None = None, plans_limited: bool = False
    ) -> None:
        self.enabled = settings.quotas_on or (bool(settings.quota_table) and plans_limited)
        self._settings = settings
        self._table = settings.quota_table
        self._fail_open = settings.quota_fail_open
        self._dynamodb: DynamoDB | None = None
        self._minutes_seen: dict[str, int] = {}
        if self.enabled:
            aws = replace(aws or aws_environment(), endpoint_url=settings.aws_endpoint_url_dynamodb)
            self._dynamodb = DynamoDB(aws, CONNECT_TIMEOUT_S, READ_TIMEOUT_S)

    async def admit(
        self,
        caller: str,
        reserve: int = 0,
        limits: Settings | None = None,
        stream_for_s: float | None = None,
    ) -> Admission | None:
        """Count the request against `caller`'s `limits` (default: the global settings), reserve
        `reserve` tokens (its worst case) against the day's budget and, with
        `max_concurrent_streams` and `stream_for_s`, take one of the caller's stream slots until
        it is given back or `stream_for_s` have passed. Or raise `429 rate_limited` /
        `quota_exceeded` / `concurrency_limited` (with Retry-After), or `503 quota_unavailable`
        when DynamoDB cannot be reached (unless QUOTA_FAIL_OPEN). One conditional `UpdateItem`
        checks every limit; another only when the first assumed the wrong minute (another
        process counted this one first) or found slots of streams whose process died."""
        limits = limits or self._settings
        if self._dynamodb is None or not limits.limited:
            return None
        now = time.time()
        window = Window.at(now)
        budget = limits.token_budget_per_day
        reserve = reserve if budget else 0
        slot = None
        if limits.max_concurrent_streams and stream_for_s is not None:
            slot = f"{math.ceil(now + stream_for_s)}#{secrets.token_hex(6)}"
        same_minute = self._minutes_seen.get(caller) == window.minute
        try:
            for _ in range(4):  # a guess corrected, dead slots dropped; a fourth only under a race
                request = self._admission(caller, window, reserve, same_minute, limits, slot)
                try:
                    await self._dynamodb.update_item(request)
                    break
                except ConditionFailed as refused:
                    item = refused.item
                    refusal = self._refusal(item, window, now, limits, slot)
                    if refusal is not None:
                        raise refusal from None
                    expired = stream_slots(item, now)[1] if slot else []
                    if expired:
                        await self._drop_slots(caller, window, expired)
                    same_minute = item.get("minute", {}).get("S") == minute_label(window.minute)
            else:
                raise self._contended(window, now, limits, slot)
        except DynamoDBFailed as exc:
            if not self._fail_open:
                log.error("quota check failed, request refused: %s", exc)
                raise quota_unavailable() from exc
            log.warning("quota check failed, request let through (QUOTA_FAIL_OPEN): %s", exc)
            return Admission(caller, window.day, window.expires_at)
        if limits.rate_limit_per_minute:
            if len(self._minutes_seen) >= MINUTES_SEEN_SIZE:
                self._minutes_seen.clear()
            self._minutes_seen[caller] = window.minute
        return Admission(caller, window.day, window.expires_at, reserve, bool(budget), slot)

    def _admission(
        self,
        caller: str,
        window: Window,
        reserve: int,
        same_minute: bool,
        limits: Settings,
        slot: str | None,
    ) -> dict[str, Any]:
        """The `UpdateItem` that counts a request (reserves its tokens, takes its stream slot)
        only while every limit that is on holds. With a rate limit it assumes either that this
        minute has a counter already (`same_minute`: add one while under the limit) or that it
        has none yet (start the counter at one, replacing the last minute's)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":expires": {"N": str(window.expires_at)},
        }
        add, sets, conditions = ["requests :one"], ["expires_at = :expires"], []
        rate_limit, budget = limits.rate_limit_per_minute, limits.token_budget_per_day
        if rate_limit:
            names["#minute"] = "minute"
            values[":minute"] = {"S": minute_label(window.minute)}
            if same_minute:
                values[":limit"] = {"N": str(rate_limit)}
                add.append("minute_requests :one")
                conditions.append("#minute = :minute AND minute_requests < :limit")
            else:
                sets += ["#minute = :minute", "minute_requests = :one"]
                conditions.append("(attribute_not_exists(#minute) OR #minute <> :minute)")
        if budget:
            values[":budget"] = {"N": str(budget)}
            conditions.append("(attribute_not_exists(tokens) OR tokens < :budget)")
            if reserve:
                values[":reserve"] = {"N": str(reserve)}
                add.append("tokens :reserve")
        if slot is not None:
            values[":slot"] = {"SS": [slot]}
            values[":streams"] = {"N": str(limits.max_concurrent_streams)}
            add.append("streams :slot")
            conditions.append("(attribute_not_exists(streams) OR size(streams) < :streams)")
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": item_key(window.day, caller),
            "UpdateExpression": f"ADD {', '.join(add)} SET {', '.join(sets)}",
            "ExpressionAttributeValues": values,
            # On a refusal the item as it was comes back: it tells which limit refused.
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if conditions:
            request["ConditionExpression"] = " AND ".join(conditions)
        if names:
            request["ExpressionAttributeNames"] = names
        return request

    async def _drop_slots(self, caller: str, window: Window, expired: list[str]) -> None:
        """Give back slots whose time is up: their process died before it could."""
        log.warning("%s: %d stream slots expired unreturned; dropping them", caller, len(expired))
        await self._dynamodb.update_item(  # type: ignore[union-attr]
            {
                "TableName": self._table,
                "Key": item_key(window.day, caller),
                "UpdateExpression": "DELETE streams :expired",
                "ExpressionAttributeValues": {":expired": {"SS": expired}},
            }
        )

    def _refusal(
        self, item: dict[str, Any], window: Window, now: float, limits: Settings, slot: str | None
    ) -> RelayError | None:
        """The 429 for an admission refused on `item` (the item as it was): `quota_exceeded`
        when the day's tokens are used up (whatever else), `rate_limited` when this minute's
        count is full, `concurrency_limited` when the caller's live streams fill its slots.
        None when no limit is reached: the write assumed the wrong minute, or counted dead
        slots."""
        budget, rate_limit = limits.token_budget_per_day, limits.rate_limit_per_minute
        if budget and int(item.get("tokens", {}).get("N", "0")) >= budget:
            return quota_exceeded(max(1, math.ceil(window.day_ends - now)), budget)
        this_minute = item.get("minute", {}).get("S") == minute_label(window.minute)
        minute_requests = int(item.get("minute_requests", {}).get("N", "0"))
        if rate_limit and this_minute and minute_requests >= rate_limit:
            return rate_limited(max(1, math.ceil(window.minute_ends - now)), rate_limit)
        cap = limits.max_concurrent_streams
        if slot is not None and len(stream_slots(item, now)[0]) >= cap:
            return concurrency_limited(cap)
        return None

    def _contended(
        self, window: Window, now: float, limits: Settings, slot: str | None
    ) -> RelayError:
        """The 429 when every try lost a race: the limit other requests are racing for."""
        if limits.rate_limit_per_minute:
            seconds = max(1, math.ceil(window.minute_ends - now))
            return rate_limited(seconds, limits.rate_limit_per_minute)
        if slot is not None:
            return concurrency_limited(limits.max_concurrent_streams)
        budget = limits.token_budget_per_day
        return quota_exceeded(max(1, math.ceil(window.day_ends - now)), budget)

    async def usage(self, caller: str, limits: Settings) -> Usage | None:
        """What `caller` has used now (for `GET /me`), from one read of their item; None when
        their plan sets no limit (nothing is counted for them)."""
        if self._dynamodb is None or not limits.limited:
            return None
        now = time.time()
        window = Window.at(now)
        try:
            # Strongly consistent: what the admissions just wrote, not a replica's past.
            item = await self._dynamodb.get_item(
                {
                    "TableName": self._table,
                    "Key": item_key(window.day, caller),
                    "ConsistentRead": True,
                }
            )
        except DynamoDBFailed as exc:
            log.error("reading %s's usage failed: %s", caller, exc)
            raise quota_unavailable() from exc
        this_minute = item.get("minute", {}).get("S") == minute_label(window.minute)
        return Usage(
            requests_this_minute=int(item.get("minute_requests", {}).get("N", "0"))
            if this_minute
            else 0,
            requests_today=int(item.get("requests", {}).get("N", "0")),
            tokens_today=int(item.get("tokens", {}).get("N", "0")),
            streams_open=len(stream_slots(item, now)[0]),
        )

    async def charge(self, admission: Admission, record: RequestLog) -> None:
        """Settle the request's reservation to what it costs (`settled_tokens`), on the day it
        was admitted on: the difference is added (or refunded); and give back its stream slot,
        in the same write. A failure is logged: the answer has been given, it cannot be undone
        (a slot not given back expires by itself)."""
        if self._dynamodb is None:
            return
        difference = 0
        if admission.budgeted:
            cost = settled_tokens(admission, record)
            record.charged_tokens = cost
            difference = cost - admission.reserved
        if difference == 0 and admission.slot is None:
            return
        values: dict[str, Any] = {":expires": {"N": str(admission.expires_at)}}
        expression = "SET expires_at = :expires"
        if difference:
            values[":tokens"] = {"N": str(difference)}
            expression = f"ADD tokens :tokens {expression}"
        if admission.slot is not None:
            values[":slot"] = {"SS": [admission.slot]}
            expression += " DELETE streams :slot"
        try:
            await self._dynamodb.update_item(
                {
                    "TableName": self._table,
                    "Key": item_key(admission.day, admission.caller),
                    "UpdateExpression": expression,
                    "ExpressionAttributeValues": values,
                }
            )
        except DynamoDBFailed as exc:
            log.error("settling %d tokens for %s failed: %s", difference, admission.caller, exc)

    async def preconnect(self) -> bool:
        """Open a connection to DynamoDB ahead of the first request (init); False when off."""
        return self._dynamodb is not None and await self._dynamodb.preconnect()

    async def close(self) -> None:
        """Close the DynamoDB connections (shutdown, SnapStart restore)."""
        if self._dynamodb is not None:
            await self._dynamodb.close()


class QuotaChargeMiddleware:
    """Charges each admitted request once its response has ended (inside the request log's
    middleware, so the line is written after the charge). Every route that streams through
    `start_stream` or sets `RequestLog.usage` is charged without code of its own."""

    def __init__(self, app: Any, quota: Quota) -> None:
        self.app = app
        self.quota = quota

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            admission = scope.get("state", {}).get(ADMISSION_KEY)
            if admission is not None:
                await self.quota.charge(admission, request_log(scope))
