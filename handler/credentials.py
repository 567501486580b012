"""The OpenAI key and the client tokens: read from Secrets Manager, cached, refreshed after a 401.

This is the only module that touches the secret. Values never leave it in logs or errors.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field

import orjson

from handler.errors import CREDENTIALS_UNAVAILABLE, RelayError
from handler.settings import Settings

log = logging.getLogger("relay.credentials")


class CredentialsUnavailable(RelayError):
    """The secret is missing, unreadable or malformed; `reason` is logged, never the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(CREDENTIALS_UNAVAILABLE, "the relay's OpenAI credentials are unavailable")
        self.reason = reason


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    organization: str | None = None
    project: str | None = None
    client_tokens: tuple[bytes, ...] = field(default=(), repr=False)

    def accepts(self, authorization: str | None) -> bool:
        """True when no client tokens are configured or the bearer token is one of them.

        Every token is compared, in constant time, so timing tells nothing about which matched.
        """
        if not self.client_tokens:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        candidate = presented.strip().encode()
        matched = False
        for token in self.client_tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched


def parse_secret(raw: str | bytes | None, env_client_tokens: list[str]) -> Credentials:
    """Both formats of the contract: the bare key, or JSON with `api_key` and optional extras."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    text = (raw or "").strip()
    if not text:
        raise CredentialsUnavailable("secret is empty")
    if text.startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            # Not chained: the decoder's message quotes the secret's text.
            raise CredentialsUnavailable("secret looks like JSON but does not parse") from None
        api_key = data.get("api_key")
        if not isinstance(api_key, str) or not api_key.strip():
            raise CredentialsUnavailable("secret JSON has no string `api_key`")
        tokens = data.get("client_tokens") or []
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise CredentialsUnavailable("secret `client_tokens` is not a list of strings")
        organization, project = data.get("organization"), data.get("project")
    else:
        if any(ch.isspace() for ch in text):
            raise CredentialsUnavailable("secret is neither JSON nor a single key")
        api_key, tokens, organization, project = text, [], None, None
    return Credentials(
        api_key=api_key.strip(),
        organization=organization if isinstance(organization, str) else None,
        project=project if isinstance(project, str) else None,
        client_tokens=tuple(t.encode() for t in (env_client_tokens or tokens)),
    )


class CredentialStore:
    """Credentials for one process: from `OPENAI_API_KEY` locally, else the cached secret.

    Powertools' SecretsProvider does the caching (`max_age` = `SECRET_TTL_S`), so a warm request
    makes no Secrets Manager call; the parsed value is kept while the raw secret is unchanged.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._provider = None
        self._parsed: tuple[object, Credentials] | None = None
        self._fresh_until = 0.0
        if settings.openai_api_key:
            self._static = Credentials(
                api_key=settings.openai_api_key,
                client_tokens=tuple(t.encode() for t in settings.client_tokens),
            )
        else:
            self._static = None

    @property
    def refreshable(self) -> bool:
        return self._static is None

    def get(self, refresh: bool = False) -> Credentials:
        """The credentials, reading the secret when the cache is stale (a blocking call)."""
        if self._static is not None:
            return self._static
        try:
            raw = self._read_secret(refresh)
            if self._parsed is None or self._parsed[0] is not raw:
                self._parsed = (raw, parse_secret(raw, self._settings.client_tokens))
        except CredentialsUnavailable as exc:
            # The one place this failure is logged: the reason names the cause, never the value.
            log.error("credentials unavailable: %s", exc.reason)
            raise
        self._fresh_until = time.monotonic() + self._settings.secret_ttl_s
        return self._parsed[1]

    async def aget(self, refresh: bool = False) -> Credentials:
        """`get` for the event loop: a cached value at once, a Secrets Manager read in a thread
        (so one slow read never stalls the other streams of the process)."""
        if self._static is not None:
            return self._static
        if not refresh and self._parsed is not None and time.monotonic() < self._fresh_until:
            return self._parsed[1]
        return await asyncio.to_thread(self.get, refresh)

    def _read_secret(self, refresh: bool) -> str | bytes | None:
        secret_id = self._settings.openai_secret_id
        if not secret_id:
            raise CredentialsUnavailable("neither OPENAI_SECRET_ID nor OPENAI_API_KEY is set")
        try:
            if self._provider is None:
                # Imported here: boto3 costs ~0.3 s of import time that OPENAI_API_KEY users skip.
                from aws_lambda_powertools.utilities.parameters import SecretsProvider

                self._provider = SecretsProvider()
            return self._provider.get(
                secret_id, max_age=int(self._settings.secret_ttl_s), force_fetch=refresh
            )
        except Exception as exc:  # any SDK or network failure: report its kind, never its payload
            raise CredentialsUnavailable(_describe_failure(exc)) from exc


def _describe_failure(exc: BaseException) -> str:
    """The SDK or network failure's class and message (Powertools wraps it in its own error).
    Neither carries the secret's value: the read failed, so there is none."""
    cause = exc.__cause__ or exc.__context__ or exc
    return f"reading the secret failed: {type(cause).__name__}: {cause}"
