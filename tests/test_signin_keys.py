"""Sign-in's keys and what a token must be, against the loopback OIDC issuer: the JWKS is fetched
again when its max-age runs out (between a floor and a ceiling) and a withdrawn key stops
verifying, remembered tokens included; `client_id` is an audience only without `aud`; ID tokens
are refused; the JWKS is read to its end however it arrives, within a size cap, and never
through a redirect; `JWKS_URL` skips discovery; a key's declared `alg` must be the token's."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.helpers import LoopbackHandler, loopback_server


def status(relay, token: str) -> int:
    headers = {"authorization": f"Bearer {token}"}
    return httpx.post(
        f"{relay.url}/chat", json={"prompt": "hi"}, headers=headers, timeout=15
    ).status_code


def test_a_withdrawn_key_stops_verifying_once_the_jwks_max_age_runs_out(
    upstream, signin_relay, issuer
):
    issuer.jwks_cache_control = "public, max-age=1"
    relay = signin_relay(jwks_min_refetch_s=0.5)
    by_withdrawn, by_kept = issuer.token("rsa-1"), issuer.token("ec-1")
    assert [status(relay, by_withdrawn), status(relay, by_kept)] == [200, 200]
    assert status(relay, by_withdrawn) == 200  # remembered, and the JWKS is still fresh
    assert issuer.jwks_fetches == 1

    issuer.publish_only("ec-1")  # the issuer withdraws rsa-1 (a known kid: no refetch for it)
    time.sleep(1.2)
    assert status(relay, by_withdrawn) == 401  # remembered before, forgotten with its key
    assert status(relay, issuer.token("rsa-1")) == 401
    assert status(relay, by_kept) == 200  # verified by a key the issuer still publishes
    assert issuer.jwks_fetches == 2


def test_without_cache_control_the_jwks_is_fetched_again_at_the_ceiling(
    upstream, signin_relay, issuer
):
    relay = signin_relay(jwks_min_refetch_s=0.5, jwks_max_age_s=1)
    token = issuer.token("rsa-1")
    assert status(relay, token) == 200
    issuer.publish_only("ec-1")
    assert status(relay, token) == 200  # within the ceiling: the keys are fresh
    time.sleep(1.2)
    assert status(relay, token) == 401
    assert issuer.jwks_fetches == 2


def test_a_max_age_shorter_than_the_floor_does_not_refetch_on_every_request(
    upstream, signin_relay, issuer
):
    issuer.jwks_cache_control = "max-age=0"
    relay = signin_relay()  # JWKS_MIN_REFETCH_S: 60 s
    for _ in range(4):
        assert status(relay, issuer.token("rsa-1", sub=f"user-{time.monotonic()}")) == 200
    assert issuer.jwks_fetches == 1


def test_client_id_is_an_audience_only_when_aud_is_absent(upstream, signin_relay, issuer):
    relay = signin_relay()
    assert status(relay, issuer.token(aud="another-api", client_id="relay-app")) == 401
    assert status(relay, issuer.token(aud=None, client_id="relay-app")) == 200
    assert status(relay, issuer.token(aud=["another-api", "relay-app"])) == 200
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("token_args", "expected"),
    [
        ({"aud": None, "client_id": "relay-app", "token_use": "id"}, 401),  # Cognito's ID token
        ({"token_use": "access"}, 200),
        ({"typ": "id+jwt"}, 401),
        ({"typ": "at+jwt"}, 200),
        ({"typ": "application/at+JWT"}, 200),
        ({"typ": "JWT"}, 200),
    ],
)
def test_a_token_that_says_it_is_an_id_token_is_refused(
    upstream, signin_relay, issuer, caplog, token_args, expected
):
    assert status(signin_relay(), issuer.token(**token_args)) == expected
    if expected == 401:
        reasons = [r.getMessage() for r in caplog.records if r.name == "relay.access"]
        assert any("access token" in reason for reason in reasons), reasons


def test_an_explicit_jwks_url_is_used_without_discovery(upstream, signin_relay, issuer):
    direct = signin_relay(jwks_url=issuer.jwks_url)
    assert status(direct, issuer.token()) == 200
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (0, 1)
    assert status(signin_relay(), issuer.token()) == 200
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (1, 2)


def test_a_key_declared_for_another_algorithm_does_not_verify(
    upstream, signin_relay, issuer, caplog
):
    """The same RSA key could check an RS256 signature, but the issuer published it for RS384
    only: the relay's own check refuses the token (joserfc would refuse it too, later, with a
    less telling reason; the check is what names the mismatch), as it refuses an RS256 header
    on an EC key."""
    published = RSAKey.generate_key(
        2048, parameters={"kid": "rsa-384", "use": "sig", "alg": "RS384"}
    )
    issuer.keys["rsa-384"] = published
    issuer.published.append("rsa-384")
    relay = signin_relay()
    assert status(relay, issuer.token("rsa-384", alg="RS384")) == 200
    # The same key material without its `alg`, as a forger holding it would sign.
    unlabelled = {k: v for k, v in published.as_dict(private=True).items() if k != "alg"}
    issuer.keys["rsa-384"] = RSAKey.import_key(unlabelled)
    assert status(relay, issuer.token("rsa-384", alg="RS256")) == 401
    assert status(relay, issuer.token("ec-1", alg="ES256")) == 200
    reasons = [r.getMessage() for r in caplog.records if r.name == "relay.access"]
    assert "sign-in rejected: the key for this `kid` is not a RS256 key" in reasons
    assert len(upstream.requests) == 2


def jwks_server(issuer, mode: str):
    """A loopback JWKS endpoint that serves `issuer`'s keys in two writes 200 ms apart
    (`split`), as a 302 to the issuer's JWKS (`redirect`), or as more than 512 KB without a
    length (`huge`)."""

    class Handler(LoopbackHandler):
        def do_GET(self):
            if mode == "redirect":
                self.send_response(302)
                self.send_header("location", issuer.jwks_url)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            data = json.dumps(issuer.jwks()).encode()
            if mode == "huge":
                data = json.dumps({"keys": [], "padding": "x" * 600_000}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            if mode == "split":
                self.send_header("content-length", str(len(data)))
            self.end_headers()
            half = len(data) // 2
            self.wfile.write(data[:half])
            self.wfile.flush()
            time.sleep(0.2)
            self.wfile.write(data[half:])

    return loopback_server(Handler)


def test_a_jwks_that_arrives_in_two_writes_is_read_to_its_end(upstream, signin_relay, issuer):
    with jwks_server(issuer, "split") as url:
        relay = signin_relay(jwks_url=f"{url}/jwks.json")
        assert status(relay, issuer.token()) == 200


def test_a_redirect_is_not_followed(upstream, signin_relay, issuer, caplog):
    with jwks_server(issuer, "redirect") as url:
        relay = signin_relay(jwks_url=f"{url}/jwks.json")
        assert status(relay, issuer.token()) == 503
    assert issuer.jwks_fetches == 0
    assert any("answered HTTP 302" in r.getMessage() for r in caplog.records)
    assert upstream.requests == []


def test_a_jwks_over_the_size_cap_is_refused(upstream, signin_relay, issuer, caplog):
    with jwks_server(issuer, "huge") as url:
        relay = signin_relay(jwks_url=f"{url}/jwks.json")
        assert status(relay, issuer.token()) == 503
    assert any("more than 524288 bytes" in r.getMessage() for r in caplog.records)
