"""The runtime-API emulator of devtools/runtime_api.py, driven from the benchmark's own event
loop: `invoke` queues an event and its `done` is a future resolved when the answer is complete.

Times are `time.monotonic()`, the emulator's clock, taken as each chunk arrives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass

from devtools import runtime_api as emulator
from devtools.runtime_api import PRELUDE_END

__all__ = ["PRELUDE_END", "Invocation", "RuntimeApiEmulator", "now"]
now = time.monotonic


@dataclass
class Invocation(emulator.Invocation):
    done: asyncio.Future | None = None  # type: ignore[assignment]

    @property
    def error(self) -> bytes | None:
        return self.raw if self.kind == "error" else None

    def body(self) -> tuple[dict, bytes]:
        """(prelude, or the buffered result without its body; the response body)."""
        if self.streamed:
            prelude, separator, body = self.raw.partition(PRELUDE_END)
            return (json.loads(prelude or b"{}"), body) if separator else ({}, self.raw)
        result = json.loads(self.raw)
        body = result.pop("body", "") or ""
        if result.get("isBase64Encoded"):
            return result, base64.b64decode(body)
        return result, body.encode()


class RuntimeApiEmulator(emulator.RuntimeApiEmulator):
    async def start(self) -> RuntimeApiEmulator:
        self._server = await super().start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def invoke(self, event: bytes) -> Invocation:
        invocation = Invocation(event, int((time.time() + 900) * 1000))
        invocation.done = asyncio.get_running_loop().create_future()
        self.put(invocation)
        return invocation

    def finished(self, invocation: Invocation) -> None:
        invocation.done.set_result(now())

    async def close(self) -> None:
        self._server.close()
        # Connections of a stopped runtime still waiting in `/next` for an event: ended here,
        # not left to the collector ("Task was destroyed but it is pending", 500 at a time).
        for task in list(self._connections):
            task.cancel()
