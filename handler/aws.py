"""How the relay calls AWS: awscrt (AWS's Common Runtime) signs, aiohttp carries the request, and
failures are retried as the SDKs' standard retry mode does.

The relay makes two AWS calls (`secretsmanager.py`, `dynamodb.py`), each one POST of AWS's JSON
protocol. boto3 would cost a quarter of init's CPU for them; awscrt's SigV4 signer and the SDKs'
default credential chain cost a fraction of that (docs/architecture.md, "AWS calls", has the
measurements). What stays here is what no AWS library offers a client that is not the SDK: the
endpoint of a region (a small table, tested against botocore's endpoint rules), the retry loop,
and the transport's proxy and CA-bundle settings, read from the SDKs' standard variables.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import io
import logging
import os
import random
import re
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from handler.timeouts import exact_timeout

log = logging.getLogger("relay.aws")


@dataclass(frozen=True)
class AwsEnvironment:
    """The SDKs' standard variables for one service, as handler/settings.py reads them."""

    region: str | None = None
    endpoint_url: str | None = None  # AWS_ENDPOINT_URL_<SERVICE>, else AWS_ENDPOINT_URL
    use_fips: bool = False  # AWS_USE_FIPS_ENDPOINT
    use_dualstack: bool = False  # AWS_USE_DUALSTACK_ENDPOINT
    ca_bundle: str | None = None  # AWS_CA_BUNDLE


# --- Endpoints ----------------------------------------------------------------------------------

# AWS's partitions: the regions each covers and its DNS suffixes, as botocore's
# `data/partitions.json` has them (tests/test_aws_endpoints.py checks this copy against it).
# A region no pattern matches is in `aws`, as the SDKs' endpoint rules decide.
PARTITIONS: tuple[tuple[str, str, str, str], ...] = (
    ("aws", r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$", "amazonaws.com", "api.aws"),
    ("aws-cn", r"^cn\-\w+\-\d+$", "amazonaws.com.cn", "api.amazonwebservices.com.cn"),
    ("aws-eusc", r"^eusc\-(de)\-\w+\-\d+$", "amazonaws.eu", "api.amazonwebservices.eu"),
    ("aws-iso", r"^us\-iso\-\w+\-\d+$", "c2s.ic.gov", "api.aws.ic.gov"),
    ("aws-iso-b", r"^us\-isob\-\w+\-\d+$", "sc2s.sgov.gov", "api.aws.scloud"),
    ("aws-iso-e", r"^eu\-isoe\-\w+\-\d+$", "cloud.adc-e.uk", "api.cloud-aws.adc-e.uk"),
    ("aws-iso-f", r"^us\-isof\-\w+\-\d+$", "csp.hci.ic.gov", "api.aws.hci.ic.gov"),
    ("aws-us-gov", r"^us\-gov\-\w+\-\d+$", "amazonaws.com", "api.aws"),
)


def partition_of(region: str) -> tuple[str, str, str]:
    """The partition's name, DNS suffix and dual-stack DNS suffix of `region`."""
    for name, pattern, suffix, dualstack_suffix in PARTITIONS:
        if re.match(pattern, region):
            return name, suffix, dualstack_suffix
    return PARTITIONS[0][0], PARTITIONS[0][2], PARTITIONS[0][3]


def regional_endpoint(
    service: str, region: str, fips: bool = False, dualstack: bool = False
) -> str:
    """`https://<service>[-fips].<region>.<suffix>`, with the exceptions the endpoint rule sets of
    Secrets Manager and DynamoDB make (the test compares every partition and variant with
    botocore's rules engine, which costs ~250 ms of import to ask at run time)."""
    partition, suffix, dualstack_suffix = partition_of(region)
    label = f"{service}-fips" if fips else service
    if dualstack:
        suffix = dualstack_suffix
        # Secrets Manager's ordinary endpoints already serve IPv6 in these partitions.
        if service == "secretsmanager" and (
            partition in ("aws", "aws-us-gov") or (partition == "aws-cn" and not fips)
        ):
            suffix = partition_of(region)[1]
    elif fips and service == "dynamodb" and partition == "aws-us-gov":
        label = service  # GovCloud's DynamoDB endpoints are FIPS endpoints
    return f"https://{label}.{region}.{suffix}"


# --- Credentials --------------------------------------------------------------------------------


class CredentialChain:
    """The SDKs' default credential chain, as awscrt builds it: the environment's keys (Lambda),
    a profile's keys, role or `credential_process`, web identity, container credentials
    (`AWS_CONTAINER_CREDENTIALS_FULL_URI` and its token: ECS, and Lambda after a SnapStart
    restore) or EC2's instance metadata; cached, and fetched again before they expire. awscrt
    has no SSO provider: where the environment names no keys and no container credentials (a
    laptop) and the CRT's chain finds nothing, botocore's chain is asked (imported then, and
    only then) and signs from then on (`sdk_only`) until `renew`. One chain per process
    (`CREDENTIALS`), for every AWS call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._provider: Any = None
        self._bootstrap: Any = None
        self._sdk_session: Any = None
        self.sdk_only = False  # the CRT's chain found nothing and botocore's did

    def provider(self) -> Any:
        """awscrt's `AwsCredentialsProvider` (built on first use: it imports awscrt). Where the
        environment names both keys (Lambda), that is the environment's provider alone: the
        chain's first link, which then answers every call, so the chain would give the same
        keys. Building the chain builds a TLS context for its remote links, and so parses the
        system's CA store twice: ~11 ms of CPU under the GIL, in init's secret read."""
        with self._lock:
            if self._provider is None:
                from awscrt.auth import AwsCredentialsProvider

                if environment_names_keys():
                    self._provider = AwsCredentialsProvider.new_environment()
                    return self._provider
                from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup

                if self._bootstrap is None:
                    group = EventLoopGroup(1)  # the thread that fetches remote credentials
                    self._bootstrap = ClientBootstrap(group, DefaultHostResolver(group))
                self._provider = AwsCredentialsProvider.new_default_chain(self._bootstrap)
            return self._provider

    def may_ask_the_sdk(self) -> bool:
        """Whether botocore's chain may find what the CRT's did not: not where the environment
        names the credentials (Lambda, ECS), so that a passing failure there is retried, not
        answered with botocore's import at the function's CPU share."""
        return not any(
            os.environ.get(name)
            for name in (
                "AWS_ACCESS_KEY_ID",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            )
        )

    def sdk_provider(self) -> Any:
        """botocore's chain's current credentials as a CRT provider (a blocking call: a refresh
        may call AWS), or None when it has none either."""
        from awscrt.auth import AwsCredentialsProvider

        with self._lock:
            if self._sdk_session is None:
                import botocore.session

                self._sdk_session = botocore.session.Session()
            session = self._sdk_session
        found = session.get_credentials()
        if found is None:
            return None
        frozen = found.get_frozen_credentials()
        self.sdk_only = True
        return AwsCredentialsProvider.new_static(frozen.access_key, frozen.secret_key, frozen.token)

    def renew(self) -> None:
        """Forget the cached credentials and which source they came from: after a SnapStart
        restore the container credentials' address and token may be new."""
        with self._lock:
            self._provider = None
            self.sdk_only = False


CREDENTIALS = CredentialChain()


def environment_names_keys() -> bool:
    """Whether the SDKs' chain stops at the environment: it names an access key and its secret."""
    return bool(os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))


