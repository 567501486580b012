"""What the Lambda-shaped figure (bench/cold.py) means: issue 16's goals, its tables and chart.

Every goal is read from one run's results, against the floor measured in the same run.
"""

from __future__ import annotations

import statistics
from pathlib import Path

INIT_LIMIT_MS = 350  # native init at full CPU, everything warmed
OWN_WORK_LIMIT_MS = 20  # first invocation's own work to first byte at 128 MB (vs the floor)
COLD_LIMIT_MS = 600  # cold start to first byte at 128 MB (init + first invocation)
WARM_ADDED_LIMIT_MS = 5  # warm added time to first token at 128 MB (vs the floor)
STREAM_RATE = 1000  # tokens/s of one stream at 128 MB
GOAL_SIZE = "128"
# The issue states its goals "on this 2-core machine, ratios against the floor in the same run",
# and wrote them when the floor (the stdlib runtime) took 58 ms to init and 1 ms more to its
# first byte. The two goals in absolute milliseconds are therefore judged as that ratio of the
# floor measured in the same run; the absolute figure is shown beside it.
ISSUE_FLOOR_INIT_MS = 58
ISSUE_FLOOR_COLD_MS = 59


def _figure(results: dict) -> dict:
    return (results.get("figures") or {}).get("lambda") or {}


def _value(figure: dict, size: str, name: str, key: str):
    return ((figure.get("sizes") or {}).get(size) or {}).get(name, {}).get(key)


def _minus(a, b):
    return None if a is None or b is None else round(a - b, 2)


def init_every_size(figure: dict, name: str) -> float | None:
    """The median init over every memory size's cold starts: init runs at full CPU whatever the
    size, so each row measures the same thing, and one row's few trials can land in one of
    this machine's fast or slow spells (one run's full-CPU row read 711 ms, its other rows
    998-1,068)."""
    values = [
        entry[name]["init_ms"]
        for entry in (figure.get("sizes") or {}).values()
        if entry.get(name, {}).get("init_ms") is not None
    ]
    return round(statistics.median(values), 1) if values else None


def cold_first_byte(figure: dict, size: str, name: str) -> float | None:
    init = _value(figure, size, name, "init_ms")
    first = _value(figure, size, name, "first_byte_ms")
    return None if init is None or first is None else round(init + first, 1)


def goals_at(figure: dict, size: str) -> list[dict]:
    """Issue 16's goals for the native runtime at one memory size (init: at full CPU)."""
    rows = []

    def check(
        goal: str, value, limit: float, at_most: bool = True, by_memory=True, floor_ms=None
    ) -> None:
        row = {"goal": goal, "size": size, "value": value, "by_memory": by_memory}
        if floor_ms is not None:  # an absolute goal: scaled by today's floor against the issue's
            reference = ISSUE_FLOOR_INIT_MS if "init" in goal else ISSUE_FLOOR_COLD_MS
            row["absolute_met"] = None if value is None else value <= limit
            row["floor_ms"] = floor_ms
            limit = round(limit * floor_ms / reference, 1) if floor_ms else None
            row["scaled_limit"] = limit
        met = (
            None
            if value is None or limit is None
            else (value <= limit if at_most else value >= limit)
        )
        rows.append(dict(row, met=met))

    native = lambda key: _value(figure, size, "native", key)  # noqa: E731
    floor = lambda key: _value(figure, size, "floor", key)  # noqa: E731
    check(
        f"init at full CPU ≤ {INIT_LIMIT_MS} ms (median over every size's cold starts)",
        init_every_size(figure, "native"),
        INIT_LIMIT_MS,
        by_memory=False,  # init runs at full CPU whatever the memory size
        floor_ms=init_every_size(figure, "floor"),
    )
    check(
        f"first invocation's own work to first byte ≤ {OWN_WORK_LIMIT_MS} ms (minus floor)",
        _minus(native("first_byte_ms"), floor("first_byte_ms")),
        OWN_WORK_LIMIT_MS,
    )
    check(
        f"cold start to first byte ≤ {COLD_LIMIT_MS} ms",
        cold_first_byte(figure, size, "native"),
        COLD_LIMIT_MS,
        by_memory=False,  # mostly init; its throttled part is the goal above
        floor_ms=cold_first_byte(figure, size, "floor"),
    )
    check(
        f"warm added TTFT ≤ {WARM_ADDED_LIMIT_MS} ms (p50 minus floor)",
        _minus(native("warm_ttft_p50_ms"), floor("warm_ttft_p50_ms")),
        WARM_ADDED_LIMIT_MS,
    )
    check(f"one stream ≥ {STREAM_RATE:,} tokens/s", native("tokens_per_s"), STREAM_RATE, False)
    return rows


