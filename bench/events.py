"""Function URL events (payload format 2.0) for the Lambda contenders: native and buffered."""

from __future__ import annotations

import json

ROUTES = {
    # wire: (path, accept, body for a prompt)
    "sse": ("/chat", "text/event-stream", lambda prompt: {"prompt": prompt}),
    "text": ("/chat", "*/*", lambda prompt: {"prompt": prompt}),
    "openai": (
        "/v1/chat/completions",
        "*/*",
        lambda prompt: {
            "model": "gpt-5.4-mini",
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        },
    ),
}


def function_url_event(wire: str, prompt: str) -> bytes:
    """The event a function URL hands Lambda for this request."""
    path, accept, body = ROUTES[wire]
    return json.dumps(
        {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": "",
            "headers": {
                "host": "bench.lambda-url.us-east-1.on.aws",
                "accept": accept,
                "content-type": "application/json",
                "x-forwarded-proto": "https",
                "x-forwarded-for": "127.0.0.1",
                "x-forwarded-port": "443",
            },
            "requestContext": {
                "accountId": "anonymous",
                "apiId": "bench",
                "domainName": "bench.lambda-url.us-east-1.on.aws",
                "domainPrefix": "bench",
                "http": {
                    "method": "POST",
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": "bench",
                },
                "requestId": "bench",
                "routeKey": "$default",
                "stage": "$default",
                "time": "01/Jan/2026:00:00:00 +0000",
                "timeEpoch": 1767225600000,
            },
            "body": json.dumps(body(prompt)),
            "isBase64Encoded": False,
        }
    ).encode()
