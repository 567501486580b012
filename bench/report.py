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
    check(
        "cold start packaged ≤ 50% of no bytecode",
        "native",
        _get(results, "cold_start", "ratio"),
        COLD_START_RATIO,
        True,
    )
    return rows


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
    out.append("\nTargets (issues 6 and 14):\n")
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