# --- Calls and retries --------------------------------------------------------------------------

MAX_ATTEMPTS = 3  # the SDKs' standard retry mode
MAX_BACKOFF_S = 20.0
# Error codes the SDKs' standard mode retries as throttling, and as transient.
THROTTLING_ERRORS = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_ERRORS = frozenset({"RequestTimeout", "RequestTimeoutException", "InternalError"})
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
# A signature refused for its time: the client's clock is off. Corrected from the answer's
# `Date` once, when the two clocks differ by more than this.
CLOCK_SKEW_ERRORS = frozenset(
    {
        "RequestTimeTooSkewed",
        "RequestExpired",
        "RequestInTheFuture",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "AuthFailure",
    }
)
MIN_CLOCK_SKEW_S = 60.0
EXPIRED_CREDENTIALS_ERRORS = frozenset({"ExpiredToken", "ExpiredTokenException"})
# The standard mode's retry quota: a retry costs tokens, a success returns one, so a service
# that keeps failing stops being retried (a 5xx storm is not multiplied by three).
RETRY_QUOTA = 500
RETRY_COST, TIMEOUT_RETRY_COST = 5, 10


class AwsCallFailed(Exception):
    """No answer within the attempts and the time allowed, or an error that is not retried. The
    message names the cause (the exception's class, or the HTTP status and AWS error code),
    never a key; `code` and `answer` are the last AWS error's, when there was one."""

    def __init__(self, cause: str, code: str | None = None, answer: bytes = b"") -> None:
        super().__init__(cause)
        self.code = code
        self.answer = answer


