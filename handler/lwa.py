"""The Lambda Web Adapter mode's server: the native runtime's init work, then uvicorn.

The adapter sends no event before `/healthz` answers, so everything done before uvicorn listens
is init, at full CPU: the same steps as the native runtime's (handler/init.py). Started by
handler/bin/lwa-start as `python -m handler.lwa --port $AWS_LWA_PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc


async def serve(port: int) -> None:
    gc.disable()  # as in the native runtime: init.warm turns it back on
    from handler import init

    steps = init.InitSteps()
    secret = init.start_secret_read(steps)
    with steps.step("app"):
        import uvicorn

        from handler.app import app
    await init.warm(app, secret, steps)
    config = uvicorn.Config(
        app,
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
