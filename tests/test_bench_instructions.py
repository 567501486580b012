"""`make bench`'s instructions per request (bench/work.py): counted by valgrind's callgrind in
the relay's own process against the bench upstream, and in the two framework apps it is set
beside (bench/framework_apps.py); then written into the page as bench/report.py renders it.

No figure is asserted beyond its order: a relayed request does more than a route that answers
at once, and FastAPI's path with three nested dependencies more than a Starlette route.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import report, work
from bench.services import Service, free_port, hermetic_env

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = (5, 25)  # a small difference: the order of the figures is all that is asserted


def test_instructions_per_request_are_counted_for_the_relay_and_the_frameworks():
    port = free_port()
    upstream = Service(
        "upstream-instructions",
        [sys.executable, "-m", "bench.upstream", "--port", str(port)],
        hermetic_env(),
    ).wait_for_port(port)
    try:
        relay = work.instructions(ROOT, port, "sk-test-not-a-key", REQUESTS, routes=("v1",))
    finally:
        upstream.stop()
    framework = work.framework_instructions(REQUESTS)
    assert relay is not None and framework is not None, (
        "valgrind is missing (make test installs it)"
    )
    fastapi, starlette = framework["fastapi"], framework["starlette"]
    # An upstream call, the policy and a stream of eight tokens, beyond FastAPI's own path.
    assert relay["v1"] > fastapi > starlette > 0, (relay, framework)

    figure = {
        "requests": list(REQUESTS),
        "warm_up": work.INSTRUCTION_WARM_UP,
        "trees": {"relay": relay},
        "framework": framework,
    }
    page = "\n".join(report._instruction_lines(figure, {"v1": "/v1 passthrough"}, work.SHORT))
    assert f"| /v1 passthrough | {relay['v1']:,} | - | - |" in page
    assert f"(5 and 25, each after {work.INSTRUCTION_WARM_UP} unmeasured)" in page
    assert f"{fastapi:,} instructions per request on FastAPI" in page
    assert f"{fastapi - starlette:+,}." in page


def test_without_valgrind_the_figure_says_it_was_skipped():
    figure = {"requests": [50, 250], "warm_up": 20, "trees": None, "framework": None}
    page = "\n".join(report._instruction_lines(figure, {"v1": "/v1 passthrough"}, work.SHORT))
    assert "Skipped: valgrind is not installed here." in page
    assert "| /v1 passthrough |" not in page
