"""Every benchmark, one after another, each in its own interpreter (``make bench``).

Each prints its own figures and the command that produced them; at the end the goal lines are
repeated as a summary. ``--quick`` is passed on to every benchmark.
"""

import argparse
import subprocess
import sys
import time

from bench.harness import command

MODULE = "bench.run_all"
BENCHMARKS = ["bench.fanout", "bench.pause", "bench.throughput", "bench.priority", "bench.create_rate", "bench.stall",
              "bench.adb", "bench.screen"]
TIMEOUT_SEC = 600  # each benchmark's own sizes keep it to a few minutes; this only bounds a hang


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only these (repeatable)")
    args = parser.parse_args()
    print(f"command: {command(MODULE)}", flush=True)
    summary: list[str] = []
    failed = []
    started = time.perf_counter()
    for module in args.only or BENCHMARKS:
        argv = [sys.executable, "-m", module] + (["--quick"] if args.quick else [])
        print(f"\n$ python -m {module}{' --quick' if args.quick else ''}", flush=True)
        t0 = time.perf_counter()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                if line.startswith(("goal", "-- ", "completed assignments/s", "POST ->", "PATCH paused ->", "stall ->",
                                    "adb commands/s", "order fidelity", "priority violations, grace  50")):
                    summary.append(f"{module}: {line.rstrip()}")
            try:
                code = proc.wait(timeout=TIMEOUT_SEC)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = -1
        if code != 0:
            failed.append(module)
        print(f"({module} took {time.perf_counter() - t0:.0f} s, exit {code})", flush=True)
    print(f"\n== summary ({time.perf_counter() - started:.0f} s)")
    for line in summary:
        print(line)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
