"""Per-caller limits kept in DynamoDB: requests per clock minute and tokens per UTC day.

`Quota.admit` runs in the routes' one dependency before any upstream call: each limit is one
conditional `UpdateItem` (count only while under the limit), so concurrent requests in any
number of processes are admitted exactly up to the limit. `QuotaChargeMiddleware` adds the
request's tokens to the caller's day once its response has ended.

Items (partition key `pk`, TTL attribute `expires_at`):
  `rate#<minute since the epoch>#<caller>`: `requests` admitted in that minute
  `tokens#<YYYY-MM-DD>#<caller>`: `tokens` charged that UTC day, `requests` admitted
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from handler.errors import QUOTA_EXCEEDED, QUOTA_UNAVAILABLE, RATE_LIMITED, RelayError
from handler.requestlog import RequestLog, request_log
from handler.settings import Settings

log = logging.getLogger("relay.quota")

DAY_S = 86_400
# Counters stay readable for a while after their window (TTL deletes them within days).
RATE_ITEM_TTL_S = 120
TOKEN_ITEM_TTL_S = 2 * DAY_S
# One DynamoDB call must not hold a request for long: fail (closed or open) instead.
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
    """A request let through: whose it was and which day's budget its tokens go to."""

    caller: str
    day: str


class Quota:
    """The limits of one process; a no-op (and no boto3 import) when `settings.quotas_on` is
    false. DynamoDB calls run in threads, so a slow one never stalls other streams."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.quotas_on
        self._table = settings.quota_table
        self._rate_limit = settings.rate_limit_per_minute
        self._budget = settings.token_budget_per_day
        self._fail_open = settings.quota_fail_open
        self._client: Any = None
        self._client_lock = threading.Lock()
        if self.enabled:
            # Made at start-up (on Lambda: in the init phase), not on the first request.
            self._dynamodb()

    def _dynamodb(self) -> Any:
        """The DynamoDB client; its endpoint follows AWS_ENDPOINT_URL_DYNAMODB/AWS_ENDPOINT_URL
        as boto3 reads them (moto locally and in tests)."""
        with self._client_lock:
            if self._client is None:
                # Imported here: boto3 costs ~0.3 s of import time that deployments without
                # limits need not pay.
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "dynamodb",
                    config=Config(
                        connect_timeout=CONNECT_TIMEOUT_S,
                        read_timeout=READ_TIMEOUT_S,
                        retries={"mode": "standard", "total_max_attempts": 2},
                        # Checks of concurrent requests run in parallel threads.
                        max_pool_connections=50,
                    ),
                )
            return self._client

    async def admit(self, caller: str) -> Admission | None:
        """Count the request against `caller`'s limits, or raise `429 rate_limited` /
        `429 quota_exceeded` (with Retry-After), or `503 quota_unavailable` when DynamoDB cannot
        be reached (unless QUOTA_FAIL_OPEN). Both checks run at once: one round trip of wait."""
        if not self.enabled:
            return None
        now = time.time()
        checks = []
        if self._budget:
            checks.append(asyncio.to_thread(self._within_budget, caller, now))
        if self._rate_limit:
            checks.append(asyncio.to_thread(self._take_request, caller, now))
        results = await asyncio.gather(*checks, return_exceptions=True)
        for result in results:
            if isinstance(result, RelayError):
                raise result
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            cause = _describe_failure(failures[0])
            if not self._fail_open:
                log.error("quota check failed, request refused: %s", cause)
                raise quota_unavailable()
            log.warning("quota check failed, request let through (QUOTA_FAIL_OPEN): %s", cause)
        return Admission(caller, _utc_day(now))

    def _take_request(self, caller: str, now: float) -> None:
        minute = int(now // 60)
        if not self._update(
            f"rate#{minute}#{caller}",
            "ADD requests :one SET expires_at = :expires",
            "attribute_not_exists(requests) OR requests < :limit",
            {
                ":one": {"N": "1"},
                ":limit": {"N": str(self._rate_limit)},
                ":expires": {"N": str((minute + 1) * 60 + RATE_ITEM_TTL_S)},
            },
        ):
            raise rate_limited(max(1, math.ceil((minute + 1) * 60 - now)), self._rate_limit)

    def _within_budget(self, caller: str, now: float) -> None:
        # An update rather than a read, so the check and the day's request count are one call.
        day_end = (int(now) // DAY_S + 1) * DAY_S
        if not self._update(
            f"tokens#{_utc_day(now)}#{caller}",
            "ADD requests :one SET expires_at = :expires",
            "attribute_not_exists(tokens) OR tokens < :budget",
            {
                ":one": {"N": "1"},
                ":budget": {"N": str(self._budget)},
                ":expires": {"N": str(day_end + TOKEN_ITEM_TTL_S)},
            },
        ):
            raise quota_exceeded(max(1, math.ceil(day_end - now)), self._budget)

    def _update(self, pk: str, update: str, condition: str | None, values: dict) -> bool:
        """One UpdateItem; False when its condition did not hold. Other failures raise."""
        client = self._dynamodb()
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": update,
            "ExpressionAttributeValues": values,
        }
        if condition:
            request["ConditionExpression"] = condition
        try:
            client.update_item(**request)
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    async def charge(self, admission: Admission, record: RequestLog) -> None:
        """Add the request's tokens (its usage, or the log's documented estimate) to the day it
        was admitted on. A failure is logged: the answer has been given, it cannot be undone."""
        tokens = record.token_count()
        if not self._budget or tokens is None or tokens.total <= 0:
            return
        day_start = datetime.strptime(admission.day, "%Y-%m-%d").replace(tzinfo=UTC)
        expires = int(day_start.timestamp()) + DAY_S + TOKEN_ITEM_TTL_S
        try:
            await asyncio.to_thread(
                self._update,
                f"tokens#{admission.day}#{admission.caller}",
                "ADD tokens :tokens SET expires_at = :expires",
                None,
                {":tokens": {"N": str(tokens.total)}, ":expires": {"N": str(expires)}},
            )
        except Exception as exc:  # any SDK or network failure: say what, never crash the request
            log.error(
                "charging %d tokens to %s failed: %s",
                tokens.total,
                admission.caller,
                _describe_failure(exc),
            )


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


def _utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _describe_failure(exc: BaseException) -> str:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return type(exc).__name__ + (f" ({code})" if code else "")
