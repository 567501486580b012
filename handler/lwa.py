"""The Lambda Web Adapter mode's server: the native runtime's init work, then uvicorn.

The adapter sends no event before `/healthz` answers, so everything done before uvicorn listens
is init, at full CPU: the same steps as the native runtime's (handler/init.py). Started by
handler/bin/lwa-start as `python -m handler.lwa --port $AWS_LWA_PORT`.

With SnapStart, Lambda Web Adapter 1.1.0+ POSTs `AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH` after a
restore and before any traffic (and refuses that path to outside callers); the template sets it
to `AFTER_RESTORE_PATH`, where the app does what the native runtime does after a restore.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
from typing import Any

log = logging.getLogger("relay.lwa")

AFTER_RESTORE_PATH = "/_lwa/after-restore"


class AfterRestoreHook:
    """The app, plus the adapter's after-restore hook at the configured path (POST): the
    snapshot's connections dropped, randomness re-seeded, a stale secret re-read
    (handler/init.py's `after_restore`). A failure answers 500, which fails the restore rather
    than serving traffic from a half-restored app."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        from handler import init

        try:
            await init.after_restore(self.app)
            status = 200
        except Exception as exc:
            log.error("after-restore work failed: %s", type(exc).__name__)
            status = 500
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def with_restore_hook(app: Any) -> Any:
    """`app` behind the after-restore hook when the adapter is told to call one."""
    path = os.environ.get("AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH")
    return AfterRestoreHook(app, path) if path else app


async def serve(port: int) -> None:
    gc.disable()  # as in the native runtime: init.warm turns it back on
    from handler import aiohttp_import

    aiohttp_import.import_aiohttp()
    from handler import init

    steps = init.InitSteps()
    secret = init.start_secret_read(steps)
    with steps.step("app"):
        import uvicorn

        from handler.app import app
    await init.warm(app, secret, steps)
    config = uvicorn.Config(
        with_restore_hook(app),
        host="127.0.0.1",
        port=port,
        http="httptools",
        lifespan="off",
        access_log=False,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    import uvloop

    asyncio.run(serve(args.port), loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    main()
