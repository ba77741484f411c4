"""The forecast on hand-built deal books: parts, point mass, probability inputs, periods,
targets and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leadml.config import ForecastConfig, Vocabulary
from leadml.contracts import connect
from leadml.errors import LeadmlError
from leadml.forecast.deals import DealHistory, parse_period, same_moment
from leadml.forecast.forecast import forecast
from leadml.sources import frames_source

UTC = "UTC"


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def book(
    rows: list[tuple[str, str, str, float, str]],
    owners: dict[str, str],
    targets: list[tuple[str, str, str | None, str | None, float]] | None = None,
) -> dict[str, pd.DataFrame]:
    """rows: (opportunity_id, ts, stage, amount, expected_close_date); owners: deal -> rep."""
    hist = pd.DataFrame(
        rows, columns=["opportunity_id", "ts", "stage", "amount", "expected_close_date"]
    )
    hist["ts"] = pd.to_datetime(hist["ts"], utc=True)
    hist["expected_close_date"] = pd.to_datetime(hist["expected_close_date"], utc=True)
    first = hist.groupby("opportunity_id")["ts"].min()
    reps = pd.DataFrame(
        {
            "rep_id": ["r1", "r2"],
            "role": "FS",
            "team": ["east", "west"],
            "segment": ["smb", "enterprise"],
        }
    )
    seg = dict(zip(reps["rep_id"], reps["segment"], strict=True))
    opps = pd.DataFrame(
        {
            "opportunity_id": first.index,
            "account_id": "a1",
            "owner_id": [owners[o] for o in first.index],
            "created_at": first.to_numpy(),
            "amount": 1.0,
            "segment": [seg[owners[o]] for o in first.index],
        }
    )
    t = pd.DataFrame(
        targets or [], columns=["period_start", "period_end", "team", "segment", "amount"]
    )
    return {
        "accounts": pd.DataFrame(
            {"account_id": ["a1"], "segment": ["smb"], "created_at": [ts("2020-01-01")]}
        ),
        "leads": pd.DataFrame(
            {"lead_id": ["l1"], "account_id": ["a1"], "created_at": [ts("2020-01-01")]}
        ),
        "opportunities": opps,
        "opportunity_history": hist,
        "reps": reps,
        "targets": t,
    }


def con_of(frames: dict[str, pd.DataFrame]):  # noqa: ANN201
    con, _ = connect(frames_source(frames), Vocabulary())
    return con


ROWS = [
    ("w1", "2026-09-01", "evaluation", 500.0, "2026-10-15"),
    ("w1", "2026-10-05", "closed_won", 600.0, "2026-10-05"),  # won in Q4 before as-of: certain
    ("o1", "2026-09-10", "negotiation", 1000.0, "2026-11-30"),
    ("o1", "2026-10-20", "negotiation", 1200.0, "2026-12-10"),  # latest amount before as-of
    ("o2", "2026-09-15", "evaluation", 3000.0, "2027-01-20"),
    ("l1", "2026-09-01", "follow_up", 800.0, "2026-10-30"),
    ("l1", "2026-10-01", "closed_lost", 800.0, "2026-10-30"),
    (
        "late",
        "2026-11-05",
        "approval",
        9000.0,
        "2026-11-20",
    ),  # created on the as-of day: not yet visible
]
OWNERS = {"w1": "r1", "o1": "r1", "o2": "r2", "l1": "r2", "late": "r1"}
TARGETS = [
    ("2026-10-01", "2027-01-01", "east", None, 2000.0),
    ("2026-10-01", "2027-01-01", "west", None, 4000.0),
]
AS_OF = "2026-11-05"


def test_certain_probabilities_give_a_point_mass_with_all_parts() -> None:
    probs = pd.DataFrame({"opportunity_id": ["o1", "o2"], "p_won_by": [1.0, 0.0]})
    r = forecast(
        con_of(book(ROWS, OWNERS, TARGETS)),
        as_of=AS_OF,
        period="2026Q4",
        deal_probabilities=probs,
        by="team",
    )
    t = r.total
    assert t.won == 600.0  # the amount on the win row
    assert t.open_expected == pytest.approx(1200.0)  # o1's latest amount before the as-of date
    assert t.new_expected == 0.0  # no earlier quarter to run-rate from: and it says so
    assert any("counts no revenue from new deals" in n for n in r.notes)
    # BYOD review: a forecast on a handful of wins looked as sure as any other
    assert any("only 1 deal(s) were won in the year before --as-of" in n for n in r.notes)
    assert t.p10 == t.p50 == t.p90
    assert abs(t.p50 - 1800.0) <= t.error_bound < 0.01
    assert t.open_deals == 2 and t.open_pipeline == pytest.approx(4200.0)
    assert t.period_pipeline == pytest.approx(1200.0)  # o2 is expected to close after the quarter
    assert t.target == pytest.approx(6000.0) and t.gap_to_target == pytest.approx(4200.0)
    assert t.p_reach_target == 0.0
    assert t.coverage == pytest.approx(1200.0 / (6000.0 - 600.0))
    east = next(g for g in r.groups if g.group == "east")
    assert (east.won, east.expected, east.target) == (600.0, pytest.approx(1800.0), 2000.0)


def test_probabilities_from_a_callable_are_asked_point_in_time() -> None:
    asked: list[tuple[pd.Timestamp, pd.Timestamp]] = []

    def source(con, as_of, period_end):  # noqa: ANN001, ANN202
        asked.append((as_of, period_end))
        return pd.DataFrame({"opportunity_id": ["o1", "o2"], "p_won_by": [0.5, 0.5]})

    r = forecast(
        con_of(book(ROWS, OWNERS)), as_of=AS_OF, period="2026Q4", deal_probabilities=source
    )
    assert asked[0] == (ts(AS_OF), ts("2027-01-01"))
    assert all(
        a < ts(AS_OF) for a, _ in asked[1:]
    )  # spread calibration replays earlier moments only
    assert r.total.expected == pytest.approx(600.0 + 0.5 * 1200 + 0.5 * 3000)
    assert r.probability_source == "source"


def test_a_future_period_counts_only_wins_inside_it() -> None:
    def by_end(con, as_of, period_end):  # noqa: ANN001, ANN202
        p = 0.9 if period_end > ts("2027-01-01") else 0.6  # 0.6 already by the start of 2027Q1
        return pd.DataFrame({"opportunity_id": ["o1", "o2"], "p_won_by": [p, p]})

    r = forecast(
        con_of(book(ROWS, OWNERS)), as_of=AS_OF, period="2027Q1", deal_probabilities=by_end
    )
    assert r.total.won == 0.0
    assert r.total.open_expected == pytest.approx(0.3 * (1200 + 3000))


def test_missing_or_invalid_probabilities_are_named() -> None:
    con = con_of(book(ROWS, OWNERS))
    with pytest.raises(LeadmlError, match="miss 1 deal"):
        forecast(
            con,
            as_of=AS_OF,
            period="2026Q4",
            deal_probabilities=pd.DataFrame({"opportunity_id": ["o1"], "p_won_by": [0.2]}),
        )
    with pytest.raises(LeadmlError, match=r"outside \[0, 1\]"):
        forecast(
            con,
            as_of=AS_OF,
            period="2026Q4",
            deal_probabilities=pd.DataFrame(
                {"opportunity_id": ["o1", "o2"], "p_won_by": [0.2, 1.5]}
            ),
        )
    with pytest.raises(LeadmlError, match="p_won_by"):
        forecast(
            con,
            as_of=AS_OF,
            period="2026Q4",
            deal_probabilities=pd.DataFrame({"opportunity_id": ["o1", "o2"], "score": [0.2, 0.5]}),
        )


@pytest.mark.parametrize(
    ("as_of", "period", "match"),
    [
        (AS_OF, "2026Q5", "not a period"),
        (AS_OF, "2026-13", "not a period"),
        (AS_OF, "Q4", "not a period"),
        ("2026-12-01", "2026Q4", "after the end of the data"),
        (AS_OF, "2026Q3", "ended on 2026-10-01"),
        (AS_OF, "2026-10", "ended"),
        ("2026-08-01", "2026Q4", "not after the deal history starts \\(2026-09-01"),
        ("11/05/2026", "2026Q4", "not a date in ISO form"),
        (AS_OF, "", "not a period"),
        # deals open 72 days before an earlier period's end, or before 2026-09-01: none
        ("2026-10-20", "2026Q4", "choose --as-of 2026-11-02 or later"),
    ],
)
def test_bad_requests_are_clear_errors(as_of: str, period: str, match: str) -> None:
    with pytest.raises(LeadmlError, match=match):
        forecast(con_of(book(ROWS, OWNERS)), as_of=as_of, period=period)


def test_bad_grouping_is_a_clear_error() -> None:
    with pytest.raises(LeadmlError, match="team, segment, owner"):
        forecast(con_of(book(ROWS, OWNERS)), as_of=AS_OF, period="2026Q4", by="region")


def test_periods_parse_to_utc_half_open_ranges() -> None:
    q = parse_period("2026q4")
    assert (q.start, q.end, q.label) == (ts("2026-10-01"), ts("2027-01-01"), "2026Q4")
    m = parse_period("2026-12")
    assert (m.start, m.end, m.label) == (ts("2026-12-01"), ts("2027-01-01"), "2026-12")
    assert q.shifted(1).label == "2026Q3" and q.shifted(4).label == "2025Q4"


def test_targets_are_prorated_and_inclusive_ends_read_as_whole_days() -> None:
    targets = [
        ("2026-10-01", "2026-12-31", "east", None, 9200.0),  # inclusive end (midnight of last day)
        ("2026-10-01", "2027-01-01", None, "smb", 100.0),
    ]
    h = DealHistory(con_of(book(ROWS, OWNERS, targets)), Vocabulary())
    assert h.target(parse_period("2026Q4"), None)["all"] == pytest.approx(9200.0)
    assert h.target(parse_period("2026-11"), None)["all"] == pytest.approx(9200.0 * 30 / 92)
    assert h.target(parse_period("2026Q4"), "segment")["smb"] == pytest.approx(100.0)
    assert h.target(parse_period("2026Q4"), "owner").empty


def test_empirical_rates_learn_from_earlier_quarters_only() -> None:
    # Three earlier quarters in which every negotiation deal open six weeks before the
    # end was won, and every evaluation deal lost; the current quarter has one of each.
    rows = []
    for q, (_start, end) in enumerate(
        [("2026-01-01", "2026-04-01"), ("2026-04-01", "2026-07-01"), ("2026-07-01", "2026-10-01")]
    ):
        e = ts(end)
        t = e - pd.Timedelta(days=70)
        rows += [
            (f"n{q}", str(t.date()), "negotiation", 100.0, str((e - pd.Timedelta(days=5)).date())),
            (f"n{q}", str((e - pd.Timedelta(days=10)).date()), "closed_won", 100.0, end),
            (f"e{q}", str(t.date()), "evaluation", 100.0, str((e - pd.Timedelta(days=5)).date())),
            (f"e{q}", str((e - pd.Timedelta(days=10)).date()), "closed_lost", 100.0, end),
        ]
    rows += [
        ("nx", "2026-10-20", "negotiation", 100.0, "2026-12-20"),
        ("ex", "2026-10-20", "evaluation", 100.0, "2026-12-20"),
        ("zz", "2026-11-05", "follow_up", 100.0, "2027-03-01"),
    ]  # data runs past the as-of date
    owners = {r[0]: "r1" for r in rows}
    r = forecast(con_of(book(rows, owners)), as_of="2026-11-01", period="2026Q4")
    p = r.deals.set_index("opportunity_id")["p_won_by"]
    assert p["nx"] > 0.6 and p["ex"] < 0.4
    assert np.isclose(r.total.open_expected, 100 * (p["nx"] + p["ex"]))


def test_dispersion_of_poisson_like_counts_is_exactly_zero() -> None:
    from leadml.forecast.newdeals import _dispersion

    # var == mean here; rounding once gave 5e-16, read as an (ill-conditioned) NB.
    assert _dispersion(np.array([0, 0, 1])) == 0.0
    assert _dispersion(np.array([3, 3, 3, 3])) == 0.0  # under-dispersed: Poisson
    assert _dispersion(np.array([0, 0, 6])) == pytest.approx((12 - 2) / 4)


def test_a_future_period_drops_deals_expected_to_close_before_it() -> None:
    # o1 (1200, expected 2026-12-10) will most likely be won this quarter; o2 (3000,
    # expected 2027-01-20) in the next one.
    by = {
        ts("2027-01-01"): {"o1": 0.8, "o2": 0.1},  # P(won before 2027Q1 starts)
        ts("2027-04-01"): {"o1": 0.85, "o2": 0.6},  # P(won before it ends)
    }

    def source(con, as_of, period_end):  # noqa: ANN001, ANN202
        p = by[period_end]
        return pd.DataFrame({"opportunity_id": list(p), "p_won_by": list(p.values())})

    r = forecast(
        con_of(book(ROWS, OWNERS, TARGETS)),
        as_of=AS_OF,
        period="2027Q1",
        deal_probabilities=source,
    )
    p = r.deals.set_index("opportunity_id")["p_won_by"]
    assert p["o1"] == pytest.approx(0.05) and p["o2"] == pytest.approx(0.5)
    assert r.total.open_expected == pytest.approx(0.05 * 1200 + 0.5 * 3000)
    assert r.total.period_pipeline == pytest.approx(3000.0)  # o1 is expected in 2026Q4
    # A DataFrame of P(won by the period end) cannot say what is won before the start.
    frame = pd.DataFrame({"opportunity_id": ["o1", "o2"], "p_won_by": [0.85, 0.6]})
    with pytest.raises(LeadmlError, match="p_won_by_period_start"):
        forecast(con_of(book(ROWS, OWNERS)), as_of=AS_OF, period="2027Q1", deal_probabilities=frame)
    given = forecast(
        con_of(book(ROWS, OWNERS)),
        as_of=AS_OF,
        period="2027Q1",
        deal_probabilities=frame.assign(p_won_by_period_start=[0.8, 0.1]),
    )
    assert given.total.open_expected == pytest.approx(r.total.open_expected)


def test_probabilities_falling_over_time_are_a_clear_error() -> None:
    def falling(con, as_of, period_end):  # noqa: ANN001, ANN202
        p = 0.3 if period_end > ts("2027-01-01") else 0.7
        return pd.DataFrame({"opportunity_id": ["o1", "o2"], "p_won_by": [p, p]})

    with pytest.raises(LeadmlError, match="fall over time"):
        forecast(
            con_of(book(ROWS, OWNERS)), as_of=AS_OF, period="2027Q1", deal_probabilities=falling
        )


def test_earlier_quarters_are_read_at_the_same_weekly_call() -> None:
    """Monday 2024-09-23 is the second-to-last weekly call before the quarter ending on
    Tuesday 2024-10-01 (calls on 09-23 and 09-30 remain). In the quarter ending on Monday
    2024-07-01 the same call is Monday 06-17 (calls 06-17 and 06-24 remain), not the
    Sunday eight calendar days before the end."""
    as_of, end = ts("2024-09-23"), ts("2024-10-01")
    assert same_moment(as_of, end, ts("2024-07-01")) == ts("2024-06-17")
    assert same_moment(as_of, end, ts("2024-04-01")) == ts("2024-03-18")
    # A quarter ending on a Sunday: its last weekly call starts the Monday six days before.
    assert same_moment(as_of, end, ts("2023-10-01")) == ts("2023-09-18")


def test_a_month_reads_earlier_months_at_the_same_calendar_distance() -> None:
    """Review: a month's forecast moved up to 23% from Sunday to Monday with no new data:
    the same weekly call is up to 6 days off a 3-week horizon. Quarters keep the weekly
    call; months use the calendar distance to the end."""
    from leadml.forecast.forecast import empirical_rates, shock_moments

    rows = []
    for j, day in enumerate(pd.date_range("2025-01-06", "2026-11-01", freq="7D", tz=UTC)):
        d0, d1 = str(day.date()), str((day + pd.Timedelta(days=20)).date())
        rows += [(f"d{j}", d0, "evaluation", 100.0, d1), (f"d{j}", d1, "closed_won", 100.0, d1)]
    history = DealHistory(con_of(book(rows, {r[0]: "r1" for r in rows})), Vocabulary())
    cfg = ForecastConfig()
    assert empirical_rates(history, cfg, 1).align_weeks is False
    assert empirical_rates(history, cfg, 3).align_weeks is True
    as_of = ts("2026-11-08")  # a Sunday, 23 days before 2026-12-01
    month = parse_period("2026-11")
    moments = shock_moments(history, as_of, month, 8)
    assert len(moments) >= 4
    assert all(past.end - t_k == month.end - as_of for past, t_k in moments)
    quarter = parse_period("2026Q4")
    moments = shock_moments(history, as_of, quarter, 8)
    assert len(moments) >= 2
    call = ts("2026-11-02")  # the Monday of that Sunday's week (the weekly call)
    assert all(t_k == same_moment(call, quarter.end, past.end) for past, t_k in moments)


def _daily_book(until: str) -> list[tuple[str, str, str, float, str]]:
    """A deal created every day since 2024-06-03, open 15-94 days, two in three won; the
    history ends at ``until`` (deals still open then have no outcome row)."""
    rows: list[tuple[str, str, str, float, str]] = []
    stop = ts(until)
    for j, day in enumerate(pd.date_range("2024-06-03", until, freq="1D", tz=UTC)):
        closes = day + pd.Timedelta(days=15 + (j * 13) % 80)
        amount = 100.0 + 50 * (j % 7)
        d0, d1 = str(day.date()), str(closes.date())
        rows.append((f"d{j}", d0, "negotiation", amount, d1))
        if closes < stop:
            rows.append((f"d{j}", d1, "closed_won" if j % 3 else "closed_lost", amount, d1))
    return rows


def test_between_weekly_calls_a_quarter_moves_in_proportion_to_the_time_gone() -> None:
    """Audit: with no new data the default company's 2025Q3 forecast went 7.42M -> 7.59M
    -> 7.93M from Sunday to Tuesday (and the shock sd 0 -> 0.22 -> 0 between days): each
    weekday replayed its own moments of the earlier quarters. Now every day of a week
    replays its Monday call's moments, and moves from that call's rates to the next
    call's (to zero at the period end) in proportion to the time gone."""
    from leadml.forecast.deals import EmpiricalCloseRates

    rows = _daily_book("2026-10-25")  # the data ends on a Sunday
    con = con_of(book(rows, {r[0]: "r1" for r in rows}))
    rates = EmpiricalCloseRates(DealHistory(con, Vocabulary()), age_edges=(10_000,))
    end = ts("2027-01-01")  # a Friday

    def p(day: str) -> pd.Series:
        return rates(con, ts(day), end).set_index("opportunity_id")["p_won_by"]

    mon, nxt = p("2026-10-26"), p("2026-11-02")
    assert len(mon) > 20 and (mon - nxt).abs().max() > 0.01
    for k, day in enumerate(("2026-10-27", "2026-10-29", "2026-11-01"), start=1):
        w = {1: 1 / 7, 2: 3 / 7, 3: 6 / 7}[k]
        pd.testing.assert_series_equal(p(day), mon * (1 - w) + nxt * w, check_names=False)
    # the last, partial week: from Monday's rates to none left at the period end
    last = p("2026-12-28")
    pd.testing.assert_series_equal(p("2026-12-30"), last * 0.5, check_names=False)


