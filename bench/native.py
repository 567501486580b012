"""The native-runtime contender: `python -m handler.runtime` against a runtime-API emulator.

`python -m bench.native` hosts the emulator, starts runtime processes and times every answer
where Lambda would see it: from the moment the event was handed out to each chunk's arrival.
Jobs come on stdin, one JSON line each, like the load client's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.client import text_of
from bench.events import function_url_event
from bench.package import as_on_lambda
from bench.runtime_api import PRELUDE_END, Invocation, RuntimeApiEmulator
from bench.scenario import FIRST_TOKEN, expected_text, prompt

ROOT = Path(__file__).resolve().parent.parent
now = time.monotonic  # the runtime-API emulator's clock


def verify(invocation: Invocation, wire: str, tokens: int) -> str | None:
    if invocation.error is not None:
        return f"runtime reported an error: {invocation.error[:200]!r}"
    if invocation.trailers:
        return f"stream ended with error trailers: {invocation.trailers}"
    try:
        meta, body = invocation.body()
        text, ended = text_of(body, wire)
    except (ValueError, KeyError) as exc:
        return f"unparsable answer: {exc}"
    status = meta.get("statusCode", 200)
    if status != 200 or text != expected_text(tokens) or not ended:
        return f"status {status}, {len(text)} chars, ended={ended}: {body[:120]!r}"
    return None


class RuntimeProcess:
    """One runtime process with its own emulator (a killed runtime must not eat the next event)."""

    def __init__(self, env: dict[str, str], package: str | None, importtime: bool) -> None:
        self.env, self.package, self.importtime = env, package, importtime
        self.emulator = RuntimeApiEmulator()
        self.process: subprocess.Popen | None = None
        self.spawned_at = 0.0
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    async def start(self) -> RuntimeProcess:
        await self.emulator.start()
        return self

    def spawn(self) -> None:
        env = {**self.env, "AWS_LAMBDA_RUNTIME_API": self.emulator.address}
        argv = [sys.executable]
        if self.package:
            argv, lambda_env = as_on_lambda(Path(self.package))
            env.update(lambda_env)
        if self.importtime:
            argv += ["-X", "importtime"]
        argv += ["-m", "handler.runtime"]
        self.spawned_at = now()
        self.process = subprocess.Popen(
            argv,
            cwd=self.package or ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # A file, not a pipe: -X importtime writes more than a pipe holds before anyone reads.
            stderr=self._stderr,
        )

    async def invoke(self, wire: str, tokens: int, delay_ms: float = 0) -> Invocation:
        invocation = self.emulator.invoke(function_url_event(wire, prompt(tokens, delay_ms)))
        await asyncio.wait_for(self._unless_dead(invocation.done), 300)
        return invocation

    async def _unless_dead(self, done: asyncio.Future) -> None:
        while not done.done():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the runtime exited with {self.process.returncode}")
            await asyncio.wait({done}, timeout=0.2)

    def peak_rss_kib(self) -> int | None:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return None

    async def stop(self) -> str:
        """End the process; its stderr."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        await self.emulator.close()
        self._stderr.seek(0)
        stderr = self._stderr.read().decode("utf-8", "replace")
        self._stderr.close()
        return stderr


class Driver:
    def __init__(self) -> None:
        self.runtime: RuntimeProcess | None = None

    async def spawn(self, env: dict[str, str]) -> dict:
        """A warm runtime for the figures that measure steady state."""
        if self.runtime is not None:
            await self.runtime.stop()
        self.runtime = await RuntimeProcess(env, None, False).start()
        self.runtime.spawn()
        first = await self.runtime.invoke("sse", 1)  # warm-up: imports, first connection
        problem = verify(first, "sse", 1)
        if problem:
            raise RuntimeError(problem)
        return {"pid": self.runtime.process.pid}

    async def sequential(self, wire: str, tokens: int, count: int) -> dict:
        ttft, totals, failures, http_chunks = [], [], [], []
        for _ in range(count):
            invocation = await self.runtime.invoke(wire, tokens)
            problem = verify(invocation, wire, tokens)
            first = invocation.first_arrival_of(FIRST_TOKEN)
            if problem or first is None:
                failures.append(problem or "no first token")
                continue
            ttft.append(first - invocation.delivered_at)
            totals.append(invocation.chunks[-1][0] - invocation.delivered_at)
            http_chunks.append(len(invocation.chunks))
        return {"ttft_s": ttft, "total_s": totals, "failures": failures, "http_chunks": http_chunks}

    async def concurrent(
        self, env: dict[str, str], wire: str, tokens: int, delay_ms: float, count: int
    ) -> dict:
        """`count` streams at once through one fresh runtime process with that many pollers
        (Lambda Managed Instances): an unmeasured burst to fill its pools, then the measured
        one. Wall time from queueing the events to the last answer's end, as Lambda would see
        it, and the process's peak RSS before and after."""
        env = {**env, "AWS_LAMBDA_MAX_CONCURRENCY": str(count)}
        await self.spawn(env)
        warm_rss = self.runtime.peak_rss_kib()
        await asyncio.gather(*(self.runtime.invoke(wire, tokens, delay_ms) for _ in range(count)))
        started = now()
        invocations = await asyncio.gather(
            *(self.runtime.invoke(wire, tokens, delay_ms) for _ in range(count))
        )
        ttft, failures = [], []
        for invocation in invocations:
            problem = verify(invocation, wire, tokens)
            first = invocation.first_arrival_of(FIRST_TOKEN)
            if problem or first is None:
                failures.append(problem or "no first token")
                continue
            ttft.append(first - started)
        finished = max(invocation.done.result() for invocation in invocations)
        peak_rss = self.runtime.peak_rss_kib()
        await self.stop()
        return {
            "wall_s": finished - started,
            "ttft_s": ttft,
            "ok": len(ttft),
            "failed": len(failures),
            "failures": failures[:5],
            "peak_rss_kib": peak_rss,
            "warm_rss_kib": warm_rss,
        }

    async def peak_rss(self) -> dict:
        return {"peak_rss_kib": self.runtime.peak_rss_kib()}

    async def cold_start(
        self, env: dict[str, str], package: str, bytecode: bool, importtime: bool = False
    ) -> dict:
        """A fresh process to the first byte (and first token) of its first answer."""
        env = dict(env)
        if not bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        runtime = await RuntimeProcess(env, package, importtime).start()
        invocation = runtime.emulator.invoke(function_url_event("sse", prompt(8)))
        runtime.spawn()
        try:
            await asyncio.wait_for(runtime._unless_dead(invocation.done), 120)
        finally:
            stderr = await runtime.stop()
        problem = verify(invocation, "sse", 8)
        if problem:
            raise RuntimeError(f"{problem} {stderr[-500:]}")
        first_token = invocation.first_arrival_of(FIRST_TOKEN)
        result = {
            "first_byte_s": invocation.chunks[0][0] - runtime.spawned_at,
            "first_token_s": first_token - runtime.spawned_at,
            "event_taken_s": invocation.delivered_at - runtime.spawned_at,
        }
        if importtime:
            result["importtime"] = [
                ln for ln in stderr.splitlines() if ln.startswith("import time:")
            ]
        return result

    async def stop(self) -> dict:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
        return {"stopped": True}


async def serve_jobs() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    driver = Driver()
    print(json.dumps({"ready": True, "prelude_end": PRELUDE_END.hex()}), flush=True)
    while line := await reader.readline():
        job = json.loads(line)
        try:
            result = await getattr(driver, job.pop("job"))(**job)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    await driver.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(serve_jobs())
