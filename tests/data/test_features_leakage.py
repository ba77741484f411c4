"""No leakage: adding, deleting or changing any record with ts >= T leaves every feature
at T unchanged (both engines); labels at T read only (T, T + H]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
from builders import T0, VOCAB, Sizes, fast_connect, tiny_company
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadml.features.catalog import load_catalog
from leadml.features.datasets import lead_readiness_dataset
from leadml.features.offline import compute_features
from leadml.features.online import compute_online, entity_payloads

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "configs" / "features.yaml", VOCAB)
TIMED = {
    "events": "ts",
    "lead_status_history": "ts",
    "activities": "ts",
    "opportunity_history": "ts",
}


def _future_times(rng: np.random.Generator, t: pd.Timestamp, n: int) -> pd.Series:
    """Times at or after t; a third of them exactly at t."""
    offs = rng.integers(0, 40 * 24, n)
    offs[rng.random(n) < 0.33] = 0
    return pd.Series(t + pd.to_timedelta(offs, unit="h")).dt.as_unit("us")


def mutate_future(frames: dict[str, pd.DataFrame], t: pd.Timestamp, seed: int) -> tuple[dict, int]:
    """Delete, change and add records with ts >= t in every timed table, and add a new
    deal created at or after t (with its history) to an existing account and owner.
    Returns the new frames and how many records were touched."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in frames.items()}
    touched = 0
    for name, col in TIMED.items():
        df = out[name]
        future = df[col] >= t
        # change: move in time (staying >= t) and change the values
        change = future & (rng.random(len(df)) < 0.5)
        n = int(change.sum())
        if n:
            df.loc[change, col] = _future_times(rng, t, n).to_numpy()
            if name == "events":
                df.loc[change, "type"] = rng.choice(VOCAB.event_types, n)
                df.loc[change, "page_category"] = rng.choice(["pricing", "docs", None], n)
            elif name == "lead_status_history":
                df.loc[change, "status"] = rng.choice(VOCAB.lead_statuses, n)
            elif name == "opportunity_history":
                df.loc[change, "stage"] = rng.choice(VOCAB.stages, n)
                df.loc[change, "amount"] = rng.choice([1.0, 99999.0], n)
            else:
                df.loc[change, "type"] = rng.choice(VOCAB.activity_types, n)
        # delete
        delete = future & ~change & (rng.random(len(df)) < 0.5)
        touched += n + int(delete.sum())
        df = df[~delete]
        # add copies of random rows, moved to >= t
        if len(out[name]):
            extra = out[name].sample(n=5, replace=True, random_state=seed % 2**32).copy()
            extra[col] = _future_times(rng, t, 5).to_numpy()
            df = pd.concat([df, extra], ignore_index=True)
            touched += 5
        out[name] = df.reset_index(drop=True)
    opp = out["opportunities"].iloc[[0]].copy()
    opp["opportunity_id"] = "O_new"
    opp["created_at"] = t
    out["opportunities"] = pd.concat([out["opportunities"], opp], ignore_index=True)
    hist = pd.DataFrame(
        {
            "opportunity_id": ["O_new", "O_new"],
            "ts": _future_times(rng, t, 2).to_numpy(),
            "stage": ["follow_up", VOCAB.won_stage],
            "amount": [5.0, 5.0],
            "expected_close_date": [t + pd.Timedelta(days=30)] * 2,
        }
    )
    out["opportunity_history"] = pd.concat([out["opportunity_history"], hist], ignore_index=True)
    return out, touched + 3


def _features(
    frames: dict[str, pd.DataFrame], entity: str, t: pd.Timestamp, ids: list[str]
) -> pd.DataFrame:
    return _all_features(frames, t, {entity: ids})[entity]


def _all_features(
    frames: dict[str, pd.DataFrame], t: pd.Timestamp, ids: dict[str, list[str]]
) -> dict[str, pd.DataFrame]:
    con = fast_connect(frames)
    try:
        return {
            entity: compute_features(
                con, CATALOG, entity, pd.DataFrame({f"{entity}_id": i, "as_of": [t] * len(i)})
            )
            for entity, i in ids.items()
        }
    finally:
        con.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), day=st.integers(5, 110), hour=st.sampled_from([0, 9]))