def test_a_deal_open_at_as_of_gets_one_rate_however_the_start_is_given() -> None:
    """Review: in a quarter's first, partial week (2026Q4 starts on a Thursday) the
    forecast (period start given) replayed the period start's moments and the nightly
    fan (from as-of on) the Monday call's, and the memo answered whichever came first."""
    from leadml.forecast.deals import EmpiricalCloseRates

    rows = _daily_book("2026-10-04")
    con = con_of(book(rows, {r[0]: "r1" for r in rows}))
    history = DealHistory(con, Vocabulary())
    as_of, end = ts("2026-10-02"), ts("2027-01-01")

    def fresh(start: pd.Timestamp | None) -> pd.Series:
        rates = EmpiricalCloseRates(history, age_edges=(10_000,))
        return rates(con, as_of, end, start).set_index("opportunity_id")["p_won_by"]

    from_as_of = fresh(None)
    assert len(from_as_of) > 20
    for start in (as_of, ts("2026-10-01")):
        pd.testing.assert_series_equal(fresh(start), from_as_of)


@pytest.mark.parametrize("days_before", [1, 6, 7, 8, 13, 14, 30, 62, 91])
@pytest.mark.parametrize("hour", [0, 9])
def test_the_same_moment_keeps_weekday_and_weekly_calls_left(days_before: int, hour: int) -> None:
    end = ts("2025-10-01")  # a Wednesday
    as_of = end - pd.Timedelta(days=days_before) + pd.Timedelta(hours=hour)

    def calls_left(t: pd.Timestamp, e: pd.Timestamp) -> int:
        return len(pd.date_range(t, e - pd.Timedelta(microseconds=1), freq="7D"))

    for end_k in (ts("2025-07-01"), ts("2025-04-01"), ts("2024-10-01"), ts("2023-07-01")):
        t_k = same_moment(as_of, end, end_k)
        assert t_k.day_name() == as_of.day_name() and t_k.time() == as_of.time()
        assert calls_left(t_k, end_k) == calls_left(as_of, end)
        assert abs(t_k - (end_k - (end - as_of))) <= pd.Timedelta(days=6)
        assert t_k < end_k


