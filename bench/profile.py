"""Where a request's instructions go: `make bench`'s count (bench/work.py), per Python function.

`python -m bench.profile` counts, like `bench.work.instructions`, two runs of one route's
unpaced 8-token requests under valgrind's callgrind that differ only in how many requests they
make, and prints, for each Python function, the instructions a request spends in it and in what
it calls (inclusive), the difference of the two runs over the requests between them, so the
import and the warm-up cancel out as in the figure itself.

callgrind sees machine code, not Python functions; Python's perf support (`-X perf`) gives each
Python function a trampoline of its own, which every call of it runs through, and writes the
trampolines' addresses to `/tmp/perf-<pid>.map`. Named from that map, a trampoline's inclusive
count is its Python function's. A function that calls itself is counted once, at its outermost
call (callgrind_annotate's `'2` entries, the inner calls, are left out).

    python -m bench.profile                              # this checkout's /v1 route
    python -m bench.profile --route chat_sse --match handler/
    python -m bench.profile --tree bench/results/previous  # the previous release (make bench)
    python -m bench.profile --framework fastapi          # bench/framework_apps.py's route
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bench import work
from bench.services import ROOT, Service, free_port, hermetic_env

# callgrind's name of code it has no symbol for, which the trampolines are.
_UNNAMED = re.compile(r"^(c?fn=\(\d+\) )0x([0-9a-f]+)$")
# A line of `callgrind_annotate --inclusive=yes`: the count, then file:function [object].
_ANNOTATED = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\?\?\?:py::(\S+?)(?: \[[^\]]*\])?$")


def profile(
    requests: tuple[int, int] = work.INSTRUCTION_REQUESTS,
    *,
    route: str = "v1",
    tree: Path = ROOT,
    framework: str | None = None,
) -> dict[str, int]:
    """Instructions per request in each Python function (`path:qualified name`), inclusive."""
    valgrind = shutil.which("valgrind")
    annotate = shutil.which("callgrind_annotate")
    if valgrind is None or annotate is None:
        raise SystemExit("valgrind is not installed: `make valgrind` installs it")
    if framework is not None:
        return _profile(
            valgrind, annotate, ["-", "0"], hermetic_env(), {"framework": framework}, requests
        )
    port = free_port()
    upstream = Service(
        "upstream-profile",
        [sys.executable, "-m", "bench.upstream", "--port", str(port)],
        hermetic_env(),
    ).wait_for_port(port)
    try:
        env = work.relay_env(port, "sk-profile-not-a-key")
        job = {"instructions": route}
        return _profile(valgrind, annotate, [str(tree), str(port)], env, job, requests)
    finally:
        upstream.stop()


def _profile(
    valgrind: str,
    annotate: str,
    child: list[str],
    env: dict[str, str],
    job: dict,
    requests: tuple[int, int],
) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as scratch:
        out = f"{scratch}/callgrind.%p"
        runs = work.callgrind_runs(
            valgrind, child, env, job, requests, python_args=("-X", "perf"), out_file=out
        )
        counts = []
        for pid, _ in runs:
            perf_map = Path(f"/tmp/perf-{pid}.map")
            try:
                named = Path(scratch, f"named.{pid}")
                _name_trampolines(Path(scratch, f"callgrind.{pid}"), perf_map, named)
            finally:
                perf_map.unlink(missing_ok=True)
            counts.append(_inclusive(annotate, named))
    (fewer, more), (before, after) = requests, counts
    return {
        function: round((after.get(function, 0) - before.get(function, 0)) / (more - fewer))
        for function in before.keys() | after.keys()
    }


def _name_trampolines(report: Path, perf_map: Path, named: Path) -> None:
    """Write `report` again with each trampoline's address replaced by its Python function's
    name from `perf_map` (`address size py::name:file` per line)."""
    names = {}
    for line in perf_map.read_text().splitlines():
        address, _, name = line.split(" ", 2)
        names[int(address, 16)] = name.replace(" ", "_")

    def rename(found: re.Match) -> str:
        name = names.get(int(found.group(2), 16))
        return found.group(1) + name if name else found.group(0)

    with report.open() as source, named.open("w") as target:
        for line in source:
            target.write(_UNNAMED.sub(rename, line.rstrip("\n")) + "\n")


def _inclusive(annotate: str, report: Path) -> dict[str, int]:
    listing = subprocess.run(
        [annotate, "--inclusive=yes", "--threshold=100", str(report)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: dict[str, int] = {}
    for line in listing.splitlines():
        found = _ANNOTATED.match(line)
        if found and not found.group(2).endswith("'2"):
            # `py::name:file`, shown as file:name.
            name, _, file = found.group(2).rpartition(":")
            counts[f"{_short(file)}:{name}"] = int(found.group(1).replace(",", ""))
    return counts


def _short(file: str) -> str:
    for prefix in (str(ROOT) + "/", "site-packages/", "lib/python3.13/"):
        file = file.split(prefix, 1)[-1]
    return file


def table(per_request: dict[str, int], top: int, match: Iterable[str] = ()) -> str:
    """The `top` functions by their instructions per request (those whose name contains one of
    `match`, when given)."""
    wanted = [
        (count, function)
        for function, count in per_request.items()
        if count > 0 and (not match or any(m in function for m in match))
    ]
    rows = sorted(wanted, reverse=True)[:top]
    return "\n".join(f"{count:>12,}  {function}" for count, function in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", choices=sorted(work.ROUTES), default="v1")
    parser.add_argument("--tree", type=Path, default=ROOT, help="a checkout with `handler/`")
    parser.add_argument("--framework", choices=("fastapi", "starlette"))
    parser.add_argument("--requests", default=",".join(map(str, work.INSTRUCTION_REQUESTS)))
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--match", action="append", default=[], help="e.g. handler/ or fastapi/")
    args = parser.parse_args()
    fewer, more = (int(n) for n in args.requests.split(","))
    per_request = profile(
        (fewer, more), route=args.route, tree=args.tree.resolve(), framework=args.framework
    )
    print("instructions per request, inclusive, by Python function")
    print(table(per_request, args.top, args.match))


if __name__ == "__main__":
    main()
