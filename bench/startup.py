"""Cold start and load time: `personae --help`, `personae lint` on the shipped personas, and loading 10,000 rules.

Each command is run as a fresh process several times (the first run warms the
disk cache and is not counted); the load time is `parse_persona` on the
realistic persona of `bench/realistic.py`, in this process. Prints one table.

    python bench/startup.py
    python bench/startup.py --runs 30 --rules 10000
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import time

from realistic import persona_yaml, trigger_set, vocabulary

from personae.language.loader import parse_persona


def timed_command(argv: list[str], runs: int) -> list[float]:
    subprocess.run(argv, capture_output=True, check=True)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per command (default 20)")
    parser.add_argument("--rules", type=int, default=10_000, help="rules for the load time (default 10,000)")
    args = parser.parse_args()
    exe = shutil.which("personae") or sys.exit("personae is not installed (pip install -e .)")
    rows = [
        ("personae --help", timed_command([exe, "--help"], args.runs), "< 120 ms"),
        ("personae lint personas/", timed_command([exe, "lint", "personas/"], args.runs), ""),
    ]
    yaml = persona_yaml(trigger_set(args.rules, vocabulary()))
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        parse_persona(yaml, "bench.yaml")
        loads.append((time.perf_counter() - t0) * 1000)
    rows.append((f"load {args.rules:,} rules", loads, "< 1,500 ms"))
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cold start and load time (ms)")
    for col in ("what", "runs", "median", "best", "worst", "target"):
        table.add_column(col, justify="right")
    for name, times, target in rows:
        table.add_row(
            name,
            str(len(times)),
            f"{statistics.median(times):,.0f}",
            f"{min(times):,.0f}",
            f"{max(times):,.0f}",
            target,
        )
    Console(width=max(Console().width, 100)).print(table)
    print(
        f"Python {platform.python_version()}; command: python bench/startup.py --runs {args.runs} --rules {args.rules}"
    )


if __name__ == "__main__":
    main()
