"""Import time of ``gnomon`` vs ``jax, optax`` (goal: ratio ≤ 1.3), each in fresh interpreters.

Run: ``python benchmarks/bench_import.py [repeats]``. Prints medians and the ratio.
"""

import statistics
import subprocess
import sys
import time


def median_import(stmt: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    base = median_import("import jax, optax", repeats)
    ours = median_import("import gnomon; gnomon.Layout; gnomon.Objective; gnomon.run_simple_gd; gnomon.save_run",
                         repeats)
    print(f"import jax, optax          : {base:.3f} s (median of {repeats}, fresh interpreters)")
    print(f"import gnomon (core names) : {ours:.3f} s")
    print(f"ratio                      : {ours / base:.2f}  (goal ≤ 1.3)")


if __name__ == "__main__":
    main()
