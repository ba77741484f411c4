"""Contract tests: every bad-input case of issue 2 is rejected with a message that names
the table, the column, the reason, the count and example rows; every reader yields the
same typed tables; quarantine keeps the good rows and sets the bad ones aside."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from leadml.config import Vocabulary, load_settings
from leadml.contracts import TABLES, check_tables, connect, load_tables
from leadml.errors import DataError
from leadml.sources import frames_source, open_source

# ---------------------------------------------------------------- a tiny company


def tiny_tables() -> dict[str, pd.DataFrame]:
    """A valid company with every canonical table, as strings (like a CSV export)."""
    return {
        "accounts": pd.DataFrame(
            {
                "account_id": ["a1", "a2"],
                "industry": ["software", "retail"],
                "employees": ["40", "5000"],
                "country": ["JP", "US"],
                "segment": ["smb", "enterprise"],
                "created_at": ["2024-01-01", "2024-01-02"],
                "revenue_band": ["<10M", ">1B"],  # extra attribute column
            }
        ),
        "leads": pd.DataFrame(
            {
                "lead_id": ["l1", "l2", "l3"],
                "account_id": ["a1", "a2", "a1"],
                "created_at": ["2024-01-05 09:30:00", "2024-01-06", "2024-01-07T10:00:00+09:00"],
                "source": ["web", "seminar", "web"],
                "job_level": ["manager", "vp", "staff"],
                "utm_campaign": ["spring", "", "fall"],  # extra attribute column
            }
        ),
        "events": pd.DataFrame(
            {
                "lead_id": ["l1", "l2", "l3", "l1"],
                "ts": ["2024-01-08", "2024-01-09", "2024-01-10", "2024-01-11"],
                "type": ["web_visit", "page_view", "email_open", "form_submit"],
                "page_category": ["", "pricing", "", ""],
                "campaign_id": ["", "", "c1", ""],
            }
        ),
        "lead_status_history": pd.DataFrame(
            {
                "lead_id": ["l1", "l1", "l1", "l1"],
                "ts": ["2024-01-05", "2024-01-06", "2024-01-12", "2024-01-15"],
                "status": ["lead", "nurturing", "mql", "sql"],
            }
        ),
        "reps": pd.DataFrame(
            {
                "rep_id": ["r1", "r2"],
                "role": ["IS", "FS"],
                "team": ["is_tokyo", "fs_tokyo"],
                "segment": ["", "smb"],
                "weekly_slots": ["80", "80"],
            }
        ),
        "opportunities": pd.DataFrame(
            {
                "opportunity_id": ["o1", "o2"],
                "account_id": ["a1", "a2"],
                "lead_id": ["l1", ""],
                "owner_id": ["r2", "r2"],
                "created_at": ["2024-01-15", "2024-01-20"],
                "amount": ["12000", "80000.5"],
                "segment": ["smb", "enterprise"],
            }
        ),
        "opportunity_history": pd.DataFrame(
            {
                "opportunity_id": ["o1", "o1", "o2"],
                "ts": ["2024-01-15", "2024-02-20", "2024-01-20"],
                "stage": ["follow_up", "closed_won", "follow_up"],
                "amount": ["12000", "12000", "80000.5"],
                "expected_close_date": ["2024-03-01", "2024-02-20", "2024-06-30"],
            }
        ),
        "activities": pd.DataFrame(
            {
                "ts": ["2024-01-13", "2024-01-25"],
                "rep_id": ["r1", "r2"],
                "lead_id": ["l1", ""],
                "opportunity_id": ["", "o1"],
                "type": ["call", "meeting"],
            }
        ),
        "targets": pd.DataFrame(
            {
                "period_start": ["2024-01-01"],
                "period_end": ["2024-04-01"],
                "team": ["fs_tokyo"],
                "segment": [""],
                "amount": ["50000"],
            }
        ),
    }


def write_csv_dir(frames: dict[str, pd.DataFrame], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        df.to_csv(folder / f"{name}.csv", index=False)
    return folder


def _typed(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The same tables with native Parquet types (naive datetimes, numbers, nulls)."""
    out: dict[str, pd.DataFrame] = {}
    for name, df in frames.items():
        df = df.replace("", None)
        for col in TABLES[name].columns:
            if col.name not in df:
                continue
            if col.kind == "timestamp":
                df[col.name] = pd.to_datetime(
                    df[col.name], utc=True, format="ISO8601"
                ).dt.tz_localize(None)
            elif col.kind in ("float", "int"):
                df[col.name] = pd.to_numeric(df[col.name])
        out[name] = df
    return out


