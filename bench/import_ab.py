"""What loading aiohttp's CA store on a thread saves init: its imports timed both ways.

`python -m bench.import_ab` builds the deployment package (bench/package.py) and times, in
alternating fresh interpreters started as Lambda starts them (`-S`, the package alone on the
path), the imports of the native runtime's init: `thread`, as init does them
(handler/aiohttp_import.py: aiohttp imported without its CA store, the store loaded into its
verified context on a thread beside the app's imports, waited for at the end), and `main`, a
plain import (aiohttp's two contexts each load the store on the main thread). Prints the
medians of wall and CPU time and the quartiles of the pairs' wall-time ratios; the figures are
quoted in docs/architecture.md ("Cold start"). A single Lambda-shaped run cannot show a change
this size: its cold start moves by more between runs (same section).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess

from bench.cold import APP, APP_MODULES
from bench.package import as_on_lambda, build_package
from bench.services import hermetic_env

_TIMED = """
import gc, os, time
gc.disable()
wall, cpu = time.perf_counter(), time.process_time()
{imports}
print((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000)
"""
# As init imports the app (bench/cold.py's `APP`), and the same modules imported plainly.
VARIANTS = {"thread": APP, "main": APP_MODULES}


def measure(pairs: int) -> dict[str, list[tuple[float, float]]]:
    """(wall ms, CPU ms) of each variant's imports, `pairs` times each, alternating which goes
    first so a drift of the machine hits both alike."""
    package = build_package().packaged
    python, lambda_env = as_on_lambda(package)
    env = hermetic_env(**lambda_env)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for pair in range(pairs):
        order = list(VARIANTS) if pair % 2 else list(reversed(VARIANTS))
        for name in order:
            code = _TIMED.format(imports=VARIANTS[name])
            child = subprocess.run(
                [*python, "-c", code],
                cwd=package,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            wall, cpu = map(float, child.stdout.split()[-2:])
            runs[name].append((wall, cpu))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    runs = measure(parser.parse_args().pairs)
    for name, values in runs.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{name:6} median wall {wall:6.1f} ms  CPU {cpu:6.1f} ms  ({len(values)} runs)")
    ratios = [t[0] / m[0] for t, m in zip(runs["thread"], runs["main"], strict=True)]
    if len(ratios) > 1:
        quartiles = ", ".join(f"{q:.3f}" for q in statistics.quantiles(ratios, n=4))
        print(f"wall thread/main: quartiles {quartiles}")


if __name__ == "__main__":
    main()
