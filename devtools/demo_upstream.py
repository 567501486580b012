"""`python -m devtools.demo_upstream`: the fake OpenAI as a standalone server, streaming the demo
answer (or `--tokens N` synthetic ones) to any OpenAI client pointed at the URL it prints.
"""

from __future__ import annotations

import argparse
import asyncio

from devtools.openai_server import OpenAICompatibleServer
from devtools.scripts import Script, demo_script, synthetic_script


def script_from_arguments(tokens: int | None, delay_s: float | None) -> Script:
    """The demo answer at its natural pace unless the command line asks for something else."""
    if tokens is not None:
        return synthetic_script(tokens, delay_s or 0.0)
    script = demo_script()
    if delay_s is not None:
        script.delay_s, script.jitter_s, script.first_delay_s = delay_s, 0.0, 0.0
    return script


async def serve(port: int, script: Script) -> None:
    server = OpenAICompatibleServer(default=script)
    listening = await server.start("127.0.0.1", port)
    print(f"demo upstream listening on {server.base_url}", flush=True)
    async with listening:
        await listening.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, help="stream N synthetic tokens instead of the demo")
    parser.add_argument("--delay", type=float, help="seconds between tokens")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, script_from_arguments(args.tokens, args.delay)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