def targets(results: dict) -> list[dict]:
    figure = _figure(results)
    return goals_at(figure, GOAL_SIZE) if figure.get("sizes") else []


def smallest_size_meeting_goals(results: dict) -> int | None:
    """The memory size the template's default follows: the smallest at which every goal that
    depends on the memory size is met (init runs at full CPU at any size, so it cannot choose)
    and the peak RSS leaves a quarter of the memory free."""
    figure = _figure(results)
    for size in sorted(int(s) for s in (figure.get("sizes") or {}) if s != "full"):
        rows = [row for row in goals_at(figure, str(size)) if row["by_memory"]]
        rss = _value(figure, str(size), "native", "peak_rss_mib")
        if all(row["met"] for row in rows) and rss is not None and rss <= 0.75 * size:
            return size
    return None


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def against_previous(figure: dict, label: str) -> str:
    """This release's native runtime against the previous release's, in this run."""
    init = init_every_size(figure, "native"), init_every_size(figure, "previous")
    cold = (
        cold_first_byte(figure, GOAL_SIZE, "native"),
        cold_first_byte(figure, GOAL_SIZE, "previous"),
    )
    first, rss = (
        (_value(figure, GOAL_SIZE, "native", key), _value(figure, GOAL_SIZE, "previous", key))
        for key in ("first_byte_ms", "peak_rss_mib")
    )

    def pair(values: tuple, digits: int = 1) -> str:
        ours, theirs = values
        change = _minus(ours, theirs)
        change = "-" if change is None else f"{change:+,.{digits}f}"
        return f"{_fmt(ours, digits)} ms against {_fmt(theirs, digits)} ms ({change} ms)"

    return (
        f"\nAgainst the {label} (the Starlette app, its AWS calls signed by hand): init at full CPU"
        f" {pair(init, 0)}, median over every size's cold starts; at {GOAL_SIZE} MB, cold start"
        f" to first byte {pair(cold, 0)}, the first invocation to its first byte"
        f" {pair(first)}, peak RSS {_fmt(rss[0])} against {_fmt(rss[1])} MiB."
    )


