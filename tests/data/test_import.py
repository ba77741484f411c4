"""`leadml import`: presets round-trip their hand-made fixtures into valid canonical
tables; mapping errors name the file, the column and the value; dropped rows are
reported with their reasons; writes are atomic."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from leadml.config import Vocabulary
from leadml.contracts import load_tables
from leadml.errors import ConfigError, DataError
from leadml.importing.mapping import (
    ImportReport,
    MappingError,
    import_tables,
    load_mapping,
    map_tables,
    run_import,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def _edit(path: Path, row: int, column: str, value: str) -> None:
    rows = _rows(path)
    rows[row][column] = value
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


Imported = tuple[dict[str, pd.DataFrame], ImportReport, Path]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Imported]:
    """Each preset's fixtures imported once (the import runs the contract checks)."""
    out: dict[str, Imported] = {}
    for preset in ("salesforce", "hubspot"):
        folder = tmp_path_factory.mktemp(preset) / "out"
        tables, report = run_import(load_mapping(preset), FIXTURES / preset, folder)
        out[preset] = (tables, report, folder)
    return out


@pytest.mark.parametrize("preset", ["salesforce", "hubspot"])
def test_preset_round_trips_fixtures_with_no_contract_problem(
    preset: str, imported: dict[str, Imported]
) -> None:
    tables, report, out = imported[preset]
    assert not [d for d in report.dropped if d.file == "contract check"], report.dropped
    # The written folder passes the contract checks strictly (reject mode).
    checked = load_tables(out, Vocabulary())
    for name in (
        "accounts",
        "leads",
        "events",
        "lead_status_history",
        "opportunities",
        "opportunity_history",
        "reps",
    ):
        assert len(checked[name]) == len(tables[name]) > 0, name
    for name, df in checked.items():
        for col in df.columns:
            if pd.api.types.is_datetime64_any_dtype(df[col]):
                assert str(df[col].dt.tz) == "UTC", (name, col)
    assert (out / "import_report.json").exists()


def test_salesforce_preset_links_people_and_deals(imported: dict[str, Imported]) -> None:
    tables = imported["salesforce"][0]
    leads_csv = _rows(FIXTURES / "salesforce" / "Lead.csv")
    contacts_csv = _rows(FIXTURES / "salesforce" / "Contact.csv")
    converted_contacts = {r["ConvertedContactId"] for r in leads_csv}
    expected_people = {r["Id"] for r in leads_csv} | {
        r["Id"] for r in contacts_csv if r["Id"] not in converted_contacts
    }
    assert set(tables["leads"]["lead_id"]) == expected_people
    # A task on a contact converted from a lead counts for the lead.
    acts = tables["activities"]
    lead_of_contact = {
        r["ConvertedContactId"]: r["Id"] for r in leads_csv if r["ConvertedContactId"]
    }
    task_rows = [
        r
        for r in _rows(FIXTURES / "salesforce" / "Task.csv")
        if r["WhoId"] in lead_of_contact and r["Status"] == "Completed"
    ]
    assert task_rows
    for r in task_rows:
        ts = pd.Timestamp(r["CreatedDate"])
        hit = acts[acts["ts"] == ts]
        assert list(hit["lead_id"]) == [lead_of_contact[r["WhoId"]]]
    # Open tasks are plans, not touches.
    open_tasks = [
        r for r in _rows(FIXTURES / "salesforce" / "Task.csv") if r["Status"] != "Completed"
    ]
    assert open_tasks
    assert not set(pd.to_datetime([r["CreatedDate"] for r in open_tasks])) & set(acts["ts"])
    # Opportunities know the lead they were converted from.
    opp_lead = {
        r["ConvertedOpportunityId"]: r["Id"] for r in leads_csv if r["ConvertedOpportunityId"]
    }
    opps = tables["opportunities"].set_index("opportunity_id")
    for opp, lead in opp_lead.items():
        assert opps.loc[opp, "lead_id"] == lead
    # A conversion known only by its date is visible from the end of that day.
    sql = tables["lead_status_history"].query("status == 'sql'")
    for r in leads_csv:
        if r["IsConverted"] == "true":
            day_end = pd.Timestamp(r["ConvertedDate"], tz="UTC") + pd.Timedelta(days=1)
            assert day_end in set(sql.loc[sql["lead_id"] == r["Id"], "ts"])
    # Post-outcome fields never land on the lead row.
    assert not {"Status", "IsConverted", "ConvertedDate", "status"} & set(tables["leads"].columns)