def _message(exc: pytest.ExceptionInfo[DataError]) -> str:
    return str(exc.value)


# ---------------------------------------------------------------- bad input cases


def _drop_lead_created_at(t: dict[str, pd.DataFrame]) -> None:
    t["leads"] = t["leads"].drop(columns=["created_at"])


def _bad_timestamp(t: dict[str, pd.DataFrame]) -> None:
    t["events"].loc[[1, 3], "ts"] = ["not-a-date", "2024-02-30"]


def _duplicate_lead(t: dict[str, pd.DataFrame]) -> None:
    t["leads"].loc[2, "lead_id"] = "l2"


def _event_for_unknown_lead(t: dict[str, pd.DataFrame]) -> None:
    t["events"].loc[[0, 2], "lead_id"] = ["ghost-7", "ghost-8"]


def _negative_amount(t: dict[str, pd.DataFrame]) -> None:
    t["opportunities"].loc[1, "amount"] = "-250"


def _unknown_stage(t: dict[str, pd.DataFrame]) -> None:
    t["opportunity_history"].loc[2, "stage"] = "pilot"


def _unknown_event_type(t: dict[str, pd.DataFrame]) -> None:
    t["events"].loc[3, "type"] = "tweet"


# (id, mutation, "table.column", reason words, count, a value that must be shown)
BAD_CASES: list[tuple[str, Callable[[dict[str, pd.DataFrame]], None], str, str, int, str]] = [
    (
        "missing_column",
        _drop_lead_created_at,
        "leads.created_at",
        "required column missing",
        3,
        "l3",
    ),
    ("unparsable_timestamp", _bad_timestamp, "events.ts", "unparsable timestamp", 2, "not-a-date"),
    ("duplicate_id", _duplicate_lead, "leads.lead_id", "duplicate id", 2, "seminar"),
    ("unknown_lead", _event_for_unknown_lead, "events.lead_id", "unknown lead", 2, "ghost-8"),
    ("negative_amount", _negative_amount, "opportunities.amount", "negative value", 1, "-250"),
    ("unknown_stage", _unknown_stage, "opportunity_history.stage", "unknown value", 1, "pilot"),
    ("unknown_event_type", _unknown_event_type, "events.type", "unknown value", 1, "tweet"),
]


def assert_names_everything(msg: str, where: str, reason: str, count: int, shown: str) -> None:
    """The message names table.column, the reason, the count and shows example rows."""
    flat = " ".join(msg.split())
    assert f"{where}:" in flat
    line = flat[flat.index(f"{where}:") :]
    assert reason in line.split(" - ")[0]
    assert f"({count} row" in line
    assert shown in line  # an example row is printed under the problem
    assert "fix" in flat


@pytest.mark.parametrize(
    ("mutate", "where", "reason", "count", "shown"),
    [c[1:] for c in BAD_CASES],
    ids=[c[0] for c in BAD_CASES],
)
def test_bad_input_is_rejected_with_table_column_reason_count_examples(
    mutate: Callable[[dict[str, pd.DataFrame]], None],
    where: str,
    reason: str,
    count: int,
    shown: str,
    tmp_path: Path,
) -> None:
    tables = tiny_tables()
    mutate(tables)
    folder = write_csv_dir(tables, tmp_path / "data")
    with pytest.raises(DataError) as exc:
        connect(folder, Vocabulary())
    msg = _message(exc)
    assert str(folder) in msg
    assert_names_everything(msg, where, reason, count, shown)


