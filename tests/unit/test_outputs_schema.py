"""Output tables keep one typed schema whatever a night's data holds (nightly review:
an empty call list wrote ``call_date`` as a null column, which broke the documented
``read_parquet`` glob for every later date, and a leads table without ``team`` made the
DuckDB column ``"NULL"``, so the first run with a team column failed)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from leadml.batch.outputs import DuckDBOutputs, OutputStore, ParquetOutputs

D1, D2 = date(2025, 6, 1), date(2025, 6, 2)


def _calls(team: object = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rep_id": ["r1", "r1"],
            "rank": [1, 2],
            "call_date": [date(2025, 6, 2), date(2025, 6, 3)],
            "lead_id": ["a", "b"],
            "readiness": [0.4, 0.3],
            "status": ["mql", "mql"],
            "team": [team, team],
            "same_rep_as_last_touch": [True, False],
        }
    )


def _store(tmp_path: Path) -> OutputStore:
    return OutputStore(
        ParquetOutputs(tmp_path / "outputs"), DuckDBOutputs(tmp_path / "outputs" / "x.duckdb")
    )


def test_an_empty_night_writes_the_same_typed_columns_as_a_full_one(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.publish(D1, {"call_list": pd.DataFrame(), "forecast": pd.DataFrame()})
    store.publish(D2, {"call_list": _calls(), "forecast": pd.DataFrame({"open_deals": [3.0]})})
    con = duckdb.connect()
    glob = str(tmp_path / "outputs" / "call_list" / "*" / "*.parquet")
    rows = con.execute(
        f"SELECT as_of, call_date, team FROM read_parquet('{glob}', hive_partitioning=true) "
        "ORDER BY as_of, call_date"
    ).fetchall()
    assert rows == [(D2, date(2025, 6, 2), None), (D2, date(2025, 6, 3), None)]
    kinds = dict(
        con.execute(
            f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{glob}')"
        ).fetchall()
    )
    assert kinds["call_date"] == "DATE" and kinds["team"] == "VARCHAR"
    with duckdb.connect(str(tmp_path / "outputs" / "x.duckdb"), read_only=True) as db:
        call_list = {r[0]: r[1] for r in db.execute("DESCRIBE call_list").fetchall()}
        forecast = {r[0]: r[1] for r in db.execute("DESCRIBE forecast").fetchall()}
    assert call_list["call_date"] == "DATE" and call_list["team"] == "VARCHAR"
    assert call_list["rank"] == "BIGINT" and forecast["open_deals"] == "BIGINT"
    assert '"NULL"' not in call_list.values()


def test_a_team_column_arriving_later_is_written(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.publish(D1, {"call_list": _calls()})
    store.publish(D2, {"call_list": _calls(team="emea")})
    assert store.sql is not None
    assert store.sql.read("call_list", D2)["team"].tolist() == ["emea", "emea"]
    assert ParquetOutputs(tmp_path / "outputs").read("call_list", D2)["team"].tolist() == [
        "emea",
        "emea",
    ]


def test_a_null_typed_column_made_by_an_earlier_version_is_retyped(tmp_path: Path) -> None:
    path = tmp_path / "outputs" / "x.duckdb"
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as db:
        db.execute("CREATE TABLE scores_leads AS SELECT DATE '2025-05-01' AS as_of, "
                   "'x' AS lead_id, NULL AS team")  # fmt: skip
    frame = pd.DataFrame({"lead_id": ["a"], "readiness": [0.2], "team": ["emea"]})
    with DuckDBOutputs(path).transaction(D2) as write:
        write({"scores_leads": frame})
    got = DuckDBOutputs(path).read("scores_leads", D2)
    assert got["team"].tolist() == ["emea"] and got["readiness"].tolist() == [0.2]
