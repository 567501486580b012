"""What a frontend tool round trip costs the relay, against two ordinary requests (issue 28's goal:
no more than two): calls to the model per round trip, the relay's CPU per round trip, and the
time to the first token each step adds.

Run: `.venv/bin/python -m bench.tool_round_trip [--requests N]`; it prints its figures and
writes them to `bench/results/tool-round-trip.json`. The relay runs in a process of
its own (uvicorn, as `make dev` and the Lambda Web Adapter mode serve it) so its CPU can be read
apart from the client's; the fake OpenAI answers at once (no pauses), so what is measured is the
relay and loopback, not a model. An ordinary request streams 8 tokens of text; a round trip is
a tool call (3 argument pieces) answered by the client, then the same 8 tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from httpx_sse import connect_sse

from devtools.openai_server import OpenAICompatibleServer
from devtools.scripts import Script, ScriptedToolCall

TOOLS = [{"name": "get_time_zone", "parameters": {"type": "object", "properties": {}}}]
TEXT = Script(tokens=[f"tok{i} " for i in range(8)])
CALL = Script(tokens=[], tool_calls=[ScriptedToolCall("get_time_zone", ["{", '"a":', "1}"])])
QUESTION = {"role": "user", "content": "What time zone am I in?"}
BLOCK = 50
RESULT = Path(__file__).parent / "results" / "tool-round-trip.json"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_relay(upstream: OpenAICompatibleServer) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "OPENAI_API_KEY": "sk-bench-0123456789abcdef",
        "OPENAI_BASE_URL": upstream.base_url,
        "ALLOW_ANONYMOUS": "true",
        "CHAT_TOOLS": json.dumps(TOOLS),
    }
    command = [sys.executable, "-m", "uvicorn", "handler.app:app", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    relay = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/healthz")
            return relay, url
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("the relay did not start")


def one_answer(client: httpx.Client, url: str, messages: list) -> tuple[float, list, str]:
    """Seconds to the first frame with content, the complete tool calls, and the text."""
    started = time.perf_counter()
    first = None
    calls, text = [], ""
    with connect_sse(client, "POST", url + "/chat", json={"messages": messages}) as source:
        for event in source.iter_sse():
            if event.event in ("message", "tool_call") and first is None:
                first = time.perf_counter() - started
            data = event.json()
            if event.event == "message":
                text += data["delta"]
            elif event.event == "tool_call" and "arguments" in data:
                calls.append(data)
    return first or 0.0, calls, text


def round_trip(client: httpx.Client, url: str) -> tuple[float, float]:
    """A tool round trip as a frontend makes it: the call, then its result sent back.
    Returns (seconds to the call's first frame, seconds to the final answer's first token)."""
    started = time.perf_counter()
    call_ttft, calls, _ = one_answer(client, url, [QUESTION])
    call = calls[0]
    turn = {
        "role": "assistant",
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
        ],
    }
    result = {"role": "tool", "tool_call_id": call["id"], "content": "Europe/Paris"}
    answer_started = time.perf_counter()
    answer_ttft, _, text = one_answer(client, url, [QUESTION, turn, result])
    assert text == "".join(TEXT.tokens)
    return call_ttft, answer_started - started + answer_ttft


def cpu_s(process: psutil.Process) -> float:
    """The process's CPU seconds, all threads: from the scheduler's nanosecond count where
    Linux has it (psutil's user and system times come in 10 ms ticks)."""
    try:
        total = 0
        for thread in Path(f"/proc/{process.pid}/task").iterdir():
            total += int((thread / "schedstat").read_text().split()[0])
        return total / 1e9
    except OSError:
        times = process.cpu_times()
        return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    count = parser.parse_args().requests
    upstream = OpenAICompatibleServer(default=TEXT).serve_in_thread()
    relay, url = start_relay(upstream)
    process = psutil.Process(relay.pid)
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(30):  # warm-up: pools, caches, the first imports of each path
                one_answer(client, url, [QUESTION])
                upstream.enqueue(CALL)
                round_trip(client, url)
            # Blocks of each kind in turn, so a slow spell of this shared machine weighs on
            # both alike.
            ordinary, trips = [], []
            ordinary_cpu = trip_cpu = 0.0
            ordinary_calls = trip_calls = 0
            for _ in range(max(1, count // BLOCK)):
                calls_before, before = len(upstream.requests), cpu_s(process)
                ordinary += [one_answer(client, url, [QUESTION])[0] for _ in range(BLOCK)]
                ordinary_cpu += cpu_s(process) - before
                ordinary_calls += len(upstream.requests) - calls_before
                calls_before, before = len(upstream.requests), cpu_s(process)
                for _ in range(BLOCK):
                    upstream.enqueue(CALL)
                    trips.append(round_trip(client, url))
                trip_cpu += cpu_s(process) - before
                trip_calls += len(upstream.requests) - calls_before
            ordinary_cpu, ordinary_calls = (
                ordinary_cpu / len(ordinary),
                ordinary_calls / len(ordinary),
            )
            trip_cpu, trip_calls = trip_cpu / len(trips), trip_calls / len(trips)
    finally:
        relay.terminate()
        relay.wait(10)
        upstream.stop()
    ms = lambda values: round(statistics.median(values) * 1000, 3)  # noqa: E731
    report = {
        "requests": len(ordinary),
        "note": "one run on a shared 2-CPU machine (other work running)",
        "ordinary": {
            "ttft_ms_median": ms(ordinary),
            "relay_cpu_ms_per_request": round(ordinary_cpu * 1000, 3),
            "model_calls_per_request": ordinary_calls,
        },
        "tool_round_trip": {
            "call_ttft_ms_median": ms([call for call, _ in trips]),
            "final_answer_ttft_ms_median": ms([answer for _, answer in trips]),
            "ttft_added_ms_median": round(ms([a for _, a in trips]) - ms(ordinary), 3),
            "relay_cpu_ms_per_round_trip": round(trip_cpu * 1000, 3),
            "model_calls_per_round_trip": trip_calls,
            "relay_cpu_against_two_ordinary_requests": round(trip_cpu / (2 * ordinary_cpu), 3),
        },
    }
    text = json.dumps(report, indent=2)
    RESULT.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
