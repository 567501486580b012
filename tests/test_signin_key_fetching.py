"""Sign-in's fetch of the issuer's keys at its edges, against loopback servers: a fetch that fails
(an error status, a refused connection, not JSON, a discovered `jwks_uri` that is not https) is
503 for every request meanwhile, and the issuer is not asked again on every request; JWKS entries
that are not asymmetric signing keys, or do not parse, are skipped without spoiling the others; a
JWKS of exactly the size cap is read; a known `kid` does not fetch the JWKS again; a token without
`kid` verifies only against an issuer that publishes one key; a remembered token stays good while
the key that verified it is published, whatever its `kid` has become."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.helpers import LoopbackHandler, just_past_a_whole_second, loopback_server


def answer(relay, token: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"}
    return httpx.post(f"{relay.url}/chat", json={"prompt": "hi"}, headers=headers, timeout=15)


def status(relay, token: str) -> int:
    return answer(relay, token).status_code


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "relay.access"]


@contextmanager
def serving(body: bytes, path: str = "/jwks.json") -> Iterator[str]:
    """A loopback server that answers GET `path` with `body` (200, with its length); its URL."""

    class Handler(LoopbackHandler):
        def do_GET(self):
            if self.path == path:
                self.answer(200, body, "application/json")
            else:
                self.answer(404)

    with loopback_server(Handler) as url:
        yield url


def test_while_the_jwks_cannot_be_fetched_every_request_is_503_not_401(
    upstream, signin_relay, issuer, caplog
):
    """A valid token is never told it is invalid because the issuer is down: right after a
    failed fetch (when no new fetch is allowed yet) the answer is still 503, not a 401 that
    would make a client throw its token away. Nor is the issuer asked once per request."""
    issuer.jwks_status = 500
    relay = signin_relay()
    answers = [answer(relay, issuer.token()) for _ in range(4)]
    assert [a.status_code for a in answers] == [503] * 4
    assert {a.json()["error"]["type"] for a in answers} == {"sign_in_unavailable"}
    assert 1 <= issuer.jwks_fetches < len(answers)
    assert not any(m.startswith("sign-in rejected") for m in messages(caplog))
    assert upstream.requests == []


def test_a_jwks_that_never_answers_is_503_when_the_fetchs_time_is_up_not_a_second_later(
    upstream, signin_relay, issuer, caplog
):
    """The keys' fetch is bounded by `JWKS_TIMEOUT_S`, to the second it says: aiohttp rounds a
    total timeout of 5 s or more up to the next whole second of the event loop's clock (the
    monotonic one) unless told not to. The request is sent just past a whole second of that
    clock, so a rounded bound would end nearly a second late."""
    from handler.signin import JWKS_TIMEOUT_S

    relay = signin_relay(jwks_url=issuer.jwks_url)  # no discovery: the JWKS is the one fetch
    token = issuer.token()
    issuer.hold_jwks = threading.Event()
    try:
        sent = just_past_a_whole_second()
        response = answer(relay, token)
        waited = time.monotonic() - sent
    finally:
        issuer.hold_jwks.set()
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "sign_in_unavailable"
    assert issuer.jwks_fetches == 1
    assert any("fetching the issuer's keys failed: " in m for m in messages(caplog))
    # Rounded up, the bound would have ended about 0.95 s after the fetch's 5 s.
    assert JWKS_TIMEOUT_S - 0.05 < waited < JWKS_TIMEOUT_S + 0.7, waited
    assert upstream.requests == []


def test_an_issuer_that_refuses_the_connection_is_503(upstream, signin_relay, issuer, caplog):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    relay = signin_relay(jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    assert status(relay, issuer.token()) == 503
    assert any("fetching the issuer's keys failed" in m for m in messages(caplog))
    assert upstream.requests == []


def test_a_jwks_that_is_not_a_json_object_is_503(upstream, signin_relay, issuer, caplog):
    for body, reason in ((b"<html>keys</html>", "did not send JSON"), (b"[]", "a JSON object")):
        with serving(body) as url:
            assert status(signin_relay(jwks_url=f"{url}/jwks.json"), issuer.token()) == 503
        assert any(reason in m for m in messages(caplog)), messages(caplog)
    assert upstream.requests == []


def test_a_discovered_jwks_uri_that_is_not_https_is_503_and_not_fetched(
    upstream, signin_relay, issuer, caplog
):
    """The discovery document is the issuer's, but the keys it points at would come over plain
    http from another host: refused like a configured http `JWKS_URL` would be."""
    discovery: dict = {"jwks_uri": "http://keys.example.com/jwks.json"}

    class Handler(LoopbackHandler):
        def do_GET(self):
            self.answer(200, json.dumps(discovery).encode(), "application/json")

    with loopback_server(Handler) as url:
        discovery["issuer"] = url
        relay = signin_relay(jwt_issuer=url)
        assert status(relay, issuer.token(iss=url)) == 503
    assert any("`jwks_uri` is not https" in m for m in messages(caplog)), messages(caplog)
    assert upstream.requests == []


def test_entries_that_are_not_usable_signing_keys_are_skipped(upstream, signin_relay, issuer):
    """Ahead of the issuer's real keys, the JWKS lists what a JWKS may also hold or get wrong:
    not an object, an encryption key, a symmetric key, keys that do not parse. Each is skipped;
    the real keys still verify, and a token signed with the encryption key does not."""
    encryption = RSAKey.generate_key(2048, parameters={"kid": "enc-1"})
    entries = [
        "not-an-object",
        {**encryption.as_dict(private=False), "use": "enc"},
        {"kty": "oct", "kid": "oct-1", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
        {"kty": "RSA", "kid": "no-modulus"},  # joserfc: a missing parameter
        {"kty": "EC", "kid": "off-curve", "crv": "P-256", "x": "AAAA", "y": "AAAA"},  # ValueError
        *issuer.jwks()["keys"],
    ]
    with serving(json.dumps({"keys": entries}).encode()) as url:
        relay = signin_relay(jwks_url=f"{url}/jwks.json")
        assert status(relay, issuer.token("rsa-1")) == 200
        assert status(relay, issuer.token("ec-1")) == 200
        header = {"alg": "RS256", "kid": "enc-1"}
        by_encryption_key = jwt.encode(header, issuer.claims(), encryption, algorithms=["RS256"])
        assert status(relay, by_encryption_key) == 401
    assert len(upstream.requests) == 2


def test_a_jwks_of_exactly_the_size_cap_is_read(upstream, signin_relay, issuer):
    document = {"keys": issuer.jwks()["keys"], "padding": ""}
    document["padding"] = "x" * (512 * 1024 - len(json.dumps(document)))
    body = json.dumps(document).encode()
    assert len(body) == 512 * 1024
    with serving(body) as url:
        assert status(signin_relay(jwks_url=f"{url}/jwks.json"), issuer.token()) == 200


def test_a_known_kid_does_not_fetch_the_jwks_again(upstream, signin_relay, issuer):
    """Once `JWKS_MIN_REFETCH_S` has passed a re-fetch would be allowed, but a token whose `kid`
    is in the cached keys has no reason for one (the keys' max-age has not run out)."""
    relay = signin_relay(jwks_min_refetch_s=0.1)
    assert status(relay, issuer.token("rsa-1")) == 200
    time.sleep(0.3)
    assert status(relay, issuer.token("rsa-1", sub="user-2")) == 200
    assert status(relay, issuer.token("ec-1")) == 200
    assert issuer.jwks_fetches == 1


def kidless_token(issuer) -> str:
    return jwt.encode({"alg": "RS256"}, issuer.claims(), issuer.keys["rsa-1"], algorithms=["RS256"])


def test_a_token_without_kid_verifies_only_when_the_issuer_publishes_one_key(
    upstream, signin_relay, issuer
):
    issuer.publish_only("rsa-1")
    assert status(signin_relay(), kidless_token(issuer)) == 200
    issuer.publish_only("rsa-1", "ec-1")  # which of two keys signed it is not for us to guess
    assert status(signin_relay(), kidless_token(issuer)) == 401
    assert len(upstream.requests) == 1


def test_a_remembered_token_stays_good_while_its_key_is_published_even_under_another_kid(
    upstream, signin_relay, issuer
):
    """docs/api.md: a verified token is remembered until its `exp` (with the leeway) while the
    key that verified it is still in the JWKS. The issuer moves `rsa-1` to a new key and lists
    the old one as `rsa-1-old`: the token verified before is still good (it would not verify
    afresh: its `kid` now names the new key)."""
    issuer.jwks_cache_control = "max-age=1"
    relay = signin_relay(jwks_min_refetch_s=0.5, jwt_leeway_s=60)
    token = issuer.token("rsa-1", exp=int(time.time()) + 30)
    assert status(relay, token) == 200
    old = issuer.keys["rsa-1"].as_dict(private=True)
    issuer.keys["rsa-1-old"] = RSAKey.import_key({**old, "kid": "rsa-1-old"})
    issuer.add_key("rsa-1", "RSA", publish=False)
    issuer.publish_only("rsa-1", "rsa-1-old", "ec-1")
    time.sleep(1.2)  # past the JWKS's max-age: the next request fetches it again
    assert status(relay, token) == 200
    assert issuer.jwks_fetches == 2
    resigned = issuer.token("rsa-1-old", sub="user-2")  # the old key signs under its new kid
    assert status(relay, resigned) == 200
