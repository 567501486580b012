"""`make bench`: every contender measured in one run on loopback, against one scripted upstream.

Starts the upstream, the contenders and the load client as separate processes, runs the figures
(SECTIONS: issue 6's six, the plans of issue 27, the tool round trip of issue 28, ...), then
prints the tables, writes bench/results/latest.json and draws the chart. `python -m bench.run
--scale tiny` is the seconds-long version the smoke test runs; `--only SECTION,...` runs some
sections and merges their figures into the last results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench import lambda_report, report, work
from bench.moto_requests import MotoRecorder
from bench.package import PREVIOUS_RELEASE, build_package, export_previous_release
from bench.scenario import TOOL_NAME, TOOL_PIECES, prompt
from bench.services import (
    ROOT,
    Service,
    Worker,
    cpu_seconds,
    free_port,
    git_commit,
    hermetic_env,
)
from devtools.moto_server import create_quota_table, moto_client

RESULTS = ROOT / "bench" / "results"
BENCH_KEY = "sk-bench-not-a-real-key"
TTFT_TURN = 100  # measured requests in one contender's turn (figure 1)
TTFT_SETTLE = 10  # unmeasured requests at the start of each turn (figure 1)
QUOTA_TABLE = "bench-quota"


@dataclass
class Scale:
    """How much of each figure to run; `full` is what the issue asks for."""

    ttft_requests: int = 200
    # The routes judged against the previous release (a 0.1 ms slack on a p50 difference): at
    # 200 requests that difference moved by ±0.1 ms between runs of the same code, at 1,000 by
    # a few hundredths. These contenders take turns in the extra rounds too.
    ttft_requests_against_previous: int = 600
    ttft_tokens: int = 8
    bulk_tokens: int = 20_000
    bulk_trials: int = 5
    # Likewise for the throughput of those routes (a 5% slack on a ratio): single trials swing
    # by a third, and the median of five trial-by-trial ratios moved by ±12% between runs of
    # the same code. A trial of 20,000 chunks takes about half a second.
    bulk_trials_against_previous: int = 15
    concurrency: tuple[int, ...] = (100, 500)
    concurrency_trials: int = 3
    paced_tokens: int = 50
    paced_delay_ms: float = 20
    cold_trials: int = 5
    memory_invocations: int = 50
    memory_tokens: int = 500
    warmup_requests: int = 5
    lambda_shaped: str = "full"  # the scale of bench/cold.py's figure, or "off"
    # Instructions per request (bench/work.py, valgrind): the requests of its two runs, or none.
    instruction_requests: tuple[int, ...] = work.INSTRUCTION_REQUESTS


SCALES = {
    "full": Scale(),
    "tiny": Scale(
        ttft_requests=5,
        ttft_requests_against_previous=10,
        ttft_tokens=4,
        bulk_tokens=300,
        bulk_trials=1,
        bulk_trials_against_previous=2,
        concurrency=(5,),
        concurrency_trials=1,
        paced_tokens=5,
        paced_delay_ms=5,
        cold_trials=1,
        memory_invocations=3,
        memory_tokens=20,
        warmup_requests=1,
        lambda_shaped="off",  # tests/test_bench_cold.py runs it at its own tiny scale
        instruction_requests=(),  # tests/test_bench_instructions.py runs it at its own
    ),
}


@dataclass
class Contender:
    name: str
    label: str
    kind: str  # "http", "native" or "buffered"
    service: str  # the process that does the relaying ("upstream" for direct)
    wire: str  # what the answer looks like: "openai", "sse" or "text"
    path: str = "/chat"
    headers: dict[str, str] = field(default_factory=dict)
    ttft_only: bool = False  # measured in figure 1 only (what it adds is before the first token)
    gap_ms: float = 0  # a pause before each request of a sequential run
    job: str = "sequential"  # the client's job: "sequential" requests or "tool_round_trips"


SSE = {"accept": "text/event-stream"}
AUTH = {"authorization": f"Bearer {BENCH_KEY}"}
V1 = "/v1/chat/completions"
CONTENDERS = [
    Contender("direct", "direct upstream", "http", "upstream", "openai", V1, AUTH),
    # Each route judged against the previous release is followed by the previous release's
    # same route, so their turns (and throughput trials) are adjacent in every round: with five
    # other contenders between them, a slow spell of this machine fell on one and not the other
    # (a full run read /chat SSE's p50 0.16 ms over; runs of these four contenders alone, one
    # turn apart, read -0.06 to +0.03 ms).
    Contender("relay_sse", "relay /chat SSE (uvicorn)", "http", "relay", "sse", headers=SSE),
    Contender(
        "relay_sse_previous",
        f"relay /chat SSE (uvicorn), previous release {PREVIOUS_RELEASE}",
        "http",
        "relay_previous",
        "sse",
        headers=SSE,
    ),
    Contender(
        "relay_sse_limits",
        "relay /chat SSE, limits on (moto DynamoDB)",
        "http",
        "relay_limits",
        "sse",
        headers=SSE,
        ttft_only=True,
    ),
    Contender(
        # The reference for the spaced contender below: a relay that idles between requests
        # answers its next one slower, limits or not.
        "relay_sse_spaced",
        "relay /chat SSE (uvicorn), requests 50 ms apart",
        "http",
        "relay",
        "sse",
        headers=SSE,
        ttft_only=True,
        gap_ms=50,
    ),
    Contender(
        # One caller's next message comes seconds later, not 1 ms after the last stream ended:
        # spaced, each check meets moto idle rather than still writing the previous charge.
        "relay_sse_limits_spaced",
        "relay /chat SSE, limits on, requests 50 ms apart (moto DynamoDB)",
        "http",
        "relay_limits",
        "sse",
        headers=SSE,
        ttft_only=True,
        gap_ms=50,
    ),
    Contender(
        "relay_sse_rate_limit",
        "relay /chat SSE, rate limit only (moto DynamoDB)",
        "http",
        "relay_rate_limit",
        "sse",
        headers=SSE,
        ttft_only=True,
    ),
    Contender("relay_text", "relay /chat text (uvicorn)", "http", "relay", "text"),
    Contender("relay_v1", "relay /v1 passthrough (uvicorn)", "http", "relay", "openai", V1),
    Contender(
        "relay_v1_previous",
        f"relay /v1 passthrough (uvicorn), previous release {PREVIOUS_RELEASE}",
        "http",
        "relay_previous",
        "openai",
        V1,
    ),
    Contender(
        "relay_sse_h11",
        "relay /chat SSE (uvicorn, h11 + asyncio loop)",
        "http",
        "relay_h11",
        "sse",
        headers=SSE,
    ),
    Contender(
        "relay_v1_h11",
        "relay /v1 passthrough (uvicorn, h11 + asyncio loop)",
        "http",
        "relay_h11",
        "openai",
        V1,
    ),
    Contender("native_sse", "relay /chat SSE (native runtime)", "native", "runtime", "sse"),
    Contender("native_text", "relay /chat text (native runtime)", "native", "runtime", "text"),
    Contender("native_v1", "relay /v1 passthrough (native runtime)", "native", "runtime", "openai"),
    Contender("buffered", "buffered Mangum /chat SSE", "buffered", "buffered", "sse"),
    Contender("baseline", "baseline (tutorial, sync OpenAI)", "http", "baseline", "text"),
]

# Issue 27's plans: one client token per caller, each mapped to a plan by CLIENT_TOKENS. Without
# PLANS the same tokens name no plan, so the two relays differ by PLANS alone.
PLAN_TOKENS = {
    "tok-bench-browser-0123456789": "browser",
    "tok-bench-agents-0123456789": "agents",
    "tok-bench-batch-0123456789": "batch",
    "tok-bench-metered-0123456789": "metered",
    "tok-bench-streams-0123456789": "metered_streams",
}
PLANS_WITHOUT_LIMITS = {
    "browser": {"models": ["gpt-5.4-mini"], "max_tokens_cap": 512},
    "agents": {"allow_client_system_prompt": True, "max_tokens_cap": 4096},
    "batch": {"max_tokens_cap": 2048},
}
# Limits too high to refuse anything: what is measured is what they cost, not a refusal.
PLAN_LIMITS = {"rate_limit_per_minute": 10**9, "token_budget_per_day": 10**12}
PLANS_WITH_LIMITS = PLANS_WITHOUT_LIMITS | {
    "metered": PLAN_LIMITS,
    "metered_streams": PLAN_LIMITS | {"max_concurrent_streams": 10**6},
}


def _bearer(plan: str) -> dict[str, str]:
    [token] = [token for token, named in PLAN_TOKENS.items() if named == plan]
    return {**SSE, "authorization": f"Bearer {token}"}


PLAN_ENV = ("ALLOW_ANONYMOUS", "CLIENT_TOKENS", "PLANS")  # what the plans' relays differ by
SPACED_MS = 50  # one caller's next message comes later than 1 ms after the last answer
PLANS_CONTENDERS = [
    # Adjacent in every round, so a slow spell of the machine falls on both.
    Contender(
        "plans_off",
        "client token, no PLANS",
        "http",
        "relay_tokens",
        "sse",
        headers=_bearer("agents"),
        ttft_only=True,
    ),
    Contender(
        "plans_on",
        "client token on plan `agents` of 3 (no limits)",
        "http",
        "relay_plans",
        "sse",
        headers=_bearer("agents"),
        ttft_only=True,
    ),
    # The limits' reference: the same plans relay, requests as far apart as theirs.
    Contender(
        "plans_on_spaced",
        f"plan `agents` (no limits), requests {SPACED_MS} ms apart",
        "http",
        "relay_plans",
        "sse",
        headers=_bearer("agents"),
        ttft_only=True,
        gap_ms=SPACED_MS,
    ),
    Contender(
        "plans_limits_spaced",
        f"plan with a rate limit and a budget, requests {SPACED_MS} ms apart (moto DynamoDB)",
        "http",
        "relay_plan_limits",
        "sse",
        headers=_bearer("metered"),
        ttft_only=True,
        gap_ms=SPACED_MS,
    ),
    Contender(
        "plans_streams_spaced",
        "plan with a rate limit, a budget and"
        f" max_concurrent_streams, requests {SPACED_MS} ms apart (moto DynamoDB)",
        "http",
        "relay_plan_limits",
        "sse",
        headers=_bearer("metered_streams"),
        ttft_only=True,
        gap_ms=SPACED_MS,
    ),
]
# Issue 28's frontend tool round trip, on a relay with CHAT_TOOLS, against the same relay's
# ordinary requests; each against the direct client asked the same.
CHAT_TOOLS = [{"name": TOOL_NAME, "parameters": {"type": "object", "properties": {}}}]
TOOLS_CONTENDERS = [
    Contender(
        "tools_ordinary",
        "relay /chat SSE, CHAT_TOOLS declared, ordinary request",
        "http",
        "relay_tools",
        "sse",
        headers=SSE,
        ttft_only=True,
    ),
    Contender(
        "tools_round_trip",
        "relay /chat SSE, tool round trip (call + result)",
        "http",
        "relay_tools",
        "sse",
        headers=SSE,
        ttft_only=True,
        job="tool_round_trips",
    ),
]
DIRECT_ROUND_TRIP = Contender(
    "direct_round_trip",
    "direct upstream, tool round trip",
    "http",
    "upstream",
    "openai",
    V1,
    AUTH,
    job="tool_round_trips",
)
TOOLS_SECTION_CONTENDERS = [*TOOLS_CONTENDERS, DIRECT_ROUND_TRIP]
# The figures `--only` can pick; `make bench` runs them all, in this order.
SECTIONS = (
    "time_to_first_token",
    "throughput",
    "concurrency",
    "work",
    "plans",
    "tool_round_trip",
    "many_invocations",
    "memory",
    "cold_start_and_package",
    "lambda_shaped",
)
# The sections after which the native contenders' runtime process is no longer needed.
NATIVE_PROCESS_SECTIONS = {"many_invocations", "memory", "cold_start_and_package", "lambda_shaped"}
# The sections the charts draw (a run of the others leaves the charts as they are).
CHARTED_SECTIONS = {
    "time_to_first_token",
    "throughput",
    "concurrency",
    "cold_start_and_package",
    "lambda_shaped",
}
# The sections measured on CONTENDERS (the others need only the direct client of them).
CONTENDER_SECTIONS = {"time_to_first_token", "throughput", "concurrency", "many_invocations"}


def _server(app: str, port: int, shipped: bool, tree: Path) -> list[str]:
    """The command that serves `app` on `port`. The relay as it ships runs as
    `handler/bin/lwa-start` starts it: `python -m handler.lwa` (init's work, its `gc.freeze()`
    included, then uvicorn with uvloop and httptools); the rest, and the pure-Python pair
    (h11, asyncio's loop) kept for comparison, on uvicorn's command line."""
    if shipped and app == "handler.app:app" and (tree / "handler" / "lwa.py").exists():
        return [sys.executable, "-m", "handler.lwa", "--port", str(port)]
    http, loop = ("httptools", "uvloop") if shipped else ("h11", "asyncio")
    return [
        *(sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
        *("--http", http, "--loop", loop, "--lifespan", "off", "--no-access-log"),
        *("--log-level", "warning"),
    ]


def _native_available() -> bool:
    return (ROOT / "handler" / "runtime.py").exists()


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000, 3)


class Run:
    """One benchmark run: the processes, the figures, and what they measured."""

    def __init__(self, scale: Scale, skip: set[str], only: set[str] | None = None) -> None:
        self.scale = scale
        self.sections = [name for name in SECTIONS if only is None or name in only]
        self.services: dict[str, Service] = {}
        self.notes: list[str] = []
        self.contenders = [c for c in CONTENDERS if c.name not in skip]
        if not CONTENDER_SECTIONS & set(self.sections):
            self.contenders = [c for c in self.contenders if c.name == "direct"]
        self.section_contenders = [
            *(PLANS_CONTENDERS if "plans" in self.sections else []),
            *(TOOLS_SECTION_CONTENDERS if "tool_round_trip" in self.sections else []),
        ]
        self.section_envs: dict[str, dict[str, str]] = {}
        self.moto: MotoRecorder | None = None
        self.aws: dict[str, str] | None = None  # moto's endpoint and keys, once it runs
        self.results: dict = {"figures": {}}
        self.runtime_pid: int | None = None
        self.previous_tree: Path | None = None  # the previous release's export, when run
        self.moto_update_item_s: list[float] = []  # through boto3
        self.moto_round_trip_s: list[float] = []  # through the relay's own client

    # -- processes ------------------------------------------------------------------------------

    def start(self) -> None:
        upstream = Service("upstream", [sys.executable, "-m", "bench.upstream"], hermetic_env())
        self.services["upstream"] = upstream
        port = int(self._first_line(upstream))
        self.upstream_port = port
        relay_env = hermetic_env(
            OPENAI_API_KEY=BENCH_KEY,
            OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
            ALLOW_ANONYMOUS="true",
        )
        lambda_env = dict(
            relay_env,
            AWS_LAMBDA_FUNCTION_NAME="bench",
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024",
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
        )
        self.lambda_env = lambda_env
        self.relay_env = relay_env
        wanted = {c.service for c in self.contenders + self.section_contenders}
        self.ports: dict[str, int] = {"upstream": port}
        # uvicorn as handler/bin/lwa-start runs it (uvloop and httptools, from requirements.txt)
        # for the relay and the baseline alike; the pure-Python h11/asyncio pair for comparison.
        servers = {
            "relay": ("handler.app:app", True, relay_env, ROOT),
            "relay_h11": ("handler.app:app", False, relay_env, ROOT),
            "baseline": ("bench.baselines.tutorial_app:app", True, relay_env, ROOT),
        }
        if wanted & {"relay_limits", "relay_rate_limit"}:
            limits_env = self._limits_env(relay_env)
            servers["relay_limits"] = ("handler.app:app", True, limits_env, ROOT)
            # No budget, so no charge after the stream: the check alone, without the previous
            # request's charge still at moto when the next check arrives.
            rate_limit_env = dict(limits_env, TOKEN_BUDGET_PER_DAY="0")
            servers["relay_rate_limit"] = ("handler.app:app", True, rate_limit_env, ROOT)
        if "relay_previous" in wanted or "work" in self.sections:
            # The work figure counts the previous release's calls too, even run alone.
            previous = self.previous_tree = export_previous_release()
            if previous is None:
                self._drop("relay_previous", f"commit {PREVIOUS_RELEASE} is not in this clone")
            elif "relay_previous" in wanted:
                # The same model as today's default, which it named differently.
                env = dict(relay_env, DEFAULT_MODEL="gpt-5.4-mini")
                servers["relay_previous"] = ("handler.app:app", True, env, previous)
        if "runtime" in wanted and not _native_available():
            self._drop("runtime", "handler/runtime.py does not exist yet")
        servers |= self._section_servers(wanted)
        wanted = {c.service for c in self.contenders + self.section_contenders}
        for name, (app, shipped, env, tree) in servers.items():
            if name in wanted:
                self.ports[name] = free_port()
                argv = _server(app, self.ports[name], shipped, tree)
                self.services[name] = Service(name, argv, env, cwd=tree)
        for name in servers:
            if name in self.services:
                self.services[name].wait_for_port(self.ports[name])
        self.client = Worker("client", "bench.client", hermetic_env())
        self.services["client"] = self.client
        if "buffered" in wanted:
            self.buffered = Worker("buffered", "bench.buffered", lambda_env)
            self.services["buffered"] = self.buffered
        natively = {
            "memory": self.scale.memory_invocations,
            "cold_start_and_package": self.scale.cold_trials,
        }
        if "runtime" in wanted or any(natively[n] for n in natively if n in self.sections):
            self.native = Worker("native", "bench.native", hermetic_env())
            self.services["native"] = self.native
        if "runtime" in wanted:
            self.runtime_pid = self.native.run("spawn", env=lambda_env)["pid"]

    def work(self) -> None:
        """Python calls per request and per chunk, in-process (bench/work.py): this relay and
        the previous release, the part of the warm figures that this machine's noise cannot
        move."""
        trees = {"relay": ROOT}
        if self.previous_tree is not None:
            trees["relay_previous"] = self.previous_tree
        figure = self.results["figures"]["work"] = {
            "short_tokens": work.SHORT,
            "long_tokens": work.LONG,
            "delay_ms": work.DELAY_MS,
            "trees": {
                name: work.counts(tree, self.upstream_port, BENCH_KEY)
                for name, tree in trees.items()
            },
        }
        requests = self.scale.instruction_requests
        if requests:
            per_tree = {
                name: work.instructions(tree, self.upstream_port, BENCH_KEY, requests)
                for name, tree in trees.items()
            }
            figure["instructions"] = {
                "requests": list(requests),
                "warm_up": work.INSTRUCTION_WARM_UP,
                "trees": per_tree if per_tree["relay"] is not None else None,
                "framework": work.framework_instructions(requests),
            }

    def _section_servers(self, wanted: set[str]) -> dict[str, tuple]:
        """The relays of the plans and tool round-trip sections that `wanted` names."""
        tokens = self.relay_env | {
            "ALLOW_ANONYMOUS": "false",
            "CLIENT_TOKENS": ",".join(PLAN_TOKENS),
        }

        def plans(defined: dict) -> dict[str, str]:
            # A token whose plan is not defined names none: it gets the plan `default`.
            mapped = (f"{t}:{p}" if p in defined else t for t, p in PLAN_TOKENS.items())
            return tokens | {"CLIENT_TOKENS": ",".join(mapped), "PLANS": json.dumps(defined)}

        envs = {
            "relay_tokens": lambda: tokens,
            "relay_plans": lambda: plans(PLANS_WITHOUT_LIMITS),
            "relay_plan_limits": lambda: (
                plans(PLANS_WITH_LIMITS) | self._moto_env() | {"QUOTA_TABLE": QUOTA_TABLE}
            ),
            "relay_tools": lambda: self.relay_env | {"CHAT_TOOLS": json.dumps(CHAT_TOOLS)},
        }
        self.section_envs = {name: env() for name, env in envs.items() if name in wanted}
        return {
            name: ("handler.app:app", True, env, ROOT) for name, env in self.section_envs.items()
        }

    def plans(self) -> None:
        """Issue 27's goals. What PLANS adds to a request on a plan without limits: time to first
        token against the same client tokens without PLANS, in the same rounds, and Python calls
        in-process. What a plan's limits add: time to first token against the plan without
        limits, requests equally spaced, and the DynamoDB requests that reach moto per request,
        counted by moto's recorder, at admission (conditional writes) and after."""
        s = self.scale
        direct = next((c for c in self.contenders if c.name == "direct"), None)
        compared = max(s.ttft_requests, s.ttft_requests_against_previous)
        unlimited = {"plans_off", "plans_on"}
        turns = [
            (c, direct, compared if c.name in unlimited else s.ttft_requests)
            for c in PLANS_CONTENDERS
        ]
        ttft = _ttft_entries(*self._paired_turns(turns))
        # The round trip the limits are held to, at their spacing and right after their turns:
        # the one measured at the start, back to back, ran faster than spaced ones here.
        spaced = _signed_update_item_times(
            self._moto_env()["AWS_ENDPOINT_URL"], s.ttft_requests, SPACED_MS / 1000
        )
        requests = {}
        for contender in PLANS_CONTENDERS:
            if contender.service != "relay_plan_limits":
                continue
            self.moto.start()
            self._checked(contender, self.sequential(contender, s.ttft_tokens, s.ttft_requests))
            seen = self.moto.stop()
            admission = seen["UpdateItem (conditional)"]
            requests[contender.name] = {
                "requests": s.ttft_requests,
                "at_moto": dict(seen),
                "admission_per_request": round(admission / s.ttft_requests, 3),
                "after_per_request": round((seen.total() - admission) / s.ttft_requests, 3),
            }
        calls = {
            c.name: work.counts(
                ROOT,
                self.upstream_port,
                BENCH_KEY,
                routes=("chat_sse",),
                headers={"authorization": c.headers["authorization"]},
                **{k: v for k, v in self.section_envs[c.service].items() if k in PLAN_ENV},
            )["chat_sse"]
            for c in PLANS_CONTENDERS
            if c.name in unlimited
        }
        self.results["figures"]["plans"] = {
            "requests": compared,
            "requests_limits": s.ttft_requests,
            "tokens": s.ttft_tokens,
            "spaced_ms": SPACED_MS,
            "plans_without_limits": sorted(PLANS_WITHOUT_LIMITS),
            "labels": {c.name: c.label for c in PLANS_CONTENDERS},
            "ttft": ttft,
            "plans_added_p50_ms": _round(
                ttft["plans_on"]["added_p50_ms"], ttft["plans_off"]["added_p50_ms"]
            ),
            "limits_added_p50_ms": _round(
                ttft["plans_limits_spaced"]["added_p50_ms"],
                ttft["plans_on_spaced"]["added_p50_ms"],
            ),
            "streams_added_p50_ms": _round(
                ttft["plans_streams_spaced"]["added_p50_ms"],
                ttft["plans_on_spaced"]["added_p50_ms"],
            ),
            "moto_round_trip_p50_ms": _ms(self.moto_round_trip_s, 0.5),
            "moto_round_trip_p75_ms": _ms(self.moto_round_trip_s, 0.75),
            "moto_round_trip_spaced_p50_ms": _ms(spaced, 0.5),
            "moto_round_trip_spaced_p75_ms": _ms(spaced, 0.75),
            "dynamodb_requests": requests,
            "calls": calls,
            "plans_added_calls": round(
                calls["plans_on"]["calls_per_request"] - calls["plans_off"]["calls_per_request"], 1
            ),
            "plans_added_own_calls": round(
                calls["plans_on"]["own_calls_per_request"]
                - calls["plans_off"]["own_calls_per_request"],
                1,
            ),
        }

    def tool_round_trip(self) -> None:
        """Issue 28's goal: a frontend tool round trip (the step that ends in a call, then the
        step that carries its result) against two ordinary requests on the same relay, each
        against the direct client asked the same: time to first token added (both steps'
        added together), the relay process's CPU, and Python calls in-process."""
        s = self.scale
        direct = next((c for c in self.contenders if c.name == "direct"), None)
        compared = max(s.ttft_requests, s.ttft_requests_against_previous)
        ordinary, trip = TOOLS_CONTENDERS
        ttft = _ttft_entries(
            *self._paired_turns([(ordinary, direct, compared), (trip, DIRECT_ROUND_TRIP, compared)])
        )
        calls = work.counts(
            ROOT,
            self.upstream_port,
            BENCH_KEY,
            routes=(),
            tool_round_trip=True,
            CHAT_TOOLS=self.section_envs["relay_tools"]["CHAT_TOOLS"],
        )["tool_round_trip"]
        one, two = ttft[ordinary.name], ttft[trip.name]
        self.results["figures"]["tool_round_trip"] = {
            "requests": compared,
            "tokens": s.ttft_tokens,
            "pieces": TOOL_PIECES,
            "labels": {c.name: c.label for c in (*TOOLS_CONTENDERS, DIRECT_ROUND_TRIP)},
            "ttft": ttft,
            "added_over_two_requests": _ratio(two["added_p50_ms"], one["added_p50_ms"]),
            "cpu_over_two_requests": _ratio(
                two.get("cpu_ms_per_request"), one.get("cpu_ms_per_request")
            ),
            "calls": calls,
        }

    def _moto_env(self) -> dict[str, str]:
        """moto's server in a process of its own, with the quota table, once per run: its
        endpoint and keys for a relay's environment. Its recorder (off until asked) counts the
        requests that reach it."""
        if self.aws is not None:
            return self.aws
        port = free_port()
        self.moto = MotoRecorder(f"http://127.0.0.1:{port}")
        moto = Service(
            "moto",
            [sys.executable, "-m", "moto.server", "-p", str(port)],
            hermetic_env(MOTO_RECORDER_FILEPATH=str(self.moto.recording)),
        )
        self.services["moto"] = moto
        moto.wait_for_port(port)
        self.aws = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        create_quota_table(self.aws["AWS_ENDPOINT_URL"], QUOTA_TABLE)
        count = self.scale.warmup_requests * 20
        self.moto_round_trip_s = _signed_update_item_times(self.aws["AWS_ENDPOINT_URL"], count)
        dynamodb = moto_client("dynamodb", self.aws["AWS_ENDPOINT_URL"])
        self.moto_update_item_s = _update_item_times(dynamodb, count)
        return self.aws

    def _limits_env(self, relay_env: dict[str, str]) -> dict[str, str]:
        """The relay with both limits on (one conditional UpdateItem before the upstream call,
        one after the stream), set too high to refuse anything, against moto's server in a
        process of its own: what the check adds to the first token, with moto's speed standing
        in for DynamoDB's (a round trip within a region is typically a few ms)."""
        return dict(
            relay_env,
            **self._moto_env(),
            QUOTA_TABLE=QUOTA_TABLE,
            RATE_LIMIT_PER_MINUTE=str(10**9),
            TOKEN_BUDGET_PER_DAY=str(10**12),
        )

    def _drop(self, service: str, why: str) -> None:
        dropped = [c.name for c in self.contenders if c.service == service]
        self.contenders = [c for c in self.contenders if c.service != service]
        self.notes.append(f"skipped {', '.join(dropped)}: {why}")
        print(f"note: skipped {', '.join(dropped)}: {why}", file=sys.stderr)

    @staticmethod
    def _first_line(service: Service, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = (service.log_tail() or "").strip()
            if text:
                return text.splitlines()[0]
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited")
            time.sleep(0.05)
        raise RuntimeError(f"{service.name} printed nothing")

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            try:
                service.stop()
            except Exception as exc:  # a stuck process must not hide the results
                print(f"note: stopping {service.name}: {exc}", file=sys.stderr)

    # -- one request pattern, whichever kind of contender ----------------------------------------

    def sequential(self, contender: Contender, tokens: int, count: int) -> dict:
        if contender.kind == "native":
            return self.native.run("sequential", wire=contender.wire, tokens=tokens, count=count)
        if contender.kind == "buffered":
            return self.buffered.run("sequential", wire=contender.wire, tokens=tokens, count=count)
        if contender.job == "tool_round_trips":
            return self.client.run(
                "tool_round_trips",
                target=self._target(contender),
                pieces=TOOL_PIECES,
                tokens=tokens,
                count=count,
                gap_s=contender.gap_ms / 1000,
            )
        return self.client.run(
            "sequential",
            target=self._target(contender),
            prompt=prompt(tokens),
            tokens=tokens,
            count=count,
            gap_s=contender.gap_ms / 1000,
        )

    def _target(self, contender: Contender) -> dict:
        return {
            "host": "127.0.0.1",
            "port": self.ports[contender.service],
            "path": contender.path,
            "wire": contender.wire,
            "headers": contender.headers,
        }

    def _pid(self, contender: Contender) -> int | None:
        if contender.kind == "native":
            return self.runtime_pid
        if contender.service == "upstream":
            return None
        return self.services[contender.service].pid

    # -- the figures ----------------------------------------------------------------------------

    def warm_up(self) -> None:
        for contender in self.contenders + self.section_contenders:
            self._checked(contender, self.sequential(contender, 4, self.scale.warmup_requests))

    def _checked(self, contender: Contender, result: dict) -> dict:
        if result["failures"]:
            raise RuntimeError(f"{contender.name} answered wrongly: {result['failures'][:3]}")
        return result

    def time_to_first_token(self) -> None:
        """Figure 1: p50/p95 over sequential short requests, each contender's turn paired with
        a turn of the direct floor right before it."""
        s = self.scale
        direct = next((c for c in self.contenders if c.name == "direct"), None)
        turns = [(c, direct, self._ttft_requests(c)) for c in self.contenders if c is not direct]
        figure = _ttft_entries(*self._paired_turns(turns))
        self.results["figures"]["ttft"] = {
            "requests": s.ttft_requests,
            "requests_against_previous": s.ttft_requests_against_previous,
            "tokens": s.ttft_tokens,
            "turn": min(TTFT_TURN, s.ttft_requests),
            "settle": TTFT_SETTLE,
            "contenders": figure,
            # What the per-caller limits add: the same relay and route, limits on minus off.
            "limits_added_p50_ms": _round(
                figure.get("relay_sse_limits", {}).get("added_p50_ms"),
                figure.get("relay_sse", {}).get("added_p50_ms"),
            ),
            "limits_spaced_added_p50_ms": _round(
                figure.get("relay_sse_limits_spaced", {}).get("added_p50_ms"),
                figure.get("relay_sse_spaced", {}).get("added_p50_ms"),
            ),
            "rate_limit_added_p50_ms": _round(
                figure.get("relay_sse_rate_limit", {}).get("added_p50_ms"),
                figure.get("relay_sse", {}).get("added_p50_ms"),
            ),
            # One conditional UpdateItem from here to moto through the relay's own client (the
            # signed POST of handler/dynamodb.py): the one round trip the check may add.
            "moto_round_trip_p50_ms": _ms(self.moto_round_trip_s, 0.5),
            # Round trips to moto vary by a millisecond or more from one to the next: the
            # limits' target allows what one round trip takes in three calls out of four.
            "moto_round_trip_p75_ms": _ms(self.moto_round_trip_s, 0.75),
            # The same call through boto3, whose own CPU per call is part of this figure.
            "moto_update_item_p50_ms": _ms(self.moto_update_item_s, 0.5),
        }

    def _against_previous(self, contender: Contender) -> bool:
        """A route judged against the previous release, or the previous release's same route."""
        base = contender.name.removesuffix("_previous")
        return any(c.name == f"{base}_previous" for c in self.contenders)

    def _ttft_requests(self, contender: Contender) -> int:
        """Measured requests of figure 1: more for the routes judged against the previous
        release."""
        s = self.scale
        if self._against_previous(contender):
            return max(s.ttft_requests, s.ttft_requests_against_previous)
        return s.ttft_requests

    def _paired_turns(
        self, turns: list[tuple[Contender, Contender | None, int]]
    ) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]]]:
        """Each (contender, floor, count) of `turns`: `count` measured requests in rounds of
        turns of TTFT_TURN, every turn right after a turn of its floor of the same size. Per
        contender what its job times (`ttft_s`, and each step's for a tool round trip), its
        own and its floor's; a floor's own are every turn it made."""
        # Rounds of turns, contenders in turn, so a slow spell of this shared machine hits every
        # contender alike. Each contender is compared with its floor (the direct client)
        # measured just before its own turn: the floor drifts with what ran before it (after
        # the baseline's turn it measured 0.1-0.2 ms higher), and a fixed floor would credit
        # that to the relay. Turns are long because a relay process that sat idle through the
        # others' turns answers slower for its first 5-10 requests (per-position medians:
        # 1.3-1.6 ms for the first, then down to its plateau), while the floor's processes
        # (client, upstream) never sit idle: turns of 10 charged that to the relays.
        samples: dict[str, dict[str, list[float]]] = {}
        for _, floor, _ in turns:
            if floor is not None:
                samples.setdefault(floor.name, defaultdict(list))
        samples |= {contender.name: defaultdict(list) for contender, _, _ in turns}
        floors = {contender.name: defaultdict(list) for contender, _, _ in turns}
        rounds = {c.name: max(1, math.ceil(count / TTFT_TURN)) for c, _, count in turns}
        for index in range(max(rounds.values(), default=0)):
            for contender, floor, wanted in turns:
                name = contender.name
                if index >= rounds[name]:
                    continue
                count = wanted // rounds[name] + (index < wanted % rounds[name])
                if floor is not None:
                    for key, values in self._ttft_turn(floor, count).items():
                        floors[name][key] += values
                        samples[floor.name][key] += values
                for key, values in self._ttft_turn(contender, count).items():
                    samples[name][key] += values
        return samples, floors

    def _ttft_turn(self, contender: Contender, count: int) -> dict[str, list[float]]:
        """`count` measured requests, after TTFT_SETTLE unmeasured ones: a process that sat idle
        while the others ran answers its first requests slower, which would charge whoever comes
        first after a switch. What the job timed (`ttft_s`, ...), and `cpu_s` per request of
        the contender's process over the whole turn."""
        total = count + TTFT_SETTLE
        pid = self._pid(contender)
        cpu_before = cpu_seconds(pid) if pid else None
        result = self._checked(contender, self.sequential(contender, self.scale.ttft_tokens, total))
        timed = {k: v[TTFT_SETTLE:] for k, v in result.items() if k.endswith("ttft_s")}
        if pid:
            timed["cpu_s"] = [(cpu_seconds(pid) - cpu_before) / total]
        return timed

    def throughput(self) -> None:
        """Figure 2: one long stream from an upstream sending as fast as it can."""
        s = self.scale
        runs: dict[str, list[dict]] = {c.name: [] for c in self._streaming_contenders()}
        upstream_pid = self.services["upstream"].pid
        for trial in range(max(s.bulk_trials, s.bulk_trials_against_previous)):
            for contender in self._streaming_contenders():
                if trial >= s.bulk_trials and not self._against_previous(contender):
                    continue  # the extra trials are the compared routes' alone
                pid = self._pid(contender)
                cpu_before = cpu_seconds(pid) if pid else None
                upstream_before = cpu_seconds(upstream_pid)
                result = self._checked(contender, self.sequential(contender, s.bulk_tokens, 1))
                seconds = result["total_s"][0]
                runs[contender.name].append(
                    {
                        "seconds": seconds,
                        "chunks_per_s": s.bulk_tokens / seconds,
                        "cpu_s": cpu_seconds(pid) - cpu_before if pid else None,
                        "upstream_cpu_s": cpu_seconds(upstream_pid) - upstream_before,
                        "writes": (result.get("http_chunks") or [None])[0],
                    }
                )
        figure = {}
        for name, trials in runs.items():
            rate = statistics.median(t["chunks_per_s"] for t in trials)
            cpu = [t["cpu_s"] for t in trials if t["cpu_s"] is not None]
            figure[name] = {
                "chunks_per_s": round(rate),
                "chunks_per_s_trials": [round(t["chunks_per_s"]) for t in trials],
                "cpu_s_per_1k_chunks": (
                    round(statistics.median(cpu) / s.bulk_tokens * 1000, 5) if cpu else None
                ),
                "upstream_cpu_s_per_1k_chunks": round(
                    statistics.median(t["upstream_cpu_s"] for t in trials) / s.bulk_tokens * 1000,
                    5,
                ),
                "writes_per_stream": trials[-1]["writes"],
            }
        for name, trials in runs.items():
            previous = runs.get(f"{name}_previous")
            if previous:
                # Trial by trial against the previous release's trial just after it, so a slow
                # spell falls on both sides of each ratio (single trials swing 17k-38k chunks/s).
                pairs = zip(trials, previous, strict=True)
                ratios = [t["chunks_per_s"] / p["chunks_per_s"] for t, p in pairs]
                figure[name]["rate_ratio_to_previous"] = round(statistics.median(ratios), 3)
        direct = figure.get("direct", {}).get("chunks_per_s")
        for entry in figure.values():
            entry["ratio_to_direct"] = round(entry["chunks_per_s"] / direct, 3) if direct else None
        self.results["figures"]["throughput"] = {
            "tokens": s.bulk_tokens,
            "trials": s.bulk_trials,
            "trials_against_previous": s.bulk_trials_against_previous,
            "contenders": figure,
        }

    def concurrency(self) -> None:
        """Figure 3: many paced streams at once through the HTTP contenders."""
        s = self.scale
        http = [c for c in self._streaming_contenders() if c.kind == "http"]
        levels = {}
        for streams in s.concurrency:
            runs: dict[str, list[dict]] = {c.name: [] for c in http}
            for _ in range(s.concurrency_trials):
                for contender in http:
                    # Each measured burst follows an unmeasured one of the same size, so every
                    # contender starts with its connection pools full: otherwise whichever came
                    # first on a server process (or after aiohttp's 15 s keep-alive lapsed)
                    # paid for opening every upstream connection (500 streams: TTFT p95
                    # 807 ms first, 186 ms right after, same process).
                    self._burst(contender, streams)
                    runs[contender.name].append(self._burst(contender, streams))
            figure = {}
            for name, trials in runs.items():
                ttft = [v for t in trials for v in t["ttft_s"]]
                gaps = [t["max_gap_s"] for t in trials if t["max_gap_s"] is not None]
                figure[name] = {
                    "wall_s": round(statistics.median(t["wall_s"] for t in trials), 4),
                    "wall_s_trials": [round(t["wall_s"], 4) for t in trials],
                    "ttft_p95_ms": _ms(ttft, 0.95),
                    "max_gap_ms": round(max(gaps) * 1000, 2) if gaps else None,
                    "complete_streams": sum(t["ok"] for t in trials),
                    "lost_or_reordered": sum(t["failed"] for t in trials),
                    "failures": [f for t in trials for f in t["failures"]][:3],
                }
            direct = figure.get("direct", {}).get("wall_s")
            for entry in figure.values():
                entry["wall_ratio_to_direct"] = (
                    round(entry["wall_s"] / direct, 3) if direct else None
                )
            levels[str(streams)] = figure
        self.results["figures"]["concurrency"] = {
            "tokens": s.paced_tokens,
            "delay_ms": s.paced_delay_ms,
            "trials": s.concurrency_trials,
            "streams": levels,
        }

    def _streaming_contenders(self) -> list[Contender]:
        return [c for c in self.contenders if not c.ttft_only]

    def _burst(self, contender: Contender, streams: int) -> dict:
        s = self.scale
        return self.client.run(
            "concurrent",
            target=self._target(contender),
            prompt=prompt(s.paced_tokens, s.paced_delay_ms),
            tokens=s.paced_tokens,
            count=streams,
        )

    def many_invocations(self) -> None:
        """Lambda Managed Instances: the largest concurrency level's streams at once through ONE
        native runtime process (AWS_LAMBDA_MAX_CONCURRENCY pollers on one event loop), against
        the same streams sent direct to the upstream (figure 3), and that process's peak RSS."""
        s = self.scale
        if not _native_available() or "native_sse" not in {c.name for c in self.contenders}:
            self.results["figures"]["many_invocations"] = {"skipped": "no native contender"}
            return
        streams = max(s.concurrency)
        trials = [
            self.native.run(
                "concurrent",
                env=self.lambda_env,
                wire="sse",
                tokens=s.paced_tokens,
                delay_ms=s.paced_delay_ms,
                count=streams,
            )
            for _ in range(s.concurrency_trials)
        ]
        self.runtime_pid = None
        wall = statistics.median(t["wall_s"] for t in trials)
        direct = _get_direct_wall(self.results, streams)
        self.results["figures"]["many_invocations"] = {
            "streams": streams,
            "tokens": s.paced_tokens,
            "delay_ms": s.paced_delay_ms,
            "trials": s.concurrency_trials,
            "wall_s": round(wall, 4),
            "wall_s_trials": [round(t["wall_s"], 4) for t in trials],
            "direct_wall_s": direct,
            "wall_ratio_to_direct": round(wall / direct, 3) if direct else None,
            "ttft_p95_ms": _ms([v for t in trials for v in t["ttft_s"]], 0.95),
            "complete_streams": sum(t["ok"] for t in trials),
            "lost_or_reordered": sum(t["failed"] for t in trials),
            "failures": [f for t in trials for f in t["failures"]][:3],
            "peak_rss_mib": round(max(t["peak_rss_kib"] for t in trials) / 1024, 1),
            "warm_rss_mib": round(max(t["warm_rss_kib"] for t in trials) / 1024, 1),
        }

    def memory(self) -> None:
        """Figure 5: peak RSS of a fresh runtime process over a run of invocations."""
        s = self.scale
        if not _native_available():
            self.results["figures"]["memory"] = {"skipped": "handler/runtime.py does not exist yet"}
            return
        self.runtime_pid = self.native.run("spawn", env=self.lambda_env)["pid"]
        after_first = self.native.run("peak_rss")["peak_rss_kib"]
        result = self.native.run(
            "sequential", wire="sse", tokens=s.memory_tokens, count=s.memory_invocations
        )
        if result["failures"]:
            raise RuntimeError(f"memory run failed: {result['failures'][:3]}")
        peak = self.native.run("peak_rss")["peak_rss_kib"]
        self.native.run("stop")
        self.results["figures"]["memory"] = {
            "invocations": s.memory_invocations,
            "tokens_each": s.memory_tokens,
            "peak_rss_mib": round(peak / 1024, 1),
            "peak_rss_after_first_mib": round(after_first / 1024, 1),
        }

    def cold_start_and_package(self) -> None:
        """Figures 4 and 6: the package, and a fresh runtime from it to the first byte."""
        s = self.scale
        package = build_package()
        self.results["figures"]["package"] = {
            "built_by": package.source,
            "zip": str(package.zip_path.relative_to(ROOT)),
            "zipped_mib": round(package.zipped_bytes / 2**20, 2),
            "unzipped_mib": round(package.unzipped_bytes / 2**20, 2),
            "pyc_files": package.pyc_files,
        }
        if not _native_available() or not s.cold_trials:
            why = "--cold-trials 0" if _native_available() else "handler/runtime.py does not exist"
            self.results["figures"]["cold_start"] = {"skipped": why}
            return
        trees = {"packaged": (package.packaged, True), "no_bytecode": (package.sources, False)}
        trials: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(s.cold_trials):
            for name, (tree, bytecode) in trees.items():
                trials[name].append(
                    self.native.run(
                        "cold_start", env=self.lambda_env, package=str(tree), bytecode=bytecode
                    )
                )
        figure: dict = {"trials": s.cold_trials}
        for name, runs in trials.items():
            first_byte = [r["first_byte_s"] for r in runs]
            figure[name] = {
                "first_byte_p50_ms": _ms(first_byte, 0.5),
                "first_byte_p95_ms": _ms(first_byte, 0.95),
                "first_token_p50_ms": _ms([r["first_token_s"] for r in runs], 0.5),
                "event_taken_p50_ms": _ms([r["event_taken_s"] for r in runs], 0.5),
            }
        figure["ratio"] = round(
            figure["packaged"]["first_byte_p50_ms"] / figure["no_bytecode"]["first_byte_p50_ms"], 3
        )
        for name, (tree, bytecode) in trees.items():
            traced = self.native.run(
                "cold_start",
                env=self.lambda_env,
                package=str(tree),
                bytecode=bytecode,
                importtime=True,
            )
            figure[name]["import_top"] = report.import_breakdown(traced["importtime"])
        self.results["figures"]["cold_start"] = figure

    def lambda_shaped(self) -> None:
        """Figure 7: the Lambda contenders on Lambda's CPU share per memory size (bench/cold.py)."""
        if self.scale.lambda_shaped == "off":
            self.results["figures"]["lambda"] = {"skipped": "--lambda-shaped off"}
            return
        from bench import cold

        self.results["figures"]["lambda"] = cold.run(cold.COLD_SCALES[self.scale.lambda_shaped])

    # -- the whole run --------------------------------------------------------------------------

    def execute(self) -> dict:
        started = time.monotonic()
        try:
            # Inside the `try`: a start that fails half-way still stops what it started (a
            # failed smoke run once left three moto servers behind).
            self.start()
            self.warm_up()
            for name in self.sections:
                if name in NATIVE_PROCESS_SECTIONS and self.runtime_pid is not None:
                    self.native.run("stop")  # they start runtimes of their own
                    self.runtime_pid = None
                print(f"… {name}", file=sys.stderr, flush=True)
                getattr(self, name)()
        finally:
            self.stop()
        self.results["contenders"] = {
            c.name: {"label": c.label, "kind": c.kind, "wire": c.wire, "ttft_only": c.ttft_only}
            for c in self.contenders
        }
        self.results["meta"] = {
            "scale": dataclasses.asdict(self.scale),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {_cpu_count()} CPUs",
            "commit": git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - started, 1),
            "notes": self.notes,
            "sections": self.sections,
        }
        self.results["targets"] = report.targets(self.results)
        return self.results


