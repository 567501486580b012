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
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from handler.aws import AwsEnvironment
from handler.dynamodb import ConditionFailed, DynamoDB, DynamoDBFailed
from handler.errors import QUOTA_EXCEEDED, QUOTA_UNAVAILABLE, RATE_LIMITED, RelayError
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
    """The limits of one process; a no-op (no DynamoDB client at all) when `settings.quotas_on`
    is false. `aws` defaults to the environment's keys and region (`aws_environment`)."""

    def __init__(self, settings: Settings, aws: AwsEnvironment | None = None) -> None:
        self.enabled = settings.quotas_on
        self._table = settings.quota_table
        self._rate_limit = settings.rate_limit_per_minute
        self._budget = settings.token_budget_per_day
        self._fail_open = settings.quota_fail_open
        self._dynamodb: DynamoDB | None = None
        self._minutes_seen: dict[str, int] = {}
        if self.enabled:
            aws = replace(aws or aws_environment(), endpoint_url=settings.aws_endpoint_url_dynamodb)
            self._dynamodb = DynamoDB(aws, CONNECT_TIMEOUT_S, READ_TIMEOUT_S)

    async def admit(self, caller: str, reserve: int = 0) -> Admission | None:
        """Count the request against `caller`'s limits and reserve `reserve` tokens (its worst
        case) against the day's budget, or raise `429 rate_limited` / `429 quota_exceeded` (with
        Retry-After), or `503 quota_unavailable` when DynamoDB cannot be reached (unless
        QUOTA_FAIL_OPEN). One conditional `UpdateItem` checks both limits; a second only when
        the first assumed the wrong minute (another process counted this one first)."""
        if self._dynamodb is None:
            return None
        now = time.time()
        window = Window.at(now)
        reserve = reserve if self._budget else 0
        same_minute = self._minutes_seen.get(caller) == window.minute
        try:
            for _ in range(3):  # a guess corrected once; a third try only under a race
                try:
                    await self._dynamodb.update_item(
                        self._admission(caller, window, reserve, same_minute)
                    )
                    break
                except ConditionFailed as refused:
                    counted = refused.item.get("minute", {}).get("S") == minute_label(window.minute)
                    if self._over_budget(refused.item) or (counted and same_minute):
                        raise self._refusal(refused.item, window, now) from None
                    same_minute = counted
            else:
                raise self._refusal({}, window, now)
        except DynamoDBFailed as exc:
            if not self._fail_open:
                log.error("quota check failed, request refused: %s", exc)
                raise quota_unavailable() from exc
            log.warning("quota check failed, request let through (QUOTA_FAIL_OPEN): %s", exc)
            return Admission(caller, window.day, window.expires_at)
        if self._rate_limit:
            if len(self._minutes_seen) >= MINUTES_SEEN_SIZE:
                self._minutes_seen.clear()
            self._minutes_seen[caller] = window.minute
        return Admission(caller, window.day, window.expires_at, reserve)

    def _admission(
        self, caller: str, window: Window, reserve: int, same_minute: bool
    ) -> dict[str, Any]:
        """The `UpdateItem` that counts a request (and reserves its tokens) only while every
        limit that is on holds. With a rate limit it assumes either that this minute has a
        counter already (`same_minute`: add one while under the limit) or that it has none
        yet (start the counter at one, replacing the last minute's)."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":expires": {"N": str(window.expires_at)},
        }
        add, sets, conditions = ["requests :one"], ["expires_at = :expires"], []
        if self._rate_limit:
            names["#minute"] = "minute"
            values[":minute"] = {"S": minute_label(window.minute)}
            if same_minute:
                values[":limit"] = {"N": str(self._rate_limit)}
                add.append("minute_requests :one")
                conditions.append("#minute = :minute AND minute_requests < :limit")
            else:
                sets += ["#minute = :minute", "minute_requests = :one"]
                conditions.append("(attribute_not_exists(#minute) OR #minute <> :minute)")
        if self._budget:
            values[":budget"] = {"N": str(self._budget)}
            conditions.append("(attribute_not_exists(tokens) OR tokens < :budget)")
            if reserve:
                values[":reserve"] = {"N": str(reserve)}
                add.append("tokens :reserve")
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": item_key(window.day, caller),
            "UpdateExpression": f"ADD {', '.join(add)} SET {', '.join(sets)}",
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeValues": values,
            # On a refusal the item as it was comes back: it tells which limit refused.
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if names:
            request["ExpressionAttributeNames"] = names
        return request

    def _over_budget(self, item: dict[str, Any]) -> bool:
        return bool(self._budget) and int(item.get("tokens", {}).get("N", "0")) >= self._budget

    def _refusal(self, item: dict[str, Any], window: Window, now: float) -> RelayError:
        """The 429 for a refused admission: `quota_exceeded` when the day's tokens are used up
        (whatever the minute's count), `rate_limited` otherwise."""
        if self._over_budget(item) or not self._rate_limit:
            return quota_exceeded(max(1, math.ceil(window.day_ends - now)), self._budget)
        return rate_limited(max(1, math.ceil(window.minute_ends - now)), self._rate_limit)

    async def charge(self, admission: Admission, record: RequestLog) -> None:
        """Settle the request's reservation to what it costs (`settled_tokens`), on the day it
        was admitted on: the difference is added (or refunded). A failure is logged: the answer
        has been given, it cannot be undone."""
        if self._dynamodb is None or not self._budget:
            return
        cost = settled_tokens(admission, record)
        record.charged_tokens = cost
        difference = cost - admission.reserved
        if difference == 0:
            return
        try:
            await self._dynamodb.update_item(
                {
                    "TableName": self._table,
                    "Key": item_key(admission.day, admission.caller),
                    "UpdateExpression": "ADD tokens :tokens SET expires_at = :expires",
                    "ExpressionAttributeValues": {
                        ":tokens": {"N": str(difference)},
                        ":expires": {"N": str(admission.expires_at)},
                    },
                }
            )
        except DynamoDBFailed as exc:
            log.error("settling %d tokens for %s failed: %s", cost, admission.caller, exc)

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
