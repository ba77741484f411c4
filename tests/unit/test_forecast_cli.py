"""The forecast commands: JSON output, clear errors without tracebacks, alerts, backtest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from leadml.cli import main

OPEN = ["follow_up", "problem_recognised", "evaluation", "negotiation", "approval"]


def _write_book(folder: Path) -> None:
    """Two years of deals moving a stage a fortnight; every third one is won."""
    rows = []
    t0 = pd.Timestamp("2025-01-06", tz="UTC")
    for i in range(120):
        created = t0 + pd.Timedelta(days=5 * i)
        ecd = (created + pd.Timedelta(days=75)).normalize()
        for s, stage in enumerate(OPEN):
            rows.append((f"o{i}", created + pd.Timedelta(days=14 * s), stage, 1000.0 + i, ecd))
        end = "closed_won" if i % 3 == 0 else "closed_lost"
        rows.append((f"o{i}", created + pd.Timedelta(days=70), end, 1000.0 + i, ecd))
    # One deal left alone since May with a close date in June.
    rows.append(
        (
            "stuck",
            pd.Timestamp("2026-05-04", tz="UTC"),
            "evaluation",
            5000.0,
            pd.Timestamp("2026-06-30", tz="UTC"),
        )
    )
    hist = pd.DataFrame(
        rows, columns=["opportunity_id", "ts", "stage", "amount", "expected_close_date"]
    )
    hist = hist[hist["ts"] < pd.Timestamp("2026-09-01", tz="UTC")]
    first = hist.groupby("opportunity_id")["ts"].min()
    t_acc = pd.Timestamp("2024-01-01", tz="UTC")
    frames = {
        "accounts": pd.DataFrame({"account_id": ["a1"], "segment": ["smb"], "created_at": [t_acc]}),
        "leads": pd.DataFrame({"lead_id": ["l1"], "account_id": ["a1"], "created_at": [t_acc]}),
        "opportunities": pd.DataFrame(
            {
                "opportunity_id": first.index,
                "account_id": "a1",
                "owner_id": "r1",
                "created_at": first.to_numpy(),
                "amount": 1.0,
                "segment": "smb",
            }
        ),
        "opportunity_history": hist,
        "reps": pd.DataFrame(
            {"rep_id": ["r1"], "role": ["FS"], "team": ["east"], "segment": ["smb"]}
        ),
        "targets": pd.DataFrame(
            {
                "period_start": [pd.Timestamp("2026-07-01", tz="UTC")],
                "period_end": [pd.Timestamp("2026-10-01", tz="UTC")],
                "team": ["east"],
                "segment": [None],
                "amount": [30_000.0],
            }
        ),
    }
    folder.mkdir()
    for name, frame in frames.items():
        frame.to_parquet(folder / f"{name}.parquet")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "data"
    _write_book(folder)
    return folder


def test_forecast_json_has_the_parts_and_the_target(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["forecast", "--data", str(data), "--as-of", "2026-08-10", "--by", "team", "--json"])
    out = json.loads(capsys.readouterr().out)
    t = out["total"]
    assert out["period"] == "2026Q3" and out["probability_source"] == "empirical"
    assert t["target"] == 30_000.0 and t["p10"] <= t["p50"] <= t["p90"]
    assert t["expected"] == pytest.approx(t["won"] + t["open_expected"] + t["new_expected"])
    assert [g["group"] for g in out["groups"]] == ["east"]


def test_bad_period_is_a_message_not_a_traceback(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["forecast", "--data", str(data), "--as-of", "2026-08-10", "--period", "2026Q7"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "2026Q7" in err and "Traceback" not in err


def test_alerts_and_backtest_commands_run(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["alerts", "--data", str(data), "--as-of", "2026-08-10", "--json"])
    alerts = json.loads(capsys.readouterr().out)["alerts"]
    assert {"opportunity_id", "owner_id", "rule", "reason", "figures"} <= set(alerts[0])
    assert {(a["opportunity_id"], a["rule"]) for a in alerts} >= {
        ("stuck", "past_close_date"),
        ("stuck", "stale"),
    }
    main(["forecast", "backtest", "--data", str(data), "--quarters", "1", "--weeks", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    methods = {row["method"] for row in report["summary"]}
    assert {"forecast", "stage_weighted", "close_date_in_period"} <= methods
    assert {p["weeks_before_end"] for p in report["points"]} == {1, 2}


def _write_tables(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir()
    for name, frame in frames.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


def _no_deals() -> dict[str, pd.DataFrame]:
    """A company with leads but no deal tables."""
    t = "2025-01-01"
    return {
        "accounts": pd.DataFrame({"account_id": ["a1"], "segment": ["smb"], "created_at": [t]}),
        "leads": pd.DataFrame({"lead_id": ["l1"], "account_id": ["a1"], "created_at": [t]}),
        "reps": pd.DataFrame({"rep_id": ["r1"], "role": ["FS"], "team": ["east"]}),
    }


def test_forecast_on_an_empty_deal_history_says_so_with_or_without_as_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = _no_deals()
    frames["opportunities"] = pd.DataFrame(
        columns=["opportunity_id", "account_id", "owner_id", "created_at", "amount", "segment"]
    )
    frames["opportunity_history"] = pd.DataFrame(
        columns=["opportunity_id", "ts", "stage", "amount", "expected_close_date"]
    )
    folder = _write_tables(tmp_path / "empty", frames)
    errors = []
    for extra in ([], ["--as-of", "2025-06-01"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["forecast", "--data", str(folder), *extra])
        assert exit_info.value.code == 2
        errors.append(" ".join(capsys.readouterr().err.split()))
    assert "--as-of is missing" not in errors[0]
    assert all("opportunity_history has no rows" in e and "Traceback" not in e for e in errors)
    assert errors[0] == errors[1]


def test_alerts_without_deal_tables_say_alerts_need_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _write_tables(tmp_path / "nodeals", _no_deals())
    with pytest.raises(SystemExit) as exit_info:
        main(["alerts", "--data", str(folder), "--as-of", "2025-06-01"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "the forecast needs" not in err
    assert "alerts need opportunities and opportunity_history" in err


def test_forecast_header_shows_a_time_of_day_that_is_not_midnight(
    data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    main(["forecast", "--data", str(data), "--as-of", "2026-08-10T12:00"])
    assert "Forecast 2026Q3 as of 2026-08-10 12:00 UTC (" in capsys.readouterr().out
    main(["forecast", "--data", str(data), "--as-of", "2026-08-10"])
    assert "Forecast 2026Q3 as of 2026-08-10 (7.4 weeks left;" in capsys.readouterr().out
    # a period that has not started says when it starts, not "weeks left" (review)
    main(["forecast", "--data", str(data), "--as-of", "2026-08-10", "--period", "2026-09"])
    assert "Forecast 2026-09 as of 2026-08-10 (starts in 3.1 weeks;" in capsys.readouterr().out


def test_given_probabilities_are_read_whatever_the_csv_separator(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """BYOD review: a ;-separated probabilities file read as one column opportunity_id;p_won_by."""
    ids = pd.read_parquet(data / "opportunities.parquet")["opportunity_id"]
    probs = pd.DataFrame({"opportunity_id": ids, "p_won_by": 0.5})
    totals = []
    for sep, name in ((",", "comma.csv"), (";", "semicolon.csv")):
        path = tmp_path / name
        path.write_text("\ufeff" + probs.to_csv(index=False, sep=sep))  # with a BOM, as Excel
        main(["forecast", "--data", str(data), "--as-of", "2026-08-10", "--json",
              "--probabilities", str(path)])  # fmt: skip
        totals.append(json.loads(capsys.readouterr().out)["total"])
    assert totals[0]["open_expected"] == totals[1]["open_expected"]
    assert totals[0]["open_expected"] == pytest.approx(0.5 * totals[0]["open_pipeline"])


def test_forecast_notes_say_what_limits_the_numbers(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sales-leader review: an as-of days after the data's end lowered the forecast
    silently, an unmeasured shock gave a too-narrow P10-P90 without a word, and a quarter
    a year ahead looked as trustworthy as the current one."""

    def notes(*args: str) -> tuple[list[str], dict]:
        main(["forecast", "--data", str(data), *args, "--json"])
        out = json.loads(capsys.readouterr().out)
        return out["notes"], out

    fresh, out = notes("--as-of", "2026-09-01")  # the data's last record is on 2026-08-31
    assert not [n for n in fresh if "newest record" in n]
    assert bool([n for n in fresh if "shared shock" in n]) == (out["shock_periods"] < 2)
    late, _ = notes("--as-of", "2026-09-04")
    (quiet,) = [n for n in late if "newest record" in n]
    assert "days before 2026-09-04" in quiet and "--as-of 2026-09-01" in quiet
    ahead, _ = notes("--as-of", "2026-08-10", "--period", "2027Q1")
    assert any("2027Q1 starts 144 days after --as-of" in n for n in ahead)
    assert not any("starts" in n for n in notes("--as-of", "2026-08-10")[0])