def _ttft_entries(
    samples: dict[str, dict[str, list[float]]], floors: dict[str, dict[str, list[float]]]
) -> dict[str, dict]:
    """Figure 1's entry of each contender: its p50/p95, its floor's, and what it adds to them
    (a floor is its own floor); for a tool round trip each step's too."""
    figure = {}
    for name, timed in samples.items():
        floor = floors.get(name, timed)
        values, under = timed["ttft_s"], floor.get("ttft_s", [])
        entry = figure[name] = {
            "n": len(values),
            "p50_ms": _ms(values, 0.5),
            "p95_ms": _ms(values, 0.95),
            "floor_p50_ms": _ms(under, 0.5),
            "added_p50_ms": _round(_ms(values, 0.5), _ms(under, 0.5)),
            "added_p95_ms": _round(_ms(values, 0.95), _ms(under, 0.95)),
        }
        for step in ("call", "answer"):
            if timed.get(f"{step}_ttft_s"):
                step_values, step_floor = timed[f"{step}_ttft_s"], floor.get(f"{step}_ttft_s", [])
                entry[f"{step}_p50_ms"] = _ms(step_values, 0.5)
                entry[f"{step}_added_p50_ms"] = _round(_ms(step_values, 0.5), _ms(step_floor, 0.5))
        if timed.get("cpu_s"):
            entry["cpu_ms_per_request"] = round(statistics.median(timed["cpu_s"]) * 1000, 3)
    return figure


