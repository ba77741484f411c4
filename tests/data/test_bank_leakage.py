"""The leakage guard on real data: UCI Bank Marketing (Moro et al. 2014), read from
../shared/datasets (never copied into the project). ``duration`` is known only after
the call and must be flagged; no other column may be."""

from __future__ import annotations

from pathlib import Path

from leadml.importing.leakage import check_leakage
from leadml.importing.tabular import prepare_table, read_lead_table

BANK = "uci_bank_marketing/bank-additional-full.csv"


def test_bank_marketing_duration_is_flagged_and_nothing_else(shared_datasets: Path) -> None:
    path = shared_datasets / BANK
    assert path.is_file(), f"{path} missing: download bank-additional.zip from the UCI repository"
    frame, report = prepare_table(read_lead_table(path), "y", missing_values="unknown,pdays=999")
    assert report.rows == 41188 and report.positives == 4640
    leak = check_leakage(frame, "y")
    assert leak.flagged == ["duration"]
    assert "duration" in leak.reasons("duration")[0]
    assert leak.scores[0].column == "duration"  # also the strongest single column