def test_rates_from_as_of_count_wins_right_after_the_earlier_calls() -> None:
    """P(won by E) asked from the as-of date (the nightly fan) and from the period start
    are the same thing for a deal open at as-of. Thursday 2026-11-05 replays its week's
    Monday call (2026-11-02), whose earlier calls (Mondays 2026-08-03, 2026-05-04,
    2026-02-02) are 1-2 days after the same calendar date three, six, nine months
    back: a deal won two days after such a call counts as won."""
    from leadml.forecast.deals import EmpiricalCloseRates

    as_of, end = ts("2026-11-05"), ts("2027-01-01")
    rows = []
    for k in (1, 2, 3):
        t_k = same_moment(ts("2026-11-02"), end, end - pd.DateOffset(months=3 * k))
        opened, closed = (
            str((t_k - pd.Timedelta(days=30)).date()),
            str((t_k + pd.Timedelta(days=2)).date()),
        )
        rows += [
            (f"a{k}", opened, "negotiation", 100.0, closed),
            (f"a{k}", closed, "closed_won", 100.0, closed),
            (f"b{k}", opened, "negotiation", 100.0, closed),
            (f"b{k}", closed, "closed_lost", 100.0, closed),
        ]
    rows += [
        ("nx", "2026-10-20", "negotiation", 100.0, "2026-12-20"),
        ("zz", "2026-11-06", "follow_up", 100.0, "2027-03-01"),
    ]
    con = con_of(book(rows, {r[0]: "r1" for r in rows}))
    rates = EmpiricalCloseRates(DealHistory(con, Vocabulary()))
    from_as_of = rates(con, as_of, end).set_index("opportunity_id")["p_won_by"]
    from_start = rates(con, as_of, end, ts("2026-10-01")).set_index("opportunity_id")["p_won_by"]
    assert from_as_of["nx"] == pytest.approx(0.5)
    assert from_start["nx"] == pytest.approx(0.5)