def test_valid_company_passes_every_check(tmp_path: Path) -> None:
    con, report = connect(write_csv_dir(tiny_tables(), tmp_path / "d"), Vocabulary())
    assert report.ok and not report.missing_tables and not report.quarantined
    assert report.rows == {name: len(df) for name, df in tiny_tables().items()}
    assert con.execute("SELECT count(*) FROM opportunity_history").fetchone() == (3,)
    con.close()


def test_unknown_value_names_the_setting_to_change(tmp_path: Path) -> None:
    tables = tiny_tables()
    _unknown_stage(tables)
    with pytest.raises(DataError, match=r"vocabulary\.open_stages"):
        connect(frames_source(tables), Vocabulary())


def test_all_problems_are_reported_at_once() -> None:
    tables = tiny_tables()
    _negative_amount(tables)
    _unknown_event_type(tables)
    with pytest.raises(DataError) as exc:
        connect(frames_source(tables), Vocabulary())
    assert "opportunities.amount" in str(exc.value) and "events.type" in str(exc.value)


# ---------------------------------------------------------------- readers


def _write_parquet_dir(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True)
    for name, df in frames.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def _write_parts_dir(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    """events as a folder of Parquet parts (one of them in a hive sub-folder)."""
    _write_parquet_dir(folder, {k: v for k, v in frames.items() if k != "events"})
    events = frames["events"]
    (folder / "events" / "month=2024-01").mkdir(parents=True)
    events.iloc[:2].to_parquet(folder / "events" / "part-0.parquet", index=False)
    # a later part with its columns in another order
    late = events.iloc[2:]
    late[list(reversed(late.columns))].to_parquet(
        folder / "events" / "month=2024-01" / "part-1.parquet", index=False
    )
    return folder


def _write_duckdb(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True)
    path = folder / "company.duckdb"
    with duckdb.connect(str(path)) as con:
        for name, df in frames.items():
            con.register("df", df)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM df")
            con.unregister("df")
    return path


@pytest.mark.parametrize("reader", ["csv", "parquet", "parquet_parts", "duckdb"])
def test_every_reader_gives_the_same_typed_tables(reader: str, tmp_path: Path) -> None:
    raw = tiny_tables()
    location = {
        "csv": lambda: write_csv_dir(raw, tmp_path / "csv"),
        "parquet": lambda: _write_parquet_dir(tmp_path / "pq", _typed(raw)),
        "parquet_parts": lambda: _write_parts_dir(tmp_path / "parts", _typed(raw)),
        "duckdb": lambda: _write_duckdb(tmp_path / "db", _typed(raw)),
    }[reader]()
    got = load_tables(location, Vocabulary())
    assert set(got) == set(raw)
    for name, df in raw.items():
        assert len(got[name]) == len(df), name
    events = got["events"].sort_values("ts").reset_index(drop=True)
    assert events["lead_id"].tolist() == ["l1", "l2", "l3", "l1"]
    assert str(events["ts"].dt.tz) == "UTC"
    opp = got["opportunities"].set_index("opportunity_id")
    assert opp.loc["o2", "amount"] == pytest.approx(80000.5)
    assert pd.isna(opp.loc["o2", "lead_id"])
    assert got["reps"]["weekly_slots"].tolist() == [80, 80]


def test_naive_timestamps_are_read_as_utc_and_offsets_converted(tmp_path: Path) -> None:
    leads = load_tables(write_csv_dir(tiny_tables(), tmp_path / "d"), Vocabulary())["leads"]
    ts = leads.set_index("lead_id")["created_at"]
    assert ts["l1"] == pd.Timestamp("2024-01-05 09:30:00", tz="UTC")
    assert ts["l3"] == pd.Timestamp("2024-01-07 01:00:00", tz="UTC")  # 10:00 +09:00


def test_naive_parquet_datetimes_are_utc(tmp_path: Path) -> None:
    folder = _write_parquet_dir(tmp_path / "pq", _typed(tiny_tables()))
    leads = load_tables(folder, Vocabulary())["leads"].set_index("lead_id")
    assert leads.loc["l1", "created_at"] == pd.Timestamp("2024-01-05 09:30:00", tz="UTC")


def test_extra_attribute_columns_on_leads_and_accounts_are_kept(tmp_path: Path) -> None:
    tables = tiny_tables()
    tables["events"]["browser"] = "firefox"  # extra columns elsewhere are not part of the view
    got = load_tables(write_csv_dir(tables, tmp_path / "d"), Vocabulary())
    assert got["leads"].set_index("lead_id").loc["l3", "utm_campaign"] == "fall"
    assert got["accounts"]["revenue_band"].tolist() == ["<10M", ">1B"]
    assert "browser" not in got["events"]


def test_optional_columns_and_defaults(tmp_path: Path) -> None:
    tables = tiny_tables()
    tables["reps"] = tables["reps"].drop(columns=["weekly_slots", "segment"])
    tables["events"] = tables["events"].drop(columns=["campaign_id"])
    got = load_tables(frames_source(tables).frames, Vocabulary())
    assert got["reps"]["weekly_slots"].tolist() == [80, 80]
    assert got["events"]["campaign_id"].isna().all()


# ---------------------------------------------------------------- missing things


def test_required_table_missing_is_named(tmp_path: Path) -> None:
    tables = tiny_tables()
    del tables["leads"]
    folder = write_csv_dir(tables, tmp_path / "d")
    with pytest.raises(DataError) as exc:
        connect(folder, Vocabulary())
    msg = _message(exc)
    assert "leads: required table missing" in msg and "leads.csv" in msg


def test_directory_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as exc:
        connect(tmp_path / "nowhere", Vocabulary())
    assert str(tmp_path / "nowhere") in str(exc.value) and "leadml simulate" in str(exc.value)


def test_optional_tables_may_be_absent(tmp_path: Path) -> None:
    tables = {k: v for k, v in tiny_tables().items() if k in ("accounts", "leads", "events")}
    _, report = connect(write_csv_dir(tables, tmp_path / "d"), Vocabulary())
    assert report.ok and "opportunities" in report.missing_tables


# ---------------------------------------------------------------- vocabulary


def test_custom_stage_vocabulary_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "leadml.yaml").write_text(
        "vocabulary:\n  open_stages: [discovery, proposal]\n  won_stage: won\n  lost_stage: lost\n"
    )
    vocab = load_settings(tmp_path / "cfg").vocabulary
    tables = tiny_tables()
    tables["opportunity_history"]["stage"] = ["discovery", "won", "proposal"]
    _, report = connect(frames_source(tables), vocab)
    assert report.ok
    # the default stage names are now unknown
    with pytest.raises(DataError, match="opportunity_history.stage: unknown value"):
        connect(frames_source(tiny_tables()), vocab)


