"""Expectations on the simulated company: determinism, contracts, realism, honest truth.

One company of 3,000 leads over 18 months (about a second to generate) is shared by
the module; the determinism tests use a smaller one. Realism ranges are those of a
B2B SaaS funnel as THE MODEL describes it (justified next to each check).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from leadml.config import SimulatorConfig, Vocabulary
from leadml.contracts import TABLES, connect
from leadml.errors import ConfigError
from leadml.simulate import simulate

SMALL = SimulatorConfig(leads=800, start="2024-01-01", end="2024-06-30", seed=3)
# Three IS reps for 3,000 leads keep the MQL queue longer than the slots in busy
# weeks, so the capacity rule is exercised, not idle.
MAIN = SimulatorConfig(leads=3000, start="2024-01-01", end="2025-06-30", seed=11, is_reps=3)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("sim") / "data"
    summary = simulate(MAIN, Vocabulary(), out)
    return out, summary


@pytest.fixture(scope="module")
def db(company: tuple[Path, object]) -> duckdb.DuckDBPyConnection:
    out, _ = company
    con, report = connect(out, Vocabulary())
    assert report.ok
    for name in ("lead_truth", "deal_truth", "hidden"):
        con.execute(
            f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{out / 'truth' / name}.parquet')"
        )
    return con


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> float:
    row = con.execute(sql).fetchone()
    assert row is not None
    return float(row[0])


# ------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate(SMALL, Vocabulary(), a)
    simulate(SMALL, Vocabulary(), b)
    simulate(SMALL.model_copy(update={"seed": 4}), Vocabulary(), c)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa.keys() == fb.keys() and len(fa) > 12
    assert [k for k in fa if fa[k] != fb[k]] == []
    differ = [k for k in fa if fa[k] != fc.get(k)]
    assert "leads.parquet" in differ and "events/part-00000.parquet" in differ


def test_rerun_replaces_output_atomically(tmp_path: Path) -> None:
    out = tmp_path / "data"
    simulate(SMALL, Vocabulary(), out)
    (out / "stale.txt").write_text("from an earlier run")
    simulate(SMALL, Vocabulary(), out)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folder left behind


def test_bad_period_or_target_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="simulator"):
        simulate(SMALL.model_copy(update={"end": "2024-01-20"}), Vocabulary(), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    # a folder of someone's files is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an earlier simulation"):
        simulate(SMALL, Vocabulary(), other)
    assert (other / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------- contracts


def test_passes_every_contract(company: tuple[Path, object]) -> None:
    out, summary = company
    con, report = connect(out, Vocabulary())
    con.close()
    assert report.problems == [] and report.missing_tables == []
    assert set(report.rows) == set(TABLES)
    assert report.rows == summary.rows  # type: ignore[attr-defined]
    assert all(n > 0 for n in report.rows.values())


def test_timestamps_are_utc_and_inside_the_period(db: duckdb.DuckDBPyConnection) -> None:
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2025-07-01", tz="UTC")
    for table, col in (
        ("events", "ts"),
        ("lead_status_history", "ts"),
        ("activities", "ts"),
        ("opportunity_history", "ts"),
        ("leads", "created_at"),
    ):
        lo, hi = db.execute(f"SELECT min({col}), max({col}) FROM {table}").fetchone()  # type: ignore[misc]
        assert start <= lo and hi < end, table
    # nothing about a lead happens before it exists
    assert (
        _one(
            db,
            "SELECT count(*) FROM events e JOIN leads l USING (lead_id) WHERE e.ts < l.created_at",
        )
        == 0
    )
    assert (
        _one(
            db,
            "SELECT count(*) FROM opportunities o JOIN leads l USING (lead_id) "
            "WHERE o.created_at <= l.created_at",
        )
        == 0
    )


# --------------------------------------------------------------------- realism


def test_funnel_rates_are_realistic(db: duckdb.DuckDBPyConnection) -> None:
    n_leads = _one(db, "SELECT count(*) FROM leads")
    mql_leads = _one(
        db, "SELECT count(DISTINCT lead_id) FROM lead_status_history WHERE status = 'mql'"
    )
    mqls = _one(db, "SELECT count(*) FROM lead_status_history WHERE status = 'mql'")
    sqls = _one(db, "SELECT count(*) FROM lead_status_history WHERE status = 'sql'")
    # Over 18 months a sizeable minority of a nurtured database raises its hand (MQL)...
    assert 0.15 <= mql_leads / n_leads <= 0.7
    # ...and IS turns 10-50 % of MQL episodes into SQLs (many are too early or poor fit).
    assert 0.10 <= sqls / mqls <= 0.5
    # every SQL became exactly one opportunity
    assert sqls == _one(db, "SELECT count(*) FROM opportunities")
    # an MQL is worked before it converts: SQL follows an MQL status of the same lead
    assert (
        _one(
            db,
            """
        SELECT count(*) FROM lead_status_history s WHERE status = 'sql' AND NOT EXISTS (
          SELECT 1 FROM lead_status_history m
          WHERE m.lead_id = s.lead_id AND m.status = 'mql' AND m.ts < s.ts)
    """,
        )
        == 0
    )


def test_deals_win_rate_cycle_and_stages(db: duckdb.DuckDBPyConnection) -> None:
    closed = db.execute("""
        SELECT o.segment, h.stage, date_diff('day', o.created_at, h.ts) AS days
        FROM opportunity_history h JOIN opportunities o USING (opportunity_id)
        WHERE h.stage IN ('closed_won', 'closed_lost')
    """).df()
    win_rate = (closed["stage"] == "closed_won").mean()
    # B2B win rates of qualified opportunities are typically 15-35 %.
    assert 0.15 <= win_rate <= 0.35
    won = closed[closed["stage"] == "closed_won"]
    # Median sales cycle 1-6 months, and enterprise deals take longer than SMB ones.
    assert 30 <= won["days"].median() <= 180
    by_seg = won.groupby("segment")["days"].median()
    assert by_seg["enterprise"] > by_seg["smb"]
    # Deals move through the stages: each stage's share of deals that reached it and
    # the next one is between 30 % and 100 %, and some deals regress a stage.
    reached = (
        db.execute("""
        SELECT stage, count(DISTINCT opportunity_id) n FROM opportunity_history GROUP BY stage
    """)
        .df()
        .set_index("stage")["n"]
    )
    order = Vocabulary().open_stages
    for a, b in zip(order, order[1:], strict=False):
        assert 0.3 <= reached[b] / reached[a] <= 1.0, (a, b)
    regressions = _one(
        db,
        """
        SELECT count(*) FROM (
          SELECT stage, lag(stage) OVER (PARTITION BY opportunity_id ORDER BY ts) AS prev
          FROM opportunity_history)
        WHERE (stage = 'follow_up' AND prev = 'problem_recognised')
           OR (stage = 'evaluation' AND prev = 'negotiation')
    """,
    )
    assert regressions > 0


def test_recycling_brings_leads_back(db: duckdb.DuckDBPyConnection) -> None:
    n_leads = _one(db, "SELECT count(*) FROM leads")
    recycled = _one(
        db, "SELECT count(DISTINCT lead_id) FROM lead_status_history WHERE status = 'recycled'"
    )
    # Lost deals and disqualified leads go back to nurture: a real share of the base
    # (THE MODEL: recycled leads are a real share of the pipeline), but not most of it.
    assert 0.03 <= recycled / n_leads <= 0.5
    # every recycle follows a disqualification or an SQL, and is followed by nurturing
    bad = _one(
        db,
        """
        WITH s AS (SELECT *, lag(status) OVER w AS prev, lead(status) OVER w AS nxt
                   FROM lead_status_history WINDOW w AS (PARTITION BY lead_id ORDER BY ts, status))
        SELECT count(*) FROM s
        WHERE status = 'recycled' AND (prev NOT IN ('disqualified', 'sql') OR nxt <> 'nurturing')
    """,
    )
    assert bad == 0
    # and some recycled leads become MQL again
    again = _one(
        db,
        """
        SELECT count(DISTINCT m.lead_id) FROM lead_status_history m JOIN lead_status_history r
          ON r.lead_id = m.lead_id AND r.status = 'recycled' AND m.status = 'mql' AND m.ts > r.ts
    """,
    )
    assert again > 0


def test_is_capacity_is_never_exceeded(db: duckdb.DuckDBPyConnection) -> None:
    per_rep_week = db.execute("""
        SELECT a.rep_id, date_trunc('week', a.ts) AS week, count(*) AS touches,
               any_value(r.weekly_slots) AS slots
        FROM activities a JOIN reps r USING (rep_id)
        WHERE r.role = 'IS' GROUP BY ALL
    """).df()
    assert (per_rep_week["touches"] <= per_rep_week["slots"]).all()
    # the constraint binds: in busy weeks some reps use every slot
    assert (per_rep_week["touches"] == per_rep_week["slots"]).any()
    # IS activities name a lead, field-sales ones a deal
    assert (
        _one(
            db,
            """
        SELECT count(*) FROM activities a JOIN reps r USING (rep_id)
        WHERE (r.role = 'IS' AND a.lead_id IS NULL) OR (r.role = 'FS' AND a.opportunity_id IS NULL)
    """,
        )
        == 0
    )


def test_close_dates_slip_and_quarter_ends_attract_wins(db: duckdb.DuckDBPyConnection) -> None:
    pushed = _one(
        db,
        """
        SELECT avg(pushed::INT) FROM (
          SELECT opportunity_id, bool_or(expected_close_date > prev) AS pushed FROM (
            SELECT opportunity_id, expected_close_date, stage,
                   lag(expected_close_date) OVER (PARTITION BY opportunity_id ORDER BY ts) AS prev
            FROM opportunity_history)
          WHERE stage NOT IN ('closed_won', 'closed_lost') GROUP BY opportunity_id)
    """,
    )
    # Close dates slip on a good share of deals (CRM studies: a third to a half).
    assert 0.15 <= pushed <= 0.7
    wins = db.execute("SELECT ts FROM opportunity_history WHERE stage = 'closed_won'").df()["ts"]
    quarter_end = (wins + pd.Timedelta(days=14)).dt.quarter != wins.dt.quarter
    # The last 14 days are ~15 % of a quarter; wins crowd into them (quarter-end push).
    assert quarter_end.mean() > 0.22


# ----------------------------------------------------------------------- truth


def test_lead_truth_rows_are_exactly_the_open_leads(db: duckdb.DuckDBPyConnection) -> None:
    assert (
        _one(db, "SELECT count(*) FROM lead_truth WHERE p_opportunity_30d NOT BETWEEN 0 AND 1") == 0
    )
    assert _one(db, "SELECT count(*) FROM lead_truth") > 10_000
    as_of = db.execute("SELECT DISTINCT as_of FROM lead_truth ORDER BY 1").df()["as_of"]
    assert (as_of.dt.dayofweek == 0).all() and (as_of.dt.hour == 0).all()
    # the open leads at each as-of, from the canonical tables only
    db.execute("""
        CREATE TEMP TABLE open_at AS
        SELECT a.as_of, l.lead_id FROM (SELECT DISTINCT as_of FROM lead_truth) a
        JOIN leads l ON l.created_at < a.as_of
        WHERE (SELECT arg_max(s.status, s.ts) FROM lead_status_history s
               WHERE s.lead_id = l.lead_id AND s.ts < a.as_of) IN ('lead', 'nurturing', 'mql')
    """)
    missing = _one(
        db,
        "SELECT count(*) FROM (SELECT as_of, lead_id FROM open_at "
        "EXCEPT SELECT as_of, lead_id FROM lead_truth)",
    )
    extra = _one(
        db,
        "SELECT count(*) FROM (SELECT as_of, lead_id FROM lead_truth "
        "EXCEPT SELECT as_of, lead_id FROM open_at)",
    )
    assert missing == 0 and extra == 0


def _calibration(frame: pd.DataFrame, p: str, y: str, edges: list[float]) -> pd.DataFrame:
    frame = frame.assign(bin=pd.cut(frame[p], edges, include_lowest=True))
    return frame.groupby("bin", observed=True).agg(p=(p, "mean"), y=(y, "mean"), n=(y, "size"))


def _check_calibration(df: pd.DataFrame, edges: list[float]) -> None:
    """Rows whose outcomes are independent given the truth (or martingale differences):
    realised rates within 3 binomial standard errors of the truth in each bin and in
    total, and increasing with it."""
    cal = _calibration(df, "p", "y", edges)
    assert len(cal) == len(edges) - 1 and (cal["n"] >= 50).all(), cal
    assert cal["y"].is_monotonic_increasing, cal
    se = np.sqrt(cal["p"] * (1 - cal["p"]) / cal["n"])
    assert ((cal["p"] - cal["y"]).abs() <= 3 * se).all(), cal
    z = (df["y"].sum() - df["p"].sum()) / np.sqrt((df["p"] * (1 - df["p"])).sum())
    assert abs(z) <= 3, z


def test_lead_truth_is_calibrated_against_outcomes(db: duckdb.DuckDBPyConnection) -> None:
    df = db.execute("""
        SELECT t.as_of, t.p_opportunity_30d AS p, (count(s.ts) > 0)::INT AS y
        FROM lead_truth t LEFT JOIN lead_status_history s
          ON s.lead_id = t.lead_id AND s.status = 'sql'
         AND s.ts > t.as_of AND s.ts <= t.as_of + INTERVAL 30 DAY
        GROUP BY t.lead_id, t.as_of, t.p_opportunity_30d
    """).df()
    # the oracle separates well: ROC AUC (Mann-Whitney, ties averaged) far above chance
    ranks = df["p"].rank()
    pos = df["y"] == 1
    auc = (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())
    assert auc > 0.85
    # as-ofs five weeks apart have disjoint 30-day windows, so a lead's residuals
    # y - p in them are uncorrelated and binomial errors apply
    weeks = (df["as_of"] - df["as_of"].min()).dt.days // 7
    _check_calibration(df[weeks % 5 == 0], [0.0, 0.02, 0.1, 0.25, 1.0])


# the quarter-boundary rows of deal_truth (not the rolling as_of + 13 weeks row)
_QUARTER_END = "date_trunc('quarter', timezone('UTC', period_end)) = timezone('UTC', period_end)"


def test_deal_truth_rows_are_open_deals_and_calibrated(db: duckdb.DuckDBPyConnection) -> None:
    assert _one(db, "SELECT count(*) FROM deal_truth WHERE p_won_by NOT BETWEEN 0 AND 1") == 0
    not_open = _one(
        db,
        """
        SELECT count(*) FROM deal_truth t JOIN opportunities o USING (opportunity_id)
        WHERE o.created_at >= t.as_of OR EXISTS (
          SELECT 1 FROM opportunity_history h WHERE h.opportunity_id = t.opportunity_id
            AND h.stage IN ('closed_won', 'closed_lost') AND h.ts < t.as_of)
    """,
    )
    assert not_open == 0
    # four quarter ends per deal and as-of, and as_of + 13 weeks (a fifth row unless
    # that is a quarter end); later ends never less likely
    per = db.execute(f"""
        SELECT count(*) AS n, count(*) FILTER ({_QUARTER_END}) AS quarters,
               count(*) FILTER (period_end = as_of + INTERVAL 91 DAY) AS rolling,
               bool_and(mono) AS mono FROM (
          SELECT opportunity_id, as_of, period_end,
                 p_won_by >= coalesce(lag(p_won_by) OVER (
                   PARTITION BY opportunity_id, as_of ORDER BY period_end), 0) - 1e-12 AS mono
          FROM deal_truth) GROUP BY opportunity_id, as_of
    """).df()
    assert (per["quarters"] == 4).all() and (per["rolling"] == 1).all() and per["mono"].all()
    assert (per["n"] == 5).mean() > 0.9 and per["n"].isin([4, 5]).all()
    # one row per deal (its first as-of, the second quarter end after it), so rows
    # are independent deals
    df = db.execute(f"""
        WITH first AS (
          SELECT opportunity_id, min(as_of) AS as_of FROM deal_truth GROUP BY opportunity_id),
        rows AS (
          SELECT t.opportunity_id, t.p_won_by AS p, t.period_end,
                 row_number() OVER (PARTITION BY t.opportunity_id ORDER BY t.period_end) AS j
          FROM deal_truth t JOIN first USING (opportunity_id, as_of) WHERE {_QUARTER_END})
        SELECT r.p, coalesce(w.ts < r.period_end, false)::INT AS y
        FROM rows r LEFT JOIN (
          SELECT opportunity_id, ts FROM opportunity_history WHERE stage = 'closed_won') w
          USING (opportunity_id)
        WHERE r.j = 2 AND r.period_end <= TIMESTAMPTZ '2025-06-30'
    """).df()
    assert len(df) > 200
    _check_calibration(df, [0.0, 0.1, 0.3, 1.0])


def test_deal_truth_within_13_weeks_is_won_within_90_days(db: duckdb.DuckDBPyConnection) -> None:
    # the rolling row is the deal-close model's question: won within 90 days of as_of
    # (one row per deal, its first as-of, so rows are independent deals)
    df = db.execute("""
        WITH first AS (
          SELECT opportunity_id, min(as_of) AS as_of FROM deal_truth GROUP BY opportunity_id)
        SELECT t.p_won_by AS p,
               coalesce(w.ts - t.as_of <= INTERVAL 90 DAY, false)::INT AS y,
               coalesce(w.ts < t.period_end, false)::INT AS y_end
        FROM deal_truth t JOIN first USING (opportunity_id, as_of)
        LEFT JOIN (
          SELECT opportunity_id, ts FROM opportunity_history WHERE stage = 'closed_won') w
          USING (opportunity_id)
        WHERE t.period_end = t.as_of + INTERVAL 91 DAY
          AND t.period_end <= TIMESTAMPTZ '2025-06-30'
    """).df()
    assert len(df) > 200
    assert (df["y"] == df["y_end"]).all()  # wins fall on weekdays: day 91 never has one
    _check_calibration(df, [0.0, 0.1, 0.3, 1.0])


def test_hidden_traits_cover_every_lead(
    db: duckdb.DuckDBPyConnection, company: tuple[Path, object]
) -> None:
    out, _ = company
    assert _one(db, "SELECT count(*) FROM hidden") == _one(db, "SELECT count(*) FROM leads")
    assert "exact" in (out / "truth" / "README.md").read_text()
    # fit is partly visible in the attributes: director-and-up leads of software
    # companies are fitter on average than individual contributors in public sector
    hi = _one(
        db,
        """SELECT avg(fit) FROM hidden JOIN leads USING (lead_id) JOIN accounts USING (account_id)
                    WHERE industry = 'software' AND job_level IN ('c_level', 'vp', 'director')""",
    )
    lo = _one(
        db,
        """SELECT avg(fit) FROM hidden JOIN leads USING (lead_id) JOIN accounts USING (account_id)
                    WHERE industry = 'public_sector' AND job_level = 'individual'""",
    )
    assert hi > lo + 0.5


# ------------------------------------------------------------------------- CLI


def test_cli_writes_and_reports_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from leadml.cli import main

    out = tmp_path / "cli"
    main(
        [
            "simulate",
            "--leads",
            "300",
            "--end",
            "2024-04-30",
            "--seed",
            "5",
            "--out",
            str(out),
            "--json",
        ]
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload["leads"] == 300 and payload["seed"] == 5
    con, report = connect(out, Vocabulary())
    con.close()
    assert report.rows == payload["rows"]
    assert 0 <= payload["realism"]["win_rate"] <= 1


def test_cli_rejects_bad_flag_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leadml.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--leads", "10", "--out", str(tmp_path / "x")])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "--leads" in err and "Traceback" not in err