def test_new_deal_velocity_compares_creation_per_day_now_and_before_each_window() -> None:
    from leadml.forecast.newdeals import _velocity_growth

    # smb: one deal a day through 2025, three a day in 2026; enterprise: one a day.
    days_2025 = pd.date_range("2025-01-01", "2025-12-31", freq="D", tz=UTC)
    days_2026 = pd.date_range("2026-01-01", "2026-06-30", freq="D", tz=UTC)
    seen = [*days_2025, *days_2026, *days_2026, *days_2026, *days_2025, *days_2026]
    seg = ["smb"] * (len(days_2025) + 3 * len(days_2026))
    seg += ["enterprise"] * (len(days_2025) + len(days_2026))
    o = pd.DataFrame({"first_seen": seen, "segment": seg})
    # Before the window starts 2025-10-01 and 2025-07-01: one a day (the second span is
    # cut by the data's start on 2025-01-01 and counted per day of data, not of span).
    # The 182 days before 2026-07-01: 1 deal on 2025-12-31 + 3 x 181 in 2026; ten
    # pseudo-deals on each side.
    growth = _velocity_growth(
        o, ts("2026-07-01"), [ts("2025-10-01"), ts("2025-07-01")], ts("2025-01-01"), 182
    )
    assert growth["smb"] == pytest.approx((1 + 3 * 181 + 10) / (182 + 10))
    assert growth["enterprise"] == pytest.approx(1.0)
    assert _velocity_growth(o, ts("2026-07-01"), [ts("2025-10-01")], ts("2025-01-01"), 0) == {}