@dataclass(frozen=True)
class JsonService:
    """One AWS service's JSON protocol: its signing name (the endpoint's first label too), its
    content type, and how long its calls wait."""

    name: str
    title: str  # in log lines: `DynamoDB`
    content_type: str  # `application/x-amz-json-1.0` or `-1.1`
    connect_timeout_s: float
    read_timeout_s: float  # per attempt
    budget_s: float  # all attempts and the pauses between them, from the call's start
    base_backoff_s: float  # the first pause's bound; it doubles with each retry


class AwsJsonClient:
    """Signed JSON calls to one service: SigV4 by awscrt with the process's credential chain,
    over aiohttp (one pool per event loop, or a connection per call with `pooled=False`),
    retried as the SDKs' standard mode within the service's time budget."""

    def __init__(
        self,
        service: JsonService,
        aws: AwsEnvironment,
        pooled: bool = True,
        credentials: CredentialChain = CREDENTIALS,
    ) -> None:
        self.service = service
        self._aws = aws
        self._credentials = credentials
        self._pooled = pooled
        self.url = aws.endpoint_url or (
            regional_endpoint(service.name, aws.region, aws.use_fips, aws.use_dualstack)
            if aws.region
            else None
        )
        self._retry_quota = RETRY_QUOTA
        self._skew_s = 0.0  # the service's clock less ours, once an answer showed it
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxy = _proxy_for(self.url) if self.url else None
        self._tls: ssl.SSLContext | bool = True
        if aws.ca_bundle:
            self._tls = ssl.create_default_context(cafile=aws.ca_bundle)

    async def call(self, target: str, request: dict[str, Any]) -> dict[str, Any]:
        """The answer to `target` (`X-Amz-Target`, e.g. `DynamoDB_20120810.UpdateItem`) with
        `request` as its JSON, or `AwsCallFailed`."""
        if self.url is None:
            raise AwsCallFailed("no AWS region (AWS_REGION) and no endpoint URL")
        body = orjson.dumps(request)
        deadline = time.monotonic() + self.service.budget_s
        attempt, cause = 1, "no attempt"
        skew_corrected = credentials_renewed = False  # each at most once per call
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AwsCallFailed(f"{cause}; out of time after {attempt - 1} attempts")
            headers = await self._signed(target, body)
            cost = RETRY_COST
            try:
                status, answer, date = await self._post(headers, body, remaining)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                # A timeout's message is empty; a refused connection's names the address.
                cause = f"{type(exc).__name__} reaching {self.service.title}" + (
                    f": {exc}" if str(exc) else ""
                )
                code, answer = None, b""
                if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
                    cost = TIMEOUT_RETRY_COST
            else:
                if status == 200:
                    self._retry_quota = min(RETRY_QUOTA, self._retry_quota + 1)
                    try:
                        return orjson.loads(answer)
                    except orjson.JSONDecodeError:
                        raise AwsCallFailed("HTTP 200 with an unreadable answer") from None
                code = error_code(answer)
                cause = f"HTTP {status} ({code})"
                if not skew_corrected and self._corrected(code, date):
                    skew_corrected = True
                    continue  # signed again with the service's time: not an attempt of its own
                if not credentials_renewed and code in EXPIRED_CREDENTIALS_ERRORS:
                    credentials_renewed = True
                    log.warning("%s: credentials expired; renewing them", self.service.title)
                    self._credentials.renew()
                    continue
                if not (
                    code in THROTTLING_ERRORS
                    or code in TRANSIENT_ERRORS
                    or status in TRANSIENT_STATUSES
                    or status == 429
                ):
                    raise AwsCallFailed(cause, code, answer)
            if attempt >= MAX_ATTEMPTS:
                raise AwsCallFailed(f"{cause}, after {attempt} attempts", code, answer)
            if self._retry_quota < cost:
                raise AwsCallFailed(f"{cause}; not retried: the retry quota is spent", code, answer)
            # Full jitter: anywhere between no pause and the bound, which doubles per retry.
            bound = min(MAX_BACKOFF_S, self.service.base_backoff_s * 2 ** (attempt - 1))
            pause = random.random() * bound
            if pause >= deadline - time.monotonic():
                raise AwsCallFailed(f"{cause}; no time left for another attempt", code, answer)
            self._retry_quota -= cost
            attempt += 1
            await asyncio.sleep(pause)

    def _corrected(self, code: str, date: str | None) -> bool:
        """True when `code` says the signature's time was refused and the answer's `Date` differs
        from our clock enough to explain it: then later signatures use the service's time."""
        if code not in CLOCK_SKEW_ERRORS or not date:
            return False
        try:
            theirs = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return False
        skew = theirs - time.time()
        if abs(skew - self._skew_s) < MIN_CLOCK_SKEW_S:
            return False
        log.warning(
            "%s: our clock is %.0f s %s the service's; signing with its time",
            self.service.title,
            abs(skew),
            "behind" if skew > 0 else "ahead of",
        )
        self._skew_s = skew
        return True

    async def _signed(self, target: str, body: bytes) -> list[tuple[str, str]]:
        """The request's headers, signed by awscrt (a credential fetch, when one is due, runs
        on the CRT's thread while the event loop goes on)."""
        from awscrt.exceptions import AwsCrtError

        chain = self._credentials
        failure = "no credentials"
        if not chain.sdk_only:
            try:
                return await self._signed_with(chain.provider(), target, body)
            except (AwsCrtError, RuntimeError) as exc:
                # The CRT names the failure (`AWS_AUTH_CREDENTIALS_PROVIDER_CHAIN_SOURCE_FAILURE`);
                # its messages carry no key.
                failure = getattr(exc, "name", None) or type(exc).__name__
                if not chain.may_ask_the_sdk():
                    raise AwsCallFailed(f"no AWS credentials to sign with: {failure}") from exc
        try:
            provider = await asyncio.to_thread(chain.sdk_provider)
        except Exception as exc:  # botocore's own failures: name the kind, never a key
            raise AwsCallFailed(
                f"no AWS credentials to sign with: {failure}; botocore: {type(exc).__name__}"
            ) from exc
        if provider is None:
            raise AwsCallFailed(f"no AWS credentials to sign with: {failure}, nor in botocore's")
        return await self._signed_with(provider, target, body)

    async def _signed_with(self, provider: Any, target: str, body: bytes) -> list[tuple[str, str]]:
        from awscrt.auth import AwsSigningConfig, aws_sign_request
        from awscrt.http import HttpHeaders, HttpRequest

        parts = urllib.parse.urlsplit(self.url)
        request = HttpRequest(
            "POST",
            parts.path or "/",
            HttpHeaders(
                [
                    ("host", parts.netloc),
                    ("content-type", self.service.content_type),
                    ("x-amz-target", target),
                ]
            ),
            io.BytesIO(body),
        )
        config = AwsSigningConfig(
            credentials_provider=provider,
            region=self._aws.region or "us-east-1",
            service=self.service.name,
            date=datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self._skew_s),
        )
        await asyncio.wrap_future(aws_sign_request(request, config))
        return list(request.headers)

    async def _post(
        self, headers: list[tuple[str, str]], body: bytes, remaining_s: float
    ) -> tuple[int, bytes, str | None]:
        timeout = exact_timeout(
            total=min(self.service.connect_timeout_s + self.service.read_timeout_s, remaining_s),
            sock_connect=self.service.connect_timeout_s,
            sock_read=self.service.read_timeout_s,
        )
        if self._pooled:
            return await self._send(self._pool(), headers, body, timeout)
        async with self._new_session() as session:
            return await self._send(session, headers, body, timeout)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[int, bytes, str | None]:
        async with session.post(
            self.url,
            data=body,
            headers=headers,
            timeout=timeout,
            proxy=self._proxy,
            ssl=self._tls,
        ) as response:
            return response.status, await response.read(), response.headers.get("date")

    async def preconnect(self) -> bool:
        """Open the pool and one kept-alive connection before a request needs it (init, where
        the TCP and TLS handshakes run at full CPU): `GET /`, unsigned; any answer will do. The
        credential chain is built and asked once too, so the first signature finds them cached."""
        if self.url is None:
            return False
        if not self._credentials.sdk_only:
            try:
                await asyncio.wrap_future(self._credentials.provider().get_credentials())
            except Exception as exc:  # the first call reports it, with its retries
                log.info("%s: no AWS credentials yet: %s", self.service.title, type(exc).__name__)
        try:
            async with self._pool().get(self.url, proxy=self._proxy, ssl=self._tls) as response:
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
            session = self._session = self._new_session()
        return session

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100),
            timeout=exact_timeout(total=self.service.budget_s),
            cookie_jar=aiohttp.DummyCookieJar(),
        )


def _proxy_for(url: str) -> str | None:
    """`HTTPS_PROXY` (or `HTTP_PROXY` for an http endpoint) unless `NO_PROXY` covers the host:
    the standard library reads the variables as curl and the SDKs do."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxy


def error_code(answer: bytes) -> str:
    """The error's code from its JSON body: `ResourceNotFoundException` of
    `{"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", ...}`."""
    try:
        kind = orjson.loads(answer).get("__type", "")
    except (orjson.JSONDecodeError, AttributeError):
        return "unreadable error"
    if not isinstance(kind, str):
        return "unreadable error"
    return kind.rsplit("#", 1)[-1].split(":", 1)[0] or "no error code"
