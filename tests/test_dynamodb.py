"""DynamoDB's calls as the quota makes them (handler/dynamodb.py), against moto's server: an
update's answer, a failed condition with the item as it was, an item read for `GET /me`, the
errors that are not answers, and the pool opened before the first request."""

from __future__ import annotations

from typing import Any

import pytest

from handler.aws import AwsEnvironment
from handler.dynamodb import ConditionFailed, DynamoDB, DynamoDBFailed
from tests.helpers import run_coroutine
from tests.test_quota import dead_endpoint

CALLER = {"pk": {"S": "caller#ada"}}


def add_a_request_below(table: str, limit: int, return_item_on_failure: bool = True) -> dict:
    """The quota's kind of update: count one request if fewer than `limit` are counted."""
    request: dict[str, Any] = {
        "TableName": table,
        "Key": CALLER,
        "UpdateExpression": "ADD requests :one",
        "ConditionExpression": "attribute_not_exists(requests) OR requests < :limit",
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": str(limit)}},
        "ReturnValues": "UPDATED_NEW",
    }
    if return_item_on_failure:
        request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return request


def with_dynamodb(endpoint: str, use) -> Any:
    """`use(dynamodb)` on a DynamoDB client of `endpoint` with the quota's waits (no budget of
    its own: the two waits'), its pool closed afterwards."""

    async def run() -> Any:
        dynamodb = DynamoDB(AwsEnvironment("us-east-1", endpoint), 1.0, 1.0)
        try:
            return await use(dynamodb)
        finally:
            await dynamodb.close()

    return run_coroutine(run())


async def outcome(call) -> Any:
    try:
        return await call
    except ConditionFailed as refused:
        return ("refused", refused.item)
    except DynamoDBFailed as failed:
        return ("failed", str(failed))


def test_an_update_answers_dynamodbs_json_and_a_failed_condition_the_item_as_it_was(
    moto_endpoint, quota_table, dynamodb
):
    def count_one(client: DynamoDB):
        return outcome(client.update_item(add_a_request_below(quota_table, 1)))

    assert with_dynamodb(moto_endpoint, count_one)["Attributes"]["requests"] == {"N": "1"}
    assert with_dynamodb(moto_endpoint, count_one) == (
        "refused",
        {**CALLER, "requests": {"N": "1"}},
    )
    item = dynamodb.get_item(TableName=quota_table, Key=CALLER)["Item"]
    assert item["requests"] == {"N": "1"}  # the refused update wrote nothing


def test_a_failed_condition_without_the_old_item_asked_for_is_refused_with_none(
    moto_endpoint, quota_table, dynamodb
):
    dynamodb.put_item(TableName=quota_table, Item={**CALLER, "requests": {"N": "5"}})
    request = add_a_request_below(quota_table, 5, return_item_on_failure=False)
    assert with_dynamodb(moto_endpoint, lambda client: outcome(client.update_item(request))) == (
        "refused",
        {},
    )


def test_get_item_returns_the_item_or_an_empty_one(moto_endpoint, quota_table, dynamodb):
    dynamodb.put_item(TableName=quota_table, Item={**CALLER, "requests": {"N": "2"}})

    async def read_both(client: DynamoDB) -> list:
        return [
            await client.get_item({"TableName": quota_table, "Key": CALLER}),
            await client.get_item({"TableName": quota_table, "Key": {"pk": {"S": "nobody"}}}),
        ]

    assert with_dynamodb(moto_endpoint, read_both) == [{**CALLER, "requests": {"N": "2"}}, {}]


@pytest.mark.parametrize("call", ["update_item", "get_item"])
def test_an_error_that_is_not_a_failed_condition_is_a_failure_naming_its_code(moto_endpoint, call):
    request = {**add_a_request_below("no-such-table", 1), "Key": CALLER}
    if call == "get_item":
        request = {"TableName": "no-such-table", "Key": CALLER}
    answer = with_dynamodb(moto_endpoint, lambda client: outcome(getattr(client, call)(request)))
    assert answer == ("failed", "HTTP 400 (ResourceNotFoundException)")


def test_preconnect_pools_a_connection_and_after_close_a_call_opens_a_new_pool(
    moto_endpoint, quota_table
):
    async def preconnect_close_call(client: DynamoDB) -> tuple[bool, dict]:
        pooled = await client.preconnect()
        await client.close()
        answer = await client.update_item(add_a_request_below(quota_table, 1))
        return pooled, answer["Attributes"]["requests"]

    assert with_dynamodb(moto_endpoint, preconnect_close_call) == (True, {"N": "1"})
    assert with_dynamodb(dead_endpoint(), lambda client: client.preconnect()) is False


def test_an_unreachable_dynamodb_fails_after_its_attempts_naming_the_cause():
    async def update(client: DynamoDB) -> Any:
        return await outcome(client.update_item({"TableName": "quota", "Key": CALLER}))

    kind, cause = with_dynamodb(dead_endpoint(), update)
    assert kind == "failed"
    assert cause.startswith("ClientConnectorError reaching DynamoDB")
    assert cause.endswith("after 3 attempts")
