"""Benchmark of ``leadml simulate``: wall time, peak memory and rows per table.

    .venv/bin/python bench/bench_simulate.py                      # 20,000 leads (default)
    .venv/bin/python bench/bench_simulate.py --leads 20000 1000000

Each size runs in its own process so that its peak RSS (``ru_maxrss``) is its own.
Output goes to a temporary folder (``--out`` to keep it) and is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(leads: int, seed: int, out: Path) -> dict[str, object]:
    from leadml.config import SimulatorConfig, Vocabulary
    from leadml.simulate import simulate

    t0 = time.perf_counter()
    summary = simulate(SimulatorConfig(leads=leads, seed=seed), Vocabulary(), out)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mib = usage.ru_maxrss / 1024
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "leads": leads,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # wall time is inflated on a shared machine
        "peak_rss_mib": peak_mib,
        "disk_mib": size / 2**20,
        "rows": summary.rows,
        "truth_rows": summary.truth_rows,
        "realism": summary.realism,
        "reps": summary.reps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--leads", type=int, nargs="+", default=[20_000])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="keep the output here (one size only)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        out = args.out or Path(tempfile.mkdtemp(prefix="leadml-bench-")) / "data"
        try:
            print(json.dumps(run_one(args.leads[0], args.seed, out)))
        finally:
            if args.out is None:
                shutil.rmtree(out.parent, ignore_errors=True)
        return
    for n in args.leads:
        cmd = [sys.executable, __file__, "--one", "--leads", str(n), "--seed", str(args.seed)]
        if args.out:
            cmd += ["--out", str(args.out)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        rows = res["rows"]
        total = sum(rows.values())
        print(
            f"== {n:,} leads: {res['wall_s']:.1f} s wall ({res['cpu_s']:.1f} s CPU), "
            f"peak RSS {res['peak_rss_mib']:,.0f} MiB, "
            f"{res['disk_mib']:,.0f} MiB on disk"
        )
        print(
            f"   {total:,} rows, {total / res['wall_s']:,.0f} rows/s; "
            f"events {rows['events']:,} ({rows['events'] / res['wall_s']:,.0f}/s, "
            f"{rows['events'] / n:.0f} per lead)"
        )
        for table, k in {**rows, **{f"truth/{t}": v for t, v in res["truth_rows"].items()}}.items():
            print(f"   {table:<22}{k:>14,}")
        print("   reps " + ", ".join(f"{k} {v}" for k, v in res["reps"].items()))
        print("   realism " + ", ".join(f"{k} {v:.3f}" for k, v in res["realism"].items()))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
