"""Readers find tables by name; writers are atomic (nothing half-written)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from leadml.errors import DataError
from leadml.sources import atomic_path, open_source, write_parquet

NAMES = ["accounts", "leads", "events"]


def test_atomic_path_leaves_the_old_file_intact_when_the_writer_raises(tmp_path: Path) -> None:
    target = tmp_path / "out" / "scores.parquet"
    write_parquet(pd.DataFrame({"x": [1, 2]}), target)
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a parquet file")
        raise RuntimeError("disk full")
    assert pd.read_parquet(target)["x"].tolist() == [1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.parquet"]  # no temp left


def test_atomic_path_creates_nothing_when_the_first_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "new.csv"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("a,b\n")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_a_folder_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "batch"
    target.mkdir()
    (target / "old.csv").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.csv").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["batch"]
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "partial.csv").write_text("x")
        raise OSError("killed")
    assert [p.name for p in target.iterdir()] == ["new.csv"]


def test_write_parquet_round_trips(tmp_path: Path) -> None:
    df = pd.DataFrame({"lead_id": ["l1"], "score": [0.25]})
    out = write_parquet(df, tmp_path / "deep" / "s.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out), df, check_dtype=False)


def test_open_source_finds_each_layout_and_ignores_other_files(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text("account_id\na1\n")
    pd.DataFrame({"lead_id": ["l1"]}).to_parquet(tmp_path / "leads.parquet")
    (tmp_path / "events").mkdir()
    pd.DataFrame({"lead_id": ["l1"]}).to_parquet(tmp_path / "events" / "part-0.parquet")
    (tmp_path / "truth").mkdir()
    pd.DataFrame({"p": [0.5]}).to_parquet(tmp_path / "truth" / "leads.parquet")
    src = open_source(tmp_path, NAMES)
    assert src.tables == ["accounts", "events", "leads"]
    assert "read_csv" in src.relations["accounts"]
    assert "truth" not in src.relations["leads"]
    assert "events" in src.relations["events"] and "**" in src.relations["events"]


def test_open_source_errors_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "missing", NAMES)
    (tmp_path / "leads.xlsx").write_text("x")
    with pytest.raises(DataError, match="DuckDB database"):
        open_source(tmp_path / "leads.xlsx", NAMES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError, match=r"no tables found; expected files named like accounts\.parquet"
    ):
        open_source(tmp_path / "empty", NAMES)
    (tmp_path / "broken.duckdb").write_text("not a database")
    with pytest.raises(DataError, match="cannot open as a DuckDB database"):
        open_source(tmp_path / "broken.duckdb", NAMES)
