"""The buffered contender: `handler.app.handler` (Mangum) called with function URL events.

`python -m bench.buffered` is the relay process itself; it takes jobs on stdin like the load
client. Its time to first token is the whole answer: nothing reaches a caller before it returns.
"""

from __future__ import annotations

import json
import sys
import time

from bench.client import text_of
from bench.events import function_url_event
from bench.scenario import expected_text, prompt

now = time.perf_counter


class LambdaContext:
    function_name = "bench"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


def sequential(handler, wire: str, tokens: int, count: int) -> dict:
    event = json.loads(function_url_event(wire, prompt(tokens)))
    context = LambdaContext()
    ttft, failures = [], []
    for _ in range(count):
        started = now()
        result = handler(dict(event), context)
        finished = now()
        text, ended = text_of(result.get("body", "").encode(), wire)
        if result.get("statusCode") != 200 or text != expected_text(tokens) or not ended:
            failures.append(f"HTTP {result.get('statusCode')}: {str(result)[:200]}")
        else:
            ttft.append(finished - started)
    return {"ttft_s": ttft, "total_s": ttft, "failures": failures}


def main() -> None:
    from handler.app import handler

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        kind = job.pop("job")
        try:
            result = (
                sequential(handler, **job) if kind == "sequential" else {"error": f"no job {kind}"}
            )
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
