"""`leadml import --out`: the output folder is replaced whole, so only a new or empty
folder or an earlier import's output may be given (never the exports themselves or a
folder with the user's files); naive local times in a daylight-saving zone are never
dropped; a deal history of current values is flagged for the forecast."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from leadml.errors import ConfigError
from leadml.importing.mapping import MappingError, load_mapping, run_import

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

MAPPING: dict[str, Any] = {
    "name": "tiny_crm",
    "timezone": "Europe/Berlin",
    "tables": {
        "accounts": [
            {
                "file": "companies.csv",
                "columns": {
                    "account_id": "CompanyId",
                    "segment": {"value": "smb"},
                    "created_at": {"source": "Created", "format": "%d.%m.%Y %H:%M"},
                },
            }
        ],
        "leads": [
            {
                "file": "people.csv",
                "columns": {
                    "lead_id": "PersonId",
                    "account_id": "CompanyId",
                    "created_at": {"source": "Created", "format": "%d.%m.%Y %H:%M"},
                },
            }
        ],
    },
}

COMPANIES = "CompanyId,Created\nC1,01.01.2024 09:00\nC2,01.02.2024 09:00\n"
PEOPLE = (
    "PersonId,CompanyId,Created\n"
    "P1,C1,05.03.2024 10:00\n"
    "P2,C1,27.10.2024 02:30\n"  # the repeated hour when DST ends in Berlin
    "P3,C2,31.03.2024 02:30\n"  # the hour skipped when DST starts
    "P4,C2,27.10.2024 02:45\n"
)


def _setup(tmp_path: Path, people: str = PEOPLE) -> tuple[Path, Path]:
    src = tmp_path / "crm"
    src.mkdir()
    (src / "companies.csv").write_text(COMPANIES)
    (src / "people.csv").write_text(people)
    mapping = tmp_path / "tiny.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING, sort_keys=False))
    return src, mapping


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from leadml.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line wrapping in the captured messages


# ------------------------------------------------------------------ output folder


def test_non_empty_foreign_folder_is_refused_and_its_files_survive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, mapping = _setup(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(ConfigError, match=r"non-empty folder that is not an earlier import"):
        run_import(load_mapping(mapping), src, out)
    code, err = _cli(
        ["import", "--mapping", str(mapping), "--src", str(src), "--out", str(out)], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert str(out) in err and "notes.txt" in err and "new or empty folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("where", ["same", "parent"])
def test_out_that_is_or_holds_the_source_folder_is_refused_and_sources_survive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    src, mapping = _setup(tmp_path)
    before = _snapshot(tmp_path)
    out = src if where == "same" else tmp_path
    code, err = _cli(
        ["import", "--mapping", str(mapping), "--src", str(src), "--out", str(out)], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert "source folder" in err and "would delete the export files" in err
    assert _snapshot(tmp_path) == before


def test_out_inside_the_source_folder_is_refused_only_when_it_holds_read_files(
    tmp_path: Path,
) -> None:
    src, mapping = _setup(tmp_path)
    data = dict(MAPPING, tables=dict(MAPPING["tables"]))
    data["tables"]["accounts"] = [dict(MAPPING["tables"]["accounts"][0], file="sub/companies.csv")]
    (src / "sub").mkdir()
    (src / "sub" / "companies.csv").write_text(COMPANIES)
    nested = tmp_path / "nested.yaml"
    nested.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"holds files the mapping reads \(sub/companies\.csv\)"):
        run_import(load_mapping(nested), src, src / "sub")
    assert (src / "sub" / "companies.csv").read_text() == COMPANIES
    # an output folder inside the exports that the mapping does not read is fine
    tables, _ = run_import(load_mapping(mapping), src, src / "imported")
    assert len(tables["leads"]) == 4 and (src / "imported" / "leads.parquet").exists()


def test_reimport_into_an_earlier_output_replaces_it(tmp_path: Path) -> None:
    src, mapping = _setup(tmp_path)
    out = tmp_path / "out"
    run_import(load_mapping(mapping), src, out)
    (src / "people.csv").write_text(PEOPLE + "P5,C2,01.06.2024 12:00\n")
    tables, _ = run_import(load_mapping(mapping), src, out)
    assert len(tables["leads"]) == 5
    assert len(pd.read_parquet(out / "leads.parquet")) == 5
    # a failed re-import leaves the earlier output as it was
    before = _snapshot(out)
    (src / "people.csv").write_text(PEOPLE + "P6,C2,yesterday\n")
    with pytest.raises(MappingError, match="yesterday"):
        run_import(load_mapping(mapping), src, out)
    assert _snapshot(out) == before
    # a user's file added to an earlier output is not deleted either
    (out / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match=r"earlier import's output but also holds .*notes\.txt"):
        run_import(load_mapping(mapping), src, out)
    assert (out / "notes.txt").read_text() == "keep" and _snapshot(out)["leads.parquet"]


def test_out_dot_in_an_empty_current_folder_imports_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, mapping = _setup(tmp_path)
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    args = ["import", "--mapping", str(mapping), "--src", str(src), "--out", "."]
    code, err = _cli(args, capsys)
    assert code == 0, err
    assert (here / "leads.parquet").exists() and (here / "import_report.json").exists()
    # the folder itself stays (the shell that ran the import is still in it)
    assert Path.cwd() == here and here.stat().st_ino == inode
    code, err = _cli(args, capsys)  # and an import into it again replaces its contents
    assert code == 0, err
    assert here.stat().st_ino == inode and len(pd.read_parquet(here / "leads.parquet")) == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_file_as_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, mapping = _setup(tmp_path)
    text = tmp_path / "some_file.txt"
    text.write_text("hello")
    for out, reason in ((text, "is a file, not a folder"), (text / "x", "is a file, so")):
        code, err = _cli(
            ["import", "--mapping", str(mapping), "--src", str(src), "--out", str(out)], capsys
        )
        assert code == 2 and reason in err and str(text) in err, err
        assert "Traceback" not in err and "NotADirectoryError" not in err
    assert text.read_text() == "hello"


# ------------------------------------------------------------------ time zones


def test_ambiguous_and_nonexistent_local_times_are_kept_and_reported(tmp_path: Path) -> None:
    src, mapping = _setup(tmp_path)
    tables, report = run_import(load_mapping(mapping), src, tmp_path / "out")
    leads = tables["leads"].set_index("lead_id")["created_at"]
    assert set(leads.index) == {"P1", "P2", "P3", "P4"}
    # the repeated hour is read as its first occurrence, in daylight-saving time (UTC+2)
    assert leads["P2"] == pd.Timestamp("2024-10-27 00:30", tz="UTC")
    assert leads["P4"] == pd.Timestamp("2024-10-27 00:45", tz="UTC")
    # the skipped hour moves forward to 03:00 local (UTC+2)
    assert leads["P3"] == pd.Timestamp("2024-03-31 01:00", tz="UTC")
    assert not report.dropped
    notes = [n for n in report.notes if "people.csv" in n and "'Created'" in n]
    assert len(notes) == 2, report.notes
    assert "2 local time(s) in Europe/Berlin fall in the hour that repeats" in notes[0]
    assert "first occurrence (daylight-saving time)" in notes[0]
    assert "1 local time(s) in Europe/Berlin do not exist" in notes[1]
    assert "moved forward" in notes[1]


# ------------------------------------------------------------------ current values


def test_hubspot_import_notes_that_close_dates_are_current_values(tmp_path: Path) -> None:
    _, report = run_import(load_mapping("hubspot"), FIXTURES / "hubspot", tmp_path / "hs")
    notes = [n for n in report.notes if "close date" in n]
    assert len(notes) == 1 and "overstates open-deal revenue" in notes[0]
    assert "HubSpot exports only current values" in notes[0]
    src, mapping = _setup(tmp_path)
    _, report = run_import(load_mapping(mapping), src, tmp_path / "out")
    assert not [n for n in report.notes if "close date" in n]  # no deal history at all


def test_reimport_leaves_no_temporary_folders(tmp_path: Path) -> None:
    src, mapping = _setup(tmp_path)
    run_import(load_mapping(mapping), src, tmp_path / "out")
    run_import(load_mapping(mapping), src, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["crm", "out", "tiny.yaml"]


def test_a_table_whose_rows_are_all_left_out_is_said_first(tmp_path: Path) -> None:
    """BYOD review: a header-only deals file dropped every stage-history row (unknown
    deals) and the import ended quietly; here every status row names an unknown person."""
    src, mapping = _setup(tmp_path)
    spec = dict(MAPPING, tables=dict(MAPPING["tables"]))
    spec["tables"]["lead_status_history"] = [
        {
            "file": "status.csv",
            "columns": {
                "lead_id": "PersonId",
                "ts": {"source": "When", "format": "%d.%m.%Y %H:%M"},
                "status": {"value": "mql"},
            },
        }
    ]
    mapping.write_text(yaml.safe_dump(spec, sort_keys=False))
    (src / "status.csv").write_text("PersonId,When\nP8,06.03.2024 10:00\nP9,07.03.2024 10:00\n")
    tables, report = run_import(load_mapping(str(mapping)), src, tmp_path / "out")
    assert len(tables["lead_status_history"]) == 0
    first = report.notes[0]
    assert first.startswith("every row of lead_status_history was left out (2 rows; most for:")
    assert "unknown lead" in first and "P8" in first and "fix that reason" in first
    (src / "status.csv").write_text("PersonId,When\nP1,06.03.2024 10:00\nP9,07.03.2024 10:00\n")
    _, partly = run_import(load_mapping(str(mapping)), src, tmp_path / "out")
    assert not [n for n in partly.notes if n.startswith("every row of")]
