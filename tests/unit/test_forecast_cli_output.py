"""The forecast commands' output as a reader and a script see it: JSON that parses even
when DuckDB would draw its progress bar, what a "-" and the gap's sign mean, the alerts'
JSON object, how many backtest periods were replayed and why, and the demo's forecast."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from test_forecast_cli import _write_book

from leadml.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_output") / "data"
    _write_book(folder)
    return folder


@pytest.fixture
def eager_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB connections as an interactive session opens them (``python -c``, a
    notebook): there the progress bar is on by default (in a script or under pytest it is
    off). And a bar that is still on once the data is opened, before its tables are
    checked, is drawn for every query, not only for those over 2 s (as on a 40k-lead
    company). The settings are per connection, hence set on each one."""
    import leadml.contracts

    real_connect: Callable[..., duckdb.DuckDBPyConnection] = duckdb.connect
    real_check = leadml.contracts.check_tables

    def connect(*args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        con = real_connect(*args, **kwargs)
        con.execute("SET enable_progress_bar = true")
        return con

    def check_tables(con: duckdb.DuckDBPyConnection, *args: Any, **kwargs: Any) -> Any:
        on = con.execute("SELECT current_setting('enable_progress_bar')").fetchone()
        if on and on[0]:  # (lowering the time would turn the bar on)
            con.execute("SET progress_bar_time = 0")
        return real_check(con, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", connect)
    monkeypatch.setattr(leadml.contracts, "check_tables", check_tables)


@pytest.mark.usefixtures("eager_progress_bar")
@pytest.mark.parametrize(
    "args",
    [
        ["forecast", "--as-of", "2026-08-10", "--json"],
        ["alerts", "--as-of", "2026-08-10", "--json"],
        ["forecast", "backtest", "--quarters", "1", "--weeks", "1", "--json"],
    ],
)
def test_json_output_parses_even_when_duckdb_would_draw_its_progress_bar(
    data: Path, capfd: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """Audit: `forecast --data <40k company> --json` began with DuckDB's bar on stdout."""
    main([*args, "--data", str(data)])
    out = capfd.readouterr().out
    assert "▕" not in out and "%" not in out.split("{", 1)[0]
    json.loads(out)


def _text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    main(list(args))
    return " ".join(capsys.readouterr().out.split())


@pytest.fixture(scope="module")
def easy_target(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same company with a 2026Q3 target of 1,000: won by August."""
    folder = tmp_path_factory.mktemp("easy") / "data"
    shutil.copytree(data, folder)
    targets = pd.read_parquet(folder / "targets.parquet").assign(amount=1_000.0)
    targets.to_parquet(folder / "targets.parquet")
    return folder


def test_a_dash_in_the_target_columns_is_explained(
    data: Path,
    easy_target: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Audit: '-' for target, gap, P(target) and coverage was never explained (a period
    without a target row, --by owner, and coverage once won is above the target)."""
    monkeypatch.setenv("COLUMNS", "300")
    base = ["forecast", "--data", str(data), "--as-of", "2026-08-10"]
    out = _text(capsys, *base, "--period", "2026Q4")  # targets has 2026Q3 only
    assert '"-" = no target for 2026Q4: no row of the targets table overlaps it' in out
    out = _text(capsys, *base, "--by", "owner")
    assert '"-" = no target: targets are set per team or segment, not per owner' in out
    out = _text(capsys, *base)  # every group has a target: nothing to explain
    assert '"-" =' not in out and "target reached" not in out
    out = _text(capsys, "forecast", "--data", str(easy_target), "--as-of", "2026-08-10")
    assert "target reached" in out.split("Against target", 1)[1].split("│ all", 1)[1]
    assert "coverage: target reached = won is already at or above the target" in out
    bare = tmp_path / "no_targets"
    shutil.copytree(data, bare)
    (bare / "targets.parquet").unlink()
    out = _text(capsys, "forecast", "--data", str(bare), "--as-of", "2026-08-10")
    assert '"-" = no target for 2026Q3: the data has no targets table' in out


def test_the_gap_says_which_sign_is_short_of_the_target(
    data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit: 'gap -1,702,146' did not say it means ahead of the target."""
    monkeypatch.setenv("COLUMNS", "300")
    out = _text(capsys, "forecast", "--data", str(data), "--as-of", "2026-08-10")
    assert (
        "Against target (gap = target - expected: positive = short of the target, "
        "negative = ahead of it)" in out
    )


def test_alerts_json_is_an_object_that_says_what_was_checked(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Audit: `alerts --json` was a bare list that did not say the score rule was not
    checked, nor the as-of and thresholds; figures read 0.39999999999999997."""
    main(["alerts", "--data", str(data), "--as-of", "2026-08-10", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["as_of"] == "2026-08-10T00:00:00+00:00"
    assert out["thresholds"]["stale_days"] == 30 and out["thresholds"]["score_drop"] == 0.2
    assert out["rules_checked"] == [
        "past_close_date",
        "stale",
        "close_date_pushed",
        "stage_too_long",
    ]
    (unchecked,) = out["rules_not_checked"]
    assert unchecked["rule"] == "score_dropped" and "no score history" in unchecked["why"]
    assert out["counts"]["past_close_date"]["alerts"] >= 1 and "score_dropped" not in out["counts"]
    assert {(a["opportunity_id"], a["rule"]) for a in out["alerts"]} >= {
        ("stuck", "past_close_date")
    }
    scores = tmp_path / "scores.csv"  # o103 is in approval: 0.7 - 0.3 in floats is 0.3999...
    scores.write_text("opportunity_id,as_of,p_won\no103,2026-08-03,0.7\no103,2026-08-09,0.3\n")
    main(["alerts", "--data", str(data), "--as-of", "2026-08-10", "--scores", str(scores),
          "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["rules_not_checked"] == [] and "score_dropped" in out["rules_checked"]
    assert out["score_history"] == f"read from {scores}"
    (drop,) = [a for a in out["alerts"] if a["rule"] == "score_dropped"]
    assert drop["figures"]["drop"] == 0.4 and drop["figures"]["p_won"] == 0.3


def test_alerts_default_to_the_forecasts_as_of(
    data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit: `alerts` required --as-of where `forecast` takes the day after the data."""
    main(["forecast", "--data", str(data), "--json"])
    forecast_as_of = json.loads(capsys.readouterr().out)["as_of"]
    main(["alerts", "--data", str(data), "--json"])
    assert json.loads(capsys.readouterr().out)["as_of"] == forecast_as_of
    assert forecast_as_of == "2026-09-01T00:00:00+00:00"  # the last record is on 2026-08-31
    monkeypatch.setenv("COLUMNS", "300")
    assert "Deal-hygiene alerts as of 2026-09-01" in _text(capsys, "alerts", "--data", str(data))


@pytest.mark.parametrize("command", ["forecast", "alerts"])
def test_an_as_of_after_the_data_is_a_clear_error(
    data: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The last record is on 2026-08-31: 2026-09-07 is the latest usable as-of. The alerts'
    message spoke of the forecast ('not forecast from')."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--data", str(data), "--as-of", "2026-09-20"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "--as-of 2026-09-20 is after the end of the data (last record 2026-08-31" in err
    assert "choose --as-of 2026-09-07 or earlier" in err
    if command == "alerts":
        assert "forecast" not in err and "alerts are not raised more than 7 days after" in err


def test_a_backtest_says_how_many_periods_it_could_replay_and_why(
    data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit: `--quarters 50` replayed 8 without a word, one of them a quarter that began
    before the data did. The deal history here starts 2025-01-06 and ends 2026-08-31."""
    base = ["forecast", "backtest", "--data", str(data), "--weeks", "1", "--quarters", "50"]
    main([*base, "--json"])
    out = json.loads(capsys.readouterr().out)
    replayed = ["2025Q2", "2025Q3", "2025Q4", "2026Q1", "2026Q2"]
    assert out["periods_asked"] == 50 and out["periods"] == replayed
    assert sorted({p["period"] for p in out["points"]}) == replayed  # not 2025Q1
    note = out["periods_note"]
    assert note.startswith("5 of the 50 quarters asked for can be replayed (2025Q2 to 2026Q2)")
    assert "the deal history starts 2025-01-06" in note
    assert "45 start before it (part of their revenue is not in the data)" in note
    monkeypatch.setenv("COLUMNS", "300")
    assert f"note: {note}" in _text(capsys, *base)
    main([*base[:-1], "2", "--json"])  # two quarters asked, two replayed: no note
    out = json.loads(capsys.readouterr().out)
    assert out["periods"] == ["2026Q1", "2026Q2"] and out["periods_note"] == ""


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The figures the plots draw, kept open (and drawn) to be looked at."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figures: list[Any] = []
    real_close = plt.close

    def keep(fig: Any = None) -> None:
        fig.canvas.draw()
        figures.append(fig)

    monkeypatch.setattr(plt, "close", keep)
    yield figures
    for fig in figures:
        real_close(fig)


def test_money_labels_read_as_amounts() -> None:
    from leadml.forecast.plots import money_label

    assert [money_label(v) for v in (0, 850, 850_000, 1_200_000, 1_125_000, 2e9)] == [
        "0",
        "850",
        "850k",
        "1.2M",
        "1.125M",
        "2B",
    ]
    assert money_label(7_868_251, 3) == "7.87M"


def test_the_fan_runs_to_the_period_end_and_the_plots_read_as_money(
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    drawn: list[Any],
) -> None:
    """Audit: the fan's x axis stopped at the as-of date (how much of the quarter is left
    could not be seen), the y axes read '1e6' times a number, and the waterfall's
    expected bar had no value."""
    from matplotlib.dates import date2num

    monkeypatch.setenv("LEADML_WORKSPACE", str(tmp_path / "ws"))
    main(["forecast", "--data", str(data), "--as-of", "2026-08-10", "--plots", "--json"])
    total = json.loads(capsys.readouterr().out)["total"]
    waterfall, fan = (fig.axes[0] for fig in drawn)
    assert fan.get_xlim()[1] == pytest.approx(date2num(pd.Timestamp("2026-10-01")))
    assert "7.4 weeks left" in [t.get_text() for t in fan.texts]
    for ax in (fan, waterfall):
        assert ax.yaxis.get_offset_text().get_text() == ""
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert any(label.endswith("k") for label in labels), labels  # amounts are ~1-40k
    assert f"{total['expected']:,.0f}" in [t.get_text() for t in waterfall.texts]


def test_the_demo_prints_this_quarters_forecast_from_the_nightly_outputs(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`leadml demo` step 7 prints the nightly run's snapshot of the current quarter, in
    total and per team (here without running the whole demo)."""
    from datetime import date

    from leadml.batch.nightly import forecast_snapshot, forecast_source
    from leadml.batch.outputs import OutputStore, ParquetOutputs
    from leadml.cli.demo import _print_forecast
    from leadml.config import load_settings
    from leadml.contracts import connect
    from leadml.forecast.deals import DealHistory

    monkeypatch.setenv("LEADML_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("COLUMNS", "300")
    s = load_settings()
    t = pd.Timestamp("2026-08-10", tz="UTC")
    con, _ = connect(data, s.vocabulary)
    try:
        history = DealHistory(con, s.vocabulary)
        source, won_by = forecast_source(con, s, history, t, None, None)  # type: ignore[arg-type]
        frame = forecast_snapshot(con, s, history, t, source, won_by)
    finally:
        con.close()
    OutputStore(ParquetOutputs(s.outputs_dir), None).publish(date(2026, 8, 10), {"forecast": frame})
    _print_forecast(s, "2026-08-10")
    out = capsys.readouterr().out
    assert "Forecast 2026Q3 (open deals: empirical; P10/P50/P90 of revenue booked)" in out
    now = frame[(frame["kind"] == "snapshot") & (frame["quarter"] == "current")]
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert set(rows) == {"all", "east"}  # the total and the one team
    total = now[now["grouping"] == "total"].iloc[0]
    cells = [c.strip() for c in rows["all"].split("│")[2:-1]]
    assert cells[3] == f"{round(total['expected']):,}" and cells[7] == f"{round(total['target']):,}"
