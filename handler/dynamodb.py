"""DynamoDB's `UpdateItem` (and `GetItem`, for `GET /me`) on the event loop, through
handler/aws.py (awscrt signs, aiohttp carries, retries as the SDKs' standard mode).

The quota check sits before every first token, so it is one HTTP round trip and a few tens of
microseconds of signing: no boto3 to import at init, no worker thread, no SDK serialisation per
call. Only `quota.py` calls this.
"""

from __future__ import annotations

from typing import Any

from handler.aws import AwsCallFailed, AwsEnvironment, AwsJsonClient, JsonService

UPDATE_ITEM = "DynamoDB_20120810.UpdateItem"
GET_ITEM = "DynamoDB_20120810.GetItem"
CONDITION_FAILED = "ConditionalCheckFailedException"


class DynamoDBFailed(Exception):
    """No answer, or an error other than a failed condition; the message names the cause (the
    exception's class, or the HTTP status and AWS error code), never a key."""


class ConditionFailed(Exception):
    """The update's condition did not hold; `item` is the item as it was (DynamoDB's JSON),
    returned because the request asked for `ReturnValuesOnConditionCheckFailure: ALL_OLD`."""

    def __init__(self, item: dict[str, Any]) -> None:
        super().__init__("the conditional request failed")
        self.item = item


def dynamodb_service(
    connect_timeout_s: float, read_timeout_s: float, budget_s: float
) -> JsonService:
    """DynamoDB's JSON protocol with these waits; pauses between attempts start under 25 ms
    (the SDKs' base delay for DynamoDB) and double."""
    return JsonService(
        "dynamodb",
        "DynamoDB",
        "application/x-amz-json-1.0",
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        budget_s=budget_s,
        base_backoff_s=0.025,
    )


class DynamoDB:
    """`UpdateItem` over one small aiohttp pool per process. All attempts of one call, and the
    pauses between them, end within `budget_s`."""

    def __init__(
        self,
        aws: AwsEnvironment,
        connect_timeout_s: float,
        read_timeout_s: float,
        budget_s: float | None = None,
    ) -> None:
        budget = budget_s if budget_s is not None else connect_timeout_s + read_timeout_s
        self._client = AwsJsonClient(
            dynamodb_service(connect_timeout_s, read_timeout_s, budget), aws
        )

    async def update_item(self, request: dict[str, Any]) -> dict[str, Any]:
        """DynamoDB's answer to `request` (UpdateItem's JSON), or `ConditionFailed`, or
        `DynamoDBFailed`.

        A retried update whose first response was lost (the write done, the answer not
        received) is applied twice: a request counted twice, or tokens charged twice. The SDK
        retries the same way; for a rate limit and a budget that rare over-count is the safe
        side."""
        try:
            return await self._client.call(UPDATE_ITEM, request)
        except AwsCallFailed as exc:
            if exc.code == CONDITION_FAILED:
                raise ConditionFailed(_old_item(exc.answer)) from None
            raise DynamoDBFailed(str(exc)) from exc

    async def get_item(self, request: dict[str, Any]) -> dict[str, Any]:
        """The item `request` (GetItem's JSON) names, as DynamoDB's JSON (empty when there is
        none), or `DynamoDBFailed`."""
        try:
            answer = await self._client.call(GET_ITEM, request)
        except AwsCallFailed as exc:
            raise DynamoDBFailed(str(exc)) from exc
        item = answer.get("Item")
        return item if isinstance(item, dict) else {}

    async def preconnect(self) -> bool:
        """Open the pool and one kept-alive connection to DynamoDB before any request needs it
        (`GET /` is DynamoDB's health check); True when a connection is now pooled."""
        return await self._client.preconnect()

    async def close(self) -> None:
        """Close the pool (server shutdown, SnapStart restore); the next call opens a new one."""
        await self._client.close()


def _old_item(answer: bytes) -> dict[str, Any]:
    import orjson

    try:
        item = orjson.loads(answer).get("Item")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return item if isinstance(item, dict) else {}
