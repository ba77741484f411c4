"""`leadml import` on a user's own, imperfect export: every mistake ends in a message
naming the file (or mapping entry), the reason and the fix, with exit code 2 and no
traceback; amounts, dates and encodings that spreadsheets produce can be read by
telling the mapping how."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from leadml.config import Vocabulary
from leadml.contracts import TABLES
from leadml.errors import ConfigError
from leadml.importing.mapping import (
    MappingError,
    check_vocabulary,
    import_tables,
    load_mapping,
    map_tables,
    parse_numbers,
    read_text_table,
)
from leadml.importing.tabular import read_lead_table

FILES = {
    "companies.csv": (
        "CompanyId,Name,Employees,Created\nC1,Acme,150,2024-01-01\nC2,Initech,2500,2024-02-01\n"
    ),
    "people.csv": (
        "PersonId;CompanyId;CompanyName;Created;Channel;Title\n"
        "P1;C1;Acme;05.03.2025 10:00;Web;Director of Sales\n"
        "P2;;Globex;06.03.2025 11:30;Event;Engineer\n"
        "P3;C2;Initech;07.03.2025 09:15;Web;VP Marketing\n"
    ),
    "deals.csv": (
        "DealId,CompanyId,PersonId,Owner,Created,Amount,Stage,CloseDate,Changed\n"
        "D1,C1,P1,R1,2025-03-10,12000,Discovery,2025-05-01,2025-03-10\n"
        "D2,C2,P3,R1,2025-03-12,40000,Proposal,2025-06-01,2025-03-12\n"
    ),
    "reps.csv": "RepId,Role,Team\nR1,Field,east\nR2,Inside,east\n",
}

MAPPING: dict[str, Any] = {
    "name": "my_crm",
    "timezone": "Europe/Berlin",
    "tables": {
        "accounts": [
            {
                "file": "companies.csv",
                "columns": {
                    "account_id": "CompanyId",
                    "segment": {
                        "source": "Employees",
                        "bins": [
                            {"lower": 0, "label": "smb"},
                            {"lower": 1000, "label": "enterprise"},
                        ],
                    },
                    "created_at": "Created",
                },
            },
            {
                "file": "people.csv",
                "where": [{"column": "CompanyId", "empty": True, "report": False}],
                "columns": {
                    "account_id": {"source": "CompanyName", "prefix": "company:"},
                    "segment": {"value": "smb"},
                    "created_at": {"source": "Created", "format": "%d.%m.%Y %H:%M"},
                },
            },
        ],
        "leads": [
            {
                "file": "people.csv",
                "columns": {
                    "lead_id": "PersonId",
                    "account_id": {
                        "coalesce": [
                            {"source": "CompanyId"},
                            {"source": "CompanyName", "prefix": "company:"},
                        ]
                    },
                    "created_at": {"source": "Created", "format": "%d.%m.%Y %H:%M"},
                    "job_level": {
                        "source": "Title",
                        "classify": [[r"\bdirector\b", "director"], [".", "individual"]],
                    },
                },
            }
        ],
        "opportunities": [
            {
                "file": "deals.csv",
                "columns": {
                    "opportunity_id": "DealId",
                    "account_id": "CompanyId",
                    "lead_id": "PersonId",
                    "owner_id": "Owner",
                    "created_at": "Created",
                    "amount": "Amount",
                    "segment": {"value": "smb"},
                },
            }
        ],
        "opportunity_history": [
            {
                "file": "deals.csv",
                "columns": {
                    "opportunity_id": "DealId",
                    "ts": "Changed",
                    "stage": {
                        "source": "Stage",
                        "map": {"Discovery": "follow_up", "Proposal": "negotiation"},
                    },
                    "amount": "Amount",
                    "expected_close_date": "CloseDate",
                },
            }
        ],
        "reps": [
            {
                "file": "reps.csv",
                "columns": {
                    "rep_id": "RepId",
                    "role": {"source": "Role", "map": {"Field": "FS", "Inside": "IS"}},
                    "team": "Team",
                },
            }
        ],
    },
}


def _crm(tmp_path: Path, **files: str | bytes) -> Path:
    """The export folder: ``FILES`` with ``files`` replacing (or adding) some."""
    src = tmp_path / "crm"
    src.mkdir()
    for name, text in {**FILES, **files}.items():
        path = src / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return src


def _mapping(tmp_path: Path, edit: Any = None, name: str = "my_crm.yaml") -> Path:
    data = copy.deepcopy(MAPPING)
    if edit is not None:
        edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _cols(data: dict[str, Any], table: str, i: int = 0) -> dict[str, Any]:
    return data["tables"][table][i]["columns"]  # type: ignore[no-any-return]


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from leadml.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


def test_the_clean_export_imports(tmp_path: Path) -> None:
    tables, report = import_tables(load_mapping(_mapping(tmp_path)), _crm(tmp_path))
    assert report.rows["leads"] == 3 and report.rows["opportunity_history"] == 2
    assert set(tables["opportunity_history"]["stage"]) == {"follow_up", "negotiation"}


# ------------------------------------------------------------------ B1 empty files


def test_empty_file_is_a_clean_error_for_import_and_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    src = _crm(tmp_path, **{"deals.csv": ""})
    with pytest.raises(MappingError, match=r"deals\.csv: the file is empty \(no header row\)"):
        import_tables(load_mapping(_mapping(tmp_path)), src)
    empty = tmp_path / "leads.csv"
    empty.write_text("")
    with pytest.raises(MappingError, match="the file is empty"):
        read_lead_table(empty)
    out = tmp_path / "out"
    code, err = _cli(
        ["import", "--mapping", str(_mapping(tmp_path)), "--src", str(src), "--out", str(out)],
        capsys,
    )
    assert code == 2 and "the file is empty" in err and "Traceback" not in err
    assert not out.exists()
    code, err = _cli(["check-table", "--table", str(empty), "--target", "y"], capsys)
    assert code == 2 and f"{empty}: the file is empty" in err and "EmptyDataError" not in err


# ------------------------------------------------------------------ B3 regular expressions


def test_invalid_regex_is_named_when_the_mapping_is_loaded(tmp_path: Path) -> None:
    def bad_classify(data: dict[str, Any]) -> None:
        _cols(data, "leads")["job_level"]["classify"][0][0] = "(unclosed"

    path = _mapping(tmp_path, bad_classify)
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: invalid mapping: tables.leads[0].columns.job_level.classify:")
    assert "'(unclosed' is not a valid regular expression (missing )" in msg
    assert "function-after" not in msg and "\n" not in msg

    def bad_pattern(data: dict[str, Any]) -> None:
        _cols(data, "leads")["lead_id"] = {"source": "PersonId", "pattern": "P[0-9"}

    with pytest.raises(ConfigError, match=r"columns\.lead_id\.pattern: 'P\[0-9' is not a valid"):
        load_mapping(_mapping(tmp_path, bad_pattern))


# ------------------------------------------------------------------ B4 vocabulary of map targets


def test_map_target_outside_the_vocabulary_stops_the_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def typo(data: dict[str, Any]) -> None:
        _cols(data, "opportunity_history")["stage"]["map"]["Proposal"] = "negotation"

    path = _mapping(tmp_path, typo)
    src = _crm(tmp_path)
    with pytest.raises(ConfigError) as err:
        import_tables(load_mapping(path), src)
    msg = str(err.value)
    assert msg.startswith(
        f"{path}: tables.opportunity_history[0].columns.stage.map.Proposal: 'negotation' is not "
        "an allowed opportunity_history.stage value (allowed: follow_up, "
    )
    assert "did you mean 'negotiation'?" in msg and "the mapping is wrong, not the data" in msg

    def role(data: dict[str, Any]) -> None:
        _cols(data, "reps")["role"]["map"]["Inside"] = "SDR"
        _cols(data, "accounts", 1)["segment"]["value"] = "SMB"

    monkeypatch.setenv("COLUMNS", "1000")
    out = tmp_path / "out"
    code, err_text = _cli(
        [
            "import",
            "--mapping",
            str(_mapping(tmp_path, role)),
            "--src",
            str(src),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 2 and not out.exists() and "Traceback" not in err_text
    assert "tables.reps[0].columns.role.map.Inside: 'SDR'" in err_text
    assert "tables.accounts[1].columns.segment.value: 'SMB'" in err_text
    assert "allowed: IS, FS, CS" in err_text and "vocabulary.rep_roles" in err_text


def test_presets_write_only_vocabulary_values() -> None:
    for preset in ("salesforce", "hubspot"):
        check_vocabulary(load_mapping(preset), Vocabulary())
    narrow = Vocabulary(rep_roles=["IS", "FS"])
    with pytest.raises(
        ConfigError,
        match=r"preset salesforce: tables\.reps\[0\]\.columns\.role"
        r"\.map\['Customer Success'\]: 'CS'",
    ):
        check_vocabulary(load_mapping("salesforce"), narrow)


# ------------------------------------------------------------------ C1 encodings


def test_file_not_in_utf8_names_the_byte_and_the_fix(tmp_path: Path) -> None:
    latin1 = FILES["companies.csv"].replace("Acme", "Société").encode("latin-1")
    src = _crm(tmp_path, **{"companies.csv": latin1})
    with pytest.raises(MappingError) as err:
        import_tables(load_mapping(_mapping(tmp_path)), src)
    msg = str(err.value)
    assert f"{src / 'companies.csv'}: is not UTF-8 (byte 0xe9 on line 2" in msg
    assert "'é' in latin-1" in msg
    assert "re-save it as UTF-8, or set `encoding: latin-1`" in msg

    def latin(data: dict[str, Any]) -> None:
        data["tables"]["accounts"][0]["encoding"] = "latin-1"

    tables, _ = map_tables(load_mapping(_mapping(tmp_path, latin)), src)
    assert len(tables["accounts"]) == 3
    with pytest.raises(MappingError, match="re-save it as UTF-8") as err:
        read_text_table(src / "companies.csv")


# ------------------------------------------------------------------ C2 formatted numbers


def test_number_formats() -> None:
    us = pd.Series(["$120,000.00", "120,000", "1,234.5", "USD 99", "-3.5", None])
    assert parse_numbers(us, "us").tolist()[:5] == [120000.0, 120000.0, 1234.5, 99.0, -3.5]
    eu = pd.Series(["€ 1.200,50", "120000,00", "1 200", "1.234.567", "7"])
    assert parse_numbers(eu, "eu").tolist() == [1200.5, 120000.0, 1200.0, 1234567.0, 7.0]
    assert parse_numbers(pd.Series(["1,200"]), "plain").isna().all()


@pytest.mark.parametrize(
    ("amounts", "fmt"), [(("$12,000.00", "$40,000.00"), "us"), (("12000,00", "40000,50"), "eu")]
)
def test_formatted_amounts_suggest_number_format_which_reads_them(
    tmp_path: Path, amounts: tuple[str, str], fmt: str
) -> None:
    deals = (
        FILES["deals.csv"]
        .replace(",12000,", f',"{amounts[0]}",')
        .replace(",40000,", f',"{amounts[1]}",')
    )
    src = _crm(tmp_path, **{"deals.csv": deals})
    with pytest.raises(MappingError) as err:
        map_tables(load_mapping(_mapping(tmp_path)), src)
    msg = str(err.value)
    # every use of the column is named, with the lines of its bad values
    assert (
        "deals.csv, column 'Amount' (read for opportunities.amount, "
        "opportunity_history.amount): 2 value(s) (lines 2, 3) are not numbers" in msg
    )
    assert (
        f"set `number_format: {fmt}` on tables.opportunities[0].columns.amount, "
        "tables.opportunity_history[0].columns.amount" in msg
    )
    assert repr(amounts[0]) in msg

    def fix(data: dict[str, Any]) -> None:
        for table in ("opportunities", "opportunity_history"):
            _cols(data, table)["amount"] = {"source": "Amount", "number_format": fmt}

    tables, _ = map_tables(load_mapping(_mapping(tmp_path, fix)), src)
    assert tables["opportunities"]["amount"].tolist() == [
        12000.0,
        40000.0 if fmt == "us" else 40000.5,
    ]


def test_a_preset_error_says_to_copy_the_preset(tmp_path: Path) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "salesforce"
    src = tmp_path / "sf"
    src.mkdir()
    for f in fixtures.iterdir():
        text = f.read_text()
        if f.name == "Opportunity.csv":
            rows = text.splitlines()
            col = rows[0].split(",").index("Amount")
            cells = rows[1].split(",")
            cells[col] = '"$1,000.00"'
            text = "\n".join([rows[0], ",".join(cells), *rows[2:]]) + "\n"
        (src / f.name).write_text(text)
    with pytest.raises(
        MappingError,
        match=r"number_format: us` on tables\.opportunities\[0\]\.columns\.amount in a copy of the "
        r"salesforce preset \(.*salesforce\.yaml; pass the copy as --mapping\)",
    ):
        map_tables(load_mapping("salesforce"), src)


# ------------------------------------------------------------------ C3 Excel serial dates


def test_excel_serial_dates_are_recognised_and_read_with_format_excel(tmp_path: Path) -> None:
    deals = (
        FILES["deals.csv"]
        .replace("2025-03-10,12000", "45726.5,12000")
        .replace("2025-03-12,40000", "45728.25,40000")
    )
    src = _crm(tmp_path, **{"deals.csv": deals})
    with pytest.raises(MappingError) as err:
        map_tables(load_mapping(_mapping(tmp_path)), src)
    msg = str(err.value)
    assert "column 'Created' (read for opportunities.created_at): 2 value(s) (lines 2, 3)" in msg
    assert "these look like Excel serial dates" in msg and "`format: excel`" in msg

    def excel(data: dict[str, Any]) -> None:
        _cols(data, "opportunities")["created_at"] = {"source": "Created", "format": "excel"}

    tables, _ = map_tables(load_mapping(_mapping(tmp_path, excel)), src)
    # 45726.5 = 2025-03-10 12:00 local time in Europe/Berlin (UTC+1 in March)
    assert tables["opportunities"]["created_at"].tolist() == [
        pd.Timestamp("2025-03-10 11:00", tz="UTC"),
        pd.Timestamp("2025-03-12 05:00", tz="UTC"),
    ]
    # an ordinary bad date still gets the strptime advice
    bad = FILES["deals.csv"].replace("2025-03-10,12000", "03/10/2025,12000")
    (tmp_path / "b").mkdir()
    src2 = _crm(tmp_path / "b", **{"deals.csv": bad})
    with pytest.raises(MappingError, match="strptime codes") as err:
        map_tables(load_mapping(_mapping(tmp_path)), src2)
    assert "Excel" not in str(err.value)


# ------------------------------------------------------------------ C4 misspelt keys


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: _cols(d, "leads")["created_at"].update(
                {"formt": _cols(d, "leads")["created_at"].pop("format")}
            ),
            "tables.leads[0].columns.created_at: unknown key 'formt' (did you mean 'format'?)",
        ),
        (
            lambda d: _cols(d, "accounts").update({"account_id": {"sorce": "CompanyId"}}),
            "tables.accounts[0].columns.account_id: unknown key 'sorce' (did you mean 'source'?)",
        ),
        (
            lambda d: d["tables"]["reps"][0].update(
                {"colums": d["tables"]["reps"][0].pop("columns")}
            ),
            "tables.reps[0]: unknown key 'colums' (did you mean 'columns'?)",
        ),
        (
            lambda d: _cols(d, "leads")["account_id"]["coalesce"][1].update({"prefx": "c:"}),
            "tables.leads[0].columns.account_id.coalesce[1]: unknown key 'prefx' "
            "(did you mean 'prefix'?)",
        ),
        (
            lambda d: d["tables"]["accounts"][1]["where"][0].update(
                {"colum": d["tables"]["accounts"][1]["where"][0].pop("column")}
            ),
            "tables.accounts[1].where[0]: unknown key 'colum' (did you mean 'column'?)",
        ),
        (
            lambda d: _cols(d, "leads").update({"lead_id": ["PersonId"]}),
            "tables.leads[0].columns.lead_id: expected a column name or a mapping of column "
            "options, got a list",
        ),
    ],
)
def test_misspelt_keys_give_one_plain_line_each(tmp_path: Path, edit: Any, expected: str) -> None:
    path = _mapping(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    assert str(err.value) == f"{path}: invalid mapping: {expected}"


def test_several_mapping_problems_are_listed_one_a_line(tmp_path: Path) -> None:
    def edits(d: dict[str, Any]) -> None:
        for table in ("leads", "opportunities"):
            src = d["tables"][table][0]
            src["colums"] = src.pop("columns")
        _cols(d, "reps")["role"]["type"] = "text"

    path = _mapping(tmp_path, edits)
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    assert str(err.value).splitlines() == [
        f"{path}: invalid mapping (3 problems):",
        "  tables.leads[0]: unknown key 'colums' (did you mean 'columns'?)",
        "  tables.opportunities[0]: unknown key 'colums' (did you mean 'columns'?)",
        "  tables.reps[0].columns.role.type: Input should be 'str', 'id', 'float', 'int', "
        "'bool' or 'timestamp' (got 'text')",
    ]


# ------------------------------------------------------------------ C6 header-only files


def test_header_only_file_is_noted_or_an_error_for_a_required_table(tmp_path: Path) -> None:
    header = FILES["deals.csv"].splitlines()[0] + "\n"
    _, report = import_tables(
        load_mapping(_mapping(tmp_path)), _crm(tmp_path, **{"deals.csv": header})
    )
    note = "deals.csv has a header but no rows: nothing from it in opportunities, "
    assert note + "opportunity_history" in report.notes
    assert report.rows["opportunities"] == 0

    def people_only(data: dict[str, Any]) -> None:
        del data["tables"]["accounts"][0]  # accounts then come from people.csv alone

    (tmp_path / "x").mkdir()
    src = _crm(tmp_path / "x", **{"people.csv": FILES["people.csv"].splitlines()[0] + "\n"})
    with pytest.raises(
        MappingError,
        match=r"people\.csv: the file has a header but no rows, and "
        r"accounts \(a required table\) gets no rows",
    ):
        map_tables(load_mapping(_mapping(tmp_path, people_only)), src)


# ------------------------------------------------------------------ C7 dropped rows


def test_dropped_rows_are_named_by_line_or_key_and_reasons_read_well(tmp_path: Path) -> None:
    people = FILES["people.csv"] + ";C1;Acme;08.03.2025 14:00;Web;\n"  # line 5: no PersonId
    deals = FILES["deals.csv"] + "D3,C1,P1,R1,2025-03-15,100,Discovery,2025-05-01,2025-03-15\n"
    src = _crm(tmp_path, **{"people.csv": people, "deals.csv": deals})

    def orphan(data: dict[str, Any]) -> None:
        # history rows of a deal that is not in the opportunities table
        data["tables"]["opportunities"][0]["where"] = [
            {"column": "DealId", "not_in": ["D3"], "reason": "test deal"}
        ]

    _, report = import_tables(load_mapping(_mapping(tmp_path, orphan)), src)
    by_reason = {(d.table, d.reason): d for d in report.dropped}
    assert by_reason[("leads", "no lead_id")].examples == ["line 5"]
    assert by_reason[("opportunities", "test deal")].examples == ["D3"]
    refs = [d for d in report.dropped if d.table == "opportunity_history"]
    assert len(refs) == 1 and refs[0].examples == ["D3"]
    assert (
        "refers to an unknown opportunity (no such opportunities.opportunity_id" in refs[0].reason
    )
    assert "opportunitie " not in refs[0].reason


def test_contract_examples_show_the_key_when_the_failing_value_is_missing() -> None:
    from leadml.importing.mapping import _example

    row = pd.Series({"lead_id": "L7", "account_id": None, "created_at": "2025-01-01"})
    assert _example(TABLES["leads"], row, "account_id") == "lead_id=L7"
    hist = pd.Series({"lead_id": None, "ts": "2025-06-27", "status": "lead"})
    assert _example(TABLES["lead_status_history"], hist, "lead_id") == "ts=2025-06-27"
    assert _example(TABLES["leads"], row, "lead_id") == "L7"


def test_unknown_encoding_name_is_a_mapping_error(tmp_path: Path) -> None:
    def bad(data: dict[str, Any]) -> None:
        data["tables"]["reps"][0]["encoding"] = "latin-9x"

    path = _mapping(tmp_path, bad)
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    assert str(err.value) == (
        f"{path}: invalid mapping: tables.reps[0].encoding: unknown encoding 'latin-9x'; use a "
        "codec name such as utf-8, latin-1 or cp1252"
    )