def test_hubspot_preset_keeps_counters_as_attributes_and_converts_time_zone(
    imported: dict[str, Imported],
) -> None:
    mapping = load_mapping("hubspot")
    utc = imported["hubspot"][0]
    tokyo, _ = map_tables(
        mapping.model_copy(update={"timezone": "Asia/Tokyo"}), FIXTURES / "hubspot"
    )
    contacts = _rows(FIXTURES / "hubspot" / "contacts.csv")
    leads = utc["leads"].set_index("lead_id")
    for r in contacts:
        assert leads.loc[r["Record ID"], "page_views_at_export"] == float(r["Number of Pageviews"])
    # No events are made up from counters: only dated properties give events.
    dated = sum(
        bool(r[c])
        for r in contacts
        for c in (
            "First Conversion Date",
            "Recent Conversion Date",
            "Time of First Session",
            "Time of Last Session",
            "Time Last Seen",
        )
    )
    same = sum(
        bool(r["First Conversion Date"])
        and r["First Conversion Date"] == r["Recent Conversion Date"]
        for r in contacts
    )
    assert len(utc["events"]) == dated - same
    shift = utc["leads"]["created_at"] - tokyo["leads"]["created_at"]
    assert (shift == pd.Timedelta(hours=9)).all()


def test_unknown_source_column_names_file_and_column(tmp_path: Path) -> None:
    src = _copy("salesforce", tmp_path)
    text = (
        (src / "Opportunity.csv")
        .read_text()
        .replace("StageName", "Stage", 1)
        .replace(",OwnerId,", ",Owner,", 1)
    )
    (src / "Opportunity.csv").write_text(text)
    with pytest.raises(MappingError) as err:
        import_tables(load_mapping("salesforce"), src)
    msg = str(err.value)
    assert "Opportunity.csv" in msg and "'OwnerId'" in msg and "unknown source column" in msg
    assert "Owner" in msg  # lists what the file has


def test_unmapped_stage_value_names_file_column_and_value(tmp_path: Path) -> None:
    src = _copy("salesforce", tmp_path)
    _edit(src / "OpportunityHistory.csv", 2, "StageName", "Technical Deep Dive")
    with pytest.raises(MappingError) as err:
        import_tables(load_mapping("salesforce"), src)
    msg = str(err.value)
    assert (
        "OpportunityHistory.csv" in msg and "'StageName'" in msg and "'Technical Deep Dive'" in msg
    )
    assert "closed_won" in msg  # says what it may map to


def test_unmapped_value_with_default_is_accepted(tmp_path: Path) -> None:
    src = _copy("salesforce", tmp_path)
    _edit(src / "OpportunityHistory.csv", 2, "StageName", "Technical Deep Dive")
    data = yaml.safe_load(
        (
            Path(__file__).resolve().parents[2] / "src/leadml/importing/presets/salesforce.yaml"
        ).read_text()
    )
    data["tables"]["opportunity_history"][0]["columns"]["stage"]["default"] = "evaluation"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    tables, _ = map_tables(load_mapping(path), src)
    hist = tables["opportunity_history"]
    assert "evaluation" in set(hist["stage"])
    assert len(hist) == len(_rows(src / "OpportunityHistory.csv"))


def test_bad_timestamp_format_names_file_column_and_value(tmp_path: Path) -> None:
    src = _copy("hubspot", tmp_path)
    _edit(src / "deals.csv", 1, "Create Date", "03/05/2024 10:00 AM")
    with pytest.raises(MappingError) as err:
        import_tables(load_mapping("hubspot"), src)
    msg = str(err.value)
    assert "deals.csv" in msg and "'Create Date'" in msg and "'03/05/2024 10:00 AM'" in msg
    assert "format" in msg


