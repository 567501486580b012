"""The processes of a benchmark run: each contender, the upstream and the load client on their own.

A `Service` is a subprocess whose CPU time (user + sys) and peak RSS can be read at any moment;
a `Worker` is one that takes JSON jobs on stdin and answers each with a JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "results" / "logs"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def hermetic_env(**extra: str) -> dict[str, str]:
    """The caller's environment less anything that would point a contender elsewhere."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "AWS_", "PYTHON"))
        and not name.startswith(("JWT_", "JWKS_"))
        and name
        not in {"CLIENT_TOKENS", "ALLOWED_MODELS", "LOG_PROMPTS", "CORS_ORIGINS", "URL_AUTH_TYPE"}
    }
    env.update(extra)
    return env


def git_commit() -> str | None:
    """The measured commit, short."""
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return result.stdout.strip() or None


def cpu_seconds(pid: int) -> float:
    """The process's CPU seconds, all threads, ended ones too: the live threads' from the
    scheduler's nanosecond counts where Linux has them (psutil's user and system times come in
    10 ms ticks, too coarse for a turn of short requests), plus, in ticks, what threads that
    have ended used (the kernel keeps only the total: init's secret-read thread has ended by the
    first poll, and a sum over the live threads alone left its ~100 ms of imports out)."""
    try:
        live_ns = live_ticks = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                ns = int((task / "schedstat").read_text().split()[0])
                ticks = _cpu_ticks(task / "stat")
            except OSError:  # it ended since the listing: counted below with the ended ones
                continue
            live_ns, live_ticks = live_ns + ns, live_ticks + ticks
        ended_ticks = max(0, _cpu_ticks(Path(f"/proc/{pid}/stat")) - live_ticks)
        return live_ns / 1e9 + ended_ticks / os.sysconf("SC_CLK_TCK")
    except OSError:
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


def _cpu_ticks(stat: Path) -> int:
    """utime + stime of a /proc stat file, in clock ticks (fields 14 and 15, after the name)."""
    fields = stat.read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def peak_rss_kib(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


class Service:
    """A subprocess with its stderr in bench/results/logs/<name>.log."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        pipe: bool = False,
        cwd: Path = ROOT,
    ):
        self.name = name
        LOGS.mkdir(parents=True, exist_ok=True)
        self._log = open(LOGS / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else self._log,
            stderr=self._log,
            text=pipe,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for_port(self, port: int, timeout_s: float = 60) -> Service:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {port}: {self.log_tail()}")

    def log_tail(self) -> str:
        self._log.flush()
        return (LOGS / f"{self.name}.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Worker(Service):
    """A service that answers JSON jobs; its first line says it is ready."""

    def __init__(self, name: str, module: str, env: dict[str, str]):
        super().__init__(name, [sys.executable, "-m", module], env, pipe=True)
        self.hello = self._read_line(timeout_note="starting")

    def _read_line(self, timeout_note: str) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} ended while {timeout_note}: {self.log_tail()}")
        return json.loads(line)

    def run(self, job: str, **params: object) -> dict:
        self.process.stdin.write(json.dumps({"job": job, **params}) + "\n")
        self.process.stdin.flush()
        result = self._read_line(timeout_note=f"running {job}")
        if "error" in result:
            raise RuntimeError(f"{self.name} {job}: {result['error']}")
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                pass
        super().stop()