# ---------------------------------------------------------------- quarantine


def test_quarantine_keeps_good_rows_and_writes_bad_ones_with_reasons(tmp_path: Path) -> None:
    tables = tiny_tables()
    _event_for_unknown_lead(tables)  # events rows 0 and 2
    _negative_amount(tables)  # o2; its history row must follow it
    qdir = tmp_path / "quarantine"
    qdir.mkdir()
    (qdir / "leads.csv").write_text("stale from an earlier run\n")
    con, report = connect(
        frames_source(tables), Vocabulary(), bad_rows="quarantine", quarantine_dir=qdir
    )
    assert report.quarantined == {"events": 2, "opportunities": 1, "opportunity_history": 1}
    assert sorted(r[0] for r in con.execute("SELECT lead_id FROM events").fetchall()) == [
        "l1",
        "l2",
    ]
    assert con.execute("SELECT opportunity_id FROM opportunities").fetchall() == [("o1",)]
    assert con.execute("SELECT count(*) FROM opportunity_history").fetchone() == (2,)
    con.close()
    assert sorted(p.name for p in qdir.iterdir()) == [
        "events.csv",
        "opportunities.csv",
        "opportunity_history.csv",
    ]
    bad = pd.read_csv(qdir / "events.csv")
    assert bad["lead_id"].tolist() == ["ghost-7", "ghost-8"]
    assert bad["_reasons"].str.contains("unknown lead").all()
    hist = pd.read_csv(qdir / "opportunity_history.csv")
    assert hist["opportunity_id"].tolist() == ["o2"] and "quarantined" in hist["_reasons"][0]
    assert "negative value" in pd.read_csv(qdir / "opportunities.csv")["_reasons"][0]


