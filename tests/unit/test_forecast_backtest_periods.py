"""The backtest of months and of periods ahead on a hand-built deal book: which periods
and as-of dates it replays, that every point reads only data before its as-of date,
and that the current quarter's goals are left out where they do not apply."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from leadml.config import ForecastConfig, Vocabulary
from leadml.contracts import connect
from leadml.errors import LeadmlError
from leadml.forecast.backtest import (
    BacktestReport,
    backtest,
    backtest_periods,
    backtest_plan,
    weekly_call,
)
from leadml.forecast.deals import DealHistory, parse_period
from leadml.forecast.forecast import forecast
from leadml.sources import frames_source

START = pd.Timestamp("2024-01-01", tz="UTC")
CUT = pd.Timestamp("2025-10-15", tz="UTC")  # the data ends here: 2025-09 is the last month
FORECAST_COLUMNS = ["expected", "p10", "p50", "p90", "won", "open_expected", "new_expected"]
Frames = dict[str, pd.DataFrame]
CFG = ForecastConfig(backtest_grid_cells=1024, lookback_periods=4, shock_lookback_periods=4)


def book(extra: list[tuple[str, pd.Timestamp, str, float, pd.Timestamp]] | None = None) -> Frames:
    """A deal every 2.5 days from 2024-01-01: evaluation, negotiation after 2 weeks, and
    won (two in three, amounts vary) or lost after 5 weeks; rows up to ``CUT``."""
    rows = []
    for i in range(int((CUT - START).days / 2.5)):
        created = START + pd.Timedelta(hours=60 * i + 9)
        amount = 1000.0 + 150.0 * (i % 7)
        ecd = (created + pd.Timedelta(days=30 + 3 * (i % 5))).normalize()
        end = "closed_lost" if i % 3 == 0 else "closed_won"
        rows += [
            (f"o{i}", created, "evaluation", amount, ecd),
            (f"o{i}", created + pd.Timedelta(days=14), "negotiation", amount, ecd),
            (f"o{i}", created + pd.Timedelta(days=35 + i % 4), end, amount, ecd),
        ]
    rows += extra or []
    hist = pd.DataFrame(
        rows, columns=["opportunity_id", "ts", "stage", "amount", "expected_close_date"]
    )
    hist = hist[hist["ts"] < CUT].reset_index(drop=True)
    first = hist.groupby("opportunity_id")["ts"].min()
    segment = ["enterprise" if o[1:].isdigit() and int(o[1:]) % 2 else "smb" for o in first.index]
    t0 = pd.Timestamp("2023-01-01", tz="UTC")
    return {
        "accounts": pd.DataFrame({"account_id": ["a1"], "segment": ["smb"], "created_at": [t0]}),
        "leads": pd.DataFrame({"lead_id": ["l1"], "account_id": ["a1"], "created_at": [t0]}),
        "opportunities": pd.DataFrame(
            {
                "opportunity_id": first.index,
                "account_id": "a1",
                "owner_id": "r1",
                "created_at": first.to_numpy(),
                "amount": 1.0,
                "segment": segment,
            }
        ),
        "opportunity_history": hist,
        "reps": pd.DataFrame(
            {"rep_id": ["r1"], "role": ["FS"], "team": ["east"], "segment": ["smb"]}
        ),
    }


def con_of(frames: Frames) -> duckdb.DuckDBPyConnection:
    con, _ = connect(frames_source(frames), Vocabulary())
    return con


@pytest.fixture(scope="module")
def frames() -> Frames:
    return book()


@pytest.fixture(scope="module")
def months_report(frames: Frames) -> BacktestReport:
    return backtest(con_of(frames), config=CFG, months=3, weeks=4)


def test_months_replay_the_last_complete_months_as_of_mondays_before_each_month_end(
    frames: Frames, months_report: BacktestReport
) -> None:
    r = months_report
    pts = r.points
    assert r.period_months == 1 and r.periods_ahead == 0
    assert sorted(pts["period"].unique()) == ["2025-07", "2025-08", "2025-09"]
    assert "quarter" not in pts.columns and set(pts["periods_ahead"]) == {0}
    assert set(pts["weeks_before_end"]) == {1, 2, 3, 4}
    for row in pts[pts["method"] == "forecast"].itertuples():
        per = parse_period(row.period)
        assert per.months == 1
        as_of = pd.Timestamp(row.as_of)
        left = per.end - as_of
        assert as_of.weekday() == 0 and as_of == as_of.normalize()
        # the Monday on or before end - 7 x weeks: between weeks and weeks + 1 weeks remain
        assert pd.Timedelta(weeks=row.weeks_before_end) <= left
        assert left < pd.Timedelta(weeks=row.weeks_before_end + 1)
    # The month's forecast is `leadml forecast --period <month>` as of that Monday.
    one = pts[(pts["method"] == "forecast") & (pts["period"] == "2025-08")].iloc[0]
    light = CFG.model_copy(update={"max_grid_cells": CFG.backtest_grid_cells})
    direct = forecast(con_of(frames), as_of=one["as_of"], period="2025-08", config=light).total
    assert one["expected"] == pytest.approx(direct.expected)
    assert one["p90"] == pytest.approx(direct.p90)
    # The goals are the current quarter's: none for months.
    assert r.goals == {} and r.to_dict()["period_months"] == 1


def test_a_months_backtest_reads_only_data_before_each_as_of(
    frames: Frames, months_report: BacktestReport
) -> None:
    before = months_report.points
    f0 = before[before["method"] == "forecast"]
    as_ofs = sorted(f0["as_of"].unique())
    x = pd.Timestamp(as_ofs[len(as_ofs) // 2]) + pd.Timedelta(hours=1)  # between two points
    # A large deal created after x and won two days later, inside its month; every row at
    # or after x gets ten times the amount, and the deals lost then are won instead.
    won_at = x + pd.Timedelta(days=2)
    late = [
        ("late", x, "negotiation", 1e6, won_at),
        ("late", won_at, "closed_won", 1e6, won_at),
    ]
    changed = book(late)
    h = changed["opportunity_history"]
    moved, lost = h["ts"] >= x, h["stage"] == "closed_lost"
    assert moved.sum() > 50 and (moved & lost).sum() > 5  # else the test would be vacuous
    h.loc[moved & lost, "stage"] = "closed_won"
    h.loc[moved & (h["opportunity_id"] != "late"), "amount"] *= 10
    after = backtest(con_of(changed), config=CFG, months=3, weeks=4).points
    f1 = after[after["method"] == "forecast"]
    keys = ["period", "weeks_before_end"]
    a, b = f0.set_index(keys), f1.set_index(keys)
    assert (a["as_of"] == b["as_of"]).all()
    early = a["as_of"] <= x
    assert early.sum() >= 4 and (~early).sum() >= 4
    pd.testing.assert_frame_equal(a.loc[early, FORECAST_COLUMNS], b.loc[early, FORECAST_COLUMNS])
    # ... while the actuals, and the forecasts made after x, did see the change.
    month = f"{won_at:%Y-%m}"
    assert (b.loc[month, "actual"] > a.loc[month, "actual"] + 9e5).all()
    assert not a.loc[~early, "expected"].equals(b.loc[~early, "expected"])
    # The baselines are point-in-time as well.
    for method in ("stage_weighted", "close_date_in_period"):
        m0 = before[before["method"] == method].set_index(keys)
        m1 = after[after["method"] == method].set_index(keys)
        assert m0.loc[early, "expected"].equals(m1.loc[early, "expected"])


@pytest.mark.parametrize(("months", "ahead"), [(None, 1), (3, 2)])
def test_a_point_k_ahead_is_the_weekly_call_k_periods_earlier(
    frames: Frames, months: int | None, ahead: int
) -> None:
    periods = {"months": months} if months else {"quarters": 2}
    current = {"months": months} if months else {"quarters": 3}
    now = backtest(con_of(frames), config=CFG, weeks=2, **current)
    r = backtest(con_of(frames), config=CFG, weeks=2, ahead=ahead, **periods)
    pts = r.points
    assert set(pts["periods_ahead"]) == {ahead} and r.periods_ahead == ahead
    assert r.goals == {} and r.to_dict()["periods_ahead"] == ahead
    assert {"stage_weighted", "close_date_in_period"} <= set(pts["method"])
    f = pts[pts["method"] == "forecast"]
    same = 0
    for row in f.itertuples():
        per = parse_period(row.period)
        own = per.shifted(ahead)  # the period the as-of date lies in (the weekly calls')
        assert row.as_of == weekly_call(own, row.weeks_before_end)
        assert row.as_of < per.start and row.won == 0.0
        match = now.points[
            (now.points["method"] == "forecast")
            & (now.points["period"] == own.label)
            & (now.points["weeks_before_end"] == row.weeks_before_end)
        ]
        if len(match):  # the same weekly call of the current-period backtest
            assert match["as_of"].iloc[0] == row.as_of
            same += 1
    assert same >= 2
    # The forecast is of the backtested period, made as of that earlier call.
    one = f.iloc[0]
    light = CFG.model_copy(update={"max_grid_cells": CFG.backtest_grid_cells})
    direct = forecast(con_of(frames), as_of=one["as_of"], period=one["period"], config=light)
    assert one["expected"] == pytest.approx(direct.total.expected)


def test_periods_ahead_keep_only_periods_whose_earliest_as_of_can_learn(frames: Frames) -> None:
    history = DealHistory(con_of(frames), Vocabulary())
    first = history.data_start
    now = backtest_periods(history, 6, 13)
    ahead = backtest_periods(history, 6, 13, ahead=1)
    assert [p.label for p in now] == ["2024Q3", "2024Q4", "2025Q1", "2025Q2", "2025Q3"]
    assert [p.label for p in ahead] == ["2025Q1", "2025Q2", "2025Q3"]
    for p in ahead:  # one horizon (period end - as-of) of history before the earliest as-of
        as_of = weekly_call(p.shifted(1), 13)
        assert as_of - (p.end - as_of) > first
    dropped = parse_period("2024Q4")  # its current-quarter forecast could learn
    as_of = weekly_call(dropped.shifted(1), 13)
    assert as_of - (dropped.end - as_of) <= first
    assert [p.label for p in backtest_periods(history, 6, 13, ahead=2)] == ["2025Q3"]
    with pytest.raises(LeadmlError, match="no complete quarter.*--ahead"):
        backtest_periods(history, 2, 13, ahead=4)


def test_the_quarter_backtest_keeps_its_goals_and_periods(frames: Frames) -> None:
    r = backtest(con_of(frames), config=CFG, quarters=1, weeks=4)
    assert r.period_months == 3 and r.periods_ahead == 0
    assert set(r.points["quarter"]) == {"2025Q3"} == set(r.points["period"])
    assert "coverage_p10_p90" in r.goals and "mape_vs_stage_weighted_at_4w" in r.goals


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"quarters": 2, "months": 2}, "--quarters and --months"),
        ({"months": 3, "weeks": 6}, "--weeks 6 with --months.*1..5"),
        ({"ahead": 5}, "--ahead 5"),
        ({"weeks": 14}, "--weeks 14"),
    ],
)
def test_impossible_plans_are_clear_errors(kw: dict[str, int], match: str) -> None:
    with pytest.raises(LeadmlError, match=match):
        backtest_plan(CFG, **kw)


def test_the_plan_defaults_to_quarters_and_to_four_weeks_for_months() -> None:
    assert backtest_plan(CFG).period_months == 3 and backtest_plan(CFG).weeks == 13
    plan = backtest_plan(CFG, months=12, ahead=1)
    assert (plan.period_months, plan.periods, plan.weeks, plan.ahead) == (1, 12, 4, 1)
    assert not plan.current_quarter and backtest_plan(CFG, quarters=2).current_quarter
