"""The IS call list: capacity, routing, order, continuity (pure DataFrames)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadml.batch.calllist import build_call_list, rep_capacity, week_start

AS_OF = pd.Timestamp("2025-03-12", tz="UTC")  # a Wednesday


def _reps() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rep_id": ["is1", "is2", "is3", "fs1"],
            "role": ["IS", "IS", "IS", "FS"],
            "team": ["is-ent", "is-smb", "is-smb", "fs-ent"],
            "segment": ["enterprise", "smb", "smb", "enterprise"],
            "weekly_slots": [10, 10, 5, 80],
        }
    )


def _leads(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "lead_id": [f"L{i:04d}" for i in range(n)],
            "expected_conversions": rng.uniform(0, 1, n),
            "status": rng.choice(["mql", "recycled", "nurturing", "sql"], n),
            "segment": rng.choice(["enterprise", "smb", "mid_market"], n),
        }
    )


def _no_activities() -> pd.DataFrame:
    return pd.DataFrame(
        {"ts": pd.Series([], dtype="datetime64[ns, UTC]"), "rep_id": [], "lead_id": []}
    )


def test_week_start_is_monday_midnight_utc() -> None:
    assert week_start(AS_OF) == pd.Timestamp("2025-03-10", tz="UTC")
    assert week_start(pd.Timestamp("2025-03-16 23:00", tz="UTC")) == pd.Timestamp(
        "2025-03-10", tz="UTC"
    )


def test_capacity_subtracts_only_this_weeks_activities_before_as_of() -> None:
    acts = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                [
                    "2025-03-10 09:00",  # this week, before D: booked
                    "2025-03-11 10:00",  # booked
                    "2025-03-07 10:00",  # last week: not booked
                    "2025-03-12 10:00",  # at/after D: never read
                    "2025-03-13 10:00",
                ],
                utc=True,
            ),
            "rep_id": ["is1", "is1", "is1", "is1", "is2"],
            "lead_id": ["a", "b", "c", "d", "e"],
        }
    )
    cap = rep_capacity(_reps(), acts, AS_OF).set_index("rep_id")
    assert "fs1" not in cap.index  # only inside sales gets a call list
    assert cap.loc["is1", "booked"] == 2
    assert cap.loc["is2", "booked"] == 0
    assert cap.loc["is1", "capacity"] == 8
    # one working day: ceil(slots / 5) bounds the list
    one_day = rep_capacity(_reps(), acts, AS_OF, days=1).set_index("rep_id")
    assert one_day.loc["is1", "capacity"] == 2 and one_day.loc["is3", "capacity"] == 1


def test_on_a_weekend_the_list_is_for_next_week() -> None:
    """A Saturday run cuts Monday's list: this week's full bookings do not count."""
    acts = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2025-03-10 09:00"] * 10 + ["2025-03-14 09:00"], utc=True),
            "rep_id": ["is1"] * 10 + ["is2"],
            "lead_id": [f"y{i}" for i in range(11)],
        }
    )
    friday = rep_capacity(_reps(), acts, pd.Timestamp("2025-03-14 18:00", tz="UTC"))
    assert friday.set_index("rep_id").loc["is1", "capacity"] == 0
    for weekend in ("2025-03-15", "2025-03-16 20:00"):
        cap = rep_capacity(_reps(), acts, pd.Timestamp(weekend, tz="UTC")).set_index("rep_id")
        assert cap["booked"].eq(0).all(), weekend
        assert cap.loc["is1", "capacity"] == 10 and cap.loc["is2", "capacity"] == 10
    calls = build_call_list(_leads(200), _reps(), acts, pd.Timestamp("2025-03-15", tz="UTC"))
    assert "is1" in set(calls.calls["rep_id"])


def test_list_respects_capacity_routing_and_order() -> None:
    leads = _leads(300)
    result = build_call_list(leads, _reps(), _no_activities(), AS_OF)
    calls = result.calls
    per_rep = calls.groupby("rep_id").size()
    cap = result.capacity.set_index("rep_id")["capacity"]
    assert (per_rep <= cap.reindex(per_rep.index)).all()
    assert per_rep.to_dict() == {"is1": 10, "is2": 10, "is3": 5}  # plenty of leads: every slot used
    assert calls["lead_id"].is_unique
    assert set(calls["status"]) <= {"mql", "recycled"}
    assert (calls["segment"] == calls["rep_segment"]).all()  # routed within segment
    assert "mid_market" not in set(calls["segment"])  # no IS rep covers it
    # highest expected conversions first: within a segment, nobody left out beats someone called
    for seg, group in calls.groupby("segment"):
        eligible = leads[(leads["segment"] == seg) & leads["status"].isin(["mql", "recycled"])]
        left_out = eligible[~eligible["lead_id"].isin(group["lead_id"])]
        assert left_out["expected_conversions"].max() <= group["expected_conversions"].min()
    # ranks and call dates: 1..n per rep, ceil(slots/5) calls per working day from D
    assert (
        calls.groupby("rep_id")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1)))
    ).all()
    is1 = calls[calls["rep_id"] == "is1"]
    assert is1["call_date"].value_counts().max() == 2
    assert min(is1["call_date"]) == AS_OF.date()
    assert all(pd.Timestamp(d).weekday() < 5 for d in calls["call_date"])


def test_recycled_leads_are_eligible_and_team_routing_works() -> None:
    leads = pd.DataFrame(
        {
            "lead_id": ["r1", "m1", "n1"],
            "expected_conversions": [0.9, 0.5, 0.99],
            "status": ["recycled", "mql", "nurturing"],
            "team": ["is-smb", "is-ent", "is-smb"],
        }
    )
    result = build_call_list(leads, _reps(), _no_activities(), AS_OF, assign_by="team")
    got = result.calls.set_index("lead_id")["rep_id"].to_dict()
    assert set(got) == {"r1", "m1"}
    assert got["m1"] == "is1"
    assert got["r1"] in {"is2", "is3"}


def test_continuity_keeps_a_lead_with_the_rep_who_last_worked_it() -> None:
    acts = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2025-03-01 09:00", "2025-03-05 09:00"], utc=True),
            "rep_id": ["is2", "is3"],
            "lead_id": ["x", "x"],
        }
    )
    leads = pd.DataFrame(
        {"lead_id": ["x"], "expected_conversions": [0.4], "status": ["mql"], "segment": ["smb"]}
    )
    calls = build_call_list(leads, _reps(), acts, AS_OF).calls
    assert calls.loc[0, "rep_id"] == "is3"  # the latest IS touch, although is2 has more slots
    assert bool(calls.loc[0, "same_rep_as_last_touch"])


def test_a_full_week_gives_no_calls() -> None:
    acts = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2025-03-10 09:00"] * 10, utc=True),
            "rep_id": ["is1"] * 10,
            "lead_id": [f"y{i}" for i in range(10)],
        }
    )
    calls = build_call_list(_leads(200), _reps(), acts, AS_OF).calls
    assert "is1" not in set(calls["rep_id"])
    assert "enterprise" not in set(calls["segment"])


@settings(max_examples=40, deadline=None)
@given(
    n_leads=st.integers(0, 120),
    slots=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    booked=st.lists(st.integers(0, 40), min_size=6, max_size=6),
    generalist=st.booleans(),
    days=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_never_exceeds_capacity_and_never_leaves_team(
    n_leads: int, slots: list[int], booked: list[int], generalist: bool, days: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    segs = ["enterprise", "smb", "mid_market"]
    reps = pd.DataFrame(
        {
            "rep_id": [f"r{i}" for i in range(len(slots))],
            "role": "IS",
            "team": "t",
            "segment": [
                None if (generalist and i == 0) else segs[i % 3] for i in range(len(slots))
            ],
            "weekly_slots": slots,
        }
    )
    acts = pd.DataFrame(
        {
            "ts": [
                AS_OF - pd.Timedelta(hours=1 + k)
                for i, b in enumerate(booked[: len(slots)])
                for k in range(b)
            ],
            "rep_id": [f"r{i}" for i, b in enumerate(booked[: len(slots)]) for _ in range(b)],
            "lead_id": None,
        }
    )
    leads = _leads(n_leads, seed)
    leads["segment"] = rng.choice(segs, n_leads)
    result = build_call_list(leads, reps, acts, AS_OF, days=days)
    calls, cap = result.calls, result.capacity.set_index("rep_id")
    counts = calls.groupby("rep_id").size()
    for rep, n in counts.items():
        assert n <= cap.loc[rep, "capacity"]
        assert n <= max(0, cap.loc[rep, "weekly_slots"] - cap.loc[rep, "booked"])
    rep_seg = reps.set_index("rep_id")["segment"]
    for rep, seg in zip(calls["rep_id"], calls["segment"], strict=True):
        assert pd.isna(rep_seg[rep]) or rep_seg[rep] == seg
    assert calls["lead_id"].is_unique


def test_unknown_routing_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="team"):
        build_call_list(_leads(5), _reps(), _no_activities(), AS_OF, assign_by="team")


def test_a_lead_takes_the_policys_slots_per_lead() -> None:
    """With two slots per hand-off (a call and its follow-up, as /handoff counts them), a
    rep with 10 slots takes 5 leads, and 2 slots a day make one call a day."""
    one = build_call_list(_leads(200), _reps(), _no_activities(), AS_OF)
    two = build_call_list(_leads(200), _reps(), _no_activities(), AS_OF, slots_per_lead=2)
    per_rep_one = one.calls.groupby("rep_id").size()
    per_rep_two = two.calls.groupby("rep_id").size()
    assert per_rep_one.to_dict() == {"is1": 10, "is2": 10, "is3": 5}
    assert per_rep_two.to_dict() == {"is1": 5, "is2": 5, "is3": 2}
    assert two.capacity.set_index("rep_id")["leads"].to_dict() == {"is1": 5, "is2": 5, "is3": 2}
    # still the best eligible leads of each segment, as many as the places
    leads = _leads(200)
    pool = leads[leads["status"].isin(["mql", "recycled"])]
    for segment, places in (("enterprise", 5), ("smb", 7)):
        best = pool[pool["segment"] == segment].nlargest(places, "expected_conversions")
        got = two.calls[two.calls["segment"] == segment]["lead_id"]
        assert set(got) == set(best["lead_id"])
    dates = two.calls[two.calls["rep_id"] == "is1"]["call_date"].tolist()
    assert len(set(dates)) == 5  # 10 slots a week = 2 a day = one lead a day
    with pytest.raises(ValueError, match="slots_per_lead"):
        build_call_list(_leads(5), _reps(), _no_activities(), AS_OF, slots_per_lead=0)