def _tripled_creation_book():  # noqa: ANN202
    """Deals created weekly, each won 35 days later: one a week in 2025H1, three a week
    from 2025-07 on; those that would be won from 2026-10-01 on are left out (none is
    open at that as-of date)."""
    rows = []
    for j, day in enumerate(pd.date_range("2025-01-01", "2026-09-30", freq="7D", tz=UTC)):
        for c in range(3 if day >= ts("2025-07-01") else 1):
            d0, d1 = str(day.date()), str((day + pd.Timedelta(days=35)).date())
            if d1 >= "2026-10-01":
                continue
            rows += [
                (f"d{j}_{c}", d0, "evaluation", 100.0, d1),
                (f"d{j}_{c}", d1, "closed_won", 100.0, d1),
            ]
    return con_of(book(rows, {r[0]: "r1" for r in rows}))


def test_the_creation_level_drift_per_quarter_is_what_chance_does_not_explain() -> None:
    from leadml.forecast.newdeals import _level_sd_per_quarter

    def seen(counts: list[int]) -> pd.DataFrame:
        starts = pd.date_range("2025-01-01", periods=len(counts), freq="QS", tz=UTC)
        days = [
            s + pd.Timedelta(days=10 + j % 60)
            for s, c in zip(starts, counts, strict=True)
            for j in range(c)
        ]
        return pd.DataFrame({"first_seen": days})

    # A partial first quarter (data from 2024-12-01) and a current quarter are left out;
    # the complete ones, 2025Q1..2025Q4, alternate 100 / 200 deals.
    december = pd.DataFrame({"first_seen": pd.date_range("2024-12-01", periods=7, tz=UTC)})
    o = pd.concat([december, seen([100, 200, 100, 200, 50])])
    first, as_of = ts("2024-12-01"), ts("2026-02-15")
    # E[dlog^2] = ln(200.5 / 100.5)^2; the counts' own noise 1/100.5 + 1/200.5 each change
    expected = np.sqrt(np.log(200.5 / 100.5) ** 2 - (1 / 100.5 + 1 / 200.5))
    assert _level_sd_per_quarter(o, first, as_of) == pytest.approx(expected)
    # steady counts: every change is chance, no drift
    steady = seen([400, 410, 395, 405, 400])
    assert _level_sd_per_quarter(steady, ts("2025-01-01"), ts("2026-02-15")) == 0.0
    # two complete quarters (one change) are too few to tell
    assert _level_sd_per_quarter(o, first, ts("2025-07-01")) == 0.0
    # a quarter without deals is a swing, not a reason to give up
    gap = seen([40, 0, 40, 40, 5])
    assert _level_sd_per_quarter(gap, ts("2025-01-01"), ts("2026-02-15")) > 1.0


