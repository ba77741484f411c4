"""Parity: the online engine (one entity, numpy) equals the offline engine (DuckDB SQL)
for every feature of the default catalog, on random small companies and as-of times."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import T0, VOCAB, Sizes, fast_connect, tiny_company
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadml.features import prefix
from leadml.features.catalog import Catalog, is_categorical, is_count, load_catalog
from leadml.features.offline import compute_features
from leadml.features.online import (
    compute_lead_features_online,
    compute_online,
    compute_online_many,
    entity_payload,
    entity_payloads,
)

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "configs" / "features.yaml", VOCAB)

sizes = st.builds(
    Sizes,
    accounts=st.integers(1, 3),
    leads=st.integers(1, 6),
    events=st.integers(0, 80),
    status_changes=st.integers(0, 12),
    opportunities=st.integers(1, 5),
    history_rows=st.integers(0, 16),
    activities=st.integers(0, 20),
    days=st.integers(20, 150),
)
as_of_times = st.lists(
    st.tuples(st.integers(0, 160), st.sampled_from([0, 0, 9, 13])), min_size=1, max_size=3
)


def assert_same(
    entity: str, offline: pd.Series, online: dict, context: str, catalog: Catalog = CATALOG
) -> None:
    """Exact for counts and categories, 1e-9 relative for floats, same missing values."""
    feats = {f.name: f for f in catalog.features(entity)}
    assert list(online) == list(feats), context
    for name, f in feats.items():
        a, b = offline[name], online[name]
        a_missing = a is None or (isinstance(a, float) and math.isnan(a))
        where = f"{context}: {name}: offline={a!r} online={b!r}"
        assert a_missing == (b is None), where
        if a_missing:
            continue
        if is_categorical(f):
            assert isinstance(b, str) and a == b, where
        elif is_count(f):
            assert isinstance(b, int) and float(a) == float(b), where
        else:
            assert math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12), where


def _check(
    seed: int, size: Sizes, times: list[tuple[int, int]], entity: str, method: str = "join"
) -> int:
    return _check_frames(tiny_company(seed, size), times, entity, method, f"seed={seed}")


def _check_frames(
    frames: dict[str, pd.DataFrame],
    times: list[tuple[int, int]],
    entity: str,
    method: str,
    context: str,
    catalog: Catalog = CATALOG,
) -> int:
    con = fast_connect(frames)
    eid = f"{entity}_id"
    ids = frames["leads" if entity == "lead" else "opportunities"][eid].tolist()
    rows = [(i, T0 + pd.Timedelta(days=d, hours=h)) for i in ids for d, h in times]
    spine = pd.DataFrame(rows, columns=[eid, "as_of"])
    offline = compute_features(con, catalog, entity, spine, method=method)
    assert offline[eid].tolist() == spine[eid].tolist()
    assert list(offline.columns) == [eid, "as_of", *catalog.names(entity)]
    payloads = entity_payloads(frames, catalog, entity)
    # every (entity, as_of) row in ONE call, as the API's batching computes them: the
    # same values as one call per row (each row reads only its own records)
    together = compute_online_many(catalog, entity, [(t, payloads[i]) for i, t in rows])
    nonzero = 0
    for k, (i, t) in enumerate(rows):
        online = compute_online(catalog, entity, t, payloads[i])
        where = f"{context} {entity}={i} as_of={t}"
        assert_same(entity, offline.iloc[k], online, where, catalog)
        assert together[k] == online, where
        nonzero += sum(1 for v in online.values() if v not in (None, 0, 0.0))
    con.close()
    return nonzero


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), size=sizes, times=as_of_times)
def test_lead_features_online_equal_offline(
    seed: int, size: Sizes, times: list[tuple[int, int]]
) -> None:
    _check(seed, size, times, "lead")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), size=sizes, times=as_of_times)
def test_opportunity_features_online_equal_offline(
    seed: int, size: Sizes, times: list[tuple[int, int]]
) -> None:
    _check(seed, size, times, "opportunity")


@pytest.mark.parametrize("method", ["join", "prefix", "prefix-sorted"])
@pytest.mark.parametrize("entity", ["lead", "opportunity"])
def test_parity_is_exercised_on_a_busy_company(
    entity: str, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both offline methods on a busy company where most features take real values (so a
    pass is not vacuous), with as-of times on and off the record grid; the prefix method
    in both of its layouts (``prefix-sorted``: the grid too large, records sorted)."""
    if method == "prefix-sorted":
        monkeypatch.setattr(prefix, "GRID_CELLS", 0)
        method = "prefix"
    busy = Sizes(
        accounts=2,
        leads=6,
        events=300,
        status_changes=30,
        opportunities=6,
        history_rows=40,
        activities=80,
        days=100,
    )
    nonzero = _check(5, busy, [(60, 0), (95, 13), (40, 9)], entity, method)
    n_values = len(CATALOG.names(entity)) * (6 * 3)
    assert nonzero > n_values * 0.4


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), size=sizes, times=as_of_times)
def test_prefix_method_equals_online(seed: int, size: Sizes, times: list[tuple[int, int]]) -> None:
    _check(seed, size, times, "lead", "prefix")
    cells = prefix.GRID_CELLS
    try:  # the sorted layout (a grid too large) on the same company
        prefix.GRID_CELLS = 0
        _check(seed, size, times, "lead", "prefix")
    finally:
        prefix.GRID_CELLS = cells


