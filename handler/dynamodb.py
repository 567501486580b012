"""DynamoDB's `UpdateItem` as one SigV4-signed POST on the event loop, over aiohttp.

The quota check sits before every first token, so it is one HTTP round trip and a few tens of
microseconds of signing: no boto3 to import at init, no worker thread, no SDK serialisation per
call. Only `quota.py` calls this.
"""

from __future__ import annotations

import asyncio
import random
import urllib.parse
from dataclasses import replace
from typing import Any

import aiohttp
import orjson

from handler.aws import AwsEnvironment, JsonApi, error_code

DYNAMODB = JsonApi("dynamodb", "application/x-amz-json-1.0")
UPDATE_ITEM = "DynamoDB_20120810.UpdateItem"
# A dropped connection, a timeout, a 5xx or a throttle is tried once more, as the SDK's
# standard retry mode would.
ATTEMPTS = 2
THROTTLES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
THROTTLE_PAUSE_S = 0.05  # at most, jittered: the SDK backs off before it retries a throttle
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


class DynamoDB:
    """`UpdateItem` over one small aiohttp pool per process, signed with the environment's keys
    (always there on Lambda) or, where it holds none (a profile, SSO), with the SDK credential
    chain's (botocore imported then, and only then)."""

    def __init__(
        self, aws: AwsEnvironment, connect_timeout_s: float, read_timeout_s: float
    ) -> None:
        self._aws = aws
        self._url = DYNAMODB.endpoint(aws) if aws.region or aws.endpoint_url else None
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout_s + read_timeout_s,
            sock_connect=connect_timeout_s,
            sock_read=read_timeout_s,
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sdk: Any = None  # botocore's session, when the environment holds no keys

    async def update_item(self, request: dict[str, Any]) -> dict[str, Any]:
        """DynamoDB's answer to `request` (UpdateItem's JSON), or `ConditionFailed`, or
        `DynamoDBFailed`.

        A retried update whose first response was lost (the write done, the answer not
        received) is applied twice: a request counted twice, or tokens charged twice. The SDK
        retries the same way; for a rate limit and a budget that rare over-count is the safe
        side."""
        aws = self._aws if self._aws.signs else await self._sdk_credentials()
        url = self._url or DYNAMODB.endpoint(aws)
        host = urllib.parse.urlsplit(url).netloc
        body = orjson.dumps(request)
        session = self._pool()
        cause = "no attempt"
        for attempt in range(ATTEMPTS):
            headers = DYNAMODB.signed_headers(aws, host, UPDATE_ITEM, body)
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    status, answer = response.status, await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                # A timeout's message is empty; a refused connection's names the address.
                cause = f"{type(exc).__name__} reaching DynamoDB" + (f": {exc}" if str(exc) else "")
                continue
            if status == 200:
                try:
                    return orjson.loads(answer)
                except orjson.JSONDecodeError:
                    raise DynamoDBFailed("HTTP 200 with an unreadable answer") from None
            code = error_code(answer)
            if code == CONDITION_FAILED:
                raise ConditionFailed(_old_item(answer))
            cause = f"HTTP {status} ({code})"
            if status < 500 and code not in THROTTLES:
                break
            if code in THROTTLES and attempt + 1 < ATTEMPTS:
                await asyncio.sleep(random.uniform(0, THROTTLE_PAUSE_S))
        raise DynamoDBFailed(cause)

    async def preconnect(self) -> bool:
        """Open the pool and one kept-alive connection to DynamoDB before any request needs it
        (at init the TCP and TLS handshakes run at full CPU): `GET /`, DynamoDB's health check,
        unsigned; any answer will do. True when a connection is now pooled."""
        if self._url is None:
            return False
        try:
            async with self._pool().get(self._url) as response:
                await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        """Close the pool (server shutdown, SnapStart restore); the next call opens a new one."""
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()

    def _pool(self) -> aiohttp.ClientSession:
        session, loop = self._session, asyncio.get_running_loop()
        if session is None or self._loop is not loop:
            # As the upstream's pool (relay.py): one per event loop, made inside it.
            self._loop = loop
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

    async def _sdk_credentials(self) -> AwsEnvironment:
        """The SDK credential chain's current keys (a profile, SSO, a container role), in a
        thread: the first call imports botocore, and a refresh may call AWS."""
        try:
            return await asyncio.to_thread(self._read_sdk_credentials)
        except DynamoDBFailed:
            raise
        except Exception as exc:  # botocore's own failures: name the kind, never a key
            raise DynamoDBFailed(f"{type(exc).__name__} reading the SDK's credentials") from exc

    def _read_sdk_credentials(self) -> AwsEnvironment:
        if self._sdk is None:
            import botocore.session

            self._sdk = botocore.session.Session()
        credentials = self._sdk.get_credentials()
        region = self._aws.region or self._sdk.get_config_variable("region")
        if credentials is None or not region:
            raise DynamoDBFailed("no AWS credentials or region, in the environment or the SDK's")
        frozen = credentials.get_frozen_credentials()
        return replace(
            self._aws,
            access_key_id=frozen.access_key,
            secret_access_key=frozen.secret_key,
            session_token=frozen.token,
            region=region,
        )


def _old_item(answer: bytes) -> dict[str, Any]:
    try:
        item = orjson.loads(answer).get("Item")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return item if isinstance(item, dict) else {}