def test_future_records_change_no_feature(seed: int, day: int, hour: int) -> None:
    frames = tiny_company(
        seed, Sizes(events=120, status_changes=20, history_rows=24, activities=30)
    )
    t = T0 + pd.Timedelta(days=day, hours=hour)
    mutated, touched = mutate_future(frames, t, seed)
    assert touched > 0
    ids = {
        "lead": frames["leads"]["lead_id"].tolist(),
        "opportunity": frames["opportunities"]["opportunity_id"].tolist(),
    }
    before_off, after_off = _all_features(frames, t, ids), _all_features(mutated, t, ids)
    for entity in ids:
        pdt.assert_frame_equal(before_off[entity], after_off[entity])
        before, after = (
            entity_payloads(frames, CATALOG, entity),
            entity_payloads(mutated, CATALOG, entity),
        )
        for i in ids[entity]:
            assert compute_online(CATALOG, entity, t, before[i]) == compute_online(
                CATALOG, entity, t, after[i]
            )


def test_a_record_just_before_t_does_change_features() -> None:
    """The control: the same comparison notices a record 1 microsecond before T."""
    frames = tiny_company(4)
    t = T0 + pd.Timedelta(days=60)
    lead = frames["leads"]["lead_id"].iloc[0]
    extra = pd.DataFrame(
        {
            "lead_id": [lead],
            "ts": [t - pd.Timedelta(microseconds=1)],
            "type": ["page_view"],
            "page_category": ["pricing"],
            "campaign_id": [None],
        }
    )
    changed = dict(frames, events=pd.concat([frames["events"], extra], ignore_index=True))
    a, b = _features(frames, "lead", t, [lead]), _features(changed, "lead", t, [lead])
    assert b.loc[0, "pricing_views_7d"] == a.loc[0, "pricing_views_7d"] + 1
    assert b.loc[0, "days_since_last_pricing_view"] == 1 / 86_400_000_000
    on = compute_online(CATALOG, "lead", t, entity_payloads(changed, CATALOG, "lead")[lead])
    assert on["pricing_views_7d"] == b.loc[0, "pricing_views_7d"]


def _readiness(frames: dict[str, pd.DataFrame], t: pd.Timestamp, horizon: int) -> pd.DataFrame:
    con = fast_connect(frames)
    try:
        df, _ = lead_readiness_dataset(con, CATALOG, start=t, end=t, horizon_days=horizon)
    finally:
        con.close()
    return df


def _with_end_marker(frames: dict[str, pd.DataFrame], end: pd.Timestamp) -> dict[str, pd.DataFrame]:
    marker = pd.DataFrame(
        {
            "lead_id": [frames["leads"]["lead_id"].iloc[0]],
            "ts": [end],
            "type": ["web_visit"],
            "page_category": [None],
            "campaign_id": [None],
        }
    )
    return dict(frames, events=pd.concat([frames["events"], marker], ignore_index=True))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), week=st.integers(5, 10))
def test_labels_read_only_the_horizon(seed: int, week: int) -> None:
    horizon = 21
    t = T0 + pd.Timedelta(weeks=week)
    end = T0 + pd.Timedelta(days=400)  # fixed data end, far after every change below
    frames = _with_end_marker(
        tiny_company(seed, Sizes(leads=10, status_changes=12, opportunities=4, days=60)), end
    )
    base = _readiness(frames, t, horizon)
    assert len(base) > 0  # leads are created in the first 30 days, T is after day 35
    rng = np.random.default_rng(seed)
    lead_ids = frames["leads"]["lead_id"].to_numpy()
    after = t + pd.Timedelta(days=horizon) + pd.to_timedelta(rng.integers(1, 200 * 24, 6), unit="h")
    # conversions after the horizon, and deleting/moving those already there
    late = frames["lead_status_history"]
    late = late[~(late["ts"] > t + pd.Timedelta(days=horizon))]
    late = pd.concat(
        [
            late,
            pd.DataFrame(
                {"lead_id": rng.choice(lead_ids, 6), "ts": after.as_unit("us"), "status": "sql"}
            ),
        ],
        ignore_index=True,
    )
    opps = frames["opportunities"].copy()
    moved = opps["created_at"] > t + pd.Timedelta(days=horizon)
    opps.loc[moved, "created_at"] = end - pd.Timedelta(days=1)
    changed = dict(frames, lead_status_history=late, opportunities=opps)
    pdt.assert_frame_equal(base, _readiness(changed, t, horizon))
    # the control: a conversion inside (T, T + H] turns a negative into a positive
    negatives = base.loc[base["label"] == 0, "lead_id"]
    if len(negatives):
        inside = pd.DataFrame(
            {
                "lead_id": [negatives.iloc[0]],
                "ts": [t + pd.Timedelta(days=horizon)],
                "status": ["sql"],
            }
        )
        flipped = _readiness(
            dict(frames, lead_status_history=pd.concat([frames["lead_status_history"], inside])),
            t,
            horizon,
        )
        assert flipped.set_index("lead_id").loc[negatives.iloc[0], "label"] == 1
