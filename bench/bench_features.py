"""Feature-engine benchmark: offline (DuckDB) speed and memory, a plain-pandas reference,
and the online engine's latency.

    .venv/bin/python bench/bench_features.py [--data DIR] [--as-of D] [--sample-events N]
        [--dates 1,4,52] [--rounds N] [--skip features,dataset,reference,online]

Stages (each in a fresh subprocess, so its peak RSS is its own):

- ``features``: every lead feature of the default catalog for every lead created before
  ``--as-of`` (one date): wall time (tables opened + features), rows, peak RSS.
  Goal on the 1M-lead company: < 2 min, < 8 GiB.
- ``dataset``: the one-year weekly lead-readiness training set ending at ``--as-of``.
- ``reference``: a representative slice of the catalog (windowed counts with filters,
  all-time counts, recency, a distinct count, the buying committee, IS touches, times
  recycled) computed by the offline engine and by a plain pandas implementation on the
  same sample of leads holding about ``--sample-events`` events, on spines of 1, 4 and 52
  weekly as-of dates (``--dates``; 52 is the one-year weekly training-set spine); outputs
  are checked identical and the speed ratio printed (goal >= 10x). On a one-date spine
  also the slice as one hand-written DuckDB query (:func:`single_query`), the fastest
  single scan: how far any engine could go on one date.
- ``online``: one lead's features in-process from a payload of ~500 events (median of
  many calls), with columnar numpy payloads and with lists of dicts (goal: well under 1 ms).

Figures, not assertions. Default data: ``workspace/data`` (``leadml simulate``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLICE = [
    "web_visits_7d",
    "web_visits_30d",
    "web_visits_90d",
    "pricing_views_7d",
    "pricing_views_30d",
    "email_clicks_30d",
    "form_fills_all",
    "engagement_all",
    "days_since_last_engagement",
    "page_categories_30d",
    "account_engagement_30d",
    "is_calls_30d",
    "times_recycled",
]


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _setup(data: Path):  # noqa: ANN202
    from leadml.config import Vocabulary
    from leadml.features.catalog import load_catalog

    vocab = Vocabulary()
    return vocab, load_catalog(ROOT / "configs" / "features.yaml", vocab)


def _default_as_of(data: Path) -> str:
    import duckdb
    import pandas as pd

    con = duckdb.connect()
    events = data / "events"
    src = (
        f"read_parquet('{events}/*.parquet')"
        if events.is_dir()
        else f"read_parquet('{data}/events.parquet')"
    )
    end = pd.Timestamp(con.execute(f"SELECT max(ts) FROM {src}").fetchone()[0])
    t = (end - pd.Timedelta(days=60)).normalize()
    return (t - pd.Timedelta(days=t.weekday())).date().isoformat()


# ------------------------------------------------------------------ stages


def stage_features(data: Path, as_of: str) -> dict:
    import pandas as pd

    from leadml.contracts import connect
    from leadml.features.offline import compute_features

    vocab, catalog = _setup(data)
    t0 = time.perf_counter()
    con, report = connect(data, vocab)
    t1 = time.perf_counter()
    t = pd.Timestamp(as_of, tz="UTC")
    spine = con.execute("SELECT lead_id FROM leads WHERE created_at < ? ORDER BY lead_id", [t]).df()
    spine["as_of"] = t
    df = compute_features(con, catalog, "lead", spine)
    t2 = time.perf_counter()
    return {
        "leads": len(df),
        "features": len(catalog.names("lead")),
        "events_in_data": report.rows.get("events", 0),
        "open_tables_s": round(t1 - t0, 2),
        "features_s": round(t2 - t1, 2),
        "wall_s": round(t2 - t0, 2),
        "peak_rss_gib": round(_peak_rss_gib(), 2),
    }


def stage_dataset(data: Path, as_of: str) -> dict:
    import pandas as pd

    from leadml.contracts import connect
    from leadml.features.datasets import lead_readiness_dataset

    vocab, catalog = _setup(data)
    t0 = time.perf_counter()
    con, _ = connect(data, vocab)
    end = pd.Timestamp(as_of, tz="UTC")
    df, summary = lead_readiness_dataset(con, catalog, start=end - pd.Timedelta(days=364), end=end)
    return {
        "rows": summary.rows,
        "as_of_dates": summary.as_of_dates,
        "positives": summary.positives,
        "excluded": summary.excluded,
        "wall_s": round(time.perf_counter() - t0, 2),
        "peak_rss_gib": round(_peak_rss_gib(), 2),
    }


def _sample(data: Path, target_events: int, out: Path) -> dict:
    """Leads (in a fixed hashed order) whose events add up to about target_events, with
    their accounts' other leads, written as a company folder (Parquet)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ev = data / "events"
    events = (
        f"read_parquet('{ev}/*.parquet')"
        if ev.is_dir()
        else f"read_parquet('{data}/events.parquet')"
    )
    # whole accounts, so that the buying-committee feature is complete in the sample
    con.execute(
        f"""CREATE TABLE acc AS
        WITH per AS (SELECT l.account_id, count(*) AS n FROM {events} e
                     JOIN read_parquet('{data}/leads.parquet') l USING (lead_id)
                     GROUP BY l.account_id)
        SELECT account_id FROM (
          SELECT account_id, sum(n) OVER (ORDER BY hash(account_id), account_id) AS cum FROM per
        ) WHERE cum <= {int(target_events)}"""
    )
    out.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"CREATE TABLE sl AS SELECT * FROM read_parquet('{data}/leads.parquet') "
        "WHERE account_id IN (SELECT * FROM acc)"
    )
    copies = {
        "accounts": f"SELECT * FROM read_parquet('{data}/accounts.parquet') "
        "WHERE account_id IN (SELECT * FROM acc)",
        "leads": "SELECT * FROM sl",
        "events": f"SELECT * FROM {events} WHERE lead_id IN (SELECT lead_id FROM sl)",
        "lead_status_history": f"SELECT * FROM read_parquet('{data}/lead_status_history.parquet') "
        "WHERE lead_id IN (SELECT lead_id FROM sl)",
        "activities": f"SELECT * FROM read_parquet('{data}/activities.parquet') "
        "WHERE lead_id IN (SELECT lead_id FROM sl)",
        "reps": f"SELECT * FROM read_parquet('{data}/reps.parquet')",
    }
    for name, sql in copies.items():
        con.execute(f"COPY ({sql}) TO '{out / (name + '.parquet')}' (FORMAT parquet)")
    n = con.execute(f"SELECT count(*) FROM read_parquet('{out / 'events.parquet'}')").fetchone()[0]
    leads = con.execute("SELECT count(*) FROM sl").fetchone()[0]
    return {"sample_events": int(n), "sample_leads": int(leads)}


