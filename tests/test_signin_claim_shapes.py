"""What a token's claims must be, at the edges the other sign-in tests leave open, with real
tokens from the loopback issuer: `iss` is required, scopes may come as an `scp` list (as some
issuers send them), and a caller named by a `client_id` that is not a string is refused; a
refused header's `alg` or `typ` is logged cut short."""

from __future__ import annotations

import httpx

from devtools.oidc_issuer import unsigned_token


def status(relay, token: str) -> int:
    headers = {"authorization": f"Bearer {token}"}
    return httpx.post(
        f"{relay.url}/chat", json={"prompt": "hi"}, headers=headers, timeout=15
    ).status_code


def test_a_token_without_an_issuer_is_refused(upstream, signin_relay, issuer):
    relay = signin_relay()
    assert status(relay, issuer.token(iss=None)) == 401
    assert status(relay, issuer.token()) == 200
    assert len(upstream.requests) == 1


def test_required_scopes_may_be_granted_as_an_scp_list(upstream, signin_relay, issuer):
    relay = signin_relay(jwt_required_scopes="chat")
    assert status(relay, issuer.token(scope=None, scp=["openid", "chat"])) == 200
    assert status(relay, issuer.token(scope=None, scp=["openid"])) == 401
    assert len(upstream.requests) == 1


def test_a_machine_token_whose_client_id_is_not_a_string_is_refused(upstream, signin_relay, issuer):
    relay = signin_relay()
    assert status(relay, issuer.token(sub=None, client_id=12345)) == 401
    assert status(relay, issuer.token(sub=None, client_id="machine-1")) == 200
    assert len(upstream.requests) == 1


def test_a_refused_header_value_is_logged_cut_to_20_characters(upstream, signin_relay, caplog):
    """An attacker chooses the header's `alg` and `typ`: the reason logged quotes 20 characters
    of them at most, so a token cannot write its own log lines."""
    relay = signin_relay()
    claims = {"iss": "x", "sub": "someone"}
    assert status(relay, unsigned_token({"alg": "A" * 100}, claims)) == 401
    assert status(relay, unsigned_token({"alg": "RS256", "typ": "T" * 100}, claims)) == 401
    reasons = [r.getMessage() for r in caplog.records if r.name == "relay.access"]
    assert f"sign-in rejected: algorithm {'A' * 20!r} is not accepted" in reasons
    assert f"sign-in rejected: token type {'T' * 20!r} is not an access token's" in reasons
    assert upstream.requests == []
