"""`make invoke EVENT=events/chat.json`: one invocation through the real streaming runtime, with
no Docker: the runtime-API emulator, the local stack (moto Secrets Manager, demo upstream unless
OPENAI_API_KEY is set) and `python -m handler.runtime`, printing each chunk as it arrives.

The streaming counterpart of `sam local invoke`, which buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from devtools.runtime_api import PRELUDE_END, ThreadedRuntimeApi
from infra.local_stack import (
    DEMO_KEY,
    LOCAL_SECRET_ID,
    start_demo_upstream,
    start_secrets_manager,
)

ROOT = Path(__file__).resolve().parent.parent


def main(event_path: str) -> int:
    event = json.loads(Path(event_path).read_text())
    real_key = os.environ.pop("OPENAI_API_KEY", None)
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    start_secrets_manager(real_key or DEMO_KEY)
    os.environ["OPENAI_SECRET_ID"] = LOCAL_SECRET_ID
    os.environ.setdefault("ALLOW_ANONYMOUS", "true")  # a local invocation, as `make dev`
    if not real_key:
        os.environ["OPENAI_BASE_URL"] = start_demo_upstream()
    api = ThreadedRuntimeApi().start()
    env = {
        **os.environ,
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "relay-local",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    }
    runtime = subprocess.Popen([sys.executable, "-m", "handler.runtime"], cwd=ROOT, env=env)
    try:
        invocation = api.invoke(event)
        _print_chunks_as_they_arrive(invocation)
    finally:
        runtime.terminate()
        runtime.wait(10)
        api.stop()
    mode = "streamed" if invocation.streamed else invocation.kind
    print(f"{event_path}: {mode} answer, {len(invocation.chunks)} chunks", file=sys.stderr)
    if invocation.zero_chunk:
        print(f"{'':12s} end of stream; trailers: {invocation.trailers or 'none'}")
    return 0 if invocation.kind == "response" and not invocation.trailers else 1


def _print_chunks_as_they_arrive(invocation) -> None:
    """Milliseconds since the runtime received the event, then the chunk (prelude decoded)."""
    printed = 0
    deadline = time.monotonic() + 120
    while printed < len(invocation.chunks) or not invocation.done.wait(0.005):
        assert time.monotonic() < deadline, "no answer within 120 s"
        for at, piece in invocation.chunks[printed:]:
            offset = (at - invocation.delivered_at) * 1000
            prelude, separator, rest = piece.partition(PRELUDE_END)
            if separator:
                print(f"{offset:9.1f} ms  prelude {prelude.decode()} + 8 NULs", flush=True)
                piece = rest
            if piece:
                print(f"{offset:9.1f} ms  {piece.decode(errors='replace')!r}", flush=True)
            printed += 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m infra.invoke events/chat.json")
    sys.exit(main(sys.argv[1]))
