"""`make bench-cold`: the relay on Lambda-shaped CPU, from a cold start to a sustained stream.

Lambda runs init at full CPU, then gives each invocation `memory / 1,769 MB` of one CPU. Here
each contender starts unthrottled and, when it first asks the runtime API for an event (for the
Lambda Web Adapter mode: once its health check answers), moves into a cgroup whose CFS quota is
that share. Per memory size: init, the first invocation's time to first byte, the warm time to
first token, one stream's sustained tokens per second and peak RSS, for the native runtime, the
previous release's (its `handler/` on this package's libraries), the `lwa` mode's uvicorn,
buffered Mangum under a managed-runtime stand-in, and a floor of the standard library alone
(bench/lambda_floor.py). The key comes from Secrets Manager (moto).
Each starts as Lambda starts a function: from the deployment package `make package` builds
(bytecode compiled ahead of time), with only that package and the standard library on the path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import client as http_client
from bench.events import function_url_event
from bench.native import RuntimeProcess, verify
from bench.package import (
    PREVIOUS_RELEASE,
    as_on_lambda,
    build_package,
    previous_release_tree,
)
from bench.runtime_api import RuntimeApiEmulator
from bench.scenario import FIRST_TOKEN, prompt
from bench.services import ROOT, Service, cpu_seconds, free_port, git_commit, hermetic_env
from devtools.moto_server import moto_client

ONE_CPU_MB = 1769  # Lambda: 1,769 MB of memory is one vCPU
MEMORY_SIZES = (128, 256, 512, 1024)
CFS_PERIOD_US = 100_000  # the kernel's default period
SECRET_NAME = "relay-bench/openai"
BENCH_KEY = "sk-bench-not-a-real-key"
now = time.monotonic


@dataclass
class ColdScale:
    trials: int = 3  # cold starts per contender and size (median)
    warm_requests: int = 20  # warm invocations per contender and size
    warm_gap_ms: float = 120  # between warm invocations: longer than one CFS period
    stream_tokens: int = 4000  # the sustained stream
    sizes: tuple[int, ...] = MEMORY_SIZES


COLD_SCALES = {
    "full": ColdScale(),
    "quick": ColdScale(trials=1, warm_requests=5, stream_tokens=1000),
    "tiny": ColdScale(trials=1, warm_requests=2, stream_tokens=200, sizes=(128,)),
}


@dataclass
class ColdContender:
    name: str
    label: str
    args: list[str]  # the interpreter's arguments: how Lambda would start it
    via: str = "runtime_api"  # or "http" (the web adapter's uvicorn)
    streams: bool = True
    bench_module: bool = False  # a stand-in from bench/ (the floor, the managed runtime's)
    previous: bool = False  # the previous release's `handler`, on the package's libraries


CONTENDERS = [
    ColdContender("native", "native runtime", ["-m", "handler.runtime"]),
    # The Starlette release, whose AWS calls were signed by hand: what init and the first
    # invocation cost before FastAPI came back and awscrt signed (issues 24 and 26).
    ColdContender(
        "previous",
        f"native runtime, previous release {PREVIOUS_RELEASE}",
        ["-m", "handler.runtime"],
        previous=True,
    ),
    # What handler/bin/lwa-start execs once it is in LAMBDA_TASK_ROOT (it adds the port).
    ColdContender("lwa", "lwa mode (uvicorn)", ["-m", "handler.lwa"], via="http"),
    ColdContender(
        "buffered",
        "buffered Mangum",
        ["-m", "bench.lambda_floor", "handler.app:handler"],
        streams=False,
        bench_module=True,
    ),
    ColdContender(
        "floor", "floor (stdlib runtime)", ["-m", "bench.lambda_floor"], bench_module=True
    ),
]


class CpuQuota:
    """One cgroup per memory size with Lambda's CPU share, cgroup v1 or v2, whichever is here."""

    def __init__(self) -> None:
        self.groups: dict[int, Path] = {}
        self.skipped: str | None = None
        v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.root, self.version = v1, 1
        elif "cpu" in _read(v2 / "cgroup.controllers").split():
            self.root, self.version = v2, 2
        else:
            self.root, self.version = v2, 0
            self.skipped = "skipped: no cgroup CPU controller here"
            return
        try:
            self._group(MEMORY_SIZES[0])
        except OSError as exc:
            self.skipped = f"skipped: cgroups not writable ({type(exc).__name__})"

    @property
    def description(self) -> str:
        if self.version == 1:
            return f"cgroup v1 cpu.cfs_quota_us over cpu.cfs_period_us = {CFS_PERIOD_US} µs"
        return f"cgroup v2 cpu.max, period {CFS_PERIOD_US} µs"

    def _group(self, memory_mb: int) -> Path:
        group = self.groups.get(memory_mb)
        if group is not None:
            return group
        # One group per run: two runs at once on a shared machine must not remove each other's.
        group = self.root / f"relay-bench-{memory_mb}mb-{os.getpid()}"
        group.mkdir(exist_ok=True)
        quota = round(CFS_PERIOD_US * memory_mb / ONE_CPU_MB)
        if self.version == 1:
            (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            subtree = self.root / "cgroup.subtree_control"
            if "cpu" not in _read(subtree).split():
                subtree.write_text("+cpu")
            (group / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        self.groups[memory_mb] = group
        return group

    def throttle(self, pid: int, memory_mb: int | None) -> None:
        """Move the process (all its threads) into the size's group; None: stay at full CPU."""
        if memory_mb is not None:
            (self._group(memory_mb) / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        for group in self.groups.values():
            try:
                group.rmdir()
            except OSError:
                pass  # a process still inside; the next run reuses the group


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class ThrottlingEmulator(RuntimeApiEmulator):
    """The runtime-API emulator, throttling the runtime as its first `/next` arrives."""

    def __init__(self, quota: CpuQuota, memory_mb: int | None) -> None:
        super().__init__()
        self.quota, self.memory_mb = quota, memory_mb
        self.pid: int | None = None
        self.first_poll_at: float | None = None
        self.init_cpu_s: float | None = None

    def polling(self) -> None:
        super().polling()
        if self.first_poll_at is None:
            self.first_poll_at = now()
            self.init_cpu_s = cpu_seconds(self.pid)  # less swayed by a busy machine than the wall
            self.quota.throttle(self.pid, self.memory_mb)


@dataclass
class Sample:
    """One contender at one memory size."""

    init_ms: list[float] = field(default_factory=list)
    init_cpu_ms: list[float] = field(default_factory=list)
    first_byte_ms: list[float] = field(default_factory=list)
    first_token_ms: list[float] = field(default_factory=list)
    cold_first_token_ms: list[float] = field(default_factory=list)
    warm_ttft_ms: list[float] = field(default_factory=list)
    tokens_per_s: float | None = None
    peak_rss_mib: float | None = None
    init_steps: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        med = _median
        return {
            "init_ms": med(self.init_ms),
            "init_cpu_ms": med(self.init_cpu_ms),
            "first_byte_ms": med(self.first_byte_ms),
            "first_token_ms": med(self.first_token_ms),
            "cold_first_token_ms": med(self.cold_first_token_ms),
            "warm_ttft_p50_ms": med(self.warm_ttft_ms),
            "warm_ttft_p95_ms": _quantile(self.warm_ttft_ms, 0.95),
            "tokens_per_s": round(self.tokens_per_s) if self.tokens_per_s else None,
            "peak_rss_mib": self.peak_rss_mib,
            "init_steps_ms": self.init_steps or None,
            "trials": len(self.init_ms),
        }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


_INIT_LINE = re.compile(r"init: [\d.]+ ms \((.*)\)")


def init_steps(stderr: str) -> dict[str, float]:
    """The native runtime's own log line of its init steps (handler/init.py)."""
    match = _INIT_LINE.search(stderr)
    if not match:
        return {}
    steps = {}
    for part in match.group(1).split(", "):
        name, value, _ = part.rsplit(" ", 2)
        steps[name] = float(value)
    return steps


class LambdaProcess(RuntimeProcess):
    """One contender process, its runtime-API emulator (or HTTP port) and its stderr."""

    def __init__(
        self,
        contender: ColdContender,
        env: dict,
        quota: CpuQuota,
        memory_mb: int | None,
        package: Path,
        handler_from: Path | None = None,  # another release's `handler` (as_on_lambda)
    ) -> None:
        super().__init__(env, str(package), False)
        self.contender, self.quota, self.memory_mb = contender, quota, memory_mb
        self.handler_from = handler_from
        self.emulator = ThrottlingEmulator(quota, memory_mb)
        self.port: int | None = None

    async def cold_start(self) -> tuple[float, float | None, float]:
        """Start the process with one event waiting: (init, first byte, first token), in s."""
        await self.emulator.start()
        if self.contender.via == "http":
            return await self._cold_start_http()
        first = self.emulator.invoke(function_url_event("sse", prompt(8)))
        self._spawn(self.contender.args, {"AWS_LAMBDA_RUNTIME_API": self.emulator.address})
        self.emulator.pid = self.process.pid
        await self._until_done(first)
        self._check(first, 8)
        init = self.emulator.first_poll_at - self.spawned_at
        token = first.first_arrival_of(FIRST_TOKEN) - first.delivered_at
        return init, first.chunks[0][0] - first.delivered_at, token

    async def _cold_start_http(self) -> tuple[float, float | None, float]:
        self.port = free_port()
        # What the Lambda Web Adapter starts, as handler/bin/lwa-start runs it (AWS_LWA_PORT).
        self._spawn([*self.contender.args, "--port", str(self.port)], {})
        # The adapter's readiness check: GET /healthz until it answers, then the first event.
        while not await self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.stderr()[-500:]}")
            await asyncio.sleep(0.01)
        init = now() - self.spawned_at
        self.emulator.init_cpu_s = cpu_seconds(self.process.pid)
        self.quota.throttle(self.process.pid, self.memory_mb)
        ttft, _ = await self._http_request(8)
        return init, None, ttft

    async def _healthy(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        status = await reader.readline()
        writer.close()
        return b" 200 " in status

    async def _http_request(self, tokens: int) -> tuple[float, float]:
        target = http_client.Target(
            "127.0.0.1", self.port, "/chat", "sse", {"accept": "text/event-stream"}
        )
        result = await http_client.sequential(target, prompt(tokens), tokens, 1)
        if result["failures"]:
            raise RuntimeError(f"{self.contender.name}: {result['failures'][0]}")
        return result["ttft_s"][0], result["total_s"][0]

    async def invoke(self, tokens: int) -> tuple[float, float]:
        """One warm invocation: (time to first token, time to the last byte), in s."""
        if self.contender.via == "http":
            return await self._http_request(tokens)
        invocation = self.emulator.invoke(function_url_event("sse", prompt(tokens)))
        await self._until_done(invocation)
        self._check(invocation, tokens)
        first = invocation.first_arrival_of(FIRST_TOKEN)
        return first - invocation.delivered_at, invocation.chunks[-1][0] - invocation.delivered_at

    def _spawn(self, args: list[str], extra: dict[str, str]) -> None:
        python, lambda_env = as_on_lambda(
            Path(self.package),
            bench_module=self.contender.bench_module,
            handler_from=self.handler_from,
        )
        self.spawned_at = now()
        self.process = subprocess.Popen(
            [*python, *args],
            cwd=self.handler_from or self.package,  # `-m` puts the cwd first on the path
            env={**self.env, **lambda_env, **extra},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    async def _until_done(self, invocation) -> None:
        try:
            await asyncio.wait_for(self._unless_dead(invocation.done), 300)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.contender.name}: {exc}: {self.stderr()[-800:]}") from None

    def _check(self, invocation, tokens: int) -> None:
        problem = verify(invocation, "sse", tokens)
        if problem:
            raise RuntimeError(f"{self.contender.name}: {problem} {self.stderr()[-500:]}")

    @property
    def init_cpu_s(self) -> float:
        return self.emulator.init_cpu_s

    def peak_rss_mib(self) -> float | None:
        kib = self.peak_rss_kib()
        return round(kib / 1024, 1) if kib else None

    def stderr(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")


async def measure(
    scale: ColdScale,
    env: dict[str, str],
    quota: CpuQuota,
    package: Path,
    contenders: list[ColdContender],
    previous: Path | None,
) -> dict:
    """Every contender at every size and at full CPU; sizes in turn, contenders alternating."""
    sizes: list[int | None] = [None, *scale.sizes]
    figure: dict[str, dict] = {}
    for memory_mb in sizes:
        key = "full" if memory_mb is None else str(memory_mb)
        print(f"… lambda-shaped: {key} MB", file=sys.stderr, flush=True)
        samples = {c.name: Sample() for c in contenders}
        lambda_env = dict(env, AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(memory_mb or ONE_CPU_MB))
        for trial in range(scale.trials):
            for contender in contenders:
                handler_from = previous if contender.previous else None
                runtime = LambdaProcess(
                    contender, lambda_env, quota, memory_mb, package, handler_from
                )
                sample = samples[contender.name]
                try:
                    init, first_byte, first_token = await runtime.cold_start()
                    sample.init_ms.append(init * 1000)
                    sample.init_cpu_ms.append(runtime.init_cpu_s * 1000)
                    sample.first_token_ms.append(first_token * 1000)
                    sample.cold_first_token_ms.append((init + first_token) * 1000)
                    if first_byte is not None:
                        sample.first_byte_ms.append(first_byte * 1000)
                    if trial == scale.trials - 1:
                        await _warm_figures(runtime, sample, scale)
                finally:
                    stderr = await runtime.stop()
                if contender.name in ("native", "previous"):
                    sample.init_steps = init_steps(stderr)
        figure[key] = {name: sample.summary() for name, sample in samples.items()}
    return figure


async def _warm_figures(runtime: LambdaProcess, sample: Sample, scale: ColdScale) -> None:
    for _ in range(scale.warm_requests):
        await asyncio.sleep(scale.warm_gap_ms / 1000)  # the quota refills, as between requests
        ttft, _ = await runtime.invoke(8)
        sample.warm_ttft_ms.append(ttft * 1000)
    await asyncio.sleep(scale.warm_gap_ms / 1000)
    _, total = await runtime.invoke(scale.stream_tokens)
    sample.tokens_per_s = scale.stream_tokens / total
    sample.peak_rss_mib = runtime.peak_rss_mib()


# What init cannot go below while the relay is built on these: the packages the app imports
# (FastAPI with pydantic and starlette, aiohttp, pydantic-settings, Mangum's adapters, orjson),
# imported alone in a fresh interpreter at full CPU, against the app's own modules on top.
# Both as init imports them: aiohttp first, its CA store loaded on a thread beside the rest
# (handler/aiohttp_import.py; bench/import_ab.py times it against a plain import).
_INIT_WAY = (
    "from handler import aiohttp_import\n"
    "aiohttp_import.import_aiohttp()\n"
    "{imports}\n"
    "aiohttp_import.wait_for_ca_store()"
)
APP_MODULES = "import handler.runtime, handler.init, handler.app"
LIBRARIES = _INIT_WAY.format(imports="import fastapi, pydantic_settings, mangum, orjson")
APP = _INIT_WAY.format(imports=APP_MODULES)


def import_cpu_ms(trials: int, package: Path) -> dict[str, float | None]:
    """Median process CPU (user + system, ms) of a fresh interpreter that imports the libraries
    alone, the whole app, or nothing (the interpreter's own start-up), from the package."""
    code = {"interpreter": "pass", "libraries": LIBRARIES, "app": APP}
    runs: dict[str, list[float]] = {name: [] for name in code}
    python, lambda_env = as_on_lambda(package)
    for _ in range(max(3, trials)):
        for name, statement in code.items():  # alternating, so drift hits all three alike
            child = subprocess.run(
                [
                    *python,
                    "-c",
                    f"{statement}\nimport os; t = os.times()\nprint((t.user + t.system) * 1000)",
                ],
                cwd=package,
                env=hermetic_env(**lambda_env),
                capture_output=True,
                text=True,
                check=True,
            )
            runs[name].append(float(child.stdout.split()[-1]))
    return {f"{name}_ms": _median(values) for name, values in runs.items()}


class Stack:
    """The upstream and moto's Secrets Manager, each a process of its own, and the secret."""

    def __enter__(self) -> Stack:
        self.services: list[Service] = []
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # no orphaned upstream or moto when the setup fails
            raise

    def _start(self) -> Stack:
        upstream = Service(
            "cold-upstream", [sys.executable, "-m", "bench.upstream"], hermetic_env()
        )
        self.services.append(upstream)
        deadline = now() + 30
        while not upstream.log_tail().strip():
            if now() > deadline or upstream.process.poll() is not None:
                raise RuntimeError(f"the upstream did not start: {upstream.log_tail()}")
            time.sleep(0.05)
        upstream_port = int(upstream.log_tail().split()[0])
        moto_port = free_port()
        moto = Service(
            "cold-moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            hermetic_env(),
        )
        self.services.append(moto.wait_for_port(moto_port))
        endpoint = f"http://127.0.0.1:{moto_port}"
        aws = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        secrets = moto_client("secretsmanager", endpoint)
        arn = secrets.create_secret(Name=SECRET_NAME, SecretString=BENCH_KEY)["ARN"]
        self.env = hermetic_env(
            **aws,
            OPENAI_SECRET_ID=arn,
            OPENAI_BASE_URL=f"http://127.0.0.1:{upstream_port}/v1",
            AWS_LAMBDA_FUNCTION_NAME="bench",
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            ALLOW_ANONYMOUS="true",  # as in bench/run.py: the callers are the benchmark
        )
        return self

    def __exit__(self, *exc) -> None:
        for service in reversed(self.services):
            service.stop()


def run(scale: ColdScale, only=None) -> dict:
    """The figure: {"quota", "sizes": {size: {contender: summary}}} or {"skipped": why}."""
    quota = CpuQuota()
    if quota.skipped:
        print(f"note: lambda-shaped figure {quota.skipped}", file=sys.stderr)
        return {"skipped": quota.skipped}
    started = now()
    package = build_package()
    contenders = [c for c in CONTENDERS if not only or c.name in only]
    previous = None
    if any(c.previous for c in contenders):
        previous = previous_release_tree()
        if previous is None:
            print(f"note: commit {PREVIOUS_RELEASE} is not in this clone", file=sys.stderr)
            contenders = [c for c in contenders if not c.previous]
    try:
        with Stack() as stack:
            sizes = asyncio.run(
                measure(scale, stack.env, quota, package.packaged, contenders, previous)
            )
    finally:
        quota.remove()
    imports = import_cpu_ms(scale.trials, package.packaged)
    figure = {
        "quota": quota.description,
        "one_cpu_mb": ONE_CPU_MB,
        "scale": asdict(scale),
        "contenders": {c.name: c.label for c in contenders},
        "package": package.source,  # who built what the contenders ran
        "sizes": sizes,
        "import_cpu": imports,
        "seconds": round(now() - started, 1),
        "commit": git_commit(),  # `make bench-cold` adds this figure to another run's results
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return figure


def main(argv: list[str] | None = None) -> dict:
    from bench import lambda_report, report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(COLD_SCALES), default="quick")
    parser.add_argument("--only", action="append", help="just this contender (repeatable)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    figure = run(COLD_SCALES[args.scale], args.only)
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    results.setdefault("figures", {})["lambda"] = figure
    results.setdefault("meta", {}).setdefault("notes", [])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(lambda_report.tables(results))
    lambda_report.chart(results, args.results.parent / "lambda.png")
    if "contenders" in results:  # a whole run's results: its generated page follows
        (ROOT / "bench" / "README.md").write_text(report.readme(results))
    print(f"\nwrote the lambda figure into {args.results} in {figure.get('seconds', 0)} s")
    return figure


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
