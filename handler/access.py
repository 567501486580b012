"""Who may call the relay, and who is calling: client tokens, JWT sign-in, an IAM function URL,
or (only when explicitly allowed) anyone. With no access method configured, everyone gets 401.

`Access.identify` turns a request into its caller identity (`token:<8 hex>`, `jwt:<sub>`,
`iam:<arn>` keyed by role, `anonymous`): the request log line, quotas and OpenAI's
`safety_identifier` use it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from handler.credentials import Credentials
from handler.errors import SIGN_IN_UNAVAILABLE, UNAUTHORIZED, RelayError
from handler.plans import Plan, Plans
from handler.settings import Settings
from handler.signin import JwtVerifier, KeysUnavailable, SignInRejected, looks_like_jwt

log = logging.getLogger("relay.access")

ANONYMOUS = "anonymous"
HOW_TO_CONFIGURE = (
    "configure client tokens (the secret's `client_tokens`, or CLIENT_TOKENS with "
    "OPENAI_API_KEY), JWT sign-in (JWT_ISSUER and JWT_AUDIENCE), an IAM function URL "
    "(UrlAuthType AWS_IAM), or allow anonymous callers (ALLOW_ANONYMOUS=true)"
)
NO_ACCESS_CONFIGURED = f"the relay accepts no callers yet: {HOW_TO_CONFIGURE}"
MAX_SUBJECT_CHARS = 128


def unauthorized(message: str, *, invalid_token: bool = False) -> RelayError:
    # RFC 6750: a 401 names the scheme; `invalid_token` tells an OIDC client to get a new one.
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return RelayError(UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge})


@functools.lru_cache(maxsize=4096)
def safety_identifier(api_key: str, caller: str) -> str:
    """The caller as OpenAI sees it (`safety_identifier`): stable per caller and key, and a keyed
    hash, so neither OpenAI nor anyone reading its logs learns the caller's own id. Kept for the
    callers seen last: a warm caller's request skips the HMAC (a few µs before its first token)."""
    return hmac.new(api_key.encode(), caller.encode(), hashlib.sha256).hexdigest()[:32]


def iam_caller_arn(scope: Mapping[str, Any], lwa_mode: bool) -> str | None:
    """The signed caller's ARN from the function URL's request context.

    Natively (Mangum) the event is in the scope; behind the Lambda Web Adapter it comes as the
    adapter's `x-amzn-request-context` header, which the adapter always overwrites (so it is only
    read in that mode, where a caller cannot forge it)."""
    event = scope.get("aws.event")
    if isinstance(event, dict):
        context = event.get("requestContext")
    elif lwa_mode:
        raw = dict(scope.get("headers") or ()).get(b"x-amzn-request-context")
        try:
            context = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            context = None
    else:
        context = None
    try:
        arn = context["authorizer"]["iam"]["userArn"]
    except (KeyError, TypeError):
        return None
    return arn if isinstance(arn, str) and arn else None


def iam_identity(arn: str) -> str:
    """What an IAM caller is counted as: an assumed role's ARN without the session name, which
    whoever assumes the role chooses (`...:assumed-role/<role>`), so a new session is not a new
    set of limits; a federated user's account (`...:federated-user`), whose name the holder of
    the federating credentials chooses; any other principal (a user, a root) as it is."""
    prefix, _, resource = arn.rpartition(":")
    kind, _, rest = resource.partition("/")
    if prefix.startswith("arn:") and ":sts:" in prefix:
        if kind == "assumed-role" and rest:
            return f"{prefix}:assumed-role/{rest.split('/', 1)[0]}"
        if kind == "federated-user":
            return f"{prefix}:federated-user"
    return arn


def _bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


class Who(NamedTuple):
    """A caller as the access rule knows them: their identity and their plan."""

    identity: str
    plan: Plan


