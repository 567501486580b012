"""The OpenAI key and the client tokens: read from Secrets Manager, cached, refreshed after a 401.

This is the only module that touches the secret. Values never leave it in logs or errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from handler.errors import CREDENTIALS_UNAVAILABLE, RelayError
from handler.metrics import embedded_count
from handler.secretsmanager import SecretReadFailed, SecretsManager
from handler.settings import Settings, aws_environment

log = logging.getLogger("relay.credentials")


class CredentialsUnavailable(RelayError):
    """The secret is missing, unreadable or malformed; `reason` is logged, never the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(CREDENTIALS_UNAVAILABLE, "the relay's OpenAI credentials are unavailable")
        self.reason = reason


# What the secret's JSON may hold. `unused_placeholder` is written by the template's generated
# secret (CloudFormation needs a generated field); it is ignored.
SECRET_FIELDS = frozenset({"api_key", "organization", "project", "client_tokens"})
IGNORED_SECRET_FIELDS = frozenset({"unused_placeholder"})
TEMPLATE_PLACEHOLDER_KEY = "REPLACE_WITH_YOUR_OPENAI_KEY"
# After an upstream 401, the secret is re-read at most this often (concurrent 401s share a read).
MIN_SECRET_REFRESH_INTERVAL_S = 5.0


def token_id(token: bytes) -> str:
    """A client token's name in logs and quotas: a short hash that cannot be turned back."""
    return "token:" + hashlib.sha256(token).hexdigest()[:8]


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    organization: str | None = None
    project: str | None = None
    client_tokens: tuple[bytes, ...] = field(default=(), repr=False)
    # The plan each client token names, by its id (`token:<8 hex>`); absent: `default`.
    token_plans: Mapping[str, str] = field(default_factory=dict, hash=False)
    # Where the client tokens came from, for the startup and access log lines.
    source: str = "secret"

    def caller_for(self, presented: str) -> str | None:
        """The id of the client token `presented` is (`token:<8 hex>`), or None.

        Every token is compared, in constant time, so timing tells nothing about which matched.
        """
        candidate = presented.encode()
        matched: bytes | None = None
        for token in self.client_tokens:
            if hmac.compare_digest(candidate, token):
                matched = token
        return None if matched is None else token_id(matched)


def _field_names(names: set[str]) -> str:
    # Field names only, never values; anything odd-looking is not echoed at all.
    shown = sorted(n if n.isidentifier() and len(n) <= 40 else "<unprintable>" for n in names)
    return ", ".join(f"`{n}`" for n in shown)


def parse_secret(raw: str | bytes | None) -> Credentials:
    """Both formats of the contract: the bare key, or JSON with `api_key` and optional extras.

    Strict on purpose: a misspelt field (`client_token`) or an empty `client_tokens` would
    otherwise read as "no tokens" and silently change who may call the relay.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    text = (raw or "").strip()
    if not text:
        raise CredentialsUnavailable("secret is empty")
    if not text.startswith("{"):
        if any(ch.isspace() for ch in text):
            raise CredentialsUnavailable("secret is neither JSON nor a single key")
        return Credentials(api_key=_checked_key(text))
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise CredentialsUnavailable("secret looks like JSON but does not parse") from None
    if not isinstance(data, dict):
        raise CredentialsUnavailable("secret JSON is not an object")
    unknown = set(data) - SECRET_FIELDS - IGNORED_SECRET_FIELDS
    if unknown:
        raise CredentialsUnavailable(
            f"secret JSON has unknown fields {_field_names(unknown)} "
            f"(known: {_field_names(set(SECRET_FIELDS))})"
        )
    api_key = data.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        raise CredentialsUnavailable("secret JSON has no string `api_key`")
    tokens = data.get("client_tokens", [])
    if not isinstance(tokens, list) or not all(_token_entry(t) for t in tokens):
        raise CredentialsUnavailable(
            'secret `client_tokens` is not a list of non-empty strings or {"token", "plan"}'
        )
    extras = {}
    for name in ("organization", "project"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise CredentialsUnavailable(f"secret `{name}` is not a string")
        extras[name] = value or None
    pairs = [(t, None) if isinstance(t, str) else (t["token"], t.get("plan")) for t in tokens]
    client_tokens, token_plans = tokens_and_plans(pairs)
    return Credentials(
        api_key=_checked_key(api_key.strip()),
        client_tokens=client_tokens,
        token_plans=token_plans,
        **extras,
    )


def _token_entry(entry: object) -> bool:
    """A secret's client token: a non-empty string, or `{"token": "...", "plan": "..."}`."""
    if isinstance(entry, str):
        return bool(entry.strip())
    return (
        isinstance(entry, dict)
        and set(entry) <= {"token", "plan"}
        and isinstance(entry.get("token"), str)
        and bool(entry["token"].strip())
        and isinstance(entry.get("plan", ""), str)
    )


