"""The native runtime as a process on the runtime-API emulator, for the tests: `start_runtime`
(a fixture in conftest) starts `python -m handler.runtime` with the given environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devtools.runtime_api import ThreadedRuntimeApi

ROOT = Path(__file__).resolve().parent.parent


class RuntimeProcess:
    """`python -m handler.runtime` on the emulator; its output is read as it comes, so that a
    busy runtime never blocks on a full pipe."""

    def __init__(self, api: ThreadedRuntimeApi, env: dict[str, str]) -> None:
        self.api = api
        self.process = subprocess.Popen(
            [sys.executable, "-m", "handler.runtime"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def invoke(self, event: dict | bytes, deadline_in_s: float = 900.0, **details):
        return self.api.invoke(event, deadline_in_s, **details).wait()

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        return "".join(self.lines)

    def request_logs(self, count: int = 0, within_s: float = 10.0) -> list[dict]:
        """The relay's one JSON line per request, once at least `count` have been read from the
        process (or `within_s` has passed): a line comes after its answer has ended."""
        deadline = time.monotonic() + within_s
        while True:
            logs = [json.loads(line) for line in self.lines if line.startswith('{"request_id"')]
            if len(logs) >= count or time.monotonic() > deadline:
                return logs
            time.sleep(0.01)


def ended_before_its_deadline(invocation) -> bool:
    """Whether the last byte of the answer reached the emulator before the invocation's
    deadline (when Lambda would have cut the function off): an ordering, not a time bound."""
    last_arrival = invocation.chunks[-1][0]  # time.monotonic() on the emulator's side
    wall_clock_of_it = time.time() - (time.monotonic() - last_arrival)
    return wall_clock_of_it * 1000 < invocation.deadline_ms


@pytest.fixture
def runtime_api():
    api = ThreadedRuntimeApi().start()
    yield api
    api.stop()


@pytest.fixture
def start_runtime(runtime_api, upstream):
    from tests.conftest import TEST_KEY  # here: conftest imports this module

    started: list[RuntimeProcess] = []

    def start(**env: str) -> RuntimeProcess:
        environment = {
            "PATH": os.environ["PATH"],
            "AWS_LAMBDA_RUNTIME_API": runtime_api.address,
            "AWS_LAMBDA_FUNCTION_NAME": "relay",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "OPENAI_API_KEY": TEST_KEY,
            "OPENAI_BASE_URL": upstream.base_url,
            "ALLOW_ANONYMOUS": "true",
            **env,
        }
        runtime = RuntimeProcess(runtime_api, {k: v for k, v in environment.items() if v})
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        output = runtime.stop()
        assert TEST_KEY not in output
