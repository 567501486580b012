"""`make bench`'s plans and tool round-trip sections run on their own at tiny sizes (`--only`),
and such a run keeps the other sections' figures of the results it is merged into.

No timing is asserted; the counts are (DynamoDB requests per admitted request reaching moto's
server, the upstream calls a round trip takes), since they do not move with the machine.
"""

from __future__ import annotations

import json

from tests.helpers import run_bench


def test_only_the_plans_and_tool_sections_run_and_the_earlier_figures_stay(tmp_path):
    earlier = {
        "figures": {"throughput": {"tokens": 7, "trials": 1, "contenders": {}}},
        "contenders": {},
        "meta": {
            "scale": {"ttft_requests": 1, "ttft_tokens": 1, "bulk_tokens": 7, "bulk_trials": 1},
            "commit": "earlier",
            "machine": "x",
            "python": "3",
            "notes": [],
        },
    }
    out, chart = tmp_path / "latest.json", tmp_path / "chart.png"
    out.write_text(json.dumps(earlier))
    run_bench("--scale", "tiny", "--only", "plans,tool_round_trip", "--out", out, "--chart", chart)
    results = json.loads(out.read_text())
    figures = results["figures"]

    # The earlier figures and run stay; the sections say when they were measured.
    assert figures["throughput"] == earlier["figures"]["throughput"]
    assert results["meta"]["commit"] == "earlier"
    assert set(results["meta"]["measured_apart"]) == {"plans", "tool_round_trip"}
    assert not chart.exists()  # the charts draw the other sections: left as they were

    plans = figures["plans"]
    for name in ("plans_off", "plans_on", "plans_limits_spaced", "plans_streams_spaced"):
        assert plans["ttft"][name]["p50_ms"] > 0, name
    for name in ("plans_limits_spaced", "plans_streams_spaced"):
        counted = plans["dynamodb_requests"][name]
        # One conditional write admits each request; one more settles it after the stream.
        assert counted["at_moto"]["UpdateItem (conditional)"] == counted["requests"], counted
        assert counted["admission_per_request"] == 1, counted
        assert counted["after_per_request"] == 1, counted
    assert plans["moto_round_trip_spaced_p50_ms"] > 0
    for name in ("plans_off", "plans_on"):
        counted = plans["calls"][name]
        assert counted["calls_per_request"] > counted["own_calls_per_request"] > 0, counted

    tools = figures["tool_round_trip"]
    trip = tools["ttft"]["tools_round_trip"]
    assert trip["n"] == tools["requests"] and trip["call_p50_ms"] > 0 and trip["answer_p50_ms"] > 0
    assert tools["ttft"]["direct_round_trip"]["n"] == tools["requests"]
    calls = tools["calls"]
    assert calls["calls_per_round_trip"] > calls["calls_per_request"] > 0
    assert tools["added_over_two_requests"] is not None
    assert tools["cpu_over_two_requests"] > 0

    page = (tmp_path / "README.md").read_text()
    assert "Plans (issue 27)" in page and "A frontend tool round trip (issue 28)" in page
    assert (
        "Measured apart from the run above (`python -m bench.run --only plans,tool_round_trip`"
        in page
    )
    targets = {(t["target"], t["contender"]): t["met"] for t in results["targets"]}
    assert any(c == "tools_round_trip" and met is not None for (_, c), met in targets.items())
    assert any(c == "plans_streams_spaced" and met is not None for (_, c), met in targets.items())