def test_a_period_further_ahead_has_a_wider_new_deals_spread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The book of the far-ahead test: creation tripled in 2025Q3, so the run rate can
    move. The level sd of the new deals grows with the distance to the period, and the
    far period's P10-P90 is wider, relative to its expectation, than the next one's."""
    con = _tripled_creation_book()
    probs = pd.DataFrame(columns=["opportunity_id", "p_won_by", "p_won_by_period_start"])
    results = [
        forecast(con, as_of="2026-10-01", period=p, deal_probabilities=probs)
        for p in ("2026Q4", "2027Q1", "2027Q4")
    ]
    sds = [r.new_level_sd for r in results]
    assert 0 < sds[0] < sds[1] < sds[2]
    # d = distance to the middle of the creation span: 2027Q4's wins are created from
    # 35-ish days before its start, about 4.3 quarters from the as-of date
    assert sds[2] / sds[1] == pytest.approx(np.sqrt(4.3 / 1.3), rel=0.1)
    width = [(r.total.p90 - r.total.p10) / r.total.expected for r in results[1:]]
    assert width[1] > 1.2 * width[0]
    assert results[2].to_dict()["new_level_sd"] == sds[2]
    assert any("allowed to drift by about" in n for n in results[2].notes)
    # a creation rate that swung wildly is capped at a log-sd of 1 (a factor of e)
    import leadml.forecast.newdeals as newdeals

    monkeypatch.setattr(newdeals, "_level_sd_per_quarter", lambda *a: 3.0)
    capped = forecast(con, as_of="2026-10-01", period="2027Q4", deal_probabilities=probs)
    assert capped.new_level_sd == 1.0
    assert np.isfinite(capped.total.p90) and capped.total.p90 > results[2].total.p90


@pytest.mark.parametrize("grown", [False, True])
def test_new_deals_follow_the_deal_creation_velocity(grown: bool) -> None:
    """Two 100 deals created and won inside each of the last four quarters; other deals
    created weekly, three a week from 2026-04 on in the grown company."""
    rows = []
    for q_start in ("2025-10-01", "2026-01-01", "2026-04-01", "2026-07-01"):
        s = ts(q_start)
        for i in range(2):
            created, won = (
                str((s + pd.Timedelta(days=5)).date()),
                str((s + pd.Timedelta(days=40)).date()),
            )
            rows += [
                (f"w{q_start}{i}", created, "evaluation", 100.0, won),
                (f"w{q_start}{i}", won, "closed_won", 100.0, won),
            ]
    for j, day in enumerate(pd.date_range("2025-01-01", "2026-09-30", freq="7D", tz=UTC)):
        for c in range(3 if grown and day >= ts("2026-04-01") else 1):
            # open Wednesday to Tuesday: the Monday calls the close rates replay see them
            d0, d1 = str(day.date()), str((day + pd.Timedelta(days=6)).date())
            rows += [
                (f"f{j}_{c}", d0, "follow_up", 50.0, d1),
                (f"f{j}_{c}", d1, "closed_lost", 50.0, d1),
            ]
    rows += [("zz", "2026-10-02", "follow_up", 100.0, "2027-03-01")]
    con = con_of(book(rows, {r[0]: "r1" for r in rows}))
    expected = {}
    for days in (0, 182):
        cfg = ForecastConfig(new_deals_velocity_days=days, backtest_quarters=1)
        expected[days] = forecast(
            con, as_of="2026-10-01", period="2026Q4", config=cfg
        ).total.new_expected
    assert expected[0] == pytest.approx(200.0)  # two deals of 100 a quarter
    # 2027Q4: the quarters a year before it have not ended; the latest that have count.
    # 2026Q1's and 2025Q4's windows would start before the data: they start after its
    # first week, which still holds their wins' creation (35 days before the win).
    far = ForecastConfig(new_deals_velocity_days=0)
    ahead = forecast(con, as_of="2026-10-01", period="2027Q4", config=far)
    assert ahead.total.new_expected == pytest.approx(200.0) and ahead.new_deals_periods == 4
    assert not any("counts no revenue from new deals" in n for n in ahead.notes)
    if grown:
        assert expected[182] > 1.8 * expected[0]
    else:
        assert expected[182] == pytest.approx(expected[0], rel=0.1)  # weekly counts in 182 days


def test_a_period_far_ahead_carries_the_creation_rate_forward_without_compounding() -> None:
    """Deals created weekly, each won 35 days later: one a week in 2025H1, three a week
    from 2025-07 on. Every quarter from 2025Q4 on wins 3 x 13 deals of 100. Five quarters
    ahead the run rate is that, not the growth since 2025H1 compounded once more."""
    con = _tripled_creation_book()
    # no deal is open at the as-of date: only the new deals count
    probs = pd.DataFrame(columns=["opportunity_id", "p_won_by", "p_won_by_period_start"])
    recent = [
        forecast(con, as_of=a, period=p, deal_probabilities=probs).total.new_expected
        for a, p in [("2026-10-01", "2026Q4"), ("2026-10-01", "2027Q1")]
    ]
    far = forecast(con, as_of="2026-10-01", period="2027Q4", deal_probabilities=probs)
    assert far.new_deals_periods == 4  # 2026Q1 and 2025Q4 start after the first week
    assert recent[1] == pytest.approx(3900.0, rel=0.1)  # 39 wins of 100 a quarter
    assert far.total.new_expected == pytest.approx(recent[1], rel=0.1)
    assert not any("were won in the year before" in n for n in far.notes)  # 150 were


def test_a_month_learns_from_the_same_month_of_earlier_quarters() -> None:
    """Every month a deal of 100 is created on the 5th; it is won on the 25th in a
    quarter's last month and lost otherwise (wins bunch at quarter ends). A December deal
    is then as good as won, a November one as good as lost; the month before would say
    one in three for both."""
    rows = []
    for m in pd.date_range("2025-01-01", "2026-11-01", freq="MS", tz=UTC):
        d0, d1 = str((m + pd.Timedelta(days=4)).date()), str((m + pd.Timedelta(days=24)).date())
        end = "closed_won" if m.month % 3 == 0 else "closed_lost"
        rows += [(f"d{m:%Y%m}", d0, "evaluation", 100.0, d1), (f"d{m:%Y%m}", d1, end, 100.0, d1)]
    rows.append(("dec", "2026-12-05", "evaluation", 100.0, "2026-12-25"))
    con = con_of(book(rows, {r[0]: "r1" for r in rows}))
    cfg = ForecastConfig(new_deals_velocity_days=0)
    dec = forecast(con, as_of="2026-12-10", period="2026-12", config=cfg)
    nov = forecast(con, as_of="2026-11-10", period="2026-11", config=cfg)  # d202611 is open
    assert dec.total.open_expected > 90.0 and dec.total.open_deals == 1
    assert nov.total.open_expected < 10.0 and nov.total.open_deals == 1
    assert parse_period("2026-12").earlier(2).label == "2026-06"
    assert parse_period("2026Q4").earlier(2).label == "2026Q2"


def test_new_deals_of_the_groups_add_up_to_the_total() -> None:
    """r1 and r3 sell to smb: r1 creates and wins three 100 deals a quarter, r3 one 1,000
    deal (fewer than ten kept: a small group). Older 10,000 deals also win each quarter;
    they are not new, and must not set r3's deal size either."""
    rows = []
    for q_start in ("2025-10-01", "2026-01-01", "2026-04-01", "2026-07-01"):
        s = ts(q_start)
        created, won = s + pd.Timedelta(days=5), s + pd.Timedelta(days=40)
        for i, (owner, amount) in enumerate([("r1", 100.0)] * 3 + [("r3", 1000.0)]):
            oid = f"{owner}_{q_start}_{i}"
            rows += [
                (oid, str(created.date()), "evaluation", amount, str(won.date())),
                (oid, str(won.date()), "closed_won", amount, str(won.date())),
            ]
        old = f"old_{q_start}"
        rows += [
            (
                old,
                str((s - pd.Timedelta(days=150)).date()),
                "negotiation",
                10000.0,
                str(won.date()),
            ),
            (old, str(won.date()), "closed_won", 10000.0, str(won.date())),
        ]
    rows += [("zz", "2026-10-02", "follow_up", 100.0, "2027-03-01")]
    owners = {r[0]: (r[0].split("_")[0] if r[0].startswith("r") else "r1") for r in rows}
    frames = book(rows, {k: ("r1" if v == "r3" else v) for k, v in owners.items()})
    frames["reps"] = pd.concat(
        [
            frames["reps"],
            pd.DataFrame([{"rep_id": "r3", "role": "FS", "team": "east", "segment": "smb"}]),
        ],
        ignore_index=True,
    )
    opps = frames["opportunities"]
    opps["owner_id"] = opps["opportunity_id"].map(owners)
    cfg = ForecastConfig(new_deals_velocity_days=0)
    r = forecast(con_of(frames), as_of="2026-10-01", period="2026Q4", by="owner", config=cfg)
    groups = {g.group: g.new_expected for g in r.groups}
    assert r.total.new_expected == pytest.approx(4 * (3 * 100 + 1000) / 4)
    assert sum(groups.values()) == pytest.approx(r.total.new_expected)
    assert groups["r3"] == pytest.approx(r.total.new_expected / 4)


