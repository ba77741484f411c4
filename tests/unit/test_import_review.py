"""`leadml import` on a reviewer's own CRM exports: a lead's account never depends on
its outcome; renamed optional columns, defaults filling empty values and expected key
repeats are said in the report; value errors count the whole column and name the column
the values come from (also through a lookup); CSV and --strict errors say where and
what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from leadml.errors import DataError
from leadml.importing.mapping import (
    MappingError,
    import_tables,
    load_mapping,
    map_tables,
    read_text_table,
    run_import,
)

# A small Salesforce Data Export. Lead 00QL1 converted (its Account A1 has firmographics
# in Account.csv; the Lead row's Industry is blank, as in many orgs); 00QL2 and 00QL3 did
# not convert (both at Gamma GmbH); contact 003C9 was entered directly on Account A2.
SF = {
    "Account.csv": (
        "Id,Name,Industry,NumberOfEmployees,BillingCountry,CreatedDate,Type\n"
        "A1,Acme Corp,Finance,5000,US,2024-01-01T00:00:00.000Z,Customer\n"
        "A2,Beta Ltd,Retail,40,UK,2024-01-02T00:00:00.000Z,Prospect\n"
    ),
    "Lead.csv": (
        "Id,Company,Title,LeadSource,Industry,NumberOfEmployees,Country,CreatedDate,Status,"
        "IsConverted,ConvertedDate,ConvertedAccountId,ConvertedContactId,ConvertedOpportunityId\n"
        "00QL1,Acme Corp,CEO,Web,,300,US,2024-02-01T10:00:00.000Z,Closed - Converted,true,"
        "2024-03-01,A1,003C1,O1\n"
        "00QL2,Gamma GmbH,Engineer,Seminar,,300,DE,2024-02-02T10:00:00.000Z,"
        "Open - Not Contacted,false,,,,\n"
        "00QL3,Gamma GmbH,Analyst,Web,,300,DE,2024-02-03T10:00:00.000Z,"
        "Open - Not Contacted,false,,,,\n"
    ),
    "Contact.csv": (
        "Id,AccountId,Title,LeadSource,CreatedDate\n"
        "003C1,A1,CEO,Web,2024-03-01T00:00:00.000Z\n"
        "003C9,A2,Buyer,Web,2024-02-05T00:00:00.000Z\n"
    ),
    "Opportunity.csv": (
        "Id,AccountId,OwnerId,CreatedDate,Amount,StageName,CloseDate\n"
        "O1,A1,U1,2024-03-01T12:00:00.000Z,12000,Prospecting,2024-06-01\n"
        "O2,A2,U1,2024-03-05T12:00:00.000Z,,Prospecting,2024-06-01\n"
    ),
    "OpportunityHistory.csv": (
        "Id,OpportunityId,StageName,Amount,CloseDate,CreatedDate\n"
        "H1,O1,Prospecting,12000,2024-06-01,2024-03-01T12:00:00.000Z\n"
        "H2,O2,Prospecting,,2024-06-01,2024-03-05T12:00:00.000Z\n"
    ),
    "Task.csv": (
        "Id,WhoId,WhatId,OwnerId,Type,TaskSubtype,Status,CreatedDate\n"
        "T1,00QL2,,U1,Call,Task,Completed,2024-02-10T00:00:00.000Z\n"
    ),
    "CampaignMember.csv": (
        "Id,CampaignId,LeadId,ContactId,Status,CreatedDate,LastModifiedDate,FirstRespondedDate\n"
        "M1,K1,00QL1,,Sent,2024-02-02T00:00:00.000Z,2024-02-02T00:00:00.000Z,\n"
        "M2,K1,00QL2,,Sent,2024-02-03T00:00:00.000Z,2024-02-03T00:00:00.000Z,\n"
        "M3,K1,00QL3,,Sent,2024-02-04T00:00:00.000Z,2024-02-04T00:00:00.000Z,\n"
        "M4,K1,00QL2,,Responded,2024-02-05T00:00:00.000Z,2024-02-05T00:00:00.000Z,2024-02-05\n"
    ),
    "User.csv": "Id,Name,Department\nU1,Chloe Kim,Field Sales\n",
}

# A small HubSpot UI export: contact 101 (associated with company 9001, which has
# firmographics in companies.csv) became an SQL and has a deal; 102 has no association.
HS = {
    "companies.csv": (
        "Record ID,Company name,Industry,Number of Employees,Country/Region,Create Date\n"
        "9001,Kappa Inc,Finance,5000,US,2024-01-01 09:00\n"
    ),
    "contacts.csv": (
        "Record ID,Company Name,Associated Company ID,Job Title,Industry,Number of Employees,"
        "Create Date,Became a Marketing Qualified Lead Date,Became a Sales Qualified Lead Date,"
        "First Conversion Date,Recent Conversion Date,Time of First Session,"
        "Time of Last Session,Time Last Seen\n"
        "101,Kappa Inc,9001,CFO,,,2024-01-05 09:00,,2024-02-01 10:00,,,,,\n"
        "102,Lambda KK,,Engineer,,,2024-01-06 09:00,,,,,,,\n"
    ),
    "deals.csv": (
        "Record ID,Deal Name,Deal Stage,Amount,Close Date,Create Date,Deal owner,"
        "Associated Company ID,Associated Contact ID\n"
        "501,Deal 1,appointmentscheduled,1000,2024-05-01 00:00,2024-02-01 10:00,Dan,9001,101\n"
    ),
}


def _export(tmp_path: Path, files: dict[str, str], name: str = "src", **edits: str) -> Path:
    src = tmp_path / name
    src.mkdir()
    for file, text in {**files, **edits}.items():
        (src / file).write_text(text, encoding="utf-8")
    return src


# ------------------------------------------------------------------ 1. outcome-free accounts


def test_salesforce_converted_and_unconverted_leads_get_accounts_built_the_same_way(
    tmp_path: Path,
) -> None:
    tables, report = import_tables(load_mapping("salesforce"), _export(tmp_path, SF))
    assert not [d for d in report.dropped if d.file == "contract check"], report.dropped
    leads = tables["leads"].set_index("lead_id")
    accounts = tables["accounts"].set_index("account_id")
    # The converted lead links to its company like the others, not to ConvertedAccountId.
    assert leads.loc["00QL1", "account_id"] == "company:acme corp"
    assert (
        leads.loc["00QL2", "account_id"] == leads.loc["00QL3", "account_id"] == "company:gamma gmbh"
    )
    # Its account's attributes come from its own Lead row (Industry blank), exactly as for
    # an unconverted lead: never from Account.csv, which only converted leads could reach.
    for lead in ("00QL1", "00QL2"):
        acct = accounts.loc[leads.loc[lead, "account_id"]]
        assert pd.isna(acct["industry"]) and acct["employees"] == 300
        assert acct["segment"] == "mid_market"
    # Deals keep their real Account (and its firmographics) and their lead.
    opps = tables["opportunities"].set_index("opportunity_id")
    assert opps.loc["O1", "account_id"] == "A1" and opps.loc["O1", "lead_id"] == "00QL1"
    assert accounts.loc["A1", "industry"] == "Finance"
    # A contact entered on an Account links to that company by name, without Account
    # firmographics (a Contact row has none).
    assert leads.loc["003C9", "account_id"] == "company:beta ltd"
    assert pd.isna(accounts.loc["company:beta ltd", "industry"])
    assert "003C1" not in leads.index  # converted from 00QL1: not a second person


def test_a_lead_without_a_company_keeps_its_account_and_its_deal(tmp_path: Path) -> None:
    """Review: with the account from the Company name alone, a converted lead with a blank
    Company (Person Account orgs) was refused, and its opportunity and history with it."""
    lead = SF["Lead.csv"].replace("00QL1,Acme Corp,", "00QL1,,", 1)
    tables, report = import_tables(
        load_mapping("salesforce"), _export(tmp_path, SF, **{"Lead.csv": lead})
    )
    assert not [d for d in report.dropped if d.file == "contract check"], report.dropped
    leads = tables["leads"].set_index("lead_id")
    assert leads.loc["00QL1", "account_id"] == "lead:00QL1"
    assert "lead:00QL1" in set(tables["accounts"]["account_id"])
    assert "O1" in set(tables["opportunities"]["opportunity_id"])
    assert "O1" in set(tables["opportunity_history"]["opportunity_id"])


def test_hubspot_contact_employee_ranges_give_a_segment(tmp_path: Path) -> None:
    """Review: HubSpot's contact 'Number of Employees' is a dropdown of ranges (1000+,
    25-50); read as a number it stopped the whole import."""
    contacts = HS["contacts.csv"].replace(
        "101,Kappa Inc,9001,CFO,,,", "101,Kappa Inc,9001,CFO,,1000+,"
    )
    contacts = contacts.replace("102,Lambda KK,,Engineer,,,", "102,Lambda KK,,Engineer,,25-50,")
    contacts += '103,Mu AG,,Buyer,,"1,200",2024-01-07 09:00,,,,,,,\n'
    contacts += "104,Nu SA,,Buyer,,100-500,2024-01-08 09:00,,,,,,,\n"
    tables, report = import_tables(
        load_mapping("hubspot"), _export(tmp_path, HS, **{"contacts.csv": contacts})
    )
    assert not [d for d in report.dropped if d.file == "contract check"], report.dropped
    accounts = tables["accounts"].set_index("account_id")
    segments = {
        k: accounts.loc[k, "segment"]
        for k in ("company:kappa inc", "company:lambda kk", "company:mu ag", "company:nu sa")
    }
    assert segments == {
        "company:kappa inc": "enterprise",
        "company:lambda kk": "smb",
        "company:mu ag": "enterprise",
        "company:nu sa": "mid_market",
    }


def test_hubspot_contacts_get_accounts_from_their_own_row_whatever_their_association(
    tmp_path: Path,
) -> None:
    tables, report = import_tables(load_mapping("hubspot"), _export(tmp_path, HS))
    assert not [d for d in report.dropped if d.file == "contract check"], report.dropped
    leads = tables["leads"].set_index("lead_id")
    accounts = tables["accounts"].set_index("account_id")
    assert leads.loc["101", "account_id"] == "company:kappa inc"  # associated (and SQL)
    assert leads.loc["102", "account_id"] == "company:lambda kk"  # not associated
    for lead in ("101", "102"):
        assert pd.isna(accounts.loc[leads.loc[lead, "account_id"], "industry"])
    opps = tables["opportunities"].set_index("opportunity_id")
    assert opps.loc["501", "account_id"] == "9001" and opps.loc["501", "lead_id"] == "101"
    assert accounts.loc["9001", "industry"] == "Finance"


# ------------------------------------------------------------------ 2. renamed optional column


def test_renamed_optional_column_is_noted_with_the_closest_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadml.cli import main

    lead = SF["Lead.csv"].replace(",LeadSource,", ",Lead_Source__c,", 1)
    src = _export(tmp_path, SF, **{"Lead.csv": lead})
    monkeypatch.setenv("COLUMNS", "2000")
    out = tmp_path / "out"
    main(["import", "--mapping", "salesforce", "--src", str(src), "--out", str(out)])
    printed = capsys.readouterr().out
    notes = json.loads((out / "import_report.json").read_text())["notes"]
    note = next(n for n in notes if "'LeadSource'" in n)
    assert f"{src / 'Lead.csv'}: optional column(s) not in the file" in note
    assert "leads.source is empty on every row" in note
    assert "closest in the file: Lead_Source__c" in note
    assert "The file has: Id, Company, Title, Lead_Source__c" in note
    assert "tables.leads[0].columns.source" in note
    assert "Lead_Source__c" in printed and "'LeadSource'" in printed
    leads = pd.read_parquet(out / "leads.parquet").set_index("lead_id")
    assert leads.loc[["00QL1", "00QL2", "00QL3"], "source"].isna().all()


# ------------------------------------------------------------------ 3. defaults are noted


def test_rows_filled_by_a_default_are_counted_in_a_note(tmp_path: Path) -> None:
    _, report = import_tables(load_mapping("salesforce"), _export(tmp_path, SF))
    notes = [n for n in report.notes if "got the default" in n]
    opp = next(n for n in notes if "Opportunity.csv" in n)
    assert "1 row(s) (line 3) with an empty 'Amount' got the default 0" in opp
    assert "opportunities.amount" in opp
    hist = next(n for n in notes if "OpportunityHistory.csv" in n)
    assert "1 row(s) (line 3) with an empty 'Amount'" in hist


# ------------------------------------------------------------------ 4./5. value errors

CRM = {
    "companies.csv": "CompanyId,Created\nC1,2024-01-01\n",
    "people.csv": (
        "PersonId,CompanyId,CompanyName,Created\n"
        "P1,C1,Acme,01/02/2024\n"
        "P2,,Globex,2024-01-03\n"
        "P3,,Initech,01/04/2024\n"
        "P4,C1,Acme,01/05/2024\n"
    ),
    "deals.csv": ('DealId,CompanyId,Owner,Created,Amount\nD1,C1,R1,2024-02-01,"$1,200.00"\n'),
    "history.csv": "DealId,Stage,Changed\nD1,Discovery,2024-02-01\nD1,Proposal,2024-02-05\n",
    "reps.csv": "RepId\nR1\n",
}


def _crm_mapping(tmp_path: Path) -> Path:
    data: dict[str, Any] = {
        "name": "my_crm",
        "tables": {
            "accounts": [
                {
                    "file": "companies.csv",
                    "columns": {
                        "account_id": "CompanyId",
                        "segment": {"value": "smb"},
                        "created_at": "Created",
                    },
                },
                {
                    "file": "people.csv",
                    "where": [{"column": "CompanyId", "empty": True, "report": False}],
                    "columns": {
                        "account_id": {"source": "CompanyName", "prefix": "company:"},
                        "segment": {"value": "smb"},
                        "created_at": "Created",
                    },
                },
            ],
            "leads": [
                {
                    "file": "people.csv",
                    "columns": {
                        "lead_id": "PersonId",
                        "account_id": "CompanyId",
                        "created_at": "Created",
                    },
                }
            ],
            "opportunities": [
                {
                    "file": "deals.csv",
                    "columns": {
                        "opportunity_id": "DealId",
                        "account_id": "CompanyId",
                        "owner_id": "Owner",
                        "created_at": "Created",
                        "amount": {"source": "Amount", "number_format": "us"},
                        "segment": {"value": "smb"},
                    },
                }
            ],
            "opportunity_history": [
                {
                    "file": "history.csv",
                    "columns": {
                        "opportunity_id": "DealId",
                        "ts": "Changed",
                        "stage": {
                            "source": "Stage",
                            "map": {"Discovery": "follow_up", "Proposal": "negotiation"},
                        },
                        "amount": {
                            "source": "DealId",
                            "lookup": {"file": "deals.csv", "match": "DealId", "take": "Amount"},
                        },
                        "expected_close_date": "Changed",
                    },
                }
            ],
            "reps": [{"file": "reps.csv", "columns": {"rep_id": "RepId", "role": {"value": "FS"}}}],
        },
    }
    path = tmp_path / "my_crm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_timestamp_error_counts_the_whole_column_and_names_every_use(tmp_path: Path) -> None:
    src = _export(tmp_path, CRM)
    with pytest.raises(MappingError) as err:
        map_tables(load_mapping(_crm_mapping(tmp_path)), src)
    msg = str(err.value)
    # The accounts source reads only P2 and P3 (no CompanyId), one of them bad; the user
    # is told about all three bad values of the column at once, with their lines.
    assert msg.startswith(
        f"{src / 'people.csv'}, column 'Created' (read for accounts.created_at, "
        "leads.created_at): 3 value(s) (lines 2, 4, 5) are not timestamps"
    )
    assert "(1 of them in the rows mapped to accounts)" in msg
    assert "'01/02/2024', '01/04/2024', '01/05/2024'" in msg
    assert "tables.accounts[1].columns.created_at, tables.leads[0].columns.created_at" in msg


def test_number_error_in_a_lookup_names_the_looked_up_column(tmp_path: Path) -> None:
    people = CRM["people.csv"].replace("01/02/2024", "2024-01-02")
    people = people.replace("01/04/2024", "2024-01-04").replace("01/05/2024", "2024-01-05")
    src = _export(tmp_path, CRM, **{"people.csv": people})
    with pytest.raises(MappingError) as err:
        map_tables(load_mapping(_crm_mapping(tmp_path)), src)
    msg = str(err.value)
    assert msg.startswith(
        f"{src / 'deals.csv'}, column 'Amount' (looked up by history.csv column 'DealId' in "
        "'DealId' for opportunity_history.amount): 1 value(s) (line 2) are not numbers"
    )
    assert "set `number_format: us` on tables.opportunity_history[0].columns.amount" in msg
    assert "'$1,200.00'" in msg and "Record ID" not in msg


# ------------------------------------------------------------------ 6. polish


def test_unbalanced_quote_names_the_file_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "Lead.csv"
    # record 2 spans lines 3-4 (a quoted line break); the unclosed quote is on line 6
    path.write_text('Id,Title\nL1,CEO\nL2,"Head\nof IT"\nL3,VP\nL4,"Director\nL5,CTO\n')
    with pytest.raises(MappingError) as err:
        read_text_table(path)
    msg = str(err.value)
    assert str(path) in msg and "line 6" in msg and "never closed" in msg
    assert "close the quote" in msg and "C error" not in msg
    # record 2 spans lines 2-3: the bad row is on line 4
    path.write_text('Id,Title\nL1,"Head\nof IT"\nL2,VP,extra\n')
    with pytest.raises(MappingError, match=r"line 4 has 3 fields separated by ','.*have 2"):
        read_text_table(path)


def test_strict_failure_says_what_failed_and_to_drop_strict(tmp_path: Path) -> None:
    task = SF["Task.csv"] + "T2,00QL404,,U1,Call,Task,Completed,2024-02-11T00:00:00.000Z\n"
    src = _export(tmp_path, SF, **{"Task.csv": task})
    with pytest.raises(DataError) as err:
        import_tables(load_mapping("salesforce"), src, strict=True)
    msg = str(err.value)
    assert msg.startswith(f"--strict: 1 row(s) imported from {src} with preset salesforce")
    assert "activities.lead_id" in msg and "without --strict" in msg
    assert "--quarantine" not in msg and "input tables in" not in msg


def test_expected_key_repeats_are_not_rows_left_out_and_examples_are_distinct(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    _, report = run_import(load_mapping("salesforce"), _export(tmp_path, SF), out)
    # L2 and L3 make one account: said in a note, not listed as data left out
    assert not [d for d in report.dropped if d.table == "accounts"], report.dropped
    note = next(n for n in report.notes if n.startswith("accounts: 1 row(s) of Lead.csv"))
    assert "company:gamma gmbh" in note and "not data left out" in note
    sent = next(d for d in report.dropped if d.table == "events")
    assert sent.count == 3 and sent.examples == ["Sent"]


def test_lines_are_file_lines_after_a_field_with_line_breaks(tmp_path: Path) -> None:
    """Code review: value errors named record index + 2 as the line; a Salesforce
    Description spanning three lines put every later row off by two."""
    lead = SF["Lead.csv"].replace(",CreatedDate,", ",Description,CreatedDate,", 1)
    lead = lead.replace(",US,2024-02-01T10", ',US,"first line\nsecond\nthird",2024-02-01T10', 1)
    lead = lead.replace(",DE,2024-02-02T10:00:00.000Z,", ",DE,,2024-02-0X,", 1)
    lead = lead.replace(",DE,2024-02-03T10", ",DE,,2024-02-03T10", 1)
    with pytest.raises(MappingError) as err:
        import_tables(load_mapping("salesforce"), _export(tmp_path, SF, **{"Lead.csv": lead}))
    assert "1 value(s) (line 5) are not timestamps" in str(err.value)  # not line 3


def test_company_names_are_one_account_whatever_their_case_and_spacing(tmp_path: Path) -> None:
    """Code review: with every lead keyed by its company name, "GAMMA  GmbH" and
    "Gamma GmbH" were two accounts (and two sets of colleagues)."""
    lead = SF["Lead.csv"].replace("00QL3,Gamma GmbH,", "00QL3,  GAMMA\u3000 GmbH ,", 1)
    tables, _ = import_tables(
        load_mapping("salesforce"), _export(tmp_path, SF, **{"Lead.csv": lead})
    )
    leads = tables["leads"].set_index("lead_id")
    assert (
        leads.loc["00QL2", "account_id"] == leads.loc["00QL3", "account_id"] == "company:gamma gmbh"
    )
    assert list(tables["accounts"]["account_id"]).count("company:gamma gmbh") == 1
