"""Per-caller limits kept in DynamoDB: requests per clock minute and tokens per UTC day.

`Quota.admit` runs in the routes' one dependency before any upstream call: one conditional
`UpdateItem` counts the request only while the caller is under both limits, so concurrent
requests in any number of processes are admitted exactly up to them, at the cost of one round
trip. `QuotaChargeMiddleware` adds the request's tokens to the same item once its response has
ended.

One item per caller and UTC day (partition key `pk`, TTL attribute `expires_at`):
  `quota#<YYYY-MM-DD>#<caller>`: `tokens` charged, `requests` admitted, and `m<HHMM>`, the
  requests admitted in that minute (each admission removes the previous minute's counter).
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


@dataclass(frozen=True)
class Admission:
    """A request let through: whose it was, which day's budget its tokens go to, and when that
    day's item may expire (its TTL, kept as the admission set it)."""

    caller: str
    day: str
    expires_at: int


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


def minute_counter(minute: int) -> str:
    """The attribute counting a minute's requests: `m0915` for 09:15 UTC."""
    return f"m{minute // 60:02d}{minute % 60:02d}"


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
        if self.enabled:
            aws = replace(aws or aws_environment(), endpoint_url=settings.aws_endpoint_url_dynamodb)
            self._dynamodb = DynamoDB(aws, CONNECT_TIMEOUT_S, READ_TIMEOUT_S)

    async def admit(self, caller: str) -> Admission | None:
        """Count the request against `caller`'s limits, or raise `429 rate_limited` /
        `429 quota_exceeded` (with Retry-After), or `503 quota_unavailable` when DynamoDB cannot
        be reached (unless QUOTA_FAIL_OPEN). One conditional `UpdateItem` checks both."""
        if self._dynamodb is None:
            return None
        now = time.time()
        window = Window.at(now)
        try:
            await self._dynamodb.update_item(self._admission(caller, window))
        except ConditionFailed as refused:
            raise self._refusal(refused.item, window, now) from None
        except DynamoDBFailed as exc:
            if not self._fail_open:
                log.error("quota check failed, request refused: %s", exc)
                raise quota_unavailable() from exc
            log.warning("quota check failed, request let through (QUOTA_FAIL_OPEN): %s", exc)
        return Admission(caller, window.day, window.expires_at)

    def _admission(self, caller: str, window: Window) -> dict[str, Any]:
        """The `UpdateItem` that counts a request only while every limit that is on holds."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":expires": {"N": str(window.expires_at)},
        }
        add, conditions, remove = ["requests :one"], [], ""
        if self._rate_limit:
            names["#minute"] = minute_counter(window.minute)
            values[":limit"] = {"N": str(self._rate_limit)}
            add.append("#minute :one")
            conditions.append("(attribute_not_exists(#minute) OR #minute < :limit)")
            if window.minute:  # at 00:00 the previous minute is in yesterday's item
                # DynamoDB bills a write by the item's size: a busy caller's item keeps one
                # minute's counter, not one for every minute of the day.
                names["#previous"] = minute_counter(window.minute - 1)
                remove = " REMOVE #previous"
        if self._budget:
            values[":budget"] = {"N": str(self._budget)}
            conditions.append("(attribute_not_exists(tokens) OR tokens < :budget)")
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": item_key(window.day, caller),
            "UpdateExpression": f"ADD {', '.join(add)} SET expires_at = :expires{remove}",
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeValues": values,
            # On a refusal the item as it was comes back: it tells which limit refused.
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if names:
            request["ExpressionAttributeNames"] = names
        return request

    def _refusal(self, item: dict[str, Any], window: Window, now: float) -> RelayError:
        """The 429 for a refused admission: `quota_exceeded` when the day's tokens are used up
        (whatever the minute's count), `rate_limited` otherwise."""
        spent = int(item.get("tokens", {}).get("N", "0"))
        if (self._budget and spent >= self._budget) or not self._rate_limit:
            return quota_exceeded(max(1, math.ceil(window.day_ends - now)), self._budget)
        return rate_limited(max(1, math.ceil(window.minute_ends - now)), self._rate_limit)

    async def charge(self, admission: Admission, record: RequestLog) -> None:
        """Add the request's tokens (its usage, or the log's documented estimate) to the day it
        was admitted on. A failure is logged: the answer has been given, it cannot be undone."""
        tokens = record.token_count()
        if self._dynamodb is None or not self._budget or tokens is None or tokens.total <= 0:
            return
        try:
            await self._dynamodb.update_item(
                {
                    "TableName": self._table,
                    "Key": item_key(admission.day, admission.caller),
                    "UpdateExpression": "ADD tokens :tokens SET expires_at = :expires",
                    "ExpressionAttributeValues": {
                        ":tokens": {"N": str(tokens.total)},
                        ":expires": {"N": str(admission.expires_at)},
                    },
                }
            )
        except DynamoDBFailed as exc:
            log.error("charging %d tokens to %s failed: %s", tokens.total, admission.caller, exc)

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
