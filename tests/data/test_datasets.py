"""Training sets: who is in each weekly snapshot, the labels and the exclusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import VOCAB, Sizes, connect_frames, tiny_company

from leadml.features.catalog import load_catalog
from leadml.features.datasets import deal_close_dataset, lead_readiness_dataset
from leadml.features.labels import as_of_dates

CATALOG = Path(__file__).resolve().parents[2] / "configs" / "features.yaml"


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(CATALOG, VOCAB)


def _base() -> dict[str, pd.DataFrame]:
    accounts = pd.DataFrame(
        {
            "account_id": ["A"],
            "industry": ["software"],
            "employees": [100],
            "country": ["JP"],
            "segment": ["smb"],
            "created_at": [ts("2024-01-01")],
        }
    )
    reps = pd.DataFrame(
        {"rep_id": ["R"], "role": ["FS"], "team": ["fs"], "segment": ["smb"], "weekly_slots": [80]}
    )
    return {"accounts": accounts, "reps": reps}


def _readiness_company() -> dict[str, pd.DataFrame]:
    frames = _base()
    frames["leads"] = pd.DataFrame(
        {
            "lead_id": ["opp_later", "goes_sql", "dq_then_recycled", "late", "opp_at_asof"],
            "account_id": ["A"] * 5,
            "created_at": [ts("2025-01-01")] * 3 + [ts("2025-01-14"), ts("2025-01-01")],
            "source": ["web"] * 5,
            "job_level": ["staff"] * 5,
        }
    )
    frames["lead_status_history"] = pd.DataFrame(
        {
            "lead_id": ["goes_sql", "dq_then_recycled", "dq_then_recycled"],
            "ts": [ts("2025-01-10"), ts("2025-01-08"), ts("2025-01-15")],
            "status": ["sql", "disqualified", "recycled"],
        }
    )
    frames["opportunities"] = pd.DataFrame(
        {
            "opportunity_id": ["O1", "O2"],
            "account_id": ["A", "A"],
            "lead_id": ["opp_later", "opp_at_asof"],
            "owner_id": ["R", "R"],
            "created_at": [ts("2025-01-20 12:00"), ts("2025-01-13")],
            "amount": [1000.0, 2000.0],
            "segment": ["smb", "smb"],
        }
    )
    # the data end: one event on 2025-03-03
    frames["events"] = pd.DataFrame(
        {
            "lead_id": ["late"],
            "ts": [ts("2025-03-03")],
            "type": ["web_visit"],
            "page_category": [None],
            "campaign_id": [None],
        }
    )
    return frames


def test_as_of_dates_are_mondays_at_midnight() -> None:
    dates = as_of_dates("2025-01-01", "2025-02-03", 7)
    assert dates[0] == ts("2025-01-06") and dates[-1] == ts("2025-02-03")
    assert all(d.weekday() == 0 and d == d.normalize() for d in dates)
    assert as_of_dates("2025-01-06 00:00:01", "2025-01-20", 7)[0] == ts("2025-01-13")


def test_readiness_spine_labels_and_exclusions(catalog) -> None:
    con = connect_frames(_readiness_company())
    df, summary = lead_readiness_dataset(
        con, catalog, start="2025-01-06", end="2025-02-10", horizon_days=30
    )
    got = {(r.lead_id, r.as_of.date().isoformat()): r.label for r in df.itertuples()}
    expected = {
        # opportunity created 2025-01-20 12:00: within 30 days of the first three Mondays
        ("opp_later", "2025-01-06"): 1,
        ("opp_later", "2025-01-13"): 1,
        ("opp_later", "2025-01-20"): 1,
        # SQL on 2025-01-10: open and positive on 01-06, closed after
        ("goes_sql", "2025-01-06"): 1,
        # disqualified 01-08 (closed on 01-13), recycled 01-15 (open again)
        ("dq_then_recycled", "2025-01-06"): 0,
        ("dq_then_recycled", "2025-01-20"): 0,
        ("dq_then_recycled", "2025-01-27"): 0,
        # created 01-14
        ("late", "2025-01-20"): 0,
        ("late", "2025-01-27"): 0,
        # opportunity exactly at 2025-01-13 00:00: positive the week before, excluded that Monday
        ("opp_at_asof", "2025-01-06"): 1,
    }
    assert got == expected
    # data end 2025-03-03: as-of dates after 2025-02-01 have incomplete label windows
    # (02-03: late, dq_then_recycled; 02-10: the same two)
    assert summary.excluded == {"label_window_incomplete": 4, "converted_at_as_of": 1}
    assert summary.rows == len(df) == len(expected)
    assert summary.positives == sum(expected.values())
    assert list(df.columns[:2]) == ["lead_id", "as_of"] and df.columns[-1] == "label"
    assert list(df.columns[2:-1]) == catalog.names("lead")


def test_the_summary_reports_the_as_of_dates_written_and_the_dropped_ones(catalog) -> None:
    """6 Mondays asked for; the last two have no row (label windows pass the data end).
    The summary said "as-of dates 6, last 2025-02-10" of a file ending 2025-01-27 (DS
    review)."""
    con = connect_frames(_readiness_company())
    df, summary = lead_readiness_dataset(
        con, catalog, start="2025-01-06", end="2025-02-10", horizon_days=30
    )
    assert df["as_of"].nunique() == summary.as_of_dates == 4
    assert (summary.start, summary.end) == (
        ts("2025-01-06").isoformat(),
        df["as_of"].max().isoformat(),
    )
    assert summary.end == ts("2025-01-27").isoformat()
    got = summary.as_dict()
    assert (got["dropped_as_of_dates"], got["dropped_start"], got["dropped_end"]) == (
        2,
        ts("2025-02-03").isoformat(),
        ts("2025-02-10").isoformat(),
    )
    # DuckDB's own progress bar (stdout, queries over 2 s) would break --json output
    setting = con.execute("SELECT current_setting('enable_progress_bar')").fetchone()
    assert setting == (False,)


def test_readiness_matches_a_brute_force_oracle(catalog) -> None:
    frames = tiny_company(11, Sizes(leads=25, events=200, status_changes=40, opportunities=8))
    con = connect_frames(frames)
    horizon = 21
    df, summary = lead_readiness_dataset(con, catalog, horizon_days=horizon)
    leads, st, opps = frames["leads"], frames["lead_status_history"], frames["opportunities"]
    end = max(
        frames[t][c].max()
        for t, c in [
            ("leads", "created_at"),
            ("events", "ts"),
            ("lead_status_history", "ts"),
            ("opportunities", "created_at"),
            ("opportunity_history", "ts"),
            ("activities", "ts"),
        ]
    )
    order = {s: i for i, s in enumerate(VOCAB.lead_statuses)}
    expected: dict[tuple[str, pd.Timestamp], int] = {}
    excluded = 0
    for t in as_of_dates(leads["created_at"].min(), end):
        for lead in leads.itertuples():
            if lead.created_at >= t:
                continue
            past = st[(st.lead_id == lead.lead_id) & (st.ts < t)]
            if len(past):
                last = max(past.itertuples(), key=lambda r: (r.ts, order[r.status])).status
                if last in ("sql", "disqualified"):
                    continue
            mine = opps[opps.lead_id == lead.lead_id]
            if (mine.created_at < t).any():
                continue
            conv = pd.concat(
                [mine.created_at, st[(st.lead_id == lead.lead_id) & (st.status == "sql")].ts]
            )
            if t + pd.Timedelta(days=horizon) > end or (conv == t).any():
                excluded += 1
                continue
            expected[(lead.lead_id, t)] = int(
                ((conv > t) & (conv <= t + pd.Timedelta(days=horizon))).any()
            )
    got = {(r.lead_id, r.as_of): r.label for r in df.itertuples()}
    assert got == expected
    assert sum(summary.excluded.values()) == excluded
    assert summary.rows > 20  # the scenario is not degenerate


def test_a_sink_gets_the_same_rows_batch_by_batch(catalog, tmp_path: Path) -> None:
    """Written batch by batch (a training set larger than memory), the rows are those of
    the in-memory build, with both engine methods; the returned frame keeps the columns."""
    from leadml.sources import frame_writer

    frames = tiny_company(11, Sizes(leads=25, events=200, status_changes=40, opportunities=8))
    con = connect_frames(frames)
    whole, summary = lead_readiness_dataset(con, catalog, horizon_days=21, method="join")
    for suffix in (".parquet", ".csv"):
        out = tmp_path / f"readiness{suffix}"
        batches: list[int] = []
        with frame_writer(out) as write:

            def sink(frame: pd.DataFrame, write=write, batches=batches) -> None:
                batches.append(len(frame))
                write(frame)

            empty, streamed = lead_readiness_dataset(
                con, catalog, horizon_days=21, dates_per_batch=2, sink=sink
            )
        assert len(batches) > 2 and sum(batches) == streamed.rows == summary.rows
        assert streamed.positives == summary.positives and len(empty) == 0
        assert list(empty.columns) == list(whole.columns)
        back = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
        assert back["lead_id"].tolist() == whole["lead_id"].tolist()
        for col in catalog.names("lead"):
            a, b = whole[col], back[col]
            if pd.api.types.is_numeric_dtype(a):
                assert np.allclose(a.astype(float), b.astype(float), equal_nan=True), col
        assert back["label"].tolist() == whole["label"].tolist()


def test_deal_close_outcomes_and_censoring(catalog) -> None:
    frames = _base()
    frames["leads"] = pd.DataFrame(
        {
            "lead_id": ["L"],
            "account_id": ["A"],
            "created_at": [ts("2024-12-01")],
            "source": ["web"],
            "job_level": ["staff"],
        }
    )
    frames["opportunities"] = pd.DataFrame(
        {
            "opportunity_id": ["X", "Y"],
            "account_id": ["A", "A"],
            "lead_id": ["L", None],
            "owner_id": ["R", "R"],
            "created_at": [ts("2025-01-02"), ts("2025-01-03")],
            "amount": [100.0, 200.0],
            "segment": ["smb", "enterprise"],
        }
    )
    ecd = ts("2025-03-31")
    frames["opportunity_history"] = pd.DataFrame(
        {
            "opportunity_id": ["X", "X", "X", "Y"],
            "ts": [ts("2025-01-02"), ts("2025-01-15"), ts("2025-02-10"), ts("2025-01-20")],
            "stage": ["follow_up", "evaluation", "closed_won", "follow_up"],
            "amount": [100.0, 150.0, 150.0, 200.0],
            "expected_close_date": [ecd] * 4,
        }
    )
    frames["events"] = pd.DataFrame(
        {
            "lead_id": ["L"],
            "ts": [ts("2025-03-03")],
            "type": ["web_visit"],
            "page_category": [None],
            "campaign_id": [None],
        }
    )
    con = connect_frames(frames)
    df, summary = deal_close_dataset(con, catalog, start="2025-01-06", end="2025-03-03")
    rows = {(r.opportunity_id, r.as_of.date().isoformat()): r for r in df.itertuples()}
    x = rows[("X", "2025-01-06")]
    assert (x.outcome, x.outcome_days, x.amount, x.segment, x.owner_id) == (
        "won",
        35.0,
        100.0,
        "smb",
        "R",
    )
    assert (
        rows[("X", "2025-01-20")].amount == 150.0 and rows[("X", "2025-01-20")].outcome_days == 21.0
    )
    assert ("X", "2025-02-10") not in rows and ("X", "2025-02-17") not in rows
    y = rows[("Y", "2025-01-27")]
    assert (y.outcome, y.outcome_days, y.segment) == ("open", 35.0, "enterprise")
    assert ("Y", "2025-01-13") not in rows and ("Y", "2025-01-20") not in rows
    # X closed exactly at 02-10; Y had no history before 01-06, 01-13 and 01-20 (its first
    # row is at 01-20 00:00, not before it); 03-03 is the data end
    assert summary.excluded == {
        "closed_at_as_of": 1,
        "no_history_before_as_of": 3,
        "as_of_after_data_end": 1,
    }
    assert summary.outcomes == {"won": 5, "lost": 0, "open": 5}
    assert list(df.columns[:2]) == ["opportunity_id", "as_of"]
    assert list(df.columns[-5:]) == ["outcome", "outcome_days", "segment", "owner_id", "amount"]
    assert np.isclose(rows[("X", "2025-01-20")].days_in_stage, 5.0)


def test_extra_columns_become_attributes_and_missing_ones_are_named() -> None:
    from leadml.errors import DataError
    from leadml.features.catalog import parse_catalog
    from leadml.features.offline import compute_features
    from leadml.features.online import compute_online, entity_payload

    spec = {
        "lead": [
            {
                "name": "department",
                "kind": "attribute",
                "table": "lead",
                "column": "department",
                "type": "categorical",
                "extra": True,
                "label": "Works in {value}",
            },
        ]
    }
    catalog = parse_catalog(spec, VOCAB)
    frames = tiny_company(2, Sizes(leads=4))
    frames["leads"]["department"] = ["sales", "it", None, "hr"]
    con = connect_frames(frames)
    spine = pd.DataFrame({"lead_id": ["L0", "L1", "L2", "L3"], "as_of": ts("2025-03-01")})
    got = compute_features(con, catalog, "lead", spine)
    assert got["department"].tolist()[:2] == ["sales", "it"] and pd.isna(got["department"][2])
    online = compute_online(
        catalog, "lead", ts("2025-03-01"), entity_payload(frames, catalog, "lead", "L3")
    )
    assert online == {"department": "hr"}
    con = connect_frames(tiny_company(2, Sizes(leads=4)))
    with pytest.raises(
        DataError, match=r"'department' reads leads.department, which the data does not have"
    ):
        compute_features(con, catalog, "lead", spine)


def test_cli_builds_features_and_training_sets(tmp_path: Path, capsys) -> None:
    import json

    from leadml.cli import main

    data = tmp_path / "company"
    data.mkdir()
    for name, frame in tiny_company(3, Sizes(leads=12, events=150, opportunities=6)).items():
        frame.to_parquet(data / f"{name}.parquet")
    out = tmp_path / "readiness.parquet"
    main(
        [
            "dataset",
            "lead-readiness",
            "--data",
            str(data),
            "--out",
            str(out),
            "--horizon",
            "14",
            "--every",
            "1w",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    written = pd.read_parquet(out)
    assert summary["rows"] == len(written) > 0
    assert summary["positives"] == int(written["label"].sum())
    assert summary["features"] == len(written.columns) - 3
    feats = tmp_path / "features.csv"
    main(
        [
            "features",
            "opportunity",
            "--as-of",
            "2025-03-03",
            "--data",
            str(data),
            "--out",
            str(feats),
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    table = pd.read_csv(feats)
    assert summary["rows"] == len(table) > 0 and table["as_of"].nunique() == 1
    with pytest.raises(SystemExit) as info:
        main(["dataset", "deal-close", "--data", str(data), "--out", str(tmp_path / "x.txt")])
    assert info.value.code == 2 and "use .parquet or .csv" in capsys.readouterr().err