def test_a_period_too_far_ahead_is_said_so_not_given_a_refused_as_of(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sales-leader review: '--period 2027Q4' advised an --as-of that is then refused."""
    with pytest.raises(SystemExit) as exit_info:
        main(["forecast", "--data", str(data), "--as-of", "2026-08-10", "--period", "2030Q1"])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2
    assert "too far ahead for this deal history" in err and "choose --as-of" not in err


def test_alerts_read_score_drops_from_the_nightly_outputs(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RevOps review: the nightly's own deal scores could not feed the score-drop rule
    ('scores history is missing column(s) as_of, p_won'), and a rule that raised nothing
    vanished from the summary. o103 is in approval on 2026-08-10."""
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("LEADML_WORKSPACE", str(tmp_path / "ws"))
    main(["alerts", "--data", str(data), "--as-of", "2026-08-10"])
    out = capsys.readouterr().out
    assert "score drops: not checked, no score history" in out
    assert "score_dropped" in out and "not checked" in out.split("score_dropped", 1)[1]
    for day, p in (("2026-08-03", 0.8), ("2026-08-10", 0.3), ("2026-08-11", 0.9)):
        part = tmp_path / "ws" / "outputs" / "scores_deals" / f"as_of={day}"
        part.mkdir(parents=True)
        pd.DataFrame({"opportunity_id": ["o103"], "p_won_90d": [p]}).to_parquet(
            part / "part-0.parquet"
        )
    main(["alerts", "--data", str(data), "--as-of", "2026-08-10"])
    out = capsys.readouterr().out
    assert "score drops: 2 nightly run(s)" in out  # the run of 2026-08-11 is after as-of
    main(["alerts", "--data", str(data), "--as-of", "2026-08-10", "--json"])
    fired = {
        (a["opportunity_id"], a["rule"]) for a in json.loads(capsys.readouterr().out)["alerts"]
    }
    assert ("o103", "score_dropped") in fired
    with pytest.raises(SystemExit) as exit_info:
        main(["alerts", "--data", str(data), "--as-of", "2026-08-10", "--scores", str(tmp_path)])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and "no nightly deal scores" in err


def test_alerts_read_score_drops_from_sql_only_nightly_outputs(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code review: with batch.parquet off the nightly scores live in the SQL database
    only, and the rule said 'not checked'."""
    from datetime import date

    from leadml.batch.outputs import OutputStore, sql_outputs
    from leadml.config import load_settings

    monkeypatch.setenv("LEADML_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("LEADML_BATCH__PARQUET", "false")
    s = load_settings()
    store = OutputStore(None, sql_outputs(s.batch.sql_url, s.outputs_dir))
    for day, p in ((date(2026, 8, 3), 0.8), (date(2026, 8, 10), 0.3)):
        frame = pd.DataFrame({"opportunity_id": ["o103"], "p_won_90d": [p]})
        store.publish(day, {"scores_deals": frame})
    main(["alerts", "--data", str(data), "--as-of", "2026-08-10", "--json"])
    fired = {
        (a["opportunity_id"], a["rule"]) for a in json.loads(capsys.readouterr().out)["alerts"]
    }
    assert ("o103", "score_dropped") in fired


def test_plots_draw_a_fan_only_for_a_period_under_way(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: the fan chart of a month not started yet was one dot on a four-year axis."""
    monkeypatch.setenv("LEADML_WORKSPACE", str(tmp_path / "ws"))
    main(["forecast", "--data", str(data), "--as-of", "2026-08-10", "--plots", "--json"])
    now = json.loads(capsys.readouterr().out)
    assert set(now["plots"]) == {"waterfall", "fan chart"}
    assert all(Path(p).stat().st_size > 0 for p in now["plots"].values())
    args = ["--as-of", "2026-08-10", "--period", "2026-09", "--plots", "--json"]
    main(["forecast", "--data", str(data), *args])
    ahead = json.loads(capsys.readouterr().out)
    assert set(ahead["plots"]) == {"waterfall"}
    assert any(n.startswith("no fan chart: 2026-09 starts after --as-of") for n in ahead["notes"])


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--months", "2", "--quarters", "2"], ["--quarters and --months", "give one of them"]),
        (["--weeks", "6", "--months", "3"], ["--weeks 6 with --months", "--weeks 1..5"]),
    ],
)
def test_a_backtest_of_months_and_quarters_or_of_months_six_weeks_out_is_refused(
    data: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["forecast", "backtest", "--data", str(data), *args])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code != 0
    assert all(s in err for s in said) and "Traceback" not in err