def test_given_probabilities_are_read_as_numbers_and_a_start_column_only_before_the_period() -> (
    None
):
    con = con_of(book(ROWS, OWNERS))
    frame = pd.DataFrame({"opportunity_id": ["o1", "o2"], "p_won_by": [0.3, 0.3]})
    plain = forecast(con, as_of=AS_OF, period="2026Q4", deal_probabilities=frame)
    # 2026Q4 is under way: a deal open at the as-of date was not won before its start
    with_start = frame.assign(p_won_by_period_start=[0.1, 0.1])
    started = forecast(con, as_of=AS_OF, period="2026Q4", deal_probabilities=with_start)
    assert started.total.open_expected == pytest.approx(plain.total.open_expected)
    assert plain.total.open_expected == pytest.approx(0.3 * (1200 + 3000))
    with pytest.raises(LeadmlError, match=r"p_won_by has 1 value.*'x'"):
        forecast(
            con,
            as_of=AS_OF,
            period="2026Q4",
            deal_probabilities=frame.astype({"p_won_by": object}).assign(p_won_by=["x", 0.3]),
        )


def test_the_earliest_as_of_an_error_names_works_and_the_day_before_does_not() -> None:
    con = con_of(book(ROWS, OWNERS))
    with pytest.raises(LeadmlError, match="choose --as-of 2026-11-02 or later"):
        forecast(con, as_of="2026-11-01", period="2026Q4")
    r = forecast(con, as_of="2026-11-02", period="2026Q4")
    assert r.total.open_expected >= 0 and r.probability_source == "empirical"
    # the fan's path leaves out the weeks that are too early instead of failing
    from leadml.forecast.forecast import forecast_path

    path = forecast_path(con, as_of="2026-11-05", period="2026Q4")
    assert path["as_of"].min() >= ts("2026-11-02") and path["as_of"].max() == ts("2026-11-05")


