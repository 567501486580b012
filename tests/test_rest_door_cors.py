"""The REST API door for browsers: with `AllowedOrigins`, a preflight `OPTIONS` reaches the relay
without an API key and the relay answers it (native runtime, REST proxy event, on the runtime-API
emulator); other methods still need the key; the integration waits as long as a stream may last."""

from __future__ import annotations

from tests.cloudformation import deployed, of_type
from tests.test_runtime_rest import STREAMING_REST, rest_event

ORIGIN = "https://chat.example.com"


def rest_api_paths(**parameters: str) -> dict:
    [api] = of_type(
        deployed(FrontDoor="RestApi", **parameters), "AWS::ApiGateway::RestApi"
    ).values()
    return api["Properties"]["Body"]["paths"]


def test_a_preflight_needs_no_api_key_and_reaches_the_relay():
    for path in rest_api_paths(AllowedOrigins=ORIGIN).values():
        preflight, other = path["options"], path["x-amazon-apigateway-any-method"]
        assert preflight["security"] == []  # no API key: a browser sends none with it
        assert other["security"] == [{"api_key": []}]  # everything else still needs one
        assert (
            preflight["x-amazon-apigateway-integration"] == other["x-amazon-apigateway-integration"]
        )


def test_without_allowed_origins_there_is_no_keyless_method():
    for path in rest_api_paths().values():
        assert set(path) == {"x-amazon-apigateway-any-method"}


def test_the_relay_gets_the_origins_only_behind_the_rest_api():
    cfn = deployed(FrontDoor="RestApi", AllowedOrigins=ORIGIN)
    variables = cfn["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["CORS_ORIGINS"] == ORIGIN
    url_door = deployed(AllowedOrigins=ORIGIN)
    variables = url_door["Resources"]["RelayFunction"]["Properties"]["Environment"]["Variables"]
    assert "CORS_ORIGINS" not in variables  # the function URL answers CORS itself
    [url] = of_type(url_door, "AWS::Lambda::Url").values()
    assert url["Properties"]["Cors"]["AllowOrigins"] == [ORIGIN]


def test_the_integration_waits_as_long_as_a_streaming_integration_may():
    """15 minutes (900,000 ms) is API Gateway's limit for a streamed response; the function's
    own Timeout ends it sooner."""
    for path in rest_api_paths(AllowedOrigins=ORIGIN).values():
        for method in path.values():
            assert method["x-amazon-apigateway-integration"]["timeoutInMillis"] == 900000


def test_the_relay_answers_a_rest_preflight_without_credentials(start_runtime, upstream):
    """The OPTIONS event as API Gateway sends it, to a relay that wants a bearer token."""
    runtime = start_runtime(
        CLIENT_TOKENS="client-token-rest-1",
        ALLOW_ANONYMOUS="",
        CORS_ORIGINS=ORIGIN,
        **STREAMING_REST,
    )
    event = rest_event(
        method="OPTIONS",
        origin=ORIGIN,
        access_control_request_method="POST",
        access_control_request_headers="authorization,content-type",
    )
    event["body"] = None
    prelude, _ = runtime.invoke(event).prelude_and_body()
    assert prelude["statusCode"] == 200
    headers = {k.lower(): v for k, v in prelude["headers"].items()}
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"].lower()
    # The answer itself carries the origin too, and the relay's own auth still applies.
    refused = runtime.invoke(rest_event(origin=ORIGIN))
    prelude, _ = refused.prelude_and_body()
    assert prelude["statusCode"] == 401
    assert {k.lower(): v for k, v in prelude["headers"].items()}[
        "access-control-allow-origin"
    ] == ORIGIN


def test_a_preflight_from_another_origin_gets_no_cors_headers(start_runtime, upstream):
    runtime = start_runtime(CORS_ORIGINS=ORIGIN, **STREAMING_REST)
    event = rest_event(
        method="OPTIONS", origin="https://evil.example", access_control_request_method="POST"
    )
    event["body"] = None
    prelude, _ = runtime.invoke(event).prelude_and_body()
    headers = {k.lower() for k in prelude.get("headers", {})}
    assert "access-control-allow-origin" not in headers