class Access:
    """The access rules of one process (built once from `Settings`), and the plans callers get."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.plans = Plans(settings)
        self._iam = settings.url_auth_type == "AWS_IAM"
        self._lwa = bool(settings.aws_lwa_invoke_mode)
        self._jwt: JwtVerifier | None = None
        if settings.jwt_issuer and not self._iam:
            self._jwt = JwtVerifier(settings)
        self._warned_closed_for: Credentials | None = None

    def log_startup(self) -> None:
        """One line saying who may call; a warning when that is nobody (or a setting is
        ignored), so an operator sees it before the first 401. An invalid PLANS: an error."""
        self.plans.log_startup()
        settings = self._settings
        secret = not settings.openai_api_key
        if secret and settings.client_tokens:
            log.warning(
                "access: CLIENT_TOKENS is ignored: with a secret (OPENAI_SECRET_ID) the client "
                "tokens are the secret's `client_tokens`"
            )
        if self._iam:
            ignored = " (bearer tokens and JWT_ISSUER are not used)" if settings.jwt_issuer else ""
            log.info("access: IAM function URL: callers sign with SigV4%s", ignored)
            return
        methods = []
        if secret:
            methods.append("client tokens in the secret's `client_tokens`, if it has any")
        elif settings.client_tokens:
            methods.append(f"{len(settings.client_tokens)} client tokens from CLIENT_TOKENS")
        if self._jwt is not None:
            methods.append(f"JWT sign-in from {settings.jwt_issuer}")
        if settings.allow_anonymous:
            methods.append("ANONYMOUS callers (ALLOW_ANONYMOUS=true)")
        if methods:
            log.info("access: %s", "; ".join(methods))
        else:
            log.warning("access: refusing every caller: %s", NO_ACCESS_CONFIGURED)

    async def identify(self, scope: Mapping[str, Any], creds: Credentials) -> Who:
        """The caller's identity and plan, or `401 unauthorized` (`503` when sign-in keys are
        down or the plans are misconfigured)."""
        if self._iam:
            arn = iam_caller_arn(scope, self._lwa)
            if arn is None:
                raise unauthorized("the request carries no IAM caller (AWS_IAM function URL)")
            record = scope.get("state", {}).get("request_log")
            if record is not None:
                record.caller_arn = arn  # the log keeps who exactly, session name included
            identity = f"iam:{iam_identity(arn)}"
            return Who(identity, self.plans.for_role(identity))
        headers = dict(scope.get("headers") or ())
        authorization = headers.get(b"authorization")
        bearer = _bearer(authorization.decode("latin-1") if authorization else None)
        if bearer is not None and (creds.client_tokens or self._jwt is not None):
            return await self._check_bearer(bearer, creds)
        if self._settings.allow_anonymous:
            return Who(ANONYMOUS, self.plans.named(None))
        if creds.client_tokens or self._jwt is not None:
            raise unauthorized(
                "a bearer token is required: a client token or a signed-in user's access token"
            )
        self._warn_closed(creds)
        raise unauthorized(NO_ACCESS_CONFIGURED)

    async def _check_bearer(self, bearer: str, creds: Credentials) -> Who:
        caller = creds.caller_for(bearer)
        if caller is not None:
            return Who(caller, self.plans.named(creds.token_plans.get(caller)))
        if self._jwt is None or not looks_like_jwt(bearer):
            raise unauthorized("the bearer token is not valid", invalid_token=True)
        try:
            signed_in = await self._jwt.verify(bearer)
        except SignInRejected as exc:
            log.info("sign-in rejected: %s", exc.reason)
            message = f"the access token is not valid: {exc.reason}"
            raise unauthorized(message, invalid_token=True) from None
        except KeysUnavailable as exc:
            log.error("sign-in unavailable: %s", exc.reason)
            raise RelayError(SIGN_IN_UNAVAILABLE, "the relay cannot check sign-ins now") from None
        identity = f"jwt:{signed_in.subject[:MAX_SUBJECT_CHARS]}"
        return Who(identity, self.plans.for_claims(signed_in.claims))

    def _warn_closed(self, creds: Credentials) -> None:
        # The secret is read at the first request, so this is when a secret without tokens
        # (and nothing else configured) is found: said once per secret value.
        if self._warned_closed_for is not creds and creds.source == "secret":
            self._warned_closed_for = creds
            log.warning(
                "access: the secret has no `client_tokens` and no other access method is "
                "configured: refusing every caller (%s)",
                HOW_TO_CONFIGURE,
            )