def _admission_like(index: int) -> dict:
    """A conditional UpdateItem of the admission's shape (handler/quota.py), never refused."""
    return {
        "TableName": QUOTA_TABLE,
        "Key": {"pk": {"S": "quota#1970-01-01#bench-reference"}},
        "UpdateExpression": "ADD requests :one, #minute :one SET expires_at = :expires"
        " REMOVE #previous",
        "ConditionExpression": "(attribute_not_exists(#minute) OR #minute < :limit)"
        " AND (attribute_not_exists(tokens) OR tokens < :budget)",
        "ExpressionAttributeNames": {"#minute": f"m{index % 2}", "#previous": f"m{1 - index % 2}"},
        "ExpressionAttributeValues": {
            ":one": {"N": "1"},
            ":expires": {"N": "0"},
            ":limit": {"N": str(10**9)},
            ":budget": {"N": str(10**12)},
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def _signed_update_item_times(endpoint: str, count: int, gap_s: float = 0) -> list[float]:
    """Seconds per admission-like UpdateItem through the relay's own client, on uvloop as in
    the relay's uvicorn, sequential (`gap_s` apart), after a warm-up: one round trip to moto
    as the relay makes it (boto3's figure adds its own serialising and signing CPU)."""
    import asyncio

    import uvloop

    from handler.aws import AwsEnvironment
    from handler.dynamodb import DynamoDB

    # The keys come from the SDKs' chain, as on Lambda from the environment.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    aws = AwsEnvironment(region="us-east-1", endpoint_url=endpoint)

    async def measure() -> list[float]:
        client, times = DynamoDB(aws, 1.0, 2.0), []
        for index in range(count + 5):
            if gap_s:
                await asyncio.sleep(gap_s)
            started = time.perf_counter()
            await client.update_item(_admission_like(index))
            if index >= 5:
                times.append(time.perf_counter() - started)
        await client.close()
        return times

    return asyncio.run(measure(), loop_factory=uvloop.new_event_loop)


def _update_item_times(dynamodb, count: int) -> list[float]:
    """Seconds per admission-like UpdateItem through boto3, sequential, after a warm-up."""
    times = []
    for index in range(count + 5):
        request = _admission_like(index)
        started = time.perf_counter()
        dynamodb.update_item(**request)
        if index >= 5:
            times.append(time.perf_counter() - started)
    return times


def _get_direct_wall(results: dict, streams: int) -> float | None:
    """Direct's median wall time for `streams` concurrent streams (figure 3), if measured."""
    level = results["figures"].get("concurrency", {}).get("streams", {}).get(str(streams), {})
    return level.get("direct", {}).get("wall_s")


def _ratio(round_trip: float | None, request: float | None) -> float | None:
    """A round trip's figure over two ordinary requests'."""
    if round_trip is None or not request:
        return None
    return round(round_trip / (2 * request), 3)


def _round(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else round(value - base, 3)


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


def merged(previous: dict, results: dict) -> dict:
    """The results of a run of some sections (`--only`) over those of an earlier run: each
    section's figures replace the earlier ones, the others stay, and `meta.measured_apart`
    says when and at which commit each section measured apart from the rest was measured."""
    meta = results["meta"]
    apart = {
        section: {k: meta[k] for k in ("commit", "date", "seconds", "scale", "notes", "sections")}
        for section in meta["sections"]
    }
    combined = previous | {
        "figures": previous.get("figures", {}) | results["figures"],
        "contenders": previous.get("contenders", {}) | results["contenders"],
        "meta": previous["meta"]
        | {"measured_apart": previous["meta"].get("measured_apart", {}) | apart},
    }
    combined["targets"] = report.targets(combined)
    return combined


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--chart", type=Path, default=RESULTS / "chart.png")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="where to write the generated page (default bench/README.md for the default --out,"
        " else README.md beside --out)",
    )
    parser.add_argument("--skip", action="append", default=[], help="leave out this contender")
    for name, value in dataclasses.asdict(Scale()).items():
        if isinstance(value, int):
            parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {value}")
    parser.add_argument("--concurrency", type=lambda v: tuple(int(x) for x in v.split(",")))
    parser.add_argument(
        "--instruction-requests",
        type=lambda v: tuple(int(x) for x in v.split(",") if x),
        help="the requests of the two runs that count instructions per request (A,B), or ''"
        f" for none; default {','.join(map(str, work.INSTRUCTION_REQUESTS))}",
    )
    parser.add_argument("--lambda-shaped", choices=["full", "quick", "tiny", "off"])
    parser.add_argument(
        "--only",
        type=lambda v: v.split(","),
        help=f"run only these sections (comma-separated, of {', '.join(SECTIONS)}); their figures"
        " replace those of the same sections in --out, the others stay as they were",
    )
    args = parser.parse_args(argv)
    if args.only and set(args.only) - set(SECTIONS):
        parser.error(f"--only: no section {', '.join(sorted(set(args.only) - set(SECTIONS)))}")
    scale = SCALES[args.scale]
    overrides = {
        name: getattr(args, name)
        for name in dataclasses.asdict(scale)
        if getattr(args, name, None) is not None
    }
    scale = dataclasses.replace(scale, **overrides)
    results = Run(scale, set(args.skip), set(args.only) if args.only else None).execute()
    seconds = results["meta"]["seconds"]
    if args.only and args.out.exists():
        results = merged(json.loads(args.out.read_text()), results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report.tables(results))
    print("\n" + lambda_report.tables(results))
    written = [args.out]
    if not args.only or CHARTED_SECTIONS & set(args.only):
        report.chart(results, args.chart)
        lambda_report.chart(results, args.chart.with_name("lambda.png"))
        written.append(args.chart)
    readme = args.readme or (
        ROOT / "bench" / "README.md"
        if args.out == RESULTS / "latest.json"
        else args.out.with_name("README.md")
    )
    chart_link = os.path.relpath(args.chart, readme.parent)
    readme.write_text(report.readme(results, chart_link))
    written.append(readme)
    print(f"\nwrote {', '.join(map(str, written))} in {seconds} s")
    return results


if __name__ == "__main__":
    main()
