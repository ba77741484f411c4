"""`leadml validate` and `leadml funnel` from the command line: bad input exits non-zero
with a message naming the table, column, reason, count and example rows, never a
traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from leadml.cli import main


def tiny_company() -> dict[str, pd.DataFrame]:
    """Two leads, one deal won in January 2024, as a CSV export would have them."""
    return {
        "accounts": pd.DataFrame(
            {
                "account_id": ["a1", "a2"],
                "segment": ["smb", "enterprise"],
                "created_at": ["2024-01-01", "2024-01-01"],
            }
        ),
        "leads": pd.DataFrame(
            {
                "lead_id": ["l1", "l2"],
                "account_id": ["a1", "a2"],
                "created_at": ["2024-01-02", "2024-01-03"],
            }
        ),
        "events": pd.DataFrame(
            {"lead_id": ["l1", "l2"], "ts": ["2024-01-04", "2024-01-05"], "type": ["web_visit"] * 2}
        ),
        "lead_status_history": pd.DataFrame(
            {
                "lead_id": ["l1", "l1", "l1", "l1", "l2", "l2"],
                "ts": [
                    "2024-01-02",
                    "2024-01-03",
                    "2024-01-10",
                    "2024-01-12",
                    "2024-01-03",
                    "2024-01-04",
                ],
                "status": ["lead", "nurturing", "mql", "sql", "lead", "nurturing"],
            }
        ),
        "reps": pd.DataFrame({"rep_id": ["r1"], "role": ["FS"], "team": ["fs_east"]}),
        "opportunities": pd.DataFrame(
            {
                "opportunity_id": ["o1"],
                "account_id": ["a1"],
                "lead_id": ["l1"],
                "owner_id": ["r1"],
                "created_at": ["2024-01-12"],
                "amount": ["1000"],
                "segment": ["smb"],
            }
        ),
        "opportunity_history": pd.DataFrame(
            {
                "opportunity_id": ["o1", "o1"],
                "ts": ["2024-01-12", "2024-01-30"],
                "stage": ["follow_up", "closed_won"],
                "amount": ["1000", "1000"],
                "expected_close_date": ["2024-02-01", "2024-01-30"],
            }
        ),
    }


def write_dir(frames: dict[str, pd.DataFrame], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        df.to_csv(folder / f"{name}.csv", index=False)
    return folder


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point in-process; returns (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _flat(text: str) -> str:
    return " ".join(text.split())


Mutation = Callable[[dict[str, pd.DataFrame]], None]


def _missing_column(t: dict[str, pd.DataFrame]) -> None:
    t["leads"] = t["leads"].drop(columns=["created_at"])


def _bad_ts(t: dict[str, pd.DataFrame]) -> None:
    t["events"].loc[0, "ts"] = "yesterday"


def _dup(t: dict[str, pd.DataFrame]) -> None:
    t["leads"].loc[1, "lead_id"] = "l1"


def _unknown_lead(t: dict[str, pd.DataFrame]) -> None:
    t["events"].loc[1, "lead_id"] = "l404"


def _negative(t: dict[str, pd.DataFrame]) -> None:
    t["opportunity_history"].loc[1, "amount"] = "-1000"


def _stage(t: dict[str, pd.DataFrame]) -> None:
    t["opportunity_history"].loc[0, "stage"] = "demo_booked"


def _event_type(t: dict[str, pd.DataFrame]) -> None:
    t["events"].loc[1, "type"] = "tiktok_like"


CASES: list[tuple[str, Mutation, str, str, int, str]] = [
    ("missing_column", _missing_column, "leads.created_at", "required column missing", 2, "l2"),
    ("unparsable_timestamp", _bad_ts, "events.ts", "unparsable timestamp", 1, "yesterday"),
    ("duplicate_id", _dup, "leads.lead_id", "duplicate id", 2, "a2"),
    ("unknown_lead", _unknown_lead, "events.lead_id", "unknown lead", 1, "l404"),
    ("negative_amount", _negative, "opportunity_history.amount", "negative value", 1, "-1000"),
    ("unknown_stage", _stage, "opportunity_history.stage", "unknown value", 1, "demo_booked"),
    ("unknown_event_type", _event_type, "events.type", "unknown value", 1, "tiktok_like"),
]


@pytest.mark.parametrize(
    ("mutate", "where", "reason", "count", "shown"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_validate_rejects_bad_input_without_traceback(
    mutate: Mutation,
    where: str,
    reason: str,
    count: int,
    shown: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tables = tiny_company()
    mutate(tables)
    folder = write_dir(tables, tmp_path / "data")
    code, out, err = run(["validate", "--data", str(folder)], capsys)
    assert code != 0
    assert "Traceback" not in err + out
    flat = _flat(err)
    assert flat.startswith("error:")
    part = flat[flat.index(f"{where}:") :]
    assert reason in part and f"({count} row" in part and shown in part


def test_validate_accepts_a_clean_company_and_reports_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_dir(tiny_company(), tmp_path / "data")
    code, out, _ = run(["validate", "--data", str(folder), "--json"], capsys)
    assert code == 0
    payload = json.loads(out)
    assert payload["rows"]["lead_status_history"] == 6 and payload["problems"] == []
    assert "activities" in payload["absent_tables"]


def test_validate_quarantine_writes_bad_rows_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = tiny_company()
    _unknown_lead(tables)
    folder = write_dir(tables, tmp_path / "data")
    ws = tmp_path / "ws"
    code, out, err = run(
        ["--workspace", str(ws), "validate", "--data", str(folder), "--quarantine"], capsys
    )
    assert code == 0, err
    assert "events.lead_id" in _flat(out) and "quarantine" in out
    bad = pd.read_csv(ws / "quarantine" / "events.csv")
    assert bad["lead_id"].tolist() == ["l404"] and "unknown lead" in bad["_reasons"][0]


def test_validate_missing_folder_and_missing_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["validate", "--data", str(tmp_path / "nope")], capsys)
    assert code != 0 and "does not exist" in _flat(err) and "Traceback" not in err
    tables = tiny_company()
    del tables["accounts"]
    code, _, err = run(["validate", "--data", str(write_dir(tables, tmp_path / "d"))], capsys)
    assert code != 0 and "accounts: required table missing" in _flat(err)


def test_validate_uses_the_configured_vocabulary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "leadml.yaml").write_text("vocabulary:\n  open_stages: [follow_up, demo_booked]\n")
    tables = tiny_company()
    _stage(tables)
    folder = write_dir(tables, tmp_path / "data")
    code, _, err = run(["--config-dir", str(cfg), "validate", "--data", str(folder)], capsys)
    assert code == 0, err


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    tables = tiny_company()
    _negative(tables)
    folder = write_dir(tables, tmp_path / "data")
    exe = Path(sys.executable).with_name("leadml")
    proc = subprocess.run(
        [str(exe), "validate", "--data", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "opportunity_history.amount" in proc.stderr


# ---------------------------------------------------------------- leadml funnel


def test_funnel_json_counts_the_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_dir(tiny_company(), tmp_path / "data")
    argv = ["funnel", "--data", str(folder), "--start", "2024-01-01", "--end", "2024-02-01"]
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    stages = {(s["funnel"], s["stage"]): s for s in payload["stages"] if s["group"] == "all"}
    assert stages[("lead", "lead")]["entered"] == 2  # l1, l2
    assert stages[("lead", "mql")]["converted"] == 1  # l1 became SQL
    assert stages[("opportunity", "closed_won")]["entered"] == 1
    assert payload["summary"]["won_amount"] == 1000.0
    # a range that ends before the win does not see it
    code, out, _ = run([*argv[:-1], "2024-01-20", "--json"], capsys)
    assert code == 0 and json.loads(out)["summary"]["deals_won"] == 0


def test_funnel_prints_tables_and_the_bottleneck(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "leadml.yaml").write_text("funnel:\n  min_entries: 1\n")
    folder = write_dir(tiny_company(), tmp_path / "data")
    code, out, err = run(["--config-dir", str(cfg), "funnel", "--data", str(folder)], capsys)
    assert code == 0, err
    assert "Lead funnel" in out and "Opportunity funnel" in out and "Recycling" not in out
    assert "follow_up" in out and "problem_recognised" in out
    # nurturing: l1 reached MQL, l2 is still nurturing -> 50% against a 25% benchmark;
    # lead -> nurturing 100%, MQL -> SQL 100%, follow_up -> won 100%: all above benchmark
    assert "No stage is below its benchmark" in _flat(out)


def test_funnel_by_segment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_dir(tiny_company(), tmp_path / "data")
    code, out, err = run(["funnel", "--data", str(folder), "--by", "segment", "--json"], capsys)
    assert code == 0, err
    groups = {s["group"] for s in json.loads(out)["stages"]}
    assert groups == {"all", "smb", "enterprise"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--start", "2024/01/01"],
            "--start '2024/01/01' is not a date; expected ISO format YYYY-MM-DD",
        ),
        (
            ["--end", "31-01-2024"],
            "--end '31-01-2024' is not a date; expected ISO format YYYY-MM-DD",
        ),
        (
            ["--start", "2024-03-01", "--end", "2024-02-01"],
            "--start 2024-03-01 is not before --end",
        ),
        (["--by", "region"], "--by 'region': use one of team, segment"),
    ],
)
def test_funnel_bad_flags_are_named(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_dir(tiny_company(), tmp_path / "data")
    code, out, err = run(["funnel", "--data", str(folder), *args], capsys)
    assert code == 2 and "Traceback" not in err
    assert expected in _flat(err)


def test_funnel_rejects_bad_tables_like_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = tiny_company()
    _stage(tables)
    code, _, err = run(["funnel", "--data", str(write_dir(tables, tmp_path / "d"))], capsys)
    assert code == 2 and "opportunity_history.stage: unknown value" in _flat(err)
