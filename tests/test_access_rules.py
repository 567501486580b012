"""Access rules the audit found unpinned: the `Bearer` scheme in any case, `JWKS_URL` used
without discovery, a key used only with the algorithm it declares, and a withdrawn key's tokens
refused once the JWKS no longer lists it (even tokens the relay had already verified)."""

from __future__ import annotations

import time

import httpx
import pytest

PROMPT = {"prompt": "hi"}


def post(relay, authorization: str | None) -> httpx.Response:
    headers = {"authorization": authorization} if authorization else {}
    return httpx.post(f"{relay.url}/chat", json=PROMPT, headers=headers, timeout=15)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_matched_in_any_case_for_client_tokens(upstream, make_relay, scheme):
    """RFC 9110: the authentication scheme is case-insensitive."""
    relay = make_relay(allow_anonymous=False, client_tokens="client-token-abc")
    assert post(relay, f"{scheme} client-token-abc").status_code == 200
    assert post(relay, f"{scheme} client-token-wrong").status_code == 401


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_the_bearer_scheme_is_matched_in_any_case_for_signed_in_users(
    upstream, signin_relay, issuer, scheme
):
    assert post(signin_relay(), f"{scheme} {issuer.token()}").status_code == 200


def test_another_scheme_carrying_a_valid_token_is_not_a_bearer(upstream, make_relay):
    relay = make_relay(allow_anonymous=False, client_tokens="client-token-abc")
    assert post(relay, "Basic client-token-abc").status_code == 401
    assert post(relay, "Bearerclient-token-abc").status_code == 401


def test_an_explicit_jwks_url_is_fetched_without_any_discovery_request(
    upstream, signin_relay, issuer
):
    relay = signin_relay(jwks_url=issuer.jwks_url)
    assert post(relay, f"Bearer {issuer.token()}").status_code == 200
    assert issuer.jwks_fetches == 1
    assert issuer.discovery_fetches == 0


def test_without_a_jwks_url_discovery_is_asked_once(upstream, signin_relay, issuer):
    relay = signin_relay()
    for _ in range(2):
        assert post(relay, f"Bearer {issuer.token()}").status_code == 200
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 1)


def test_a_key_is_used_only_with_the_algorithm_it_declares(upstream, signin_relay, issuer):
    """A JWK's `alg` binds the key to one algorithm; an empty `alg` is not the token's `RS256`
    (joserfc alone would accept it: it reads an empty `alg` as none given), so it is refused."""
    issuer.add_key("rsa-empty-alg", "RSA", alg="")
    issuer.add_key("rsa-rs256", "RSA", alg="RS256")
    relay = signin_relay()
    assert post(relay, f"Bearer {issuer.token('rsa-rs256')}").status_code == 200
    assert post(relay, f"Bearer {issuer.token('rsa-empty-alg')}").status_code == 401


def test_a_token_of_a_withdrawn_key_is_refused_even_if_verified_before(
    upstream, signin_relay, issuer
):
    relay = signin_relay(jwks_min_refetch_s=0.2)
    accepted = issuer.token("rsa-1")
    assert post(relay, f"Bearer {accepted}").status_code == 200
    assert post(relay, f"Bearer {accepted}").status_code == 200  # now remembered as verified

    # The issuer withdraws rsa-1 (a leaked key); a token of its new key makes the relay re-fetch.
    issuer.add_key("rsa-2", "RSA")
    issuer.publish_only("rsa-2")
    deadline = time.monotonic() + 10
    while issuer.jwks_fetches < 2:
        assert time.monotonic() < deadline, "the relay never fetched the JWKS again"
        post(relay, f"Bearer {issuer.token('rsa-2')}")
        time.sleep(0.05)
    assert post(relay, f"Bearer {issuer.token('rsa-2')}").status_code == 200
    assert post(relay, f"Bearer {accepted}").status_code == 401
