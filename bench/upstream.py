"""The benchmark's upstream: the demo upstream in its own process, scripted by the prompt.

`python -m bench.upstream` prints its port; a request whose last message is
`bench tokens=N delay_ms=D` (see scenario.py) gets N tokens D ms apart, as fast as it can when D=0;
one whose last message is `bench tool_call pieces=N delay_ms=D`, a call of the bench's tool.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench.scenario import (
    TOOL_NAME,
    parse_prompt,
    parse_tool_call_prompt,
    tokens,
    tool_call_arguments,
)
from devtools.openai_server import OpenAICompatibleServer, RecordedRequest
from devtools.scripts import Script, ScriptedToolCall


class BenchUpstream(OpenAICompatibleServer):
    """One process serves every figure: the prompt, not the command line, picks the script."""

    def __init__(self) -> None:
        super().__init__()
        self._scripts: dict[str, Script] = {}

    def _script_for(self, body: dict, fallback: Script) -> Script:
        messages = body.get("messages") or [{}]
        text = str(messages[-1].get("content", ""))
        script = self._scripts.get(text)
        if script is None and (call := parse_tool_call_prompt(text)) is not None:
            pieces, delay_s = call
            made = ScriptedToolCall(TOOL_NAME, list(tool_call_arguments(pieces)))
            script = self._scripts[text] = Script(tokens=[], tool_calls=[made], delay_s=delay_s)
        if script is None:
            wanted = parse_prompt(text)
            if wanted is None:
                return fallback
            count, delay_s = wanted
            script = self._scripts[text] = Script(tokens=list(tokens(count)), delay_s=delay_s)
        return script

    async def _stream(self, reader, writer, script: Script, events, record) -> bool:
        # The tests' record of every request would grow without bound over a benchmark run.
        self.requests.clear()
        script = self._script_for(events.body, script)
        return await super()._stream(reader, writer, script, events, record)

    async def _pause(self, seconds: float, record: RecordedRequest) -> bool:
        # One timer per pause: the base class polls for hang-ups every 5 ms, which at 500
        # concurrent streams would cost the floor itself more CPU than the relay under test.
        await asyncio.sleep(seconds)
        return not record.hung_up.is_set()


async def serve(port: int) -> None:
    server = BenchUpstream()
    # Room for 500 connections arriving at once (asyncio's default backlog is 100).
    listening = await server.start("127.0.0.1", port, backlog=4096)
    print(server.port, flush=True)
    async with listening:
        await listening.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
