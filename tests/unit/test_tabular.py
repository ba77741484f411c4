"""Attribute-only lead tables: delimiter sniffing, missing-value sentinels, inferred
column types, time ordering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.errors import DataError
from leadml.importing.tabular import parse_missing_values, prepare_table, read_lead_table


def _table(n: int = 60, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = rng.permutation(n)  # rows NOT in time order in the file
    return pd.DataFrame(
        {
            "Lead ID": [f"lead-{i:04d}" for i in range(n)],
            "signup_date": (pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")).strftime(
                "%Y-%m-%d"
            ),
            "country": rng.choice(["JP", "US", "Select"], n),
            "employees": np.where(rng.uniform(size=n) < 0.2, 999, rng.integers(5, 500, n)),
            "lead_score": np.where(
                rng.uniform(size=n) < 0.1, "unknown", rng.integers(0, 100, n).astype(str)
            ),
            "tenant": "acme",
            "Converted": rng.choice(["Converted", "Not converted"], n),
        }
    )


def test_reads_semicolon_csv_and_infers_types_with_sentinels(tmp_path: Path) -> None:
    raw = _table()
    raw.loc[5, "Converted"] = None  # missing outcome -> dropped
    path = tmp_path / "leads.csv"
    raw.to_csv(path, sep=";", index=False)
    df = read_lead_table(path)
    assert list(df.columns) == list(raw.columns)
    frame, report = prepare_table(
        df, "Converted", time_column="signup_date", missing_values="Select,unknown,999"
    )
    kinds = {c.name: c.kind for c in report.columns}
    assert kinds == {
        "Converted": "target",
        "signup_date": "time",
        "Lead ID": "id",
        "country": "categorical",
        "employees": "numeric",
        "lead_score": "numeric",
        "tenant": "constant",
    }
    sentinels = {c.name: c.sentinels for c in report.columns}
    assert sentinels["country"] == (raw["country"] == "Select").sum()
    assert sentinels["employees"] == (raw["employees"] == 999).sum()
    assert sentinels["lead_score"] == (raw["lead_score"] == "unknown").sum()
    assert report.features == ["country", "employees", "lead_score"]
    assert len(frame) == len(raw) - 1 and report.notes
    assert frame["signup_date"].is_monotonic_increasing
    assert frame["employees"].dtype == float and 999 not in set(frame["employees"])
    assert "Select" not in set(frame["country"].dropna())
    assert set(frame["Converted"]) == {0, 1}
    # the outcome travelled with its row through the sort
    by_date = raw.drop(index=5).set_index("signup_date")["Converted"]
    expected = (by_date.loc[frame["signup_date"].dt.strftime("%Y-%m-%d")] == "Converted").astype(
        int
    )
    assert frame["Converted"].tolist() == expected.tolist()


def test_without_sentinels_a_mixed_column_is_categorical_with_a_hint() -> None:
    frame, report = prepare_table(_table(), "Converted", order_by="employees")
    info = {c.name: c for c in report.columns}
    assert info["lead_score"].kind == "categorical" and "unknown" in info["lead_score"].note
    assert info["signup_date"].kind == "datetime" and "signup_date" not in report.features
    assert str(frame["signup_date"].dt.tz) == "UTC"  # kept for the leakage guard
    assert frame["employees"].is_monotonic_increasing and report.order == "by column 'employees'"


def test_exclude_and_errors() -> None:
    frame, report = prepare_table(_table(), "Converted", exclude=["lead_score"])
    assert "lead_score" not in frame.columns
    assert {c.name: c.kind for c in report.columns}["lead_score"] == "excluded"
    with pytest.raises(DataError, match="nope"):
        prepare_table(_table(), "nope")
    with pytest.raises(DataError, match="unknown column"):
        prepare_table(_table(), "Converted", exclude=["ghost"])
    bad = _table()
    bad.loc[0, "signup_date"] = "not a date"
    with pytest.raises(DataError, match="signup_date.*not dates in ISO form"):
        prepare_table(bad, "Converted", time_column="signup_date")
    # day-first dates would be read day-first or month-first row by row: refused
    dmy = _table()
    dmy["signup_date"] = pd.to_datetime(dmy["signup_date"]).dt.strftime("%d/%m/%Y")
    with pytest.raises(DataError, match="day-first or month-first"):
        prepare_table(dmy, "Converted", time_column="signup_date")


def test_parse_missing_values() -> None:
    mv = parse_missing_values("Select, unknown,,999 , pdays=999,pdays = -1")
    assert mv.everywhere == ["Select", "unknown", "999"]
    assert mv.for_column("pdays") == ["Select", "unknown", "999", "999", "-1"]
    assert mv.for_column("age") == ["Select", "unknown", "999"]
    assert parse_missing_values(None).everywhere == []


def test_column_specific_sentinel_leaves_other_columns_alone() -> None:
    raw = _table()
    raw["score_b"] = raw["employees"]  # same values, no sentinel declared for it
    frame, report = prepare_table(raw, "Converted", missing_values="employees=999")
    assert frame["employees"].isna().sum() == (raw["employees"] == 999).sum() > 0
    assert frame["score_b"].isna().sum() == 0
    with pytest.raises(DataError, match="ghost"):
        prepare_table(raw, "Converted", missing_values="ghost=1")


def test_cli_check_table_names_the_leaking_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from leadml.cli import main

    monkeypatch.setenv("COLUMNS", "1000")
    raw = _table(n=400)
    closed = pd.to_datetime(raw["signup_date"]) + pd.Timedelta(days=30)
    raw["deal_closed_on"] = closed.dt.strftime("%Y-%m-%d").where(raw["Converted"] == "Converted")
    path = tmp_path / "leads.csv"
    raw.to_csv(path, index=False)
    main(
        [
            "check-table",
            "--table",
            str(path),
            "--target",
            "Converted",
            "--time-column",
            "signup_date",
            "--missing-values",
            "Select,unknown,employees=999",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert out["leakage"]["flagged"] == ["deal_closed_on"]
    main(
        [
            "check-table",
            "--table",
            str(path),
            "--target",
            "Converted",
            "--exclude",
            "deal_closed_on,lead_score",
        ]
    )
    text = capsys.readouterr().out
    assert "no column flagged" in text
