"""`python -m bench.profile` (bench/profile.py): the instructions per request of `make bench`,
per Python function, counted by callgrind against the bench upstream, each function named from
the trampolines of Python's perf support (`-X perf`)."""

from __future__ import annotations

from bench import profile

REQUESTS = (3, 9)  # small: only what the profile names and how its figures nest is asserted


def test_a_relayed_request_is_profiled_per_python_function():
    per_request = profile.profile(REQUESTS, route="v1")

    # The relay's own functions and FastAPI's are named, each with what a request spends in it.
    route = per_request["handler/app.py:chat_completions"]
    upstream = per_request["handler/relay.py:Upstream.open"]
    identify = per_request["handler/app.py:identify"]
    solve = per_request["fastapi/dependencies/utils.py:solve_dependencies"]
    whole = per_request["handler/requestlog.py:RequestLogMiddleware.__call__"]
    # Inclusive: the upstream call is within the route, the route and the dependencies (the
    # caller among them) within the request's middleware, and none is nothing.
    assert 0 < upstream < route < whole, per_request
    assert 0 < identify < solve < whole, per_request
    assert route + solve < whole, per_request
    # Per request: the import and the warm-up are not in the figures. The app's module ran
    # once in each run, so its difference is all but nothing (a run's job, longer by a digit).
    assert abs(per_request.get("handler/app.py:<module>", 0)) < whole / 1000, per_request

    page = profile.table(per_request, top=5, match=["handler/relay.py"])
    lines = page.splitlines()
    assert len(lines) <= 5 and any(
        line.endswith("handler/relay.py:Upstream.open") for line in lines
    )
    assert all("handler/relay.py" in line for line in lines)
    assert f"{upstream:>12,}  handler/relay.py:Upstream.open" in lines
