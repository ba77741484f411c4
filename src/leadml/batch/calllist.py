"""The inside-sales call list: who calls which lead in the coming working days.

THE MODEL's inside sales is a matter of time management: one rep has about 80
thirty-minute slots a week, and the hand-off decision is which leads get them.
:func:`build_call_list` is a pure function over DataFrames:

- **Capacity** of an IS rep as of D: ``weekly_slots`` minus the slots already
  booked in D's week (the rep's activities with ``week_start <= ts < D``, one
  slot each; nothing at or after D is read), further bounded by the list's
  horizon (``days`` working days of ``ceil(weekly_slots / 5)`` slots). A lead on
  the list takes ``slots_per_lead`` slots (the readiness champion's hand-off policy:
  a call and its follow-up), as ``/handoff`` counts them.
- **Eligibility**: leads whose status as of D is one of ``statuses`` (MQLs and
  recycled leads by default), routed to IS reps of the lead's segment (or team).
  A rep with no segment (team) is a generalist and may take any lead.
- **Order**: highest expected conversions first (the calibrated readiness, so
  the sum over a rep's list is the conversions the list should produce). A lead
  goes to the rep who last worked it when that rep is eligible and has a slot
  left (continuity), else to the eligible rep with the most slots left.
- A rep's list never exceeds the rep's capacity; every lead appears at most once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

WORKING_DAYS = 5


@dataclass
class CallList:
    """The list (one row per lead to call) and the capacity it was cut to (one row per IS rep)."""

    calls: pd.DataFrame
    capacity: pd.DataFrame


def week_start(as_of: pd.Timestamp) -> pd.Timestamp:
    """Monday 00:00 UTC of the ISO week that holds ``as_of``."""
    day = (
        as_of.tz_convert("UTC").normalize()
        if as_of.tzinfo
        else as_of.tz_localize("UTC").normalize()
    )
    return day - pd.Timedelta(days=day.weekday())


def rep_capacity(
    reps: pd.DataFrame,
    activities: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    days: int = WORKING_DAYS,
    slots_per_lead: float = 1.0,
) -> pd.DataFrame:
    """Slots each IS rep has for the list as of ``as_of``, and the leads they hold.

    Columns: ``rep_id, team, segment, weekly_slots, booked, capacity`` (slots) and
    ``leads`` (``floor(capacity / slots_per_lead)``). ``booked``
    counts the rep's activities in ``[week_start(first working day), as_of)``: on a
    weekday that is this week so far; on a Saturday or Sunday the list is for the next
    week, which has nothing booked yet.
    """
    as_of = _utc(as_of)
    is_reps = reps.loc[reps["role"] == "IS", ["rep_id", "team", "segment", "weekly_slots"]].copy()
    is_reps = is_reps.drop_duplicates("rep_id").reset_index(drop=True)
    start = week_start(as_of)
    if as_of.weekday() >= WORKING_DAYS:  # the weekend: the list is for next Monday on
        start += pd.Timedelta(days=7)
    if len(activities):
        ts = pd.to_datetime(activities["ts"], utc=True)
        in_week = activities.loc[(ts >= start) & (ts < as_of), "rep_id"]
        booked = in_week.value_counts()
    else:
        booked = pd.Series(dtype="int64")
    is_reps["weekly_slots"] = is_reps["weekly_slots"].fillna(80).astype("int64")
    is_reps["booked"] = is_reps["rep_id"].map(booked).fillna(0).astype("int64")
    horizon = np.ceil(is_reps["weekly_slots"] * min(days, WORKING_DAYS) / WORKING_DAYS).astype(
        "int64"
    )
    left = (is_reps["weekly_slots"] - is_reps["booked"]).clip(lower=0)
    is_reps["capacity"] = np.minimum(left, horizon).astype("int64")
    is_reps["leads"] = np.floor(is_reps["capacity"] / slots_per_lead + 1e-9).astype("int64")
    return is_reps


def last_worked_by(activities: pd.DataFrame, reps: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """lead_id -> the IS rep whose activity on the lead is the latest before ``as_of``."""
    if not len(activities) or "lead_id" not in activities:
        return pd.Series(dtype="object")
    is_ids = set(reps.loc[reps["role"] == "IS", "rep_id"])
    ts = pd.to_datetime(activities["ts"], utc=True)
    mask = (ts < _utc(as_of)) & activities["lead_id"].notna() & activities["rep_id"].isin(is_ids)
    touched = activities.loc[mask, ["lead_id", "rep_id"]].assign(ts=ts[mask])
    latest = touched.sort_values(["ts", "rep_id"]).drop_duplicates("lead_id", keep="last")
    return latest.set_index("lead_id")["rep_id"]


def build_call_list(
    candidates: pd.DataFrame,
    reps: pd.DataFrame,
    activities: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    days: int = WORKING_DAYS,
    statuses: tuple[str, ...] | list[str] = ("mql", "recycled"),
    assign_by: str = "segment",
    slots_per_lead: float = 1.0,
) -> CallList:
    """Cut the call list for the ``days`` working days from ``as_of``.

    ``candidates`` has one row per scored lead: ``lead_id``, ``expected_conversions``
    (calibrated readiness), ``status`` (as of D), and the routing column
    (``segment`` or ``team``); any other columns (grade, reasons) are carried
    through. ``reps``: ``rep_id, role, team, segment, weekly_slots``.
    ``activities``: ``ts, rep_id, lead_id``; only rows before ``as_of`` are read.
    """
    as_of = _utc(as_of)
    if assign_by not in ("segment", "team"):
        raise ValueError(f"assign_by must be 'segment' or 'team', got {assign_by!r}")
    if not slots_per_lead > 0:
        raise ValueError(f"slots_per_lead must be positive, got {slots_per_lead!r}")
    cap = rep_capacity(reps, activities, as_of, days=days, slots_per_lead=slots_per_lead)
    owners = last_worked_by(activities, reps, as_of)

    if assign_by not in candidates:
        raise ValueError(f"candidates need a {assign_by!r} column to route leads to IS reps")
    pool = candidates.loc[candidates["status"].isin(list(statuses))]
    pool = pool.drop_duplicates("lead_id").sort_values(
        ["expected_conversions", "lead_id"], ascending=[False, True], kind="stable"
    )

    left = dict(zip(cap["rep_id"], cap["leads"], strict=True))
    rep_key = dict(zip(cap["rep_id"], cap[assign_by], strict=True))
    generalists = [r for r, k in rep_key.items() if _missing(k)]
    by_key: dict[object, list[str]] = {}
    for r, k in rep_key.items():
        if not _missing(k):
            by_key.setdefault(k, []).append(r)
    key_left = {k: sum(left[r] for r in rs) for k, rs in by_key.items()}
    general_left = sum(left[r] for r in generalists)
    total_left = sum(left.values())

    chosen_rows: list[int] = []
    chosen_reps: list[str] = []
    continuity: list[bool] = []
    keys = pool[assign_by].to_numpy()
    lead_ids = pool["lead_id"].to_numpy()
    for pos in range(len(pool)):
        if total_left <= 0:
            break
        key = keys[pos]
        specialists = [] if _missing(key) else by_key.get(key, [])
        if (key_left.get(key, 0) if specialists else 0) <= 0 and general_left <= 0:
            continue
        owner = owners.get(lead_ids[pos])
        eligible = [r for r in specialists if left[r] > 0] + [r for r in generalists if left[r] > 0]
        if not eligible:
            continue
        if owner is not None and owner in eligible:
            rep, kept = owner, True
        else:
            # Most slots left first, specialists before generalists, then the smallest rep_id.
            rep = min(eligible, key=lambda r: (-left[r], r not in specialists, str(r)))
            kept = False
        left[rep] -= 1
        total_left -= 1
        if _missing(rep_key[rep]):
            general_left -= 1
        else:
            key_left[rep_key[rep]] -= 1
        chosen_rows.append(pos)
        chosen_reps.append(rep)
        continuity.append(kept)

    calls = pool.iloc[chosen_rows].copy()
    # typed like the reps' ids even when nobody was assigned (an empty list is float64)
    calls.insert(0, "rep_id", pd.Series(chosen_reps, index=calls.index, dtype=cap["rep_id"].dtype))
    calls["same_rep_as_last_touch"] = pd.Series(continuity, index=calls.index, dtype=bool)
    calls = calls.merge(
        cap[["rep_id", "team", "segment", "weekly_slots"]].rename(
            columns={"team": "rep_team", "segment": "rep_segment"}
        ),
        on="rep_id",
        how="left",
    )
    calls = calls.sort_values(
        ["rep_id", "expected_conversions", "lead_id"], ascending=[True, False, True]
    )
    calls["rank"] = calls.groupby("rep_id").cumcount() + 1
    daily = (
        np.ceil(calls["weekly_slots"] / WORKING_DAYS / slots_per_lead).clip(lower=1).astype("int64")
    )
    offset = ((calls["rank"] - 1) // daily).to_numpy()
    first = np.datetime64(as_of.tz_convert(None).date(), "D")
    calls["call_date"] = pd.to_datetime(np.busday_offset(first, offset, roll="forward")).date
    calls = calls.drop(columns=["weekly_slots"]).reset_index(drop=True)
    front = ["rep_id", "rank", "call_date", "lead_id", "expected_conversions"]
    calls = calls[front + [c for c in calls.columns if c not in front]]

    per_rep = calls.groupby("rep_id").agg(
        assigned=("lead_id", "size"), expected_conversions=("expected_conversions", "sum")
    )
    cap = cap.merge(per_rep, left_on="rep_id", right_index=True, how="left")
    cap["assigned"] = cap["assigned"].fillna(0).astype("int64")
    cap["expected_conversions"] = cap["expected_conversions"].fillna(0.0)
    waiting = len(pool) - len(calls)
    cap.attrs["eligible_leads"] = int(len(pool))
    cap.attrs["unassigned_leads"] = int(waiting)
    return CallList(calls=calls, capacity=cap.reset_index(drop=True))


def _utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA
