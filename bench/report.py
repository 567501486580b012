"""What a run's numbers mean: the targets, the Markdown tables, the PNG chart, bench/README.md.

`python -m bench.report` writes bench/README.md again from bench/results/latest.json.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

TTFT_LIMIT_MS = 1.0
SSE_RATE = 15_000
SSE_OVER_BASELINE = 8.0
PASSTHROUGH_RATE = 25_000
CONCURRENT_WALL_RATIO = 1.25
COLD_START_RATIO = 0.5
# "Not worse than the previous release", judged in one run: within what two runs of the same
# code differ by here (p50 of 200 requests: about 0.1 ms; one stream's rate: a few per cent).
PREVIOUS_TTFT_SLACK_MS = 0.1
PREVIOUS_RATE_SHARE = 0.95
PREVIOUS_WALL_SLACK = 0.05
# The relay's own calls per request move by a few when chunks come in fewer reads: PLANS read
# -2.2 to -0.4 over four runs. One more call than without PLANS is already "something".
OWN_CALLS_SLACK = 1


def import_breakdown(lines: list[str], top: int = 10) -> list[dict]:
    """The `top` top-level packages by import time: their modules' own times (`-X importtime`)."""
    per_package: dict[str, int] = defaultdict(int)
    for line in lines:
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        per_package[parts[2].strip().split(".")[0]] += int(parts[0])
    ranked = sorted(per_package.items(), key=lambda item: item[1], reverse=True)
    total = sum(per_package.values())
    rows = [{"package": name, "ms": round(us / 1000, 1)} for name, us in ranked[:top]]
    rows.append({"package": "(all)", "ms": round(total / 1000, 1)})
    return rows


def _get(results: dict, *path: str):
    node = results.get("figures", {})
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def targets(results: dict) -> list[dict]:
    """Each target of issue 6 (and issue 14's cost of the limits) with the measured value;
    `met` is None when it was not measured."""
    rows: list[dict] = []

    def check(target: str, contender: str, value, limit: float, at_most: bool) -> None:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        rows.append({"target": target, "contender": contender, "value": value, "met": met})

    for name in ("relay_sse", "relay_text", "relay_v1", "native_sse", "native_text", "native_v1"):
        added = _get(results, "ttft", "contenders", name, "added_p50_ms")
        check("added TTFT p50 ≤ 1 ms", name, added, TTFT_LIMIT_MS, True)
    for name in ("relay_sse", "native_sse"):
        check("/chat SSE ≥ 15,000 chunks/s", name, _rate(results, name), SSE_RATE, False)
    baseline = _rate(results, "baseline")
    for name in ("relay_sse", "native_sse"):
        rate = _rate(results, name)
        ratio = round(rate / baseline, 2) if rate and baseline else None
        check("/chat SSE ≥ 8x baseline", name, ratio, SSE_OVER_BASELINE, False)
    for name in ("relay_v1", "native_v1"):
        check("passthrough ≥ 25,000 chunks/s", name, _rate(results, name), PASSTHROUGH_RATE, False)
    for name in ("relay_sse", "relay_text", "relay_v1"):
        ratio = _get(results, "concurrency", "streams", "100", name, "wall_ratio_to_direct")
        check("100 streams ≤ 1.25x direct wall", name, ratio, CONCURRENT_WALL_RATIO, True)
    round_trip = _get(results, "ttft", "moto_round_trip_p50_ms")
    spread = _get(results, "ttft", "moto_round_trip_p75_ms") or round_trip
    for name, figure in (
        ("relay_sse_limits", "limits_added_p50_ms"),
        ("relay_sse_limits_spaced", "limits_spaced_added_p50_ms"),
        ("relay_sse_rate_limit", "rate_limit_added_p50_ms"),
    ):
        check(
            f"limits add ≤ one DynamoDB round trip (TTFT p50 ≤ a round trip's p75, {_fmt(spread)}"
            f" ms; p50 {_fmt(round_trip)} ms)",
            name,
            _get(results, "ttft", figure) if spread is not None else None,
            spread,
            True,
        )
    for name in ("relay_sse", "relay_v1"):
        _not_worse_than_previous(results, name, check)
    _plans_targets(results, check)
    _tool_round_trip_targets(results, check)
    check(
        "cold start packaged ≤ 50% of no bytecode",
        "native",
        _get(results, "cold_start", "ratio"),
        COLD_START_RATIO,
        True,
    )
    return rows


def _plans_targets(results: dict, check) -> None:
    """Issue 27: plans add nothing measurable to a request without limits, and one DynamoDB
    round trip at most to one with limits."""
    plans = _get(results, "plans")
    if not plans:
        return
    check(
        f"PLANS adds nothing measurable: TTFT p50 ≤ +{PREVIOUS_TTFT_SLACK_MS} ms (what two runs"
        " of the same code differ by)",
        "plans_on",
        plans["plans_added_p50_ms"],
        PREVIOUS_TTFT_SLACK_MS,
        True,
    )
    check(
        f"PLANS adds no calls of the relay's own functions per request (± {OWN_CALLS_SLACK}: a read"
        " more or less)",
        "plans_on",
        plans.get("plans_added_own_calls"),
        OWN_CALLS_SLACK,
        True,
    )
    spread = plans.get("moto_round_trip_spaced_p75_ms")
    for name, added in (
        ("plans_limits_spaced", "limits_added_p50_ms"),
        ("plans_streams_spaced", "streams_added_p50_ms"),
    ):
        counted = plans["dynamodb_requests"].get(name, {})
        check(
            "a plan's limits: ≤ 1 DynamoDB request at admission per request (counted at moto)",
            name,
            counted.get("admission_per_request"),
            1,
            True,
        )
        check(
            f"a plan's limits add ≤ one DynamoDB round trip (TTFT p50 ≤ a round trip's p75 at"
            f" the same spacing, {_fmt(spread)} ms)",
            name,
            plans[added],
            spread,
            True,
        )


def _tool_round_trip_targets(results: dict, check) -> None:
    """Issue 28: a frontend tool round trip costs the relay no more than two ordinary requests."""
    tools = _get(results, "tool_round_trip")
    if not tools:
        return
    for what, value in (
        ("added TTFT p50", tools["added_over_two_requests"]),
        ("relay CPU", tools["cpu_over_two_requests"]),
        ("Python calls", tools["calls"]["round_trip_over_two_requests"]),
    ):
        check(
            f"tool round trip ≤ two ordinary requests: {what}, ratio",
            "tools_round_trip",
            value,
            1,
            True,
        )


def _not_worse_than_previous(results: dict, name: str, check) -> None:
    """The warm figures of `name` against the same route of the previous release, same run."""
    previous = f"{name}_previous"
    if _get(results, "ttft", "contenders", previous) is None:
        return
    added = _get(results, "ttft", "contenders", name, "added_p50_ms")
    before = _get(results, "ttft", "contenders", previous, "added_p50_ms")
    if added is not None and before is not None:
        check(
            f"added TTFT p50 ≤ previous release's + {PREVIOUS_TTFT_SLACK_MS} ms ({before:.2f})",
            name,
            added,
            before + PREVIOUS_TTFT_SLACK_MS,
            True,
        )
    ratio = _get(results, "throughput", "contenders", name, "rate_ratio_to_previous")
    rate, rate_before = _rate(results, name), _rate(results, previous)
    if ratio is not None:
        check(
            f"chunks/s ≥ {PREVIOUS_RATE_SHARE:.0%} of previous release's (median of the"
            " trial-by-trial ratios)",
            name,
            ratio,
            PREVIOUS_RATE_SHARE,
            False,
        )
    elif rate and rate_before:
        check(
            f"chunks/s ≥ {PREVIOUS_RATE_SHARE:.0%} of previous release's ({rate_before:,.0f})",
            name,
            rate,
            PREVIOUS_RATE_SHARE * rate_before,
            False,
        )
    streams = ("concurrency", "streams", "100")
    wall = _get(results, *streams, name, "wall_ratio_to_direct")
    wall_before = _get(results, *streams, previous, "wall_ratio_to_direct")
    if wall is not None and wall_before is not None:
        check(
            f"100 streams' wall ≤ previous release's + {PREVIOUS_WALL_SLACK} ({wall_before:.3f})",
            name,
            wall,
            wall_before + PREVIOUS_WALL_SLACK,
            True,
        )


def _rate(results: dict, name: str) -> float | None:
    return _get(results, "throughput", "contenders", name, "chunks_per_s")


def _work_section(results: dict) -> list[str]:
    """Python calls per request and per chunk (bench/work.py), this relay beside the previous
    release: counted, so unlike the timings above they do not move with the machine."""
    work = _get(results, "work") or {}
    trees = work.get("trees") or {}
    relay, previous = trees.get("relay"), trees.get("relay_previous")
    if relay is None:
        return []
    routes = {"chat_sse": "/chat SSE", "v1": "/v1 passthrough"}

    def cells(route: str, key: str, digits: int) -> list[str]:
        now = relay[route][key]
        before = previous[route][key] if previous else None
        change = f"{now - before:+,.{digits}f}" if before is not None else "-"
        return [_fmt(now, digits), _fmt(before, digits), change]

    return [
        f"\nWork per request and per chunk, counted: Python calls of the ASGI app in-process"
        f" (cProfile; streams paced {work['delay_ms']:g} ms per token so each chunk is a read"
        f" of its own; per chunk = the difference between {work['long_tokens']}- and"
        f" {work['short_tokens']}-token streams; per request = a {work['short_tokens']}-token"
        " request less its chunks), this relay and the previous release:\n",
        _table(
            [
                "route",
                "per request",
                "previous",
                "change",
                "per chunk",
                "previous",
                "change",
            ],
            [
                [label, *cells(route, "calls_per_request", 1), *cells(route, "calls_per_chunk", 2)]
                for route, label in routes.items()
                if route in relay
            ],
        ),
        *_instruction_lines(work.get("instructions"), routes, work["short_tokens"]),
    ]


def _instruction_lines(figure: dict | None, routes: dict[str, str], tokens: int) -> list[str]:
    """Instructions per request (bench/work.py, valgrind's callgrind), this relay beside the
    previous release, and what FastAPI's request path costs against a Starlette route."""
    if not figure:
        return []
    fewer, more = figure["requests"]
    method = (
        f"\nWork per request, in machine instructions: valgrind's callgrind counts the relay"
        f" process's instructions in two runs of unpaced {tokens}-token requests"
        f" ({fewer} and {more}, each after {figure['warm_up']} unmeasured), per request the"
        f" difference over {more - fewer}; a count repeats to within 1% between runs and does"
        " not move with the machine's load."
    )
    trees, framework = figure.get("trees"), figure.get("framework")
    if trees is None:
        return [method + " Skipped: valgrind is not installed here.\n"]
    relay, previous = trees["relay"], trees.get("relay_previous")
    rows = []
    for route, label in routes.items():
        before = previous.get(route) if previous else None
        change = f"{relay[route] - before:+,}" if before is not None else "-"
        rows.append([label, f"{relay[route]:,}", f"{before:,}" if before else "-", change])
    lines = [
        method + "\n",
        _table(["route", "instructions per request", "previous", "change"], rows),
    ]
    if framework:
        fastapi, starlette = framework["fastapi"], framework["starlette"]
        lines.append(
            f"\nFor scale, the framework's part: a route that answers at once costs {fastapi:,}"
            " instructions per request on FastAPI behind three nested dependencies (the shape of"
            f" the relay's model routes: the caller, the body, the admission) and {starlette:,}"
            f" as a Starlette route (bench/framework_apps.py): {fastapi - starlette:+,}.\n"
        )
    return lines


def _apart(results: dict, section: str) -> str:
    """When a section was measured apart from the rest of the run (`--only`), what and when."""
    apart = results["meta"].get("measured_apart", {}).get(section)
    if not apart:
        return ""
    sections = ",".join(apart.get("sections", [section]))
    return (
        f" Measured apart from the run above (`python -m bench.run --only {sections}`, which took"
        f" {apart['seconds']} s): commit {apart['commit']}, {apart['date']}."
    )


def _plans_section(results: dict) -> list[str]:
    """Issue 27: what PLANS adds to a request without limits, and what a plan's limits add."""
    plans = _get(results, "plans")
    if not plans:
        return []
    ttft, calls, label = plans["ttft"], plans["calls"], plans["labels"]
    counted = plans["dynamodb_requests"]
    return [
        f"\nPlans (issue 27). A relay with PLANS ({len(plans['plans_without_limits'])} plans"
        " without limits; five client tokens in CLIENT_TOKENS, the caller's mapped to the plan"
        " `agents`) against the same relay and tokens without PLANS, /chat SSE,"
        f" {plans['requests']} requests of {plans['tokens']} tokens each in turns right after the"
        f" direct client's; Python calls in-process as above.{_apart(results, 'plans')}\n",
        _table(
            [
                "contender",
                "TTFT p50 ms",
                "added p50 ms",
                "added p95 ms",
                "relay CPU ms / request",
                "calls / request",
                "calls / chunk",
                "own calls / request",
            ],
            [
                [
                    label[name],
                    _fmt(ttft[name]["p50_ms"]),
                    _fmt(ttft[name]["added_p50_ms"]),
                    _fmt(ttft[name]["added_p95_ms"]),
                    _fmt(ttft[name].get("cpu_ms_per_request"), 3),
                    _fmt(calls[name]["calls_per_request"], 1),
                    _fmt(calls[name]["calls_per_chunk"], 2),
                    _fmt(calls[name].get("own_calls_per_request"), 1),
                ]
                for name in ("plans_off", "plans_on")
            ],
        ),
        f"\nPLANS adds {_fmt(plans['plans_added_p50_ms'])} ms to the TTFT p50,"
        f" {_fmt(plans.get('plans_added_own_calls'), 1)} calls of the relay's own functions (its"
        f" `handler` package, in a whole request) and {_fmt(plans['plans_added_calls'], 1)}"
        " Python calls in all per request (less its chunks: this count moves by ten or more"
        " between two relays of the same code here, as reads coalesce differently on a loaded"
        " machine and the per-chunk count times the tokens comes off it).\n",
        f"\nA plan with limits (a rate limit and a day's budget, too high to refuse anything;"
        f" then with max_concurrent_streams too), the quota table on moto's server: requests"
        f" {plans['spaced_ms']} ms apart, {plans['requests_limits']} each, against the plan"
        " without limits at the same spacing. The DynamoDB requests that reached moto were"
        " counted by moto's recorder over a further run of the same requests: at admission"
        " (conditional writes, before the upstream call) and after the stream (the charge that"
        " settles the reservation and gives the stream slot back):\n",
        _table(
            [
                "contender",
                "TTFT p50 ms",
                "added p50 ms",
                "limits add p50 ms",
                "relay CPU ms / request",
                "DynamoDB at admission / request",
                "after the stream / request",
                "requests at moto",
            ],
            [
                [
                    label[name],
                    _fmt(ttft[name]["p50_ms"]),
                    _fmt(ttft[name]["added_p50_ms"]),
                    _fmt(plans.get(added)) if added else "-",
                    _fmt(ttft[name].get("cpu_ms_per_request"), 3),
                    _fmt(counted.get(name, {}).get("admission_per_request"), 3),
                    _fmt(counted.get(name, {}).get("after_per_request"), 3),
                    ", ".join(
                        f"{op}: {n}" for op, n in counted.get(name, {}).get("at_moto", {}).items()
                    )
                    or "-",
                ]
                for name, added in (
                    ("plans_on_spaced", None),
                    ("plans_limits_spaced", "limits_added_p50_ms"),
                    ("plans_streams_spaced", "streams_added_p50_ms"),
                )
            ],
        ),
        f"\nOne admission-like UpdateItem round trip to moto alone, through the relay's client,"
        f" {plans['spaced_ms']} ms apart right after the turns above:"
        f" {_fmt(plans.get('moto_round_trip_spaced_p50_ms'))} ms p50,"
        f" {_fmt(plans.get('moto_round_trip_spaced_p75_ms'))} ms p75 (back to back, when moto"
        f" started: {_fmt(plans['moto_round_trip_p50_ms'])} ms p50,"
        f" {_fmt(plans['moto_round_trip_p75_ms'])} ms p75).\n",
    ]


def _tool_round_trip_section(results: dict) -> list[str]:
    """Issue 28: a frontend tool round trip against two ordinary requests."""
    tools = _get(results, "tool_round_trip")
    if not tools:
        return []
    ttft, calls, label = tools["ttft"], tools["calls"], tools["labels"]
    trip, one = ttft["tools_round_trip"], ttft["tools_ordinary"]
    direct_trip = ttft["direct_round_trip"]
    return [
        f"\nA frontend tool round trip (issue 28). A relay with CHAT_TOOLS (one tool), /chat SSE:"
        f" {tools['requests']} round trips (a question answered with a call of the tool, its"
        f" arguments in {tools['pieces']} pieces; then the conversation with the call's result,"
        f" answered with {tools['tokens']} tokens) and {tools['requests']} ordinary requests of"
        f" {tools['tokens']} tokens, each in turns right after the direct client asked the same."
        " A round trip's TTFT is its two steps' (to the call's first frame, then to the answer's"
        " first token), its added TTFT theirs less the direct client's; relay CPU is the relay"
        " process's per request or round trip; Python calls are counted in-process as above"
        f" (whole requests, chunks included).{_apart(results, 'tool_round_trip')}\n",
        _table(
            ["", "TTFT p50 ms", "direct p50 ms", "added p50 ms", "relay CPU ms", "Python calls"],
            [
                [
                    label["tools_ordinary"],
                    _fmt(one["p50_ms"]),
                    _fmt(one["floor_p50_ms"]),
                    _fmt(one["added_p50_ms"]),
                    _fmt(one.get("cpu_ms_per_request"), 3),
                    _fmt(calls["calls_per_request"], 1),
                ],
                [
                    label["tools_round_trip"],
                    _fmt(trip["p50_ms"]),
                    _fmt(trip["floor_p50_ms"]),
                    _fmt(trip["added_p50_ms"]),
                    _fmt(trip.get("cpu_ms_per_request"), 3),
                    _fmt(calls["calls_per_round_trip"], 1),
                ],
                [
                    "of which the step that ends in the call",
                    _fmt(trip.get("call_p50_ms")),
                    _fmt(direct_trip.get("call_p50_ms")),
                    _fmt(trip.get("call_added_p50_ms")),
                    "",
                    "",
                ],
                [
                    "of which the step that carries the result",
                    _fmt(trip.get("answer_p50_ms")),
                    _fmt(direct_trip.get("answer_p50_ms")),
                    _fmt(trip.get("answer_added_p50_ms")),
                    "",
                    "",
                ],
                [
                    "**round trip / two ordinary requests**",
                    "",
                    "",
                    _fmt(tools["added_over_two_requests"], 3),
                    _fmt(tools["cpu_over_two_requests"], 3),
                    _fmt(calls["round_trip_over_two_requests"], 3),
                ],
            ],
        ),
    ]


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _more_against_previous(scale: dict, key: str = "ttft_requests") -> str:
    more = scale.get(f"{key}_against_previous")
    if not more or more <= scale[key]:
        return ""
    return f", {more} for the routes judged against the previous release"


def tables(results: dict) -> str:
    contenders = results.get("contenders", {})
    label = {name: info["label"] for name, info in contenders.items()}
    out: list[str] = []
    ttft = _get(results, "ttft", "contenders") or {}
    rate = _get(results, "throughput", "contenders") or {}
    s = results["meta"]["scale"]
    out.append(
        f"Time to first token ({s['ttft_requests']} sequential requests of {s['ttft_tokens']}"
        f" tokens{_more_against_previous(s)}; added = p50 minus the direct floor measured"
        f" just before each turn) and"
        f" throughput (one stream of {s['bulk_tokens']:,} chunks, median of {s['bulk_trials']}"
        f"{_more_against_previous(s, 'bulk_trials')}):\n"
    )
    out.append(
        _table(
            [
                "contender",
                "TTFT p50 ms",
                "p95 ms",
                "floor p50 ms",
                "added p50 ms",
                "added p95 ms",
                "chunks/s",
                "x direct",
                "CPU s / 1k chunks",
            ],
            [
                [
                    label.get(name, name),
                    _fmt(ttft.get(name, {}).get("p50_ms")),
                    _fmt(ttft.get(name, {}).get("p95_ms")),
                    _fmt(ttft.get(name, {}).get("floor_p50_ms")),
                    _fmt(ttft.get(name, {}).get("added_p50_ms")),
                    _fmt(ttft.get(name, {}).get("added_p95_ms")),
                    _fmt(rate.get(name, {}).get("chunks_per_s")),
                    _fmt(rate.get(name, {}).get("ratio_to_direct")),
                    _fmt(rate.get(name, {}).get("cpu_s_per_1k_chunks"), 4),
                ]
                for name in contenders
            ],
        )
    )
    out += _work_section(results)
    limits = _get(results, "ttft", "limits_added_p50_ms")
    if limits is not None:
        out.append(
            f"\nPer-caller limits on (one conditional DynamoDB UpdateItem before the upstream"
            f" call, against moto's server): {_fmt(limits)} ms added to the TTFT p50 of relay"
            f" /chat SSE with requests back to back,"
            f" {_fmt(_get(results, 'ttft', 'limits_spaced_added_p50_ms'))} ms with requests 50 ms"
            " apart (each check then finds moto done with the previous request's charge; against"
            " the relay without limits with the same pauses),"
            f" {_fmt(_get(results, 'ttft', 'rate_limit_added_p50_ms'))} ms with the"
            f" rate limit alone, no charge after each stream); one such UpdateItem round trip"
            f" to moto alone takes {_fmt(_get(results, 'ttft', 'moto_round_trip_p50_ms'))} ms"
            f" p50 through the relay's client,"
            f" {_fmt(_get(results, 'ttft', 'moto_update_item_p50_ms'))} ms through boto3.\n"
        )
    concurrency = _get(results, "concurrency") or {}
    for streams, figure in (concurrency.get("streams") or {}).items():
        out.append(
            f"\n{streams} concurrent streams of {concurrency['tokens']} chunks"
            f" {concurrency['delay_ms']:g} ms apart (median of {concurrency['trials']}):\n"
        )
        out.append(
            _table(
                [
                    "contender",
                    "wall s",
                    "x direct",
                    "TTFT p95 ms",
                    "largest gap ms",
                    "lost/reordered",
                ],
                [
                    [
                        label.get(name, name),
                        _fmt(e["wall_s"], 3),
                        _fmt(e["wall_ratio_to_direct"]),
                        _fmt(e["ttft_p95_ms"]),
                        _fmt(e["max_gap_ms"], 1),
                        f"{e['lost_or_reordered']} of"
                        f" {e['complete_streams'] + e['lost_or_reordered']}",
                    ]
                    for name, e in figure.items()
                ],
            )
        )
    many = _get(results, "many_invocations") or {}
    if "wall_s" in many:
        out.append(
            f"\n{many['streams']} concurrent streams of {many['tokens']} chunks"
            f" {many['delay_ms']:g} ms apart through ONE native runtime process"
            f" (AWS_LAMBDA_MAX_CONCURRENCY={many['streams']}, Lambda Managed Instances;"
            f" median of {many['trials']}):\n"
        )
        out.append(
            _table(
                [
                    "wall s",
                    "direct wall s",
                    "x direct",
                    "TTFT p95 ms",
                    "lost/reordered",
                    "RSS warm MiB",
                    "RSS peak MiB",
                ],
                [
                    [
                        _fmt(many["wall_s"], 3),
                        _fmt(many["direct_wall_s"], 3),
                        _fmt(many["wall_ratio_to_direct"]),
                        _fmt(many["ttft_p95_ms"]),
                        f"{many['lost_or_reordered']} of"
                        f" {many['complete_streams'] + many['lost_or_reordered']}",
                        _fmt(many["warm_rss_mib"], 1),
                        _fmt(many["peak_rss_mib"], 1),
                    ]
                ],
            )
        )
    cold = _get(results, "cold_start") or {}
    memory = _get(results, "memory") or {}
    package = _get(results, "package") or {}
    out.append("\nNative runtime: cold start, memory, package:\n")
    rows = []
    if "packaged" in cold:
        for name, title in (
            ("packaged", "packaged build (bytecode)"),
            ("no_bytecode", "no bytecode"),
        ):
            rows.append(
                [
                    f"cold start to first byte, {title}",
                    f"{_fmt(cold[name]['first_byte_p50_ms'], 0)} ms p50"
                    f" ({_fmt(cold[name]['first_byte_p95_ms'], 0)} ms p95,"
                    f" {cold['trials']} trials)",
                ]
            )
        rows.append(["cold start ratio packaged / no bytecode", _fmt(cold["ratio"], 3)])
    elif cold:
        rows.append(["cold start", cold.get("skipped", "-")])
    if "peak_rss_mib" in memory:
        rows.append(
            [
                f"peak RSS over {memory['invocations']} invocations",
                f"{_fmt(memory['peak_rss_mib'], 1)} MiB"
                f" (after the first: {_fmt(memory['peak_rss_after_first_mib'], 1)} MiB)",
            ]
        )
    if package:
        rows.append(
            [
                f"package ({package['built_by']})",
                f"{_fmt(package['zipped_mib'], 1)} MiB zipped, {_fmt(package['unzipped_mib'], 1)}"
                f" MiB unzipped, {package['pyc_files']:,} .pyc",
            ]
        )
    out.append(_table(["figure", "value"], rows))
    for name in ("packaged", "no_bytecode"):
        top = cold.get(name, {}).get("import_top")
        if top:
            out.append(f"\nImport time by package ({name.replace('_', ' ')}, `-X importtime`):\n")
            out.append(_table(["package", "ms"], [[r["package"], _fmt(r["ms"], 1)] for r in top]))
    out += _plans_section(results)
    out += _tool_round_trip_section(results)
    for section in ("plans", "tool_round_trip"):
        label |= (_get(results, section) or {}).get("labels", {})
    out.append("\nTargets (issues 6, 14, 27 and 28):\n")
    out.append(
        _table(
            ["target", "contender", "measured", "met"],
            [
                [
                    t["target"],
                    label.get(t["contender"], t["contender"]),
                    _fmt(t["value"]),
                    {True: "yes", False: "**no**", None: "not measured"}[t["met"]],
                ]
                for t in results.get("targets", [])
            ],
        )
    )
    if results["meta"].get("notes"):
        out.append("\nNotes: " + "; ".join(results["meta"]["notes"]))
    return "\n".join(out)


def chart(results: dict, path: Path) -> None:
    """Four panels of the main ratios, each against its target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = {n: i["label"] for n, i in results.get("contenders", {}).items()}
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    meta = results["meta"]
    fig.suptitle(
        f"Chat relay benchmark ({meta['machine']}, Python {meta['python']},"
        f" commit {meta['commit']})"
    )

    ttft = _get(results, "ttft", "contenders") or {}
    contenders = results.get("contenders", {})
    names = [
        n
        for n in ttft
        if n != "direct"
        and ttft[n]["added_p50_ms"] is not None
        # The limits' contenders wait on moto: off the 1 ms scale, and in the tables.
        and not contenders.get(n, {}).get("ttft_only")
    ]
    ax = axes[0][0]
    added = [ttft[n]["added_p50_ms"] for n in names]
    ax.barh([label.get(n, n) for n in names], added)
    for index, value in enumerate(added):
        ax.text(value, index, f" {value:.2f}", va="center", fontsize=8)
    ax.axvline(TTFT_LIMIT_MS, color="red", linestyle="--", label="target ≤ 1 ms")
    ax.set_xlim(0, max([TTFT_LIMIT_MS, *added]) * 1.15)
    ax.set_xlabel("added time to first token, p50 (ms, vs direct)")
    ax.legend(loc="upper right")
    ax.invert_yaxis()

    rate = _get(results, "throughput", "contenders") or {}
    names = list(rate)
    ax = axes[0][1]
    ax.barh([label.get(n, n) for n in names], [rate[n]["ratio_to_direct"] or 0 for n in names])
    direct = (rate.get("direct") or {}).get("chunks_per_s")
    if direct:
        ax.axvline(SSE_RATE / direct, color="orange", linestyle="--", label="15k chunks/s (SSE)")
        ax.axvline(
            PASSTHROUGH_RATE / direct, color="red", linestyle="--", label="25k (passthrough)"
        )
    for index, name in enumerate(names):
        ax.text(0.01, index, f" {rate[name]['chunks_per_s']:,}/s", va="center", fontsize=8)
    ax.set_xlabel(f"chunks/s as a fraction of direct ({_fmt(direct)}/s)")
    ax.legend(loc="lower right")
    ax.invert_yaxis()

    levels = (_get(results, "concurrency", "streams") or {}).items()
    ax = axes[1][0]
    width = 0.8 / max(1, len(levels))
    for offset, (streams, figure) in enumerate(levels):
        names = list(figure)
        positions = [i + offset * width for i in range(len(names))]
        ax.barh(
            positions,
            [figure[n]["wall_ratio_to_direct"] or 0 for n in names],
            width,
            label=f"{streams} streams",
        )
        ax.set_yticks([i + width * (len(levels) - 1) / 2 for i in range(len(names))])
        ax.set_yticklabels([label.get(n, n) for n in names])
    ax.axvline(CONCURRENT_WALL_RATIO, color="red", linestyle="--", label="target ≤ 1.25x (100)")
    ax.set_xlabel("concurrent streams: wall time / direct wall time")
    ax.legend(loc="upper right")
    ax.invert_yaxis()

    cold = _get(results, "cold_start") or {}
    ax = axes[1][1]
    if "packaged" in cold:
        bars = {
            "packaged build\n(bytecode)": cold["packaged"]["first_byte_p50_ms"],
            "same sources,\nno bytecode": cold["no_bytecode"]["first_byte_p50_ms"],
        }
        ax.bar(list(bars), list(bars.values()), color=["tab:green", "tab:gray"])
        for index, value in enumerate(bars.values()):
            ax.text(index, value, f"{value:,.0f} ms", ha="center", va="bottom")
        ax.axhline(
            cold["no_bytecode"]["first_byte_p50_ms"] * COLD_START_RATIO,
            color="red",
            linestyle="--",
            label="target ≤ 50% of no bytecode",
        )
        ax.set_ylim(0, max(bars.values()) * 1.25)
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, cold.get("skipped", "not measured"), ha="center", transform=ax.transAxes)
    ax.set_ylabel("cold start to first byte, p50 (ms)")
    ax.set_title("native runtime cold start")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def readme(results: dict, chart_path: str = "results/chart.png") -> str:
    """bench/README.md: the method (bench/method.md), the chart and this run's tables."""
    meta = results["meta"]
    return "\n".join(
        [
            "<!-- Generated by `make bench` (bench/report.py) from bench/results/latest.json;"
            " edit bench/method.md or bench/report.py, not this file. -->",
            "# Benchmarks",
            "",
            "`make bench` runs them all (a few minutes); `python -m bench.run --scale tiny` in"
            " seconds.",
            "",
            (BENCH_DIR / "method.md").read_text().rstrip(),
            "",
            f"## Latest run: commit {meta.get('commit')}, {meta.get('machine')},"
            f" Python {meta.get('python')}",
            "",
            f"![Benchmark chart]({chart_path})",
            "",
            tables(results),
            "",
            *_lambda_section(results, chart_path),
        ]
    )


def _lambda_section(results: dict, chart_path: str) -> list[str]:
    """The Lambda-shaped figure (bench/cold.py), its chart beside the main one."""
    from bench import lambda_report

    figure = results.get("figures", {}).get("lambda")
    if not figure:
        return []
    lines = ["## Lambda-shaped CPU: cold start, warm TTFT and one stream per memory size", ""]
    if figure.get("sizes"):
        chart = str(Path(chart_path).with_name("lambda.png"))
        lines += [f"![Lambda-shaped figure]({chart})", ""]
    return [*lines, lambda_report.tables(results), ""]


def main(argv: list[str] | None = None) -> int:
    """Write bench/README.md from a results file (default bench/results/latest.json)."""
    args = argv if argv is not None else sys.argv[1:]
    source = Path(args[0]) if args else BENCH_DIR / "results" / "latest.json"
    target = BENCH_DIR / "README.md"
    target.write_text(readme(json.loads(source.read_text())))
    print(f"wrote {target} from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
