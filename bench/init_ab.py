"""Which init steps pay: the first request's time at 128 MB's CPU share with and without each.

`python -m bench.init_ab` starts the bench upstream and, for each variant, fresh processes that
import the app, do that variant's steps of handler/init.py at full CPU, move themselves into a
128 MB CPU quota (bench/cold.py's cgroup) and time one `/chat` request through the ASGI app to
its first body byte. Prints the median per variant; the numbers are quoted in
docs/architecture.md ("Cold start").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time

from bench.scenario import prompt
from handler.init import post_scope

VARIANTS = ("none", "connection", "request", "connection+request", "connection+request+freeze")


async def first_byte_ms(app) -> float:
    """One streamed `/chat` through the app: ms to its first body byte."""
    body = json.dumps({"prompt": prompt(8)}).encode()
    started, first, ended = time.perf_counter(), None, asyncio.Event()
    scope = post_scope(
        "/chat", [(b"content-type", b"application/json"), (b"accept", b"text/event-stream")]
    )
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await ended.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal first
        if message["type"] == "http.response.body":
            if first is None and message.get("body"):
                first = time.perf_counter() - started
            if not message.get("more_body"):
                ended.set()

    await app(scope, receive, send)
    return first * 1000


async def one_process(variant: str, procs: str) -> float:
    from handler import init
    from handler.app import app

    if "connection" in variant:
        await app.state.relay.upstream.preconnect()
    if "request" in variant:
        await init._exercise_routes(app)
    if "freeze" in variant:
        gc.freeze()
    with open(procs, "w") as group:
        group.write(str(os.getpid()))
    await asyncio.sleep(0.15)  # a fresh CFS period
    try:
        return await first_byte_ms(app)
    finally:
        await app.state.relay.upstream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--procs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child: one measurement
        import uvloop

        print(
            asyncio.run(one_process(args.variant, args.procs), loop_factory=uvloop.new_event_loop)
        )
        return
    from bench.cold import CpuQuota
    from bench.services import Service, hermetic_env

    quota = CpuQuota()
    if quota.skipped:
        sys.exit(quota.skipped)
    procs = str(quota._group(128) / "cgroup.procs")
    upstream = Service("init-ab-upstream", [sys.executable, "-m", "bench.upstream"], hermetic_env())
    try:
        while not upstream.log_tail().strip():
            time.sleep(0.05)
        env = hermetic_env(
            OPENAI_API_KEY="sk-bench-not-a-real-key",
            OPENAI_BASE_URL=f"http://127.0.0.1:{int(upstream.log_tail().split()[0])}/v1",
            ALLOW_ANONYMOUS="true",
        )
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.trials):
            for variant in VARIANTS:
                child = [sys.executable, "-m", "bench.init_ab", "--variant", variant]
                out = subprocess.run(
                    [*child, "--procs", procs], env=env, capture_output=True, text=True, check=True
                )
                times[variant].append(float(out.stdout.strip().splitlines()[-1]))
        for variant, values in times.items():
            rounded = ", ".join(f"{v:.1f}" for v in values)
            print(f"{variant:28} median {statistics.median(values):6.1f} ms  ({rounded})")
    finally:
        upstream.stop()
        quota.remove()


if __name__ == "__main__":
    main()
