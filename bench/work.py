"""The relay's work per request and per chunk in Python calls, beside the previous release.

On this shared machine a timing swings by tens of percent from one run to the next, and a
throughput trial by more; the number of Python function calls the app makes for a request does
not. So `make bench` also counts them: each tree (this one, and the previous release exported
by bench/run.py) runs in a fresh interpreter of its own, imports its `handler.app` and drives
the ASGI app in-process (no server) against the bench upstream, under cProfile. Streams are
paced (one token every DELAY_MS) so each chunk arrives in a read of its own, as from OpenAI,
and the counts do not depend on how reads happen to coalesce.

- calls per chunk: (calls of a LONG-token stream - those of a SHORT-token one) / (LONG - SHORT)
- calls per request: what a SHORT-token request costs less its chunks, so the fixed part

`python -m bench.work TREE PORT` is one tree's child process and prints its counts as JSON.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
from pathlib import Path

from bench.scenario import prompt, tokens
from bench.services import hermetic_env

SHORT, LONG = 8, 208  # tokens per stream
DELAY_MS = 0.3  # between tokens: every chunk its own read
REPEATS = 5  # streams of each length per count (the counts are totals over them)
MODEL = "gpt-5.4-mini"  # the default of both trees' settings, set explicitly for the previous
ROUTES = {
    "chat_sse": ("/chat", lambda n: {"prompt": prompt(n, DELAY_MS)}),
    "v1": (
        "/v1/chat/completions",
        lambda n: {
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": prompt(n, DELAY_MS)}],
        },
    ),
}


def counts(tree: Path, upstream_port: int, key: str) -> dict[str, dict[str, float]]:
    """Run one tree's child process; its calls per request and per chunk for each route."""
    env = hermetic_env(
        OPENAI_API_KEY=key,
        OPENAI_BASE_URL=f"http://127.0.0.1:{upstream_port}/v1",
        ALLOW_ANONYMOUS="true",
        DEFAULT_MODEL=MODEL,
    )
    result = subprocess.run(
        [sys.executable, "-m", "bench.work", str(tree), str(upstream_port)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench.work in {tree} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def _scope(path: str, body: bytes) -> dict:
    # Like handler.init.post_scope, which this child cannot import: the measured tree's
    # `handler` package must be the only one it loads (the previous release has no init.py).
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench.invalid"),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("bench.invalid", 80),
        "state": {},
    }


async def _stream(app, path: str, body: bytes, count: int) -> None:
    """One request through the app; fails unless it answered 200 with every token."""
    delivered = False
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # no disconnect: the client listens to the end
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(_scope(path, body), receive, send)
    text = b"".join(m.get("body", b"") for m in sent[1:])
    if sent[0]["status"] != 200 or tokens(count)[-1].strip().encode() not in text:
        raise RuntimeError(f"{path}: {sent[0]['status']} {text[-300:]!r}")


async def _calls(app, path: str, body_for, count: int) -> int:
    body = json.dumps(body_for(count)).encode()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(REPEATS):
        await _stream(app, path, body, count)
    profile.disable()
    return pstats.Stats(profile).total_calls


async def _child() -> dict[str, dict[str, float]]:
    import logging

    logging.disable(logging.CRITICAL)  # the request lines: the same for both, and not counted
    from handler.app import app

    figures = {}
    for route, (path, body_for) in ROUTES.items():
        for count in (SHORT, LONG, SHORT):  # warm: first passes and lazy imports
            await _stream(app, path, json.dumps(body_for(count)).encode(), count)
        short = await _calls(app, path, body_for, SHORT) / REPEATS
        long = await _calls(app, path, body_for, LONG) / REPEATS
        per_chunk = (long - short) / (LONG - SHORT)
        figures[route] = {
            "calls_per_chunk": round(per_chunk, 2),
            "calls_per_request": round(short - SHORT * per_chunk, 1),
        }
    return figures


def main() -> None:
    tree = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(tree))  # its `handler` package before this checkout's
    os.chdir(tree)
    import uvloop

    print(json.dumps(uvloop.run(_child())))


if __name__ == "__main__":
    main()
