"""Hand-off policy and grades."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leadml.modeling.policy import free_slots, grade, handoff, handoff_at_precision, lead_capacity
from leadml.modeling.spec import PolicySpec


def test_capacity_is_is_reps_times_slots_minus_booked() -> None:
    policy = PolicySpec(slots_per_lead=2, capacity_per_week=7)
    reps = pd.DataFrame({"role": ["IS", "IS", "FS"], "weekly_slots": [80, 60, 80]})
    assert free_slots(reps, policy, booked_slots=40) == 100
    assert lead_capacity(reps, policy, booked_slots=40) == 50
    assert lead_capacity(reps, policy, booked_slots=500) == 0
    assert lead_capacity(None, policy) == 7  # no reps table: the spec's fallback


def test_handoff_fills_capacity_with_the_highest_readiness() -> None:
    policy = PolicySpec(slots_per_lead=2, recycle_below=0.02)
    scores = pd.DataFrame(
        {"lead_id": list("abcdef"), "readiness": [0.1, 0.5, 0.01, 0.3, 0.2, 0.05]}
    )
    out = handoff(scores, capacity_slots=6, policy=policy)
    chosen = set(out.loc[out["decision"] == "handoff", "lead_id"])
    assert chosen == {"b", "d", "e"}
    assert out.set_index("lead_id").loc["c", "decision"] == "recycle"
    assert out.set_index("lead_id").loc["a", "decision"] == "nurture"
    assert out["expected_conversions"].sum() == pytest.approx(1.0)
    assert list(out.sort_values("rank")["lead_id"]) == list("bdeafc")


def test_handoff_with_per_lead_slots_maximises_conversions_per_slot() -> None:
    policy = PolicySpec(slots_per_lead=1)
    scores = pd.DataFrame({"readiness": [0.6, 0.4, 0.35], "slots": [4.0, 1.0, 1.0]})
    out = handoff(scores, capacity_slots=3, policy=policy, slots="slots")
    # 0.4 and 0.35 per slot beat 0.15 per slot; the big lead no longer fits
    assert list(out["decision"]) == ["nurture", "handoff", "handoff"]


def test_precision_target_keeps_expected_precision_above_target() -> None:
    policy = PolicySpec()
    scores = pd.DataFrame({"readiness": [0.9, 0.5, 0.3, 0.2, 0.1, 0.05]})
    out = handoff_at_precision(scores, 0.4, policy)
    taken = out[out["decision"] == "handoff"]["readiness"]
    assert len(taken) == 5 and taken.mean() >= 0.4  # adding 0.05 would drop it below 0.4
    assert handoff_at_precision(scores, 0.95, policy)["decision"].eq("handoff").sum() == 0


def test_grades_follow_cutoffs_and_bad_cutoffs_are_rejected() -> None:
    cut = {"A": 0.3, "B": 0.1, "C": 0.03}
    assert list(grade(np.array([0.5, 0.3, 0.2, 0.05, 0.01]), cut)) == ["A", "A", "B", "C", "D"]
    with pytest.raises(ValueError, match="A > B > C"):
        PolicySpec(grade_cutoffs={"A": 0.1, "B": 0.2, "C": 0.01})


def test_tied_readiness_is_handed_off_by_lead_id_whatever_the_row_order() -> None:
    """Isotonic calibration leaves few distinct readiness values: 6 leads at exactly
    0.395833 for 4 places got different hand-offs in forward and reversed order. Ties go
    by lead_id, as the nightly call list orders them."""
    policy = PolicySpec(slots_per_lead=2, recycle_below=0.01)
    ids = ["L-05", "L-02", "L-06", "L-01", "L-04", "L-03", "L-00"]
    readiness = [0.395833] * 6 + [0.9]
    scores = pd.DataFrame({"lead_id": ids, "readiness": readiness})
    outs = [
        handoff(frame, capacity_slots=10, policy=policy).set_index("lead_id")
        for frame in (scores, scores.iloc[::-1], scores.sample(frac=1, random_state=3))
    ]
    for out in outs:
        handed = sorted(out.index[out["decision"] == "handoff"])
        assert handed == ["L-00", "L-01", "L-02", "L-03", "L-04"]
        ranks = out["rank"].sort_values()
        assert list(ranks.index) == ["L-00", "L-01", "L-02", "L-03", "L-04", "L-05", "L-06"]
    # the precision rule ranks the same way
    for frame in (scores, scores.iloc[::-1]):
        ranked = handoff_at_precision(frame, 0.0, policy).sort_values("rank")
        assert list(ranked["lead_id"]) == ["L-00", "L-01", "L-02", "L-03", "L-04", "L-05", "L-06"]


def test_without_a_lead_id_column_ties_keep_the_row_order() -> None:
    policy = PolicySpec(slots_per_lead=1)
    out = handoff(pd.DataFrame({"readiness": [0.2, 0.2, 0.5]}), capacity_slots=2, policy=policy)
    assert list(out["rank"]) == [2, 3, 1]
    assert list(out["decision"]) == ["handoff", "nurture", "handoff"]
