"""Benchmark of the nightly run (``leadml batch``): wall time, peak RSS, and the scoring
step's throughput against raw ``Booster.predict`` on the same feature matrix.

    .venv/bin/python bench/bench_nightly.py --workspace /work/main/workspace [--as-of D]

The workspace needs its simulated company (``leadml simulate``) and champions of both
models in its MLflow registry (``leadml train ...`` + ``leadml promote ...``, or
``leadml demo``). ``--as-of`` defaults to the day after the last event in the data.
The run writes its outputs to a temporary workspace copy of the outputs folder
(``--keep`` writes into the workspace itself), so benchmarking never replaces a real
night's outputs.

Figures printed: the nightly wall time and per-step timings, peak RSS of the process
(``ru_maxrss``), and for each model: rows/s of the scoring step (encode + booster +
calibration + grade, as the run does it), rows/s of raw ``Booster.predict`` on the
already-encoded matrix, their ratio (goal >= 0.8), and rows/s of the reasons (TreeSHAP)
which the run computes only for deals, the call list and the best leads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _best_of(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def scoring_throughput(champion: Any, frame: Any, repeat: int = 3) -> dict[str, float]:
    """Rows/s of the run's scoring step and of raw Booster.predict on the same matrix."""
    model = champion.bundle.model
    encoded = model.encoder.transform(frame)
    n = len(frame)
    kind = champion.bundle.kind

    def step() -> None:
        p = champion.predict(frame)
        champion.grade(p)

    if kind == "deal_close":
        # the run's step: one hazard pass, then P(won) for the horizons it needs
        def step() -> None:  # noqa: F811 - the deal model's scoring step differs
            champion._hazard_cache = None
            for h in (30.0, 90.0, 180.0):
                champion.won_by(frame, np.full(n, h))

        from leadml.modeling.train import _with_weeks

        expanded = _with_weeks(encoded, np.tile(np.arange(model.max_weeks), n), model)

        def raw() -> None:
            model.booster.predict(expanded, num_iteration=model.rounds)
    else:

        def raw() -> None:
            model.booster.predict(encoded, num_iteration=model.rounds)

    t_step, t_raw = _best_of(step, repeat), _best_of(raw, repeat)
    sample = frame.head(min(n, 20_000))
    t_reasons = _best_of(lambda: champion.reasons(sample), 1) if len(sample) else float("nan")
    return {
        "rows": n,
        "scoring_rows_per_s": n / t_step if t_step else float("nan"),
        "raw_predict_rows_per_s": n / t_raw if t_raw else float("nan"),
        "ratio_scoring_vs_raw": t_raw / t_step if t_step else float("nan"),
        "reasons_rows_per_s": len(sample) / t_reasons if t_reasons else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default="workspace")
    parser.add_argument("--as-of", default=None)
    parser.add_argument("--data", default=None, help="input tables [default: workspace company]")
    parser.add_argument("--keep", action="store_true", help="publish into the workspace's outputs")
    parser.add_argument("--sql-url", default=None, help="SQL destination (default: DuckDB file)")
    parser.add_argument(
        "--scoring-rows",
        type=int,
        default=0,
        help="also measure scoring throughput on the lead feature matrix tiled to this many rows",
    )
    args = parser.parse_args()

    workspace = Path(args.workspace).resolve()
    os.environ["LEADML_WORKSPACE"] = str(workspace)
    from leadml.batch.nightly import run_nightly
    from leadml.config import load_settings
    from leadml.contracts import TABLE_NAMES
    from leadml.sources import open_source

    settings = load_settings()
    data = Path(args.data).resolve() if args.data else settings.data_dir
    if not (data / "leads.parquet").exists() and not (data / "leads.csv").exists():
        raise SystemExit(f"no company in {data}; run `leadml simulate` first")
    as_of = args.as_of or _default_as_of(data, open_source, TABLE_NAMES)

    scratch = None
    store = None
    if not args.keep:
        from leadml.batch.outputs import OutputStore, ParquetOutputs, sql_outputs

        scratch = Path(tempfile.mkdtemp(prefix="leadml-bench-nightly-"))
        url = args.sql_url or f"duckdb:///{scratch / 'leadml.duckdb'}"
        store = OutputStore(ParquetOutputs(scratch), sql_outputs(url, scratch))

    t0 = time.perf_counter()
    result = run_nightly(
        settings,
        as_of,
        data=data,
        keep_features=True,
        store=store,
        on_step=lambda s: print(f"  .. {s}", flush=True),
    )
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = result.manifest
    figures: dict[str, Any] = {
        "as_of": m.as_of,
        "input_rows": m.input_rows,
        "open_entities": m.open_entities,
        "nightly_wall_s": round(wall, 1),
        "peak_rss_mib_after_run": round(peak, 0),
        "timings_s": m.timings_s,
        "rows_written": m.rows_written,
    }
    for entity, name in (("lead", "lead_readiness"), ("opportunity", "deal_close")):
        champ = result.champions.get(name)
        frame = result.features.get(entity)
        if champ is None or frame is None or not len(frame) or not hasattr(champ, "bundle"):
            continue
        figures[f"scoring_{name}"] = {
            k: round(v, 3) for k, v in scoring_throughput(champ, frame).items()
        }
    champ, frame = result.champions.get("lead_readiness"), result.features.get("lead")
    if args.scoring_rows and champ is not None and frame is not None and len(frame):
        import pandas as pd

        reps = -(-args.scoring_rows // len(frame))
        big = pd.concat([frame] * reps, ignore_index=True).head(args.scoring_rows)
        figures[f"scoring_lead_readiness_{args.scoring_rows}_rows"] = {
            k: round(v, 3) for k, v in scoring_throughput(champ, big, repeat=2).items()
        }
    figures["peak_rss_mib_total"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0
    )
    print(json.dumps(figures, indent=2, default=str))
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def _default_as_of(data_dir: Path, open_source: Any, names: list[str]) -> str:
    import duckdb

    src = open_source(data_dir, names)
    with duckdb.connect() as con:
        src.register(con, ["opportunity_history"])
        last = con.execute(
            "SELECT max(CAST(ts AS TIMESTAMPTZ)) FROM raw_opportunity_history"
        ).fetchone()[0]
    import pandas as pd

    return str((pd.Timestamp(last).tz_convert("UTC").normalize() + pd.Timedelta(days=1)).date())


if __name__ == "__main__":
    main()