@pytest.mark.parametrize("method", ["join", "prefix", "prefix-sorted"])
def test_records_on_window_edges(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record exactly at a window's start is in the window, one at as_of is not, one a
    microsecond before as_of is: every method and layout agrees with the online engine,
    on the default lead features and windowed recency (which the default catalog lacks)."""
    if method == "prefix-sorted":
        monkeypatch.setattr(prefix, "GRID_CELLS", 0)
        method = "prefix"
    frames = tiny_company(7, Sizes(accounts=1, leads=3, events=40, activities=10))
    t = T0 + pd.Timedelta(days=120)
    edges = [t - pd.Timedelta(days=d) for d in (90, 30, 14, 7)]
    edges += [t - pd.Timedelta(microseconds=1), t]
    leads = frames["leads"]["lead_id"].tolist()
    extra = pd.DataFrame(
        [
            {"lead_id": lead, "ts": ts, "type": kind, "page_category": cat, "campaign_id": None}
            for lead in leads[:2]
            for ts in edges
            for kind, cat in (("page_view", "pricing"), ("web_visit", None), ("email_click", None))
        ]
    )
    extra["ts"] = pd.to_datetime(extra["ts"], utc=True).dt.as_unit("us")
    events = pd.concat([frames["events"], extra], ignore_index=True)
    edged = dict(frames, events=events[events["ts"] != t - pd.Timedelta(microseconds=1)])
    recency = [
        {
            "name": f"days_since_last_{kind}_{days}d",
            "kind": "aggregate",
            "source": "events",
            "filter": {"type": kind},
            "aggregation": "days_since_last",
            "window": f"{days}d",
            "label": "{value} days",
        }
        for kind in ("page_view", "web_visit")
        for days in (7, 30)
    ]
    catalog = Catalog.model_validate(
        {"lead": [*(f.model_dump() for f in CATALOG.features("lead")), *recency]}
    )
    catalog._vocab = VOCAB
    for name, data in (("on the edges", dict(frames, events=events)), ("no t-1us", edged)):
        nonzero = _check_frames(data, [(120, 0)], "lead", method, name, catalog)
        assert nonzero > 0


@pytest.mark.parametrize("method", ["join", "prefix", "prefix-sorted"])
def test_all_time_distinct_and_account_features(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct counts and the account's other leads over all time (the default catalog's
    are all windowed, and the prefix method drops records before every window start only
    when no feature reads all time), beside windowed ones, at several as-of dates."""
    if method == "prefix-sorted":
        monkeypatch.setattr(prefix, "GRID_CELLS", 0)
        method = "prefix"

    def feature(name: str, aggregation: str, window: str, **more: object) -> dict:
        return {
            "name": name,
            "kind": "aggregate",
            "source": "events",
            "aggregation": aggregation,
            "window": window,
            "label": "{value}",
            **more,
        }

    catalog = Catalog.model_validate(
        {
            "lead": [
                feature("categories_all", "distinct_count", "all", column="page_category"),
                feature("categories_7d", "distinct_count", "7d", column="page_category"),
                feature("account_events_all", "count", "all", scope="account_others"),
                feature(
                    "account_visits_30d",
                    "count",
                    "30d",
                    scope="account_others",
                    filter={"type": "web_visit"},
                ),
                feature(
                    "account_leads_all",
                    "distinct_count",
                    "all",
                    column="lead_id",
                    scope="account_others",
                ),
                feature("account_any_all", "exists", "all", scope="account_others"),
            ]
        }
    )
    catalog._vocab = VOCAB
    busy = Sizes(accounts=2, leads=6, events=300, activities=20, days=100)
    frames = tiny_company(11, busy)
    nonzero = _check_frames(frames, [(30, 0), (60, 9), (95, 13)], "lead", method, "all", catalog)
    assert nonzero > len(catalog.names("lead")) * 6 * 3 * 0.4


def test_payload_formats_give_the_same_features() -> None:
    """List of dicts, columns of numpy arrays and DataFrames are the same payload."""
    frames = tiny_company(3, Sizes(leads=3, events=120, activities=30, status_changes=10))
    base = entity_payload(frames, CATALOG, "lead", "L0")
    as_of = T0 + pd.Timedelta(days=70)
    want = compute_online(CATALOG, "lead", as_of, base)

    def as_records(df: pd.DataFrame) -> list[dict]:
        return [
            {k: (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v) for k, v in r.items()}
            for r in df.to_dict("records")
        ]

    def as_columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
        out = {c: df[c].to_numpy() for c in df.columns}
        out["ts"] = df["ts"].dt.tz_localize(None).to_numpy().astype("datetime64[us]")
        return out

    payloads = [base]
    for convert in (as_records, as_columns):
        payload = {
            k: (convert(v) if isinstance(v, pd.DataFrame) and k != "account_closed_deals" else v)
            for k, v in base.items()
        }
        assert compute_online(CATALOG, "lead", as_of, payload) == want
        payloads.append(payload)
    iso = dict(base, events=[dict(r, ts=r["ts"].isoformat()) for r in as_records(base["events"])])
    assert compute_lead_features_online(CATALOG, as_of.isoformat(), **iso) == want
    # the three formats mixed in one call (their records concatenated), beside another
    # lead at an earlier time
    other = entity_payload(frames, CATALOG, "lead", "L1")
    early = T0 + pd.Timedelta(days=20)
    together = compute_online_many(
        CATALOG, "lead", [(as_of, p) for p in payloads] + [(early, other)]
    )
    assert together == [want] * 3 + [compute_online(CATALOG, "lead", early, other)]


@pytest.mark.parametrize("method", ["join", "prefix"])
def test_lead_without_status_rows_is_in_the_first_status_since_creation(method: str) -> None:
    """CRM exports often record only status changes: a lead created before T with no
    status row before T is in the vocabulary's first status since it was created (not
    "unknown", which the models never saw in training), in both engines; before its
    creation it has no status."""
    frames = tiny_company(3, Sizes(accounts=1, leads=3, events=10, status_changes=6))
    leads = frames["leads"]
    quiet = leads["lead_id"].iloc[0]
    later = frames["lead_status_history"]
    # the first lead has no rows at all, the second only rows long after T
    second = leads["lead_id"].iloc[1]
    later = later[later["lead_id"] != quiet].copy()
    later.loc[later["lead_id"] == second, "ts"] = T0 + pd.Timedelta(days=400)
    data = dict(frames, lead_status_history=later)
    _check_frames(data, [(120, 0), (0, 0)], "lead", method, "no status rows")

    t = T0 + pd.Timedelta(days=120)
    con = fast_connect(data)
    spine = pd.DataFrame({"lead_id": [quiet, second], "as_of": [t, t]})
    got = compute_features(con, CATALOG, "lead", spine, method=method)
    con.close()
    created = pd.to_datetime(leads.set_index("lead_id")["created_at"], utc=True)
    for i, lead in enumerate([quiet, second]):
        if created[lead] < t:
            assert got["lead_status"].iloc[i] == VOCAB.lead_statuses[0]
            expected = (t - created[lead]) / pd.Timedelta(days=1)
            assert math.isclose(got["days_in_status"].iloc[i], expected, rel_tol=1e-9)
        else:
            assert pd.isna(got["lead_status"].iloc[i])