def test_rows_breaking_a_contract_are_dropped_and_reported(tmp_path: Path) -> None:
    src = _copy("salesforce", tmp_path)
    _edit(src / "Task.csv", 0, "WhoId", "00QA00000deleted")  # a lead that is not exported
    out = tmp_path / "out"
    tables, report = run_import(load_mapping("salesforce"), src, out)
    hits = [d for d in report.dropped if d.file == "contract check" and d.table == "activities"]
    assert len(hits) == 1 and hits[0].count == 1 and "lead" in hits[0].reason
    assert "00QA00000deleted" in hits[0].examples
    assert "00QA00000deleted" not in set(tables["activities"]["lead_id"].dropna())
    dropped = pd.read_csv(out / "dropped" / "activities.csv")
    assert list(dropped["lead_id"]) == ["00QA00000deleted"] and dropped["_reasons"].notna().all()
    with pytest.raises(DataError, match="activities.lead_id"):
        import_tables(load_mapping("salesforce"), src, strict=True)


def test_failed_import_leaves_the_output_folder_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_import(load_mapping("hubspot"), FIXTURES / "hubspot", out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    src = _copy("hubspot", tmp_path)
    _edit(src / "contacts.csv", 0, "Create Date", "yesterday")
    with pytest.raises(MappingError):
        run_import(load_mapping("hubspot"), src, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_optional_file_missing_is_noted_and_required_file_missing_is_an_error(
    tmp_path: Path,
) -> None:
    src = _copy("salesforce", tmp_path)
    (src / "LeadHistory.csv").unlink()
    _, report = map_tables(load_mapping("salesforce"), src)
    assert any("LeadHistory.csv" in n for n in report.notes)
    (src / "User.csv").unlink()
    with pytest.raises(MappingError, match=r"User\.csv.*not found"):
        import_tables(load_mapping("salesforce"), src)


def test_invalid_mapping_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "tables": {
                    "events": [
                        {
                            "file": "x.csv",
                            "columns": {"lead_id": "a", "ts": "b", "type": "c", "colour": "d"},
                        }
                    ]
                }
            }
        )
    )
    with pytest.raises(ConfigError, match="colour"):
        load_mapping(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_mapping(tmp_path / "missing.yaml")


def test_cli_import_writes_tables_and_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadml.cli import main

    monkeypatch.setenv("COLUMNS", "1000")  # no line wrapping in the captured messages
    out = tmp_path / "imported"
    main(
        [
            "import",
            "--mapping",
            "hubspot",
            "--src",
            str(FIXTURES / "hubspot"),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert '"leads": 5' in capsys.readouterr().out
    assert (out / "leads.parquet").exists()
    src = _copy("hubspot", tmp_path)
    _edit(src / "deal_stage_history.csv", 0, "Deal Stage", "Verbal Yes")
    with pytest.raises(SystemExit) as exit_:
        main(["import", "--mapping", "hubspot", "--src", str(src), "--out", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Verbal Yes" in err and "deal_stage_history.csv" in err and "Traceback" not in err


def test_hubspot_accepts_other_association_headers_and_lists(tmp_path: Path) -> None:
    src = _copy("hubspot", tmp_path)
    path = src / "deals.csv"
    path.write_text(path.read_text().replace("Associated Company ID", "Associated Company IDs", 1))
    _edit(path, 1, "Associated Company IDs", "9002;9001")
    tables, _ = map_tables(load_mapping("hubspot"), src)
    opps = tables["opportunities"].set_index("opportunity_id")
    rows = _rows(path)
    assert opps.loc[rows[1]["Record ID"], "account_id"] == "9002"
    assert opps.loc[rows[0]["Record ID"], "account_id"] == rows[0]["Associated Company IDs"]