def test_the_nightly_snapshot_leaves_out_a_quarter_it_cannot_forecast_yet() -> None:
    from types import SimpleNamespace

    from leadml.batch.nightly import forecast_snapshot, forecast_source

    con = con_of(book(ROWS, OWNERS, TARGETS))
    settings = SimpleNamespace(
        forecast=ForecastConfig(),
        vocabulary=Vocabulary(),
        batch=SimpleNamespace(forecast_source="empirical"),
    )
    history = DealHistory(con, Vocabulary())
    t = ts(AS_OF)
    source, won_by = forecast_source(con, settings, history, t, None, None)  # type: ignore[arg-type]
    notes: list[str] = []
    table = forecast_snapshot(con, settings, history, t, source, won_by, notes=notes)
    # 2026Q4 is forecast (with its fan); 2027Q1 needs deals open five months before an
    # earlier quarter's end, which two months of history do not have
    assert set(table["period"]) == {"2026Q4"} and {"snapshot", "fan"} <= set(table["kind"])
    assert len(notes) == 1 and "2027Q1 left out" in notes[0] and "too far ahead" in notes[0]


def test_a_month_with_a_quarterly_target_says_it_is_prorated() -> None:
    """Review: a month's target is the quarter's cut by days, so every first month looked
    at risk and every third month safe, and nothing said so."""
    probs = pd.DataFrame({"opportunity_id": ["o1", "o2"], "p_won_by": [0.5, 0.5]})
    con = con_of(book(ROWS, OWNERS, TARGETS))
    month = forecast(con, as_of=AS_OF, period="2026-11", deal_probabilities=probs)
    assert month.total.target == pytest.approx(6000.0 * 30 / 92)
    assert any("2026-11's target is a longer target" in n for n in month.notes)
    quarter = forecast(con, as_of=AS_OF, period="2026Q4", deal_probabilities=probs)
    assert not any("prorated" in n for n in quarter.notes)
