"""The floor of the Lambda-shaped benchmark: a Lambda runtime made of the standard library alone.

`python -m bench.lambda_floor` reads the key from Secrets Manager at init (one `GetSecretValue`
POST with the standard library, unsigned: moto checks no signature, only routes by the service
its `Authorization` header names, and the floor measures the machine, not a signer; the relay
signs with awscrt) and relays each function URL
event's prompt to the upstream, one SSE frame per upstream line, over Lambda's streaming
response: the least any relay can do. `python -m bench.lambda_floor handler.app:handler` is
instead a stand-in for the managed Python runtime: it imports the handler and posts its buffered
result, as AWS's runtime interface client does. Only the standard library is imported here.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import sys
import urllib.parse

API_PREFIX = "/2018-06-01/runtime"
PRELUDE = json.dumps({"statusCode": 200, "headers": {"content-type": "text/event-stream"}})


class Relay:
    """Each event's prompt to the upstream; each upstream delta out as one SSE frame."""

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self.key = read_secret(os.environ["AWS_ENDPOINT_URL"], os.environ["OPENAI_SECRET_ID"])
        base = urllib.parse.urlsplit(os.environ["OPENAI_BASE_URL"])
        self.upstream = http.client.HTTPConnection(base.netloc, timeout=30)
        self.upstream.connect()  # as the relay does at init
        self.path = base.path.rstrip("/") + "/chat/completions"

    def __call__(self, request_id: str, event: dict) -> None:
        prompt = json.loads(event["body"])["prompt"]
        request = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        }
        self.upstream.request(
            "POST",
            self.path,
            json.dumps(request),
            {"authorization": f"Bearer {self.key}", "content-type": "application/json"},
        )
        answer = self.upstream.getresponse()
        out = http.client.HTTPConnection(self.runtime)
        out.putrequest("POST", f"{API_PREFIX}/invocation/{request_id}/response")
        out.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
        out.putheader("Transfer-Encoding", "chunked")
        out.putheader("Content-Type", "application/vnd.awslambda.http-integration-response")
        out.endheaders()
        _chunk(out, PRELUDE.encode() + b"\0" * 8)
        while line := answer.readline():
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            content = (choices[0].get("delta") or {}).get("content")
            if content:
                _chunk(out, b"data: " + json.dumps({"delta": content}).encode() + b"\n\n")
        _chunk(out, b'event: done\ndata: {"finish_reason": "stop"}\n\n')
        out.send(b"0\r\n\r\n")
        out.getresponse().read()
        out.close()


def read_secret(endpoint: str, secret_id: str) -> str:
    """The secret's `SecretString` from Secrets Manager's JSON protocol at `endpoint` (moto)."""
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(endpoint).netloc, timeout=10)
    connection.request(
        "POST",
        "/",
        json.dumps({"SecretId": secret_id}),
        {
            "content-type": "application/x-amz-json-1.1",
            "x-amz-target": "secretsmanager.GetSecretValue",
            # The credential scope moto routes by; no signature (moto checks none).
            "authorization": "AWS4-HMAC-SHA256 Credential=floor/20260101/us-east-1/"
            "secretsmanager/aws4_request, SignedHeaders=host, Signature=unsigned",
        },
    )
    answer = connection.getresponse()
    value = json.loads(answer.read())
    connection.close()
    if answer.status != 200:
        raise RuntimeError(f"GetSecretValue: HTTP {answer.status}")
    return value["SecretString"]


def _chunk(connection: http.client.HTTPConnection, data: bytes) -> None:
    connection.send(b"%x\r\n%s\r\n" % (len(data), data))


class ManagedHandler:
    """A handler function called as the managed runtime calls it; its result posted whole."""

    class Context:
        function_name = "bench"
        memory_limit_in_mb = 128
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

        def __init__(self, request_id: str) -> None:
            self.aws_request_id = request_id

        @staticmethod
        def get_remaining_time_in_millis() -> int:
            return 900_000

    def __init__(self, runtime: str, target: str) -> None:
        module, _, name = target.partition(":")
        self.handler = getattr(importlib.import_module(module), name)
        self.runtime = runtime

    def __call__(self, request_id: str, event: dict) -> None:
        result = json.dumps(self.handler(event, self.Context(request_id)))
        out = http.client.HTTPConnection(self.runtime)
        out.request("POST", f"{API_PREFIX}/invocation/{request_id}/response", result)
        out.getresponse().read()
        out.close()


def main() -> None:
    runtime = os.environ["AWS_LAMBDA_RUNTIME_API"]
    handle = ManagedHandler(runtime, sys.argv[1]) if len(sys.argv) > 1 else Relay(runtime)
    poller = http.client.HTTPConnection(runtime)
    while True:
        poller.request("GET", f"{API_PREFIX}/invocation/next")
        response = poller.getresponse()
        event = json.loads(response.read())
        handle(response.getheader("Lambda-Runtime-Aws-Request-Id"), event)


if __name__ == "__main__":
    main()
