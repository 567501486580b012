"""Sign-in with JWTs: checks an OIDC access token against the issuer's published keys.

Verification is joserfc's (imported only when `JWT_ISSUER` is set: cryptography is heavy); this
module picks the key, fetches and caches the JWKS, and applies the relay's rules on the claims.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from handler.settings import Settings, check_sign_in_url
from handler.timeouts import exact_timeout

log = logging.getLogger("relay.signin")

# Asymmetric signatures only: `none` and HMAC (whose "key" a JWKS would hand to anyone) never.
ALGORITHM_KEY_TYPES = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RSA"),
    **dict.fromkeys(("ES256", "ES384", "ES512"), "EC"),
    **dict.fromkeys(("EdDSA", "Ed25519"), "OKP"),
}
# An unknown `kid` re-fetches the JWKS at most every `JWKS_MIN_REFETCH_S` (default 60 s), so
# made-up kids cannot turn every request into a fetch; after a failed fetch, sooner (a cold
# start must not be locked out for a minute by one network blip).
JWKS_RETRY_AFTER_FAILURE_S = 5.0
JWKS_TIMEOUT_S = 5.0
# A browser sends the same access token with every request until it is refreshed: remembering
# the verified ones turns a repeat into a dict lookup instead of a signature check. Each is
# remembered with the key that verified it, and forgotten when the issuer withdraws that key.
VERIFIED_CACHE_SIZE = 1024
JWKS_MAX_BYTES = 512 * 1024
# The `typ` header values of an access token (RFC 9068, and the plain `JWT` many issuers set);
# an issuer that types its ID tokens (`id+jwt`, ...) sets something else. No `typ`: not said.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})
MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


class SignInRejected(Exception):
    """The bearer is not an acceptable JWT; `reason` is for the log (no token content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """The issuer's keys could not be fetched: the relay's problem, not the caller's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedIn:
    """Who a verified token says is calling."""

    subject: str  # `sub`, or `client_id` for a machine token without one
    claims: Mapping[str, Any]


def looks_like_jwt(bearer: str) -> bool:
    return bearer.count(".") == 2


class JwtVerifier:
    """Verifies bearer JWTs for one issuer; keys are parsed once per JWKS fetch and cached."""

    def __init__(self, settings: Settings) -> None:
        from joserfc import jwt

        assert settings.jwt_issuer  # Settings refuses a partial sign-in configuration
        self.issuer = settings.jwt_issuer
        self.audiences = frozenset(settings.jwt_audience)
        self.required_scopes = frozenset(settings.jwt_required_scopes)
        self._jwks_url = settings.jwks_url
        self._min_refetch_s = settings.jwks_min_refetch_s
        self._max_age_s = max(settings.jwks_max_age_s, settings.jwks_min_refetch_s)
        self._claims_rules = jwt.JWTClaimsRegistry(
            leeway=settings.jwt_leeway_s,
            iss={"essential": True, "value": self.issuer},
            exp={"essential": True},
        )
        self._keys: dict[str | None, Any] = {}
        self._next_fetch_at = float("-inf")
        self._keys_expire_at = float("-inf")  # monotonic: when the JWKS's max-age runs out
        self._fetch_lock = asyncio.Lock()
        self._leeway_s = settings.jwt_leeway_s
        # token -> (its `exp` with leeway, who it proves, the thumbprint of the key that verified)
        self._verified: dict[str, tuple[float, SignedIn, str]] = {}

    async def verify(self, token: str) -> SignedIn:
        """The caller a token proves, or `SignInRejected` / `KeysUnavailable`."""
        if self._keys and time.monotonic() >= self._keys_expire_at:
            await self._refresh_keys()
        remembered = self._verified.get(token)
        if remembered is not None:
            expires_at, signed_in, _ = remembered
            if time.time() < expires_at:
                return signed_in
            del self._verified[token]
        signed_in, thumbprint = await self._verify_afresh(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (signed_in.claims["exp"] + self._leeway_s, signed_in, thumbprint)
        return signed_in

    async def _refresh_keys(self) -> None:
        """Fetch the JWKS again once its max-age has run out (requests that find a fetch under
        way wait for it). Out-of-date keys are not used: if the fetch fails, or failed a moment
        ago, sign-in is unavailable until a fetch succeeds."""
        async with self._fetch_lock:
            if time.monotonic() < self._keys_expire_at:
                return  # another request refreshed them while this one waited
            if time.monotonic() < self._next_fetch_at:
                raise KeysUnavailable("the issuer's keys are out of date and a fetch just failed")
            await self._fetch_keys()

    async def _verify_afresh(self, token: str) -> tuple[SignedIn, str]:
        from joserfc import jws, jwt
        from joserfc.errors import JoseError

        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, TypeError):
            raise SignInRejected("not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHM_KEY_TYPES:
            raise SignInRejected(f"algorithm {str(alg)[:20]!r} is not accepted")
        kind = header.get("typ")
        if kind is not None and (
            not isinstance(kind, str) or kind.lower() not in ACCESS_TOKEN_TYPES
        ):
            raise SignInRejected(f"token type {str(kind)[:20]!r} is not an access token's")
        key = await self._key_for(header.get("kid"), alg)
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
            self._claims_rules.validate(claims)
        except JoseError as exc:
            raise SignInRejected(_describe(exc)) from None
        if claims.get("token_use", "access") != "access":
            raise SignInRejected("an ID token is not an access token (`token_use`)")
        self._check_audience(claims)
        self._check_scopes(claims)
        subject = claims.get("sub") or claims.get("client_id")
        if not isinstance(subject, str) or not subject:
            raise SignInRejected("token has neither `sub` nor `client_id`")
        return SignedIn(subject, claims), key.thumbprint()

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        aud = claims.get("aud")
        if aud is None:
            # Cognito's access tokens carry the app client in `client_id` and have no `aud`;
            # beside an `aud`, `client_id` only names who asked for a token for that audience.
            aud = claims.get("client_id")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not self.audiences.intersection(a for a in audiences if isinstance(a, str)):
            raise SignInRejected("token is for another audience")

    def _check_scopes(self, claims: Mapping[str, Any]) -> None:
        if not self.required_scopes:
            return
        granted = claims.get("scope", claims.get("scp", ""))
        scopes = set(granted.split() if isinstance(granted, str) else granted or ())
        missing = self.required_scopes - scopes
        if missing:
            raise SignInRejected(f"token lacks the scopes {sorted(missing)}")

    async def _key_for(self, kid: object, alg: str) -> Any:
        if kid is not None and not isinstance(kid, str):
            raise SignInRejected("`kid` is not a string")
        key = self._keys.get(kid)
        if key is None and (self._fetch_lock.locked() or time.monotonic() >= self._next_fetch_at):
            # Requests that find a fetch under way wait for it and share its keys.
            async with self._fetch_lock:
                if time.monotonic() >= self._next_fetch_at:
                    await self._fetch_keys()
            key = self._keys.get(kid)
        if key is None and not self._keys:
            # No keys yet, and the fetch failed a moment ago: the issuer's fault, not the token's.
            raise KeysUnavailable("the issuer's keys could not be fetched; a fetch just failed")
        if key is None:
            raise SignInRejected("no key of the issuer has this token's `kid`")
        if key.key_type != ALGORITHM_KEY_TYPES[alg] or key.get("alg", alg) != alg:
            raise SignInRejected(f"the key for this `kid` is not a {alg} key")
        return key

    async def _fetch_keys(self) -> None:
        """Fetch the JWKS (via discovery when `JWKS_URL` is unset) and parse its keys once."""
        from joserfc.errors import JoseError
        from joserfc.jwk import JWKRegistry

        self._next_fetch_at = time.monotonic() + JWKS_RETRY_AFTER_FAILURE_S
        timeout = exact_timeout(total=JWKS_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                url = self._jwks_url or await self._discover_jwks_url(session)
                jwks, max_age_s = await _get_json(session, url)
        except KeysUnavailable:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failure = type(exc).__name__
            raise KeysUnavailable(f"fetching the issuer's keys failed: {failure}") from None
        entries = jwks.get("keys")
        if not isinstance(entries, list):
            raise KeysUnavailable("the JWKS has no `keys` list")
        keys: dict[str | None, Any] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            if entry.get("kty") not in {"RSA", "EC", "OKP"}:
                continue  # a symmetric key has no place in a JWKS
            try:
                key = JWKRegistry.import_key(entry)
            except (JoseError, ValueError, TypeError):
                continue
            keys[entry.get("kid") if isinstance(entry.get("kid"), str) else None] = key
        if not keys:
            raise KeysUnavailable("the JWKS holds no usable signing key")
        if len(keys) == 1 and None not in keys:
            # RFC 7515: a token may omit `kid` when the issuer has one key.
            keys[None] = next(iter(keys.values()))
        self._keys = keys
        # A key the issuer withdrew vouches for nothing any more, not even what it verified.
        kept = {key.thumbprint() for key in keys.values()}
        self._verified = {t: v for t, v in self._verified.items() if v[2] in kept}
        now = time.monotonic()
        self._next_fetch_at = now + self._min_refetch_s
        asked_s = self._max_age_s if max_age_s is None else max_age_s
        lifetime_s = min(self._max_age_s, max(self._min_refetch_s, asked_s))
        self._keys_expire_at = now + lifetime_s
        log.info(
            "sign-in: %d signing keys loaded from the issuer's JWKS, kept for %.0f s",
            len(entries),
            lifetime_s,
        )

    async def _discover_jwks_url(self, session: aiohttp.ClientSession) -> str:
        config, _ = await _get_json(
            session, self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        )
        if config.get("issuer", self.issuer) != self.issuer:
            raise KeysUnavailable("the discovery document names another issuer")
        url = config.get("jwks_uri")
        if not isinstance(url, str):
            raise KeysUnavailable("the discovery document has no `jwks_uri`")
        try:
            return check_sign_in_url(url)
        except ValueError:
            raise KeysUnavailable("the discovery document's `jwks_uri` is not https") from None


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[dict, float | None]:
    """A JSON object read to its end (within `JWKS_MAX_BYTES`, however many reads it takes), and
    its `Cache-Control: max-age` if any. A redirect is not followed: it answers no key, and
    following it would skip the https check of the URL it leads to."""
    headers = {"accept": "application/json"}
    async with session.get(url, headers=headers, allow_redirects=False) as response:
        if response.status != 200:
            raise KeysUnavailable(f"{url} answered HTTP {response.status}")
        if (response.content_length or 0) > JWKS_MAX_BYTES:
            raise KeysUnavailable(f"{url} sent more than {JWKS_MAX_BYTES} bytes")
        body = bytearray()
        async for piece in response.content.iter_chunked(64 * 1024):
            body += piece
            if len(body) > JWKS_MAX_BYTES:
                raise KeysUnavailable(f"{url} sent more than {JWKS_MAX_BYTES} bytes")
        max_age = MAX_AGE.search(response.headers.get("cache-control", ""))
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise KeysUnavailable(f"{url} did not send JSON") from None
    if not isinstance(data, dict):
        raise KeysUnavailable(f"{url} did not send a JSON object")
    return data, float(max_age.group(1)) if max_age else None


def _describe(exc: Exception) -> str:
    from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError

    if isinstance(exc, ExpiredTokenError):
        return "token has expired"
    if isinstance(exc, BadSignatureError):
        return "signature does not verify"
    if isinstance(exc, ClaimError):
        return f"claim {getattr(exc, 'claim', '?')!r} is not acceptable"
    return f"token rejected ({type(exc).__name__})"
