"""moto's standalone server on a loopback port: the local Secrets Manager and DynamoDB (and any
other AWS service moto emulates) of `make dev`, `make invoke`, the tests and the benchmark.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class MotoServer:
    """moto's app on a loopback port, in a thread, answering one request at a time.

    DynamoDB applies the writes to one item one after another, so of 20 concurrent conditional
    `UpdateItem`s against a limit of 5 exactly 5 succeed. moto's own threaded server evaluates
    the condition and writes the item without a lock, and under load lets a sixth through; run
    one at a time, moto keeps DynamoDB's promise (connections are still served concurrently)."""

    def __init__(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def one_request_at_a_time(environ: dict, start_response: Any) -> Any:
            with lock:
                return app(environ, start_response)

        self._server = make_server(
            "127.0.0.1", 0, one_request_at_a_time, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> MotoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_moto_server() -> tuple[MotoServer, str]:
    """Start moto on an ephemeral loopback port; the server (to `stop()`) and its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access lines
    server = MotoServer().start()
    return server, server.endpoint


def moto_client(service: str, endpoint: str) -> Any:
    """A boto3 client of `service` on the moto server at `endpoint` (dummy credentials)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def create_quota_table(endpoint: str, name: str) -> str:
    """The per-caller quota table as template.yaml declares it (partition key `pk` of type
    string, TTL on `expires_at`, on-demand), in the moto server at `endpoint`; its name."""
    dynamodb = moto_client("dynamodb", endpoint)
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    return name