def tokens_and_plans(
    pairs: Iterable[tuple[str, str | None]],
) -> tuple[tuple[bytes, ...], dict[str, str]]:
    """The client tokens, and the plan each one that names one names (by the token's id)."""
    tokens, plans = [], {}
    for token, plan in pairs:
        encoded = token.strip().encode()
        tokens.append(encoded)
        if plan and plan.strip():
            plans[token_id(encoded)] = plan.strip()
    return tuple(tokens), plans


def split_token_plan(entry: str) -> tuple[str, str | None]:
    """A `CLIENT_TOKENS` entry: `token`, or `token:plan` (split at the last colon)."""
    token, colon, plan = entry.rpartition(":")
    return (token, plan) if colon and token else (entry, None)


def _checked_key(api_key: str) -> str:
    if api_key == TEMPLATE_PLACEHOLDER_KEY:
        raise CredentialsUnavailable(
            "the secret still holds the template's placeholder: put your OpenAI key into it"
        )
    return api_key


class CredentialStore:
    """Credentials for one process: from `OPENAI_API_KEY` locally, else the cached secret.

    The value is kept for `SECRET_TTL_S`, so a warm request makes no Secrets Manager call; it is
    read with the SDKs' credential chain (secretsmanager.py). A failed read is remembered for
    `SECRET_RETRY_AFTER_S`: during an outage the process calls Secrets Manager once per that
    interval, not once per request (requests meanwhile get the last good value, or the 503).
    While a refresh fails, the last good value keeps serving for up to `SECRET_STALE_S` past
    its TTL (logged, and counted in a metric), then 503.
    Client tokens come from one place: `CLIENT_TOKENS` with `OPENAI_API_KEY`, the secret's
    `client_tokens` otherwise (then `CLIENT_TOKENS` is ignored, and the app says so at startup).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._secrets: SecretsManager | None = None
        self._parsed: tuple[object, Credentials] | None = None  # the last good value, read
        self._fresh_until = 0.0
        self._read_at: float | None = None  # wall clock: a SnapStart restore must see the age
        self._failure: str | None = None  # the last failed read's reason, while remembered
        self._failed_until = 0.0
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = float("-inf")
        self._reading: asyncio.Future[Credentials] | None = None
        if settings.openai_api_key:
            client_tokens, token_plans = tokens_and_plans(
                split_token_plan(entry) for entry in settings.client_tokens
            )
            self._static = Credentials(
                api_key=settings.openai_api_key,
                client_tokens=client_tokens,
                token_plans=token_plans,
                source="CLIENT_TOKENS",
            )
        else:
            self._static = None

    @property
    def refreshable(self) -> bool:
        return self._static is None

    async def read(self) -> Credentials:
        """One Secrets Manager read, its outcome remembered: the new value, or after a failure
        the last good one while it may still serve, or `CredentialsUnavailable`."""
        if self._static is not None:
            return self._static
        try:
            raw = await self._read_secret()
            self._parsed = (raw, parse_secret(raw))
        except CredentialsUnavailable as exc:
            # The one place this failure is logged: the reason names the cause, never the value.
            log.error("credentials unavailable: %s", exc.reason)
            self._failure = exc.reason
            self._failed_until = time.monotonic() + self._settings.secret_retry_after_s
            return self._last_good(exc.reason, just_failed=True)
        self._failure = None
        self._fresh_until = time.monotonic() + self._settings.secret_ttl_s
        self._read_at = time.time()
        return self._parsed[1]

    def adopt(self, other: CredentialStore) -> None:
        """Take over the value `other` (a store for the same settings) has read: the runtime
        reads the secret in a thread while the app's modules are still importing."""
        self._parsed, self._fresh_until, self._read_at = (
            other._parsed,
            other._fresh_until,
            other._read_at,
        )

    def older_than_ttl(self) -> bool:
        """True when the secret was read longer than `SECRET_TTL_S` ago by the wall clock, which
        (unlike the monotonic one) counts the time a SnapStart snapshot lay on the shelf."""
        if self._static is not None or self._read_at is None:
            return False
        return time.time() - self._read_at > self._settings.secret_ttl_s

    async def aget(self) -> Credentials:
        """The credentials: a cached value at once; else one Secrets Manager read on the event
        loop, shared by every request that needs it meanwhile."""
        if self._static is not None:
            return self._static
        if self._parsed is not None and time.monotonic() < self._fresh_until:
            return self._parsed[1]
        if self._failure is not None and time.monotonic() < self._failed_until:
            return self._last_good(self._failure, just_failed=False)
        # One read at a time: many invocations at once on a cold or stale cache (Lambda Managed
        # Instances) share it instead of each calling Secrets Manager. Shielded, so a caller
        # that goes away does not cancel the read the others wait for.
        reading = self._reading
        if reading is None or reading.done():
            reading = self._reading = asyncio.ensure_future(self.read())
        return await asyncio.shield(reading)

    async def refreshed(self, rejected: Credentials) -> Credentials:
        """Fresh credentials after the upstream rejected `rejected`: one Secrets Manager read
        for all the requests that saw the same 401, and at most one per
        `MIN_SECRET_REFRESH_INTERVAL_S` (a wrong key must not turn every request into a read)."""
        async with self._refresh_lock:
            current = self._parsed[1] if self._parsed is not None else None
            if current is not None and current is not rejected:
                return current  # re-read by another request while this one waited
            if time.monotonic() - self._refreshed_at < MIN_SECRET_REFRESH_INTERVAL_S:
                return current or rejected
            log.info("upstream answered 401; re-reading the secret")
            try:
                return await self.read()
            finally:
                self._refreshed_at = time.monotonic()

    def _last_good(self, reason: str, just_failed: bool) -> Credentials:
        """The last good value while `SECRET_STALE_S` past its TTL has not run out (a
        rotation-time failure keeps the relay serving); else the failure as a 503."""
        stale_for = self._stale_for()
        if stale_for is None or stale_for > self._settings.secret_stale_s:
            raise CredentialsUnavailable(reason)
        if just_failed:  # once per failed read, not once per request served meanwhile
            log.warning(secret_stale_line(self._settings.metrics_namespace, stale_for))
        return self._parsed[1]

    def _stale_for(self) -> float | None:
        """Seconds the last good value is past its TTL (wall clock, so time on a SnapStart
        shelf counts), or None without one."""
        if self._parsed is None or self._read_at is None:
            return None
        return max(0.0, time.time() - self._read_at - self._settings.secret_ttl_s)

    async def _read_secret(self) -> str | bytes:
        secret_id = self._settings.openai_secret_id
        if not secret_id:
            raise CredentialsUnavailable("neither OPENAI_SECRET_ID nor OPENAI_API_KEY is set")
        if self._secrets is None:
            self._secrets = SecretsManager(aws_environment())
        try:
            return await self._secrets.get_secret_value(secret_id)
        except SecretReadFailed as exc:
            raise CredentialsUnavailable(f"reading the secret failed: {exc}") from exc


def secret_stale_line(namespace: str, stale_for_s: float) -> str:
    """The log line of a failed refresh answered with the last good value: its words, and a
    CloudWatch embedded-metric document (`SecretServedStale`), as the request lines are."""
    return orjson.dumps(
        {
            "message": "refreshing the secret failed; serving the last good value, "
            f"{stale_for_s:.0f} s past SECRET_TTL_S",
            **embedded_count(namespace, "SecretServedStale"),
        }
    ).decode()
