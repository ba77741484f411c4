"""The nightly run as an operator sees it: warnings kept in the manifest and report,
optional tables, a locked output database, Parquet off, quarantine folders, cron script."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from _batch_data import make_company, stand_in_champions

from leadml.batch import nightly
from leadml.batch.nightly import past_deal_scores, run_nightly
from leadml.batch.outputs import DuckDBOutputs, OutputStore, ParquetOutputs
from leadml.config import load_settings
from leadml.report.html import build_report

AS_OF = "2025-06-02"
DAY = pd.Timestamp(AS_OF).date()


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_company(tmp_path_factory.mktemp("ops-company") / "data", n_leads=250)


@pytest.fixture(scope="module")
def champions(company: Path) -> dict:
    return stand_in_champions(company)


def _copy(company: Path, to: Path) -> Path:
    to.mkdir()
    for f in company.glob("*.parquet"):
        shutil.copy(f, to / f.name)
    return to


def test_run_warnings_are_kept_in_the_manifest_and_shown_in_the_report(
    company: Path, champions: dict
) -> None:
    later = dict(champions)
    champ = copy.copy(champions["deal_close"])
    champ.bundle = SimpleNamespace(meta={"data_window": ["2024-01-01", "2025-06-20"]})
    later["deal_close"] = champ
    s = load_settings()
    result = run_nightly(s, AS_OF, data=company, champions=later)
    (w,) = [w for w in result.warnings if "trained on data up to" in w]
    assert result.manifest.warnings == result.warnings
    for stored in (
        ParquetOutputs(s.outputs_dir).read("manifest", DAY),
        DuckDBOutputs(s.outputs_dir / "leadml.duckdb").read("manifest", DAY),
    ):
        assert json.loads(stored.iloc[0]["warnings"]) == result.warnings
    text = build_report(s, AS_OF, data=company).read_text()
    run = text[text.index('<section id="run">') :]
    assert "deal_close v7 was trained on data up to 2025-06-20" in run


def test_without_reps_the_run_publishes_an_empty_call_list_and_says_why(
    company: Path, champions: dict, tmp_path: Path
) -> None:
    data = _copy(company, tmp_path / "no-reps")
    (data / "reps.parquet").unlink()
    s = load_settings()
    result = run_nightly(s, AS_OF, data=data, champions=champions)
    assert result.tables["call_list"].empty and result.tables["call_capacity"].empty
    assert len(result.tables["scores_leads"]) > 0
    assert any("no reps table" in w and "call list is empty" in w for w in result.warnings)
    assert ParquetOutputs(s.outputs_dir).read("call_list", DAY).empty
    assert json.loads(ParquetOutputs(s.outputs_dir).read("manifest", DAY).iloc[0]["warnings"])


def test_without_optional_tables_the_run_says_what_they_would_have_fed(
    company: Path, champions: dict, tmp_path: Path
) -> None:
    """BYOD review: an export without activities or events ran with every IS touch and
    behavioural feature at zero and 36x the stale alerts, and warnings were []."""
    data = _copy(company, tmp_path / "no-activities")
    for table in ("activities", "events"):
        for path in data.glob(f"{table}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    result = run_nightly(load_settings(), AS_OF, data=data, champions=champions)
    said = " | ".join(result.warnings)
    assert "no activities rows: IS and deal activity features are zero" in said
    assert "the 'stale' deal alert sees only changes" in said
    assert "no events rows: every behavioural feature" in said
    full = run_nightly(load_settings(), AS_OF, data=company, champions=champions)
    assert not [w for w in full.warnings if w.startswith("no ") and " rows: " in w]


def test_a_locked_duckdb_file_is_a_clear_error_and_nothing_is_half_written(
    company: Path,
    champions: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from leadml.cli import main

    s = load_settings()
    first = run_nightly(s, AS_OF, data=company, champions=champions)
    path = s.outputs_dir / "leadml.duckdb"
    before = ParquetOutputs(s.outputs_dir).read("manifest", DAY)
    holder = subprocess.Popen(  # another program holds the file open (DuckDB locks per process)
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print('open', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        monkeypatch.setattr(nightly, "load_champions", lambda _s: champions)
        with pytest.raises(SystemExit) as exit_:
            main(["batch", "--as-of", AS_OF, "--data", str(company)])
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(60)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "Traceback" not in err and "leadml.duckdb" in err
    assert "lock" in err and "close it and run again" in err
    after = ParquetOutputs(s.outputs_dir).read("manifest", DAY)
    assert after["run_id"].tolist() == before["run_id"].tolist() == [first.manifest.run_id]
    assert DuckDBOutputs(path).read("manifest", DAY)["run_id"].tolist() == [first.manifest.run_id]
    assert not list((s.outputs_dir / ".staging").glob("*"))  # no run folder left behind
    assert not [p for p in s.outputs_dir.glob("*/.*") if "staging" in p.name]


def test_with_parquet_off_only_sql_is_named_and_past_scores_come_from_sql(
    company: Path,
    champions: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from leadml.cli import main

    monkeypatch.setenv("LEADML_BATCH__PARQUET", "false")
    monkeypatch.setattr(nightly, "load_champions", lambda _s: champions)
    main(["batch", "--as-of", "2025-05-26", "--data", str(company)])
    out = capsys.readouterr().out.replace("\n", "")
    s = load_settings()
    assert "Parquet:" not in out and "SQL: duckdb:///" in out
    assert not (s.outputs_dir / "manifest").exists()
    past = past_deal_scores(nightly._store(s), DAY, 28)
    assert past is not None and len(past) > 0
    assert set(past["as_of"]) == {pd.Timestamp("2025-05-26", tz="UTC")}


def test_a_rerun_replaces_the_dates_quarantine_folder_and_a_failed_run_writes_none(
    company: Path, champions: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _copy(company, tmp_path / "bad")
    events = pd.read_parquet(bad / "events.parquet")
    events.loc[events.index[:3], "type"] = "telepathy"
    events.to_parquet(bad / "events.parquet", index=False)
    monkeypatch.setenv("LEADML_BATCH__BAD_ROWS", "quarantine")
    s = load_settings()
    folder = s.quarantine_dir / f"as_of={AS_OF}"

    def crash(_tables: dict) -> None:
        raise RuntimeError("disk full (injected)")

    with pytest.raises(RuntimeError, match="injected"):
        run_nightly(s, AS_OF, data=bad, champions=champions, before_publish=crash)
    assert not folder.exists()
    run_nightly(s, AS_OF, data=bad, champions=champions)
    assert len(pd.read_csv(folder / "events.csv")) == 3
    with pytest.raises(RuntimeError, match="injected"):
        run_nightly(s, AS_OF, data=company, champions=champions, before_publish=crash)
    assert len(pd.read_csv(folder / "events.csv")) == 3  # the published run's folder stays
    clean = run_nightly(s, AS_OF, data=company, champions=champions)
    assert clean.manifest.quarantined_rows == {}
    assert not folder.exists()
    assert not [p for p in s.quarantine_dir.iterdir() if p.name.startswith(".")]


def test_the_cron_script_passes_sql_url_and_quarantine_on(
    company: Path,
    champions: dict,
    repo_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = _copy(company, tmp_path / "bad")
    events = pd.read_parquet(bad / "events.parquet")
    events.loc[events.index[:2], "type"] = "telepathy"
    events.to_parquet(bad / "events.parquet", index=False)
    spec = importlib.util.spec_from_file_location(
        "nightly_script", repo_root / "pipelines" / "nightly.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(nightly, "load_champions", lambda _s: champions)
    target = tmp_path / "out.duckdb"
    argv = [
        "--as-of",
        AS_OF,
        "--data",
        str(bad),
        "--quarantine",
        "--sql-url",
        f"duckdb:///{target}",
    ]
    with pytest.raises(SystemExit) as exit_:
        script.main([*argv, "--report"])
    assert exit_.value.code == 0
    s = load_settings()
    assert (
        DuckDBOutputs(target).read("manifest", DAY).iloc[0]["quarantined_rows"] == '{"events": 2}'
    )
    assert len(pd.read_csv(s.quarantine_dir / f"as_of={AS_OF}" / "events.csv")) == 2
    assert (s.reports_dir / f"leadml-report-{AS_OF}.html").exists()
    assert OutputStore(None, DuckDBOutputs(target)).latest("scores_leads", DAY) is not None


def _corrupt_pages(path: Path, column: str) -> None:
    """Overwrite the first page header of ``column``: the footer stays intact, so the file
    opens and its row count reads, but decoding the column fails."""
    import pyarrow.parquet as pq

    chunk = pq.ParquetFile(path).metadata.row_group(0)
    names = [chunk.column(i).path_in_schema for i in range(chunk.num_columns)]
    meta = chunk.column(names.index(column))
    with path.open("r+b") as fh:
        fh.seek(meta.dictionary_page_offset or meta.data_page_offset)
        fh.write(b"\xff" * 12)


def test_a_corrupt_input_file_is_a_clear_error_that_names_it(
    company: Path,
    champions: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Parquet file corrupt inside (footer intact) passed `leadml validate` and crashed
    the nightly with a DuckDB traceback, rc=1."""
    from leadml.cli import main
    from leadml.errors import DataError

    monkeypatch.setenv("COLUMNS", "2000")  # messages on one line, paths unbroken
    bad = _copy(company, tmp_path / "bad")
    target = bad / "opportunity_history.parquet"
    _corrupt_pages(target, "amount")  # a column the validation does not read
    main(["validate", "--data", str(bad)])  # passes: the contract checks never decode it
    capsys.readouterr()

    s = load_settings()
    with pytest.raises(DataError) as err:
        run_nightly(s, AS_OF, data=bad, champions=champions)
    msg = str(err.value)
    assert "reading the input data failed" in msg and "DuckDB" in msg
    assert f"table opportunity_history: {target}" in msg and "corrupt" in msg
    assert not (s.outputs_dir / "manifest").exists()  # nothing published

    monkeypatch.setattr(nightly, "load_champions", lambda _s: champions)
    with pytest.raises(SystemExit) as exit_:
        main(["batch", "--as-of", AS_OF, "--data", str(bad)])
    err_text = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2 and "Traceback" not in err_text
    assert "opportunity_history.parquet" in err_text

    with pytest.raises(SystemExit) as exit_:
        main(["validate", "--deep", "--data", str(bad)])
    err_text = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2 and "Traceback" not in err_text
    assert f"table opportunity_history: {target}" in err_text and "1 file(s)" in err_text
    main(["validate", "--deep", "--data", str(company)])
    assert "was read in full" in " ".join(capsys.readouterr().out.split())


def test_cli_output_lists_quarantined_rows_per_table_and_no_next_step_after_report(
    company: Path,
    champions: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from leadml.cli import main

    monkeypatch.setenv("COLUMNS", "2000")  # paths unbroken
    bad = _copy(company, tmp_path / "bad")
    events = pd.read_parquet(bad / "events.parquet")
    events.loc[events.index[:3], "type"] = "telepathy"
    events.to_parquet(bad / "events.parquet", index=False)
    monkeypatch.setattr(nightly, "load_champions", lambda _s: champions)
    main(["batch", "--as-of", AS_OF, "--data", str(bad), "--quarantine", "--report"])
    out = " ".join(capsys.readouterr().out.split())
    s = load_settings()
    folder = s.quarantine_dir / f"as_of={AS_OF}"
    assert f"quarantined input rows: events: 3 (see {folder})" in out
    assert "{" not in out.split("quarantined input rows:")[1].split(")")[0]
    assert f"report: {s.reports_dir / f'leadml-report-{AS_OF}.html'}" in out
    assert "next:" not in out
    main(["batch", "--as-of", AS_OF, "--data", str(company)])
    assert f"next: leadml report --as-of {AS_OF}" in capsys.readouterr().out
