"""moto's standalone server on a loopback port: the local Secrets Manager (and any other AWS
service moto emulates) of `make dev`, `make invoke` and the tests.
"""

from __future__ import annotations

import logging

from moto.server import ThreadedMotoServer


def start_moto_server() -> tuple[ThreadedMotoServer, str]:
    """Start moto on an ephemeral loopback port; the server (to `stop()`) and its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"
