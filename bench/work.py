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
- own calls per request: the calls of the relay's own functions (its `handler` package) in a
  whole SHORT-token request
- a tool round trip (issue 28): the calls of both its steps (the answer that ends in a call of
  the bench's tool, the conversation carrying its result answered with SHORT tokens), against
  those of an ordinary SHORT-token request on the same relay, whole (chunks included)
- instructions per request (`instructions`): the machine instructions a whole SHORT-token
  request costs the relay's process, counted by valgrind's callgrind, which weighs each call by
  what it costs where the counts above weigh them alike. Unpaced (the tokens come at once), two
  runs that differ only in how many requests they make, so the import and the warm-up cancel
  out; the figure repeats from one run to the next to within 1%. `framework_instructions`
  counts the same for FastAPI's request path with the relay's shape of dependencies (three
  nested ones that do nothing) and for a Starlette route, both answering at once: the
  framework's part of the figure.

`python -m bench.work TREE PORT JOB` is one tree's child process and prints its counts as JSON;
with a job naming `requests` it only serves them (under callgrind), and with `-` for TREE the
job names one of the framework apps instead of a route.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.scenario import TOOL_NAME, TOOL_PIECES, prompt, tokens, tool_call_prompt
from bench.services import hermetic_env

SHORT, LONG = 8, 208  # tokens per stream
DELAY_MS = 0.3  # between tokens: every chunk its own read
REPEATS = 5  # streams of each length per count (the counts are totals over them)
MODEL = "gpt-5.4-mini"  # the default of both trees' settings, set explicitly for the previous
ROUTES = {
    "chat_sse": ("/chat", lambda n, delay_ms=DELAY_MS: {"prompt": prompt(n, delay_ms)}),
    "v1": (
        "/v1/chat/completions",
        lambda n, delay_ms=DELAY_MS: {
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": prompt(n, delay_ms)}],
        },
    ),
}
# Instructions: requests of each of two runs (per request = the difference over theirs), and the
# unmeasured requests before them (first passes, lazy imports, the pool's connection).
INSTRUCTION_REQUESTS = (50, 250)
INSTRUCTION_WARM_UP = 20
_INSTRUCTIONS = re.compile(rb"I\s+refs:\s+([\d,]+)")


def counts(
    tree: Path,
    upstream_port: int,
    key: str,
    *,
    routes: tuple[str, ...] = tuple(ROUTES),
    headers: dict[str, str] | None = None,
    tool_round_trip: bool = False,
    **settings: str,
) -> dict[str, dict[str, float]]:
    """Run one tree's child process; its calls per request and per chunk for each of `routes`
    (and a tool round trip's, with `tool_round_trip`), sent with `headers` to the relay
    configured with `settings` (anonymous callers unless they say otherwise)."""
    env = relay_env(upstream_port, key, **settings)
    job = {"routes": list(routes), "headers": headers or {}, "tool_round_trip": tool_round_trip}
    result = subprocess.run(
        [sys.executable, "-m", "bench.work", str(tree), str(upstream_port), json.dumps(job)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench.work in {tree} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def relay_env(upstream_port: int, key: str, **settings: str) -> dict[str, str]:
    return hermetic_env(
        OPENAI_API_KEY=key,
        OPENAI_BASE_URL=f"http://127.0.0.1:{upstream_port}/v1",
        DEFAULT_MODEL=MODEL,
        **({"ALLOW_ANONYMOUS": "true"} | settings),
    )


def instructions(
    tree: Path,
    upstream_port: int,
    key: str,
    requests: tuple[int, int] = INSTRUCTION_REQUESTS,
    *,
    routes: tuple[str, ...] = tuple(ROUTES),
) -> dict[str, int] | None:
    """The instructions a whole SHORT-token request of each of `routes` costs `tree`'s relay
    (anonymous callers), or None where valgrind is not installed."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    env, child = relay_env(upstream_port, key), [str(tree), str(upstream_port)]
    return {
        route: _per_request(valgrind, child, env, {"instructions": route}, requests)
        for route in routes
    }


def framework_instructions(
    requests: tuple[int, int] = INSTRUCTION_REQUESTS,
) -> dict[str, int] | None:
    """The instructions of a request that FastAPI's request path costs with three nested
    dependencies that do nothing, and that a Starlette route costs, both answering at once
    (None without valgrind): the framework's share of the figures above."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    return {
        framework: _per_request(
            valgrind, ["-", "0"], hermetic_env(), {"framework": framework}, requests
        )
        for framework in ("fastapi", "starlette")
    }


def _per_request(
    valgrind: str, child: list[str], env: dict[str, str], job: dict, requests: tuple[int, int]
) -> int:
    """Two runs of the child under callgrind, side by side (a count does not depend on the
    machine's load), that differ only in the requests they make: the difference per request."""
    counts = []
    for _, err in callgrind_runs(valgrind, child, env, job, requests):
        found = _INSTRUCTIONS.search(err)
        if found is None:
            raise RuntimeError(f"no count from callgrind: {err[-2000:].decode(errors='replace')}")
        counts.append(int(found.group(1).replace(b",", b"")))
    fewer, more = requests
    return round((counts[1] - counts[0]) / (more - fewer))


def callgrind_runs(
    valgrind: str,
    child: list[str],
    env: dict[str, str],
    job: dict,
    requests: tuple[int, ...],
    *,
    python_args: tuple[str, ...] = (),
    out_file: str = "/dev/null",
) -> list[tuple[int, bytes]]:
    """The child under callgrind once per count of `requests`, side by side; each run's process
    id and callgrind's report (`out_file` may name the id as callgrind does, `%p`)."""
    command = [sys.executable, *python_args, "-m", "bench.work", *child]
    where = Path(__file__).resolve().parent.parent
    # One seed for str hashes: with a random one, dicts and sets differ run to run and so do
    # the counts, by about a million instructions.
    env = {**env, "PYTHONHASHSEED": "0"}
    # A fresh checkout (or an exported tree) has no bytecode yet: side by side, the runs
    # would race to compile it, and each count what it compiled (tens of millions). One run
    # first, uncounted, writes it; the counted ones then read it and write none.
    subprocess.run(
        [*command, json.dumps({**job, "requests": 0})],
        cwd=where,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=300,
    )
    callgrind = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    runs = [
        subprocess.Popen(
            [*callgrind, *command, json.dumps({**job, "requests": n})],
            cwd=where,
            env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in requests
    ]
    reports = []
    for run in runs:
        _, err = run.communicate(timeout=900)
        if run.returncode != 0:
            raise RuntimeError(
                f"bench.work under callgrind failed: {err[-2000:].decode(errors='replace')}"
            )
        reports.append((run.pid, err))
    return reports


def _scope(path: str, body: bytes, headers: dict[str, str]) -> dict:
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
            *((name.encode(), value.encode()) for name, value in headers.items()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("bench.invalid", 80),
        "state": {},
    }


async def _stream(app, path: str, body: bytes, expected: bytes, headers: dict[str, str]) -> bytes:
    """One request through the app; its body, or a failure unless it answered 200 with
    `expected` (the last token, or the tool call's name) in it."""
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

    await app(_scope(path, body, headers), receive, send)
    text = b"".join(m.get("body", b"") for m in sent[1:])
    if sent[0]["status"] != 200 or expected not in text:
        raise RuntimeError(f"{path}: {sent[0]['status']} {text[-300:]!r}")
    return text


def _last_token(count: int) -> bytes:
    return tokens(count)[-1].strip().encode()


async def _calls(requests, repeats: int = REPEATS, own: bool = False) -> int:
    """The Python calls of `repeats` runs of the coroutine function `requests`; with `own`,
    only those of functions of the relay's own `handler` package."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(repeats):
        await requests()
    profile.disable()
    stats = pstats.Stats(profile)
    if not own:
        return stats.total_calls
    import handler

    package = str(Path(handler.__file__).parent) + os.sep
    return sum(
        calls for (file, _, _), (_, calls, *_) in stats.stats.items() if file.startswith(package)
    )


async def _route_calls(app, path: str, body_for, headers: dict[str, str]) -> dict[str, float]:
    async def streams(count: int) -> None:
        await _stream(app, path, json.dumps(body_for(count)).encode(), _last_token(count), headers)

    for count in (SHORT, LONG, SHORT):  # warm: first passes and lazy imports
        await streams(count)
    short = await _calls(lambda: streams(SHORT)) / REPEATS
    long = await _calls(lambda: streams(LONG)) / REPEATS
    per_chunk = (long - short) / (LONG - SHORT)
    return {
        "calls_per_chunk": round(per_chunk, 2),
        "calls_per_request": round(short - SHORT * per_chunk, 1),
        # The relay's own functions' calls in a whole SHORT-token request: those per read are
        # few, so unlike the figures above this one hardly moves when reads coalesce.
        "own_calls_per_request": round(await _calls(lambda: streams(SHORT), own=True) / REPEATS, 1),
    }


async def _tool_round_trip_calls(app, headers: dict[str, str]) -> dict[str, float]:
    """A tool round trip on `/chat` SSE as a frontend makes it, against an ordinary request
    of the same answer: the calls of each, whole. The bodies are written before counting, so
    what is counted is the relay's work, not the bench's JSON."""
    from bench.client import tool_calls_of

    question = {"role": "user", "content": tool_call_prompt(TOOL_PIECES, DELAY_MS)}
    asking = json.dumps({"messages": [question]}).encode()
    [call] = tool_calls_of(await _stream(app, "/chat", asking, TOOL_NAME.encode(), headers), "sse")
    turn = {"role": "assistant", "content": None, "tool_calls": [_as_openai(call)]}
    result = {"role": "tool", "tool_call_id": call["id"], "content": prompt(SHORT, DELAY_MS)}
    answering = json.dumps({"messages": [question, turn, result]}).encode()
    plain = json.dumps({"prompt": prompt(SHORT, DELAY_MS)}).encode()
    # The upstream double names every call alike, so the conversation written above carries
    # the id of each call counted below (checked on each).
    called = json.dumps(call["id"]).encode()

    async def ordinary() -> None:
        await _stream(app, "/chat", plain, _last_token(SHORT), headers)

    async def round_trip() -> None:
        await _stream(app, "/chat", asking, called, headers)
        await _stream(app, "/chat", answering, _last_token(SHORT), headers)

    for requests in (ordinary, round_trip, ordinary, round_trip):  # warm
        await requests()
    per_request = await _calls(ordinary) / REPEATS
    per_round_trip = await _calls(round_trip) / REPEATS
    return {
        "calls_per_request": round(per_request, 1),
        "calls_per_round_trip": round(per_round_trip, 1),
        "round_trip_over_two_requests": round(per_round_trip / (2 * per_request), 3),
    }


def _as_openai(call: dict) -> dict:
    function = {"name": call["name"], "arguments": call["arguments"]}
    return {"id": call["id"], "type": "function", "function": function}


async def _child(job: dict) -> dict[str, dict[str, float]]:
    import logging

    logging.disable(logging.CRITICAL)  # the request lines: the same for both, and not counted
    from handler.app import app

    headers = job["headers"]
    figures = {route: await _route_calls(app, *ROUTES[route], headers) for route in job["routes"]}
    if job["tool_round_trip"]:
        figures["tool_round_trip"] = await _tool_round_trip_calls(app, headers)
    return figures


async def _instruction_child(job: dict) -> None:
    """`job["requests"]` unpaced SHORT-token requests, after the warm-up: a relay's route, or
    one of the two framework apps (bench/framework_apps.py)."""
    import logging

    logging.disable(logging.CRITICAL)
    if "framework" in job:
        from bench.framework_apps import APPS

        app, path, body, expected = APPS[job["framework"]](), "/", b"{}", b"ok"
    else:
        from handler.app import app

        path, body_for = ROUTES[job["instructions"]]
        body = json.dumps(body_for(SHORT, 0)).encode()
        expected = _last_token(SHORT)
    for _ in range(INSTRUCTION_WARM_UP + job["requests"]):
        await _stream(app, path, body, expected, {})


def main() -> None:
    job = json.loads(sys.argv[3])
    import uvloop

    if sys.argv[1] != "-":
        tree = Path(sys.argv[1]).resolve()
        sys.path.insert(0, str(tree))  # its `handler` package before this checkout's
        os.chdir(tree)
    if "requests" in job:
        uvloop.run(_instruction_child(job))
        return
    print(json.dumps(uvloop.run(_child(job))))


if __name__ == "__main__":
    main()