def tables(results: dict) -> str:
    figure = _figure(results)
    if not figure.get("sizes"):
        return f"Lambda-shaped figure: {figure.get('skipped', 'not measured')}"
    labels = figure["contenders"]
    scale = figure["scale"]
    out = [
        f"Measured at commit {figure.get('commit')} on {figure.get('date')}."
        " Lambda-shaped CPU (issue 16): each contender starts at full CPU and is moved, at its"
        f" first `/next`, into a cgroup with Lambda's share for its memory ({figure['quota']};"
        f" memory / {figure['one_cpu_mb']:,} MB of one CPU). Key from Secrets Manager (moto)."
        f" Medians of {scale['trials']} cold starts; warm TTFT over {scale['warm_requests']}"
        f" requests {scale['warm_gap_ms']:g} ms apart; one stream of {scale['stream_tokens']:,}"
        " tokens. Init CPU: the process's user + system CPU time until then, less swayed by a"
        " busy machine than the wall clock. First byte: the response's first byte at the runtime"
        " API (the web adapter mode: the first token at its HTTP client, no adapter between).\n"
    ]
    header = [
        "memory",
        "contender",
        "init ms (full CPU)",
        "init CPU ms",
        "1st invocation → first byte ms",
        "→ first token ms",
        "cold start → first byte ms",
        "warm TTFT p50 ms",
        "p95 ms",
        "added vs floor p50 ms",
        "tokens/s",
        "peak RSS MiB",
    ]
    rows = []
    for size, contenders in figure["sizes"].items():
        floor_warm = (contenders.get("floor") or {}).get("warm_ttft_p50_ms")
        for name, entry in contenders.items():
            cold = cold_first_byte(figure, size, name)
            if cold is None and entry.get("init_ms") is not None:
                cold = round(entry["init_ms"] + entry["first_token_ms"], 1)
            rows.append(
                [
                    "full CPU" if size == "full" else f"{size} MB",
                    labels.get(name, name),
                    _fmt(entry["init_ms"], 0),
                    _fmt(entry.get("init_cpu_ms"), 0),
                    _fmt(entry["first_byte_ms"]),
                    _fmt(entry["first_token_ms"]),
                    _fmt(cold, 0),
                    _fmt(entry["warm_ttft_p50_ms"], 2),
                    _fmt(entry["warm_ttft_p95_ms"], 2),
                    _fmt(_minus(entry["warm_ttft_p50_ms"], floor_warm), 2),
                    _fmt(entry["tokens_per_s"]),
                    _fmt(entry["peak_rss_mib"]),
                ]
            )
    out.append(_table(header, rows))
    if "previous" in labels:
        out.append(against_previous(figure, labels["previous"]))
    steps = _value(figure, "full", "native", "init_steps_ms")
    if steps:
        out.append("\nNative runtime's init steps at full CPU (its own log line, ms):\n")
        out.append(_table(list(steps), [[_fmt(v) for v in steps.values()]]))
    imports = figure.get("import_cpu")
    if imports:
        out.append(
            "\nImport CPU in a fresh interpreter at full CPU, from the package as every contender"
            " above runs (median, ms; `os.times`, 10 ms"
            f" ticks): the interpreter alone {_fmt(imports['interpreter_ms'], 0)}; the libraries"
            " the app is built on, imported alone (FastAPI with pydantic and starlette, aiohttp,"
            f" pydantic-settings, Mangum, orjson) {_fmt(imports['libraries_ms'], 0)}; the whole"
            f" app (runtime, init and app modules) {_fmt(imports['app_ms'], 0)}; both as init"
            " imports them, aiohttp's CA store loaded on a thread. Init cannot go below the"
            " libraries' share while they are imported in it."
        )
    out.append(
        "\nGoals of issue 16 (native runtime, 128 MB unless said). The issue judges them"
        " against the floor in the same run; it wrote its two goals in milliseconds when the"
        f" floor took {ISSUE_FLOOR_INIT_MS} ms to init and {ISSUE_FLOOR_COLD_MS} ms to its first"
        " byte, so those two are judged at the same multiple of this run's floor (the absolute"
        " verdict is beside it):\n"
    )
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    out.append(
        _table(
            ["goal", "measured", "floor ms", "goal at this floor", "met", "met in absolute ms"],
            [
                [
                    row["goal"],
                    _fmt(row["value"]),
                    _fmt(row.get("floor_ms")),
                    _fmt(row.get("scaled_limit")),
                    verdict[row["met"]],
                    verdict[row["absolute_met"]] if "absolute_met" in row else "-",
                ]
                for row in targets(results)
            ],
        )
    )
    smallest = smallest_size_meeting_goals(results)
    out.append(
        "\nSmallest memory size meeting every goal that depends on memory (not init, which runs"
        " at full CPU), with a quarter of it free at peak RSS, in this run: "
        + (f"**{smallest} MB**" if smallest else "none of those measured")
    )
    return "\n".join(out)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    """Four panels against memory size: cold start, warm added TTFT, stream rate, peak RSS."""
    figure = _figure(results)
    if not figure.get("sizes"):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s for s in figure["sizes"] if s != "full"]
    x = [int(s) for s in sizes]
    labels = figure["contenders"]
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    fig.suptitle("Lambda-shaped CPU: memory / 1,769 MB of one CPU after init (issue 16)")

    def panel(ax, value_of, ylabel: str, limit=None, limit_label="", log=False) -> None:
        for name in labels:
            values = [value_of(size, name) for size in sizes]
            if any(v is not None for v in values):
                ax.plot(
                    x,
                    [v if v is not None else float("nan") for v in values],
                    "o-",
                    label=labels[name],
                )
        if limit is not None:
            ax.axhline(limit, color="red", linestyle="--", label=limit_label)
        if log:
            ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{s} MB" for s in sizes])
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    def cold(size, name):
        value = cold_first_byte(figure, size, name)
        if value is None:
            init, token = (_value(figure, size, name, k) for k in ("init_ms", "first_token_ms"))
            value = None if init is None or token is None else init + token
        return value

    panel(
        axes[0][0],
        cold,
        "cold start → first byte (ms, log)",
        COLD_LIMIT_MS,
        f"goal ≤ {COLD_LIMIT_MS} ms at 128 MB",
        log=True,
    )

    def warm_added(size, name):
        return _minus(
            _value(figure, size, name, "warm_ttft_p50_ms"),
            _value(figure, size, "floor", "warm_ttft_p50_ms"),
        )

    panel(
        axes[0][1],
        warm_added,
        "warm TTFT p50 minus the floor's (ms)",
        WARM_ADDED_LIMIT_MS,
        f"goal ≤ {WARM_ADDED_LIMIT_MS} ms at 128 MB",
    )
    panel(
        axes[1][0],
        lambda s, n: _value(figure, s, n, "tokens_per_s"),
        "one stream, tokens/s (log)",
        STREAM_RATE,
        f"goal ≥ {STREAM_RATE:,}/s",
        log=True,
    )
    panel(axes[1][1], lambda s, n: _value(figure, s, n, "peak_rss_mib"), "peak RSS (MiB)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