def test_quarantine_of_a_duplicate_parent_takes_its_children_along() -> None:
    tables = tiny_tables()
    _duplicate_lead(tables)  # both rows with l2 are quarantined
    con, report = connect(frames_source(tables), Vocabulary(), bad_rows="quarantine")
    assert report.quarantined == {"leads": 2, "events": 2}
    assert con.execute("SELECT DISTINCT lead_id FROM events ORDER BY 1").fetchall() == [("l1",)]
    con.close()


def test_quarantine_cannot_fix_a_missing_column() -> None:
    tables = tiny_tables()
    _drop_lead_created_at(tables)
    with pytest.raises(DataError, match="leads.created_at"):
        connect(frames_source(tables), Vocabulary(), bad_rows="quarantine")


def test_reject_mode_writes_no_quarantine(tmp_path: Path) -> None:
    tables = tiny_tables()
    _unknown_event_type(tables)
    with pytest.raises(DataError):
        connect(frames_source(tables), Vocabulary(), quarantine_dir=tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_checks_define_views_over_the_source_not_copies(tmp_path: Path) -> None:
    folder = _write_parquet_dir(tmp_path / "pq", _typed(tiny_tables()))
    con = duckdb.connect()
    check_tables(con, open_source(folder, list(TABLES)), Vocabulary())
    kinds = dict(
        con.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_name = 'events'"
        ).fetchall()
    )
    assert kinds == {"events": "VIEW"}
    # the view reads the file: a change on disk shows without re-checking
    extra = _typed(tiny_tables())["events"].iloc[:1]
    pd.concat([_typed(tiny_tables())["events"], extra]).to_parquet(
        folder / "events.parquet", index=False
    )
    assert con.execute("SELECT count(*) FROM events").fetchone() == (5,)
    con.close()


def test_an_unreadable_file_is_a_data_error_naming_the_table(tmp_path: Path) -> None:
    folder = write_csv_dir(tiny_tables(), tmp_path / "d")
    (folder / "events.csv").unlink()
    (folder / "events.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(DataError, match="table events cannot be read"):
        connect(folder, Vocabulary())


def _late_lead(tables: dict[str, pd.DataFrame]) -> None:
    """One lead created in 2031: a typo far after every other record (2024)."""
    leads = tables["leads"]
    tables["leads"] = pd.concat(
        [leads, leads.iloc[[0]].assign(lead_id="l9", created_at="2031-01-01")], ignore_index=True
    )


def test_a_record_dated_far_after_the_rest_is_named() -> None:
    tables = tiny_tables()
    _late_lead(tables)
    with pytest.raises(DataError) as err:
        connect(frames_source(tables), Vocabulary())
    text = str(err.value)
    assert "leads.created_at: dated after the rest of the data" in text
    assert "up to 2031-01-01" in text and "(1 row)" in text and "l9" in text
    # records of one table some months after the others are normal (a newer export)
    fine = tiny_tables()
    fine["leads"].loc[0, "created_at"] = "2024-11-20"
    connect(frames_source(fine), Vocabulary())[0].close()


def test_quarantine_sets_a_late_record_aside() -> None:
    tables = tiny_tables()
    _late_lead(tables)
    con, report = connect(frames_source(tables), Vocabulary(), bad_rows="quarantine")
    assert report.quarantined == {"leads": 1}
    assert con.execute("SELECT count(*) FROM leads WHERE lead_id = 'l9'").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM leads").fetchone() == (3,)
    con.close()