def pandas_reference(tables: dict, spine, as_of_dates: list) -> object:  # noqa: ANN001
    """The slice of the catalog in plain pandas: per as-of date, boolean masks and groupby."""
    import numpy as np
    import pandas as pd

    ev, leads, st, act = (
        tables["events"],
        tables["leads"],
        tables["lead_status_history"],
        tables["activities"],
    )
    day = pd.Timedelta(days=1)
    account_of = leads.set_index("lead_id")["account_id"]
    ev = ev.assign(account_id=ev["lead_id"].map(account_of))
    frames = []
    for t in as_of_dates:
        ids = spine.loc[spine["as_of"] == t, "lead_id"]
        out = pd.DataFrame({"lead_id": ids.to_numpy()})
        out["as_of"] = t
        e = ev[ev["ts"] < t]
        in7, in30, in90 = e["ts"] >= t - 7 * day, e["ts"] >= t - 30 * day, e["ts"] >= t - 90 * day
        visit, pv = e["type"] == "web_visit", e["type"] == "page_view"
        pricing = pv & (e["page_category"] == "pricing")

        def count(
            mask: pd.Series, frame: pd.DataFrame = e, ids: pd.Series = out["lead_id"]
        ) -> np.ndarray:
            c = frame.loc[mask, "lead_id"].value_counts()
            return c.reindex(ids).fillna(0).to_numpy(dtype=float)

        out["web_visits_7d"] = count(visit & in7)
        out["web_visits_30d"] = count(visit & in30)
        out["web_visits_90d"] = count(visit & in90)
        out["pricing_views_7d"] = count(pricing & in7)
        out["pricing_views_30d"] = count(pricing & in30)
        out["email_clicks_30d"] = count((e["type"] == "email_click") & in30)
        out["form_fills_all"] = count(e["type"] == "form_submit")
        out["engagement_all"] = count(pd.Series(True, index=e.index))
        last = e.groupby("lead_id")["ts"].max().reindex(out["lead_id"])
        last_us = pd.DatetimeIndex(last).as_unit("us").asi8.astype(float)
        last_us[last.isna().to_numpy()] = np.nan
        out["days_since_last_engagement"] = (t.value // 1000 - last_us) / 86_400_000_000
        pcat = e[pv & in30].groupby("lead_id")["page_category"].nunique()
        out["page_categories_30d"] = pcat.reindex(out["lead_id"]).fillna(0).to_numpy(dtype=float)
        e30 = e[in30]
        acc_n = e30.groupby("account_id").size()
        own = e30.groupby("lead_id").size().reindex(out["lead_id"]).fillna(0).to_numpy()
        accs = out["lead_id"].map(account_of)
        out["account_engagement_30d"] = acc_n.reindex(accs).fillna(0).to_numpy() - own
        a = act[(act["ts"] < t) & (act["ts"] >= t - 30 * day) & (act["type"] == "call")]
        out["is_calls_30d"] = count(pd.Series(True, index=a.index), a)
        s = st[(st["ts"] < t) & (st["status"] == "recycled")]
        out["times_recycled"] = count(pd.Series(True, index=s.index), s)
        frames.append(out)
    return pd.concat(frames, ignore_index=True)


def single_query(con, as_of) -> object:  # noqa: ANN001
    """The slice for one as-of date as ONE DuckDB query, no engine: a ``GROUP BY lead_id``
    over the events with a ``FILTER`` aggregate per feature, the account's others from
    the same groups, IS calls and recycles, joined to the open leads. Not general (one
    date, this slice only): it shows how fast a single scan can be on this machine."""
    from leadml.features.offline import DAY_US

    t = f"'{as_of.isoformat()}'::TIMESTAMPTZ"

    def since(days: int) -> str:  # window start: as_of minus days of 86,400 s
        return f"make_timestamptz(epoch_us({t}) - {days * DAY_US})"

    visit, pricing = "type = 'web_visit'", "type = 'page_view' AND page_category = 'pricing'"
    own = f"""SELECT lead_id,
        count(*) FILTER (WHERE {visit} AND ts >= {since(7)}) AS web_visits_7d,
        count(*) FILTER (WHERE {visit} AND ts >= {since(30)}) AS web_visits_30d,
        count(*) FILTER (WHERE {visit} AND ts >= {since(90)}) AS web_visits_90d,
        count(*) FILTER (WHERE {pricing} AND ts >= {since(7)}) AS pricing_views_7d,
        count(*) FILTER (WHERE {pricing} AND ts >= {since(30)}) AS pricing_views_30d,
        count(*) FILTER (WHERE type = 'email_click' AND ts >= {since(30)}) AS email_clicks_30d,
        count(*) FILTER (WHERE type = 'form_submit') AS form_fills_all,
        count(*) AS engagement_all, max(ts) AS last_ts,
        count(DISTINCT page_category) FILTER (WHERE type = 'page_view' AND ts >= {since(30)})
            AS page_categories_30d,
        count(*) FILTER (WHERE ts >= {since(30)}) AS own_30d
        FROM events WHERE ts < {t} GROUP BY lead_id"""
    counts = [
        "web_visits_7d", "web_visits_30d", "web_visits_90d", "pricing_views_7d",
        "pricing_views_30d", "email_clicks_30d", "form_fills_all", "engagement_all",
    ]  # fmt: skip
    sql = f"""WITH o AS ({own}),
        acc AS (SELECT l.account_id, sum(o.own_30d) AS n FROM o JOIN leads l USING (lead_id)
                GROUP BY l.account_id),
        calls AS (SELECT lead_id, count(*) AS n FROM activities WHERE type = 'call'
                  AND ts < {t} AND ts >= {since(30)} GROUP BY lead_id),
        rec AS (SELECT lead_id, count(*) AS n FROM lead_status_history
                WHERE status = 'recycled' AND ts < {t} GROUP BY lead_id)
        SELECT l.lead_id, {t} AS as_of,
            {", ".join(f"CAST(coalesce(o.{c}, 0) AS DOUBLE) AS {c}" for c in counts)},
            (epoch_us({t}) - epoch_us(o.last_ts))::DOUBLE / {float(DAY_US)}
                AS days_since_last_engagement,
            CAST(coalesce(o.page_categories_30d, 0) AS DOUBLE) AS page_categories_30d,
            CAST(CASE WHEN l.account_id IS NULL THEN 0
                 ELSE coalesce(acc.n, 0) - coalesce(o.own_30d, 0) END AS DOUBLE)
                AS account_engagement_30d,
            CAST(coalesce(calls.n, 0) AS DOUBLE) AS is_calls_30d,
            CAST(coalesce(rec.n, 0) AS DOUBLE) AS times_recycled
        FROM leads l LEFT JOIN o USING (lead_id) LEFT JOIN acc ON acc.account_id = l.account_id
        LEFT JOIN calls USING (lead_id) LEFT JOIN rec USING (lead_id)
        WHERE l.created_at < {t} ORDER BY l.lead_id"""
    return con.sql(sql).to_arrow_table().to_pandas()


def stage_reference(data: Path, as_of: str, sample_events: int, dates: str, rounds: int) -> dict:
    """The slice by both offline methods and by pandas, for each spine of ``dates`` (a
    comma-separated list of weekly as-of date counts ending at ``as_of``), side by side:
    ``rounds`` interleaved rounds of join, prefix, pandas; times are the rounds' medians and
    the speed-up the median of the rounds' ratios (the machine is shared and noisy)."""
    import numpy as np
    import pandas as pd

    from leadml.contracts import connect, load_tables
    from leadml.features.catalog import Catalog
    from leadml.features.offline import compute_features

    vocab, catalog = _setup(data)
    sliced = Catalog.model_validate(
        {"lead": [f.model_dump() for f in catalog.features("lead") if f.name in SLICE]}
    )
    sliced._vocab = vocab
    cols = [f.name for f in sliced.features("lead")]
    end = pd.Timestamp(as_of, tz="UTC")
    spines = []
    with tempfile.TemporaryDirectory(prefix="leadml-bench-") as tmp:
        info = _sample(data, sample_events, Path(tmp))
        con, _ = connect(tmp, vocab)
        leads = con.execute("SELECT lead_id, created_at FROM leads ORDER BY lead_id").df()
        t0 = time.perf_counter()
        tables = load_tables(tmp, vocab, ["leads", "events", "lead_status_history", "activities"])
        t_load = time.perf_counter() - t0
        for n_dates in (int(d) for d in dates.split(",")):
            weeks = [end - pd.Timedelta(weeks=k) for k in range(n_dates)][::-1]
            made = leads.created_at
            spine = pd.concat(
                [
                    pd.DataFrame({"lead_id": leads.loc[made < t, "lead_id"], "as_of": t})
                    for t in weeks
                ],
                ignore_index=True,
            )
            rows: list[dict[str, float]] = []
            for _ in range(rounds):
                timings, results = {}, {}
                for method in ("join", "prefix"):
                    t0 = time.perf_counter()
                    results[method] = compute_features(con, sliced, "lead", spine, method=method)
                    timings[method] = time.perf_counter() - t0
                if n_dates == 1:
                    t0 = time.perf_counter()
                    results["single query"] = single_query(con, end)
                    timings["single query"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                ref = pandas_reference(tables, spine, weeks)
                timings["pandas"] = time.perf_counter() - t0
                rows.append(timings)
            med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
            ratio = [r["pandas"] / min(r["join"], r["prefix"]) for r in rows]
            b = ref[cols].to_numpy(dtype=float)
            identical = all(
                out["lead_id"].tolist() == ref["lead_id"].tolist()
                and np.array_equal(out[cols].to_numpy(dtype=float), b, equal_nan=True)
                for out in results.values()
            )
            best = min(med["join"], med["prefix"])
            spines.append(
                {
                    "as_of_dates": n_dates,
                    "spine_rows": len(spine),
                    "outputs_identical": identical,
                    "rounds": rounds,
                    "join_s": round(med["join"], 2),
                    "prefix_s": round(med["prefix"], 2),
                    "pandas_s": round(med["pandas"], 2),
                    **(
                        {"single_query_s": round(med["single query"], 2)}
                        if "single query" in med
                        else {}
                    ),
                    "speedup": round(float(np.median(ratio)), 1),
                    "speedup_rounds": [round(x, 1) for x in ratio],
                    "speedup_incl_pandas_load": round((med["pandas"] + t_load) / best, 1),
                }
            )
    return {
        **info,
        "features": len(cols),
        "pandas_load_s": round(t_load, 2),
        "spines": spines,
        "peak_rss_gib": round(_peak_rss_gib(), 2),
    }


def stage_online(data: Path, as_of: str) -> dict:
    import duckdb
    import numpy as np
    import pandas as pd

    from leadml.features.online import compute_lead_features_online

    vocab, catalog = _setup(data)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ev = data / "events"
    events = (
        f"read_parquet('{ev}/*.parquet')"
        if ev.is_dir()
        else f"read_parquet('{data}/events.parquet')"
    )
    t = pd.Timestamp(as_of, tz="UTC")
    lead_id, n = con.execute(
        f"SELECT lead_id, count(*) AS n FROM {events} WHERE ts < ? GROUP BY lead_id "
        "ORDER BY abs(count(*) - 500), lead_id LIMIT 1",
        [t],
    ).fetchone()
    lead = con.execute(
        f"SELECT * FROM read_parquet('{data}/leads.parquet') WHERE lead_id = ?", [lead_id]
    ).df()
    lead_row = lead.iloc[0].to_dict()
    account = (
        con.execute(
            f"SELECT * FROM read_parquet('{data}/accounts.parquet') WHERE account_id = ?",
            [lead_row["account_id"]],
        )
        .df()
        .iloc[0]
        .to_dict()
    )
    own = con.execute(f"SELECT * FROM {events} WHERE lead_id = ? ORDER BY ts", [lead_id]).df()
    colleagues = con.execute(
        f"SELECT e.* FROM {events} e JOIN read_parquet('{data}/leads.parquet') l USING (lead_id) "
        "WHERE l.account_id = ? ORDER BY e.ts",
        [lead_row["account_id"]],
    ).df()
    status = con.execute(
        f"SELECT * FROM read_parquet('{data}/lead_status_history.parquet') WHERE lead_id = ?",
        [lead_id],
    ).df()
    acts = con.execute(
        f"SELECT * FROM read_parquet('{data}/activities.parquet') WHERE lead_id = ?", [lead_id]
    ).df()

    def columns(df: pd.DataFrame) -> dict:
        out = {c: df[c].to_numpy() for c in df.columns}
        out["ts"] = (
            df["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
        )
        return out

    def records(df: pd.DataFrame) -> list:
        return [
            {k: (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v) for k, v in r.items()}
            for r in df.to_dict("records")
        ]

    def timed(payload: dict, reps: int = 300) -> tuple[float, float]:
        """Median wall ms per call, and CPU ms per call (robust to a busy machine)."""
        compute_lead_features_online(catalog, t, lead_row, account, **payload)
        times = []
        c0 = time.process_time()
        for _ in range(reps):
            t0 = time.perf_counter()
            compute_lead_features_online(catalog, t, lead_row, account, **payload)
            times.append(time.perf_counter() - t0)
        cpu = (time.process_time() - c0) / reps
        return round(float(np.median(times)) * 1000, 3), round(cpu * 1000, 3)

    col_payload = {
        "events": columns(own),
        "status_history": columns(status),
        "activities": columns(acts),
        "account_events": columns(colleagues),
    }
    rec_payload = {
        "events": records(own),
        "status_history": records(status),
        "activities": records(acts),
        "account_events": records(colleagues),
    }
    return {
        "lead_events": int(len(own)),
        "lead_events_before_as_of": int(n),
        "account_events": int(len(colleagues)),
        "features": len(catalog.names("lead")),
        "columnar_ms_wall_cpu": timed(col_payload),
        "list_of_dicts_ms_wall_cpu": timed(rec_payload, 100),
    }


# ------------------------------------------------------------------ driver


def _run_stage(name: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--stage",
        name,
        "--data",
        str(args.data),
        "--as-of",
        args.as_of,
        "--sample-events",
        str(args.sample_events),
        "--dates",
        str(args.dates),
        "--rounds",
        str(args.rounds),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr
            else f"exit {proc.returncode}"
        }
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["subprocess_s"] = round(time.perf_counter() - t0, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "workspace" / "data")
    p.add_argument(
        "--as-of", default=None, help="ISO date; default: the Monday ~60 days before the data end"
    )
    p.add_argument("--sample-events", type=int, default=10_000_000)
    p.add_argument(
        "--dates",
        default="1,4,52",
        help="spines of the reference comparison: numbers of weekly as-of dates (52: the "
        "one-year weekly training-set spine)",
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="reference: interleaved rounds, medians reported"
    )
    p.add_argument("--skip", default="", help="comma-separated stages to skip")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.data = args.data.resolve()
    args.as_of = args.as_of or _default_as_of(args.data)
    if args.stage:
        fn = {
            "features": lambda: stage_features(args.data, args.as_of),
            "dataset": lambda: stage_dataset(args.data, args.as_of),
            "reference": lambda: stage_reference(
                args.data, args.as_of, args.sample_events, args.dates, args.rounds
            ),
            "online": lambda: stage_online(args.data, args.as_of),
        }[args.stage]
        print(json.dumps(fn(), default=str))
        return
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    print(f"data: {args.data}  as_of: {args.as_of}")
    for name in ("online", "features", "reference", "dataset"):
        if name in skip:
            continue
        result = _run_stage(name, args)
        print(f"{name}: {json.dumps(result)}", flush=True)
        for r in result.get("spines", []) if name == "reference" else []:
            print(
                f"  {r['as_of_dates']} weekly date(s), {r['spine_rows']:,} rows: offline engine "
                f"vs pandas {r['speedup']}x (goal >= 10x; rounds {r['speedup_rounds']}; medians: "
                f"join {r['join_s']} s, prefix {r['prefix_s']} s, pandas {r['pandas_s']} s), "
                f"outputs identical: {r['outputs_identical']}"
            )
            if "single_query_s" in r:
                print(
                    f"    the slice as one DuckDB query (one date only, no engine): "
                    f"{r['single_query_s']} s, pandas / it = "
                    f"{r['pandas_s'] / r['single_query_s']:.1f}x"
                )
        if name == "features" and "wall_s" in result:
            print(
                f"  {result['leads']:,} leads as of one date: {result['wall_s']} s, "
                f"peak RSS {result['peak_rss_gib']} GiB (goals for 1M leads: < 120 s, < 8 GiB)"
            )


if __name__ == "__main__":
    main()