def test_a_backtest_of_months_or_ahead_says_what_it_replayed_and_has_no_goals(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["forecast", "backtest", "--data", str(data), "--weeks", "1"]
    main([*base, "--months", "2", "--json"])
    months = json.loads(capsys.readouterr().out)
    assert months["period_months"] == 1 and months["periods_ahead"] == 0
    assert months["goals"] == {}
    assert {p["period"] for p in months["points"]} == {"2026-07", "2026-08"}
    summary = Path(os.environ["LEADML_WORKSPACE"]) / "reports/forecast/backtest_summary.json"
    written = json.loads(summary.read_text())
    assert (written["period_months"], written["periods_ahead"]) == (1, 0)
    main([*base, "--quarters", "1", "--ahead", "1", "--json"])
    ahead = json.loads(capsys.readouterr().out)
    assert ahead["period_months"] == 3 and ahead["periods_ahead"] == 1
    assert ahead["goals"] == {} and {p["periods_ahead"] for p in ahead["points"]} == {1}
    written = json.loads(summary.read_text())
    assert (written["period_months"], written["periods_ahead"]) == (3, 1)
    main([*base, "--months", "1", "--ahead", "1"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Backtest of months 2026-08, forecast 1 month ahead" in out
    assert "MAPE by weeks before the end of the as-of's month" in out
    assert "quarter end" not in out and "Goals" not in out
    assert "the forecast's goals apply to the current quarter's backtest" in out
    main([*base, "--months", "1"])
    out = " ".join(capsys.readouterr().out.split())
    assert "MAPE by weeks before month end" in out and "quarter end" not in out


def test_the_note_on_a_far_period_points_at_the_backtest_ahead(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["forecast", "--data", str(data), "--as-of", "2026-08-10", "--period", "2027Q1", "--json"])
    (far,) = [n for n in json.loads(capsys.readouterr().out)["notes"] if "starts 144 days" in n]
    assert "`leadml forecast backtest --ahead 2` (or more)" in far
    assert "current quarter only" not in far
