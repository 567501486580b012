"""What a token's claims must be, at the edges the other sign-in tests leave open, with real
tokens from the loopback issuer: `iss` is required, scopes may come as an `scp` list (as some
issuers send them), and a caller named by a `client_id` that is not a string is refused."""

from __future__ import annotations

import httpx


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
