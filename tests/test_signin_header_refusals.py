"""A token its header alone refuses (not a JWT, `alg: none`, HS256, an ID token's `typ`) is a
401 without the issuer's keys (handler/signin.py): the relay does not fetch the JWKS for it,
and while the issuer cannot be reached it is still the caller's 401, not the issuer's 503.
Against the loopback OIDC issuer (devtools/oidc_issuer.py)."""

from __future__ import annotations

import httpx

from devtools.oidc_issuer import hs256_token, unsigned_token


def status(relay, token: str) -> int:
    headers = {"authorization": f"Bearer {token}"}
    response = httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=headers, timeout=15)
    return response.status_code


def refused_by_their_header(issuer) -> list[str]:
    claims = issuer.claims()
    return [
        "not.a.jwt",
        unsigned_token({"alg": "none", "kid": "rsa-1"}, claims),
        hs256_token(b"a shared secret", {"kid": "rsa-1"}, claims),
        issuer.token(typ="id+jwt"),
    ]


def test_a_token_refused_by_its_header_is_401_and_fetches_no_keys(upstream, signin_relay, issuer):
    relay = signin_relay()
    assert [status(relay, token) for token in refused_by_their_header(issuer)] == [401] * 4
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (0, 0)
    assert status(relay, issuer.token()) == 200  # the keys are fetched for a token that needs them
    assert issuer.jwks_fetches == 1
    assert len(upstream.requests) == 1


def test_while_the_issuer_is_down_a_token_refused_by_its_header_is_still_401(
    upstream, signin_relay, issuer
):
    """Right after a failed fetch (no keys, and no new fetch allowed yet) a good token is 503;
    a token that no key could make good is the caller's mistake all the same."""
    issuer.jwks_status = 500
    relay = signin_relay()
    assert status(relay, issuer.token()) == 503
    assert [status(relay, token) for token in refused_by_their_header(issuer)] == [401] * 4
    assert upstream.requests == []
