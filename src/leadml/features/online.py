"""The online engine: the catalog computed in-process from the raw records of one entity,
or of many at once (:func:`compute_online_many`: each entity with its own as-of time;
the aggregates of all of them computed together, which is what the API's adaptive
batching shares between the leads of concurrent requests).

Used by the API: no DuckDB, plain Python and numpy. The definitions are those of
:mod:`leadml.features.offline` (parity-tested on random data): a value as of T reads
only records with ``ts < T``; a window of n days is ``T - n days <= ts < T``. Records
with ``ts >= T`` in the payload are ignored, never read into any value.

A payload table can be a list of dicts, a mapping of column -> sequence (fastest:
numpy arrays, ``ts`` as ``datetime64`` or int microseconds since the epoch) or a
pandas DataFrame. Timestamps may be aware datetimes / pandas Timestamps (naive =
UTC), ISO strings, ``numpy.datetime64`` or int microseconds.

Payload for a lead (:func:`compute_lead_features_online`): ``lead`` (its row),
``account`` (its account's row), ``events``, ``status_history``, ``activities`` (its
own records), ``account_events`` (events of the leads at the same account; the lead's
own are skipped), ``account_closed_deals``. For an opportunity
(:func:`compute_opportunity_features_online`): ``opportunity`` (its row: created_at,
owner_id, segment, account_id), ``account``, ``history`` (its opportunity_history
rows), ``activities``, ``owner_closed_deals`` and ``account_closed_deals``. A closed
deal is ``{opportunity_id, ts, stage, amount}`` of the FIRST closing history row of
another opportunity (see :func:`closed_deals`).
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from leadml.config import Vocabulary
from leadml.errors import DataError
from leadml.features.catalog import (
    ENTITY_ID,
    SOURCES,
    AggregateFeature,
    AttributeFeature,
    Catalog,
    DerivedFeature,
    OutcomesFeature,
    StateFeature,
)

DAY_US = 86_400_000_000
_DAY = float(DAY_US)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)

Value: TypeAlias = float | int | str | None
Records: TypeAlias = Sequence[Mapping[str, Any]] | Mapping[str, Any] | pd.DataFrame | None


# ------------------------------------------------------------------ time


def to_us(value: Any) -> int:
    """One timestamp as int microseconds since the epoch (UTC; naive = UTC)."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, pd.Timestamp):
        ts = value if value.tzinfo is not None else value.tz_localize("UTC")
        return int(ts.value // 1000)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return (value - _EPOCH) // _ONE_US
    if isinstance(value, str):
        try:
            return to_us(dt.datetime.fromisoformat(value))
        except ValueError:
            raise DataError(
                f"timestamp {value!r} is not ISO 8601 (e.g. 2025-06-02T09:00:00Z)"
            ) from None
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[us]").astype(np.int64))
    if isinstance(value, dt.date):
        return to_us(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC))
    raise DataError(f"timestamp {value!r} ({type(value).__name__}) is not a date/time")


def _ts_array(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "M":
            return values.astype("datetime64[us]").astype(np.int64)
        if values.dtype.kind in "iu":
            return values.astype(np.int64, copy=False)
    if isinstance(values, pd.Series | pd.Index) and (
        isinstance(values.dtype, pd.DatetimeTZDtype) or values.dtype.kind == "M"
    ):
        idx = pd.DatetimeIndex(values)
        if idx.tz is None:
            idx = idx.tz_localize("UTC")
        if idx.isna().any():
            raise DataError("a record has a missing timestamp")
        return idx.as_unit("us").asi8
    try:  # fast path: aware datetimes / pandas Timestamps
        deltas = map(operator.sub, values, repeat(_EPOCH))
        return np.fromiter(
            map(operator.floordiv, deltas, repeat(_ONE_US)), dtype=np.int64, count=len(values)
        )
    except (TypeError, ValueError):
        return np.fromiter((to_us(v) for v in values), dtype=np.int64, count=len(values))


def _column(records: Records, name: str, n: int) -> Sequence[Any] | np.ndarray:
    """Values of column ``name`` (None-filled when the payload does not have it)."""
    if records is None:
        return []
    if isinstance(records, pd.DataFrame):
        if name not in records.columns:
            return [None] * n
        col = records[name]
        return (
            col
            if isinstance(col.dtype, pd.DatetimeTZDtype) or col.dtype.kind == "M"
            else col.to_numpy()
        )
    if isinstance(records, Mapping):
        got = records.get(name)
        return [None] * n if got is None else got
    return [r.get(name) for r in records]


def _columns(records: Records, names: list[str], n: int) -> dict[str, Any]:
    """The named columns of a payload table; a list of dicts is read in one pass."""
    if n and isinstance(records, Sequence) and not isinstance(records, str | bytes):
        try:
            rows = list(map(operator.itemgetter(*names), records))
        except KeyError:  # a record without some (optional) field
            rows = [tuple(r.get(c) for c in names) for r in records]
        if len(names) == 1:
            return {names[0]: rows}
        return dict(zip(names, zip(*rows, strict=True), strict=True))
    return {c: _column(records, c, n) for c in names}


def _length(records: Records) -> int:
    if records is None:
        return 0
    if isinstance(records, pd.DataFrame):
        return len(records)
    if isinstance(records, Mapping):
        ts = records.get("ts")
        return 0 if ts is None else len(ts)
    return len(records)


def _none(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v is pd.NA or v is pd.NaT


# ------------------------------------------------------------------ plan


class _SourcePlan:
    """What the features over one source table need from its records."""

    def __init__(self) -> None:
        self.coded: dict[str, dict[Any, int]] = {}  # filter column -> value -> code
        self.raw: set[str] = set()  # columns read as values (distinct counts)
        self.numeric: set[str] = set()


class _Plan:
    def __init__(self, catalog: Catalog, entity: str) -> None:
        self.catalog = catalog
        self.entity = entity
        self.features = catalog.features(entity)
        self.vocab = catalog.vocabulary
        self.sources: dict[tuple[str, str], _SourcePlan] = {}
        for f in self.features:
            if isinstance(f, AggregateFeature):
                sp = self.sources.setdefault((f.source, f.scope), _SourcePlan())
                for col, values in f.filter_items():
                    codes = sp.coded.setdefault(col, {})
                    for v in values:
                        codes.setdefault(v, len(codes))
                if f.aggregation == "distinct_count" and f.column:
                    sp.raw.add(f.column)
                if f.aggregation in ("sum", "mean", "min", "max") and f.column:
                    sp.numeric.add(f.column)
                if f.scope == "account_others":
                    sp.raw.add("lead_id")
        # lookup tables: bool per code, the last slot (-1) is "value not in the catalog"
        self.lut: dict[str, list[tuple[str, np.ndarray]]] = {}
        for f in self.features:
            if isinstance(f, AggregateFeature):
                sp = self.sources[(f.source, f.scope)]
                luts = []
                for col, values in f.filter_items():
                    codes = sp.coded[col]
                    table = np.zeros(len(codes) + 1, dtype=bool)
                    for v in values:
                        table[codes[v]] = True
                    luts.append((col, table))
                self.lut[f.name] = luts
        # per feature: window length and a key naming its filter (shared masks are reused)
        self.window_days = {
            f.name: f.window_days for f in self.features if isinstance(f, AggregateFeature)
        }
        self.filter_key = {
            f.name: repr(sorted(f.filter_items(), key=lambda item: item[0]))
            for f in self.features
            if isinstance(f, AggregateFeature)
        }
        self.stage_rank = {s: i + 1 for i, s in enumerate(self.vocab.stages)}
        self.status_rank = {s: i + 1 for i, s in enumerate(self.vocab.lead_statuses)}
        self.open_stages = set(self.vocab.open_stages)


_PLANS: dict[tuple[int, str], tuple[Catalog, _Plan]] = {}


def _plan(catalog: Catalog, entity: str) -> _Plan:
    key = (id(catalog), entity)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is catalog:
        return hit[1]
    plan = _Plan(catalog, entity)
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[key] = (catalog, plan)
    return plan


# ------------------------------------------------------------------ records


class _Table:
    """One source's records before T of N entities, concatenated as columns (filter
    columns coded); ``seg`` gives each record's entity (0..N-1), ``as_of`` its T."""

    def __init__(
        self,
        tables: Sequence[Records],
        sp: _SourcePlan,
        as_of: np.ndarray,
        skip_leads: Sequence[Any] | None = None,
    ) -> None:
        self.n = len(tables)
        lengths = [_length(r) for r in tables]
        n = sum(lengths)
        names = ["ts", *sp.coded, *sp.raw, *sp.numeric]
        if skip_leads is not None and "lead_id" not in names:
            names.append("lead_id")
        parts = [_columns(r, names, k) for r, k in zip(tables, lengths, strict=True) if k]
        seg = np.zeros(n, dtype=np.intp) if self.n == 1 else np.repeat(np.arange(self.n), lengths)

        def values(col: str) -> Sequence[Any]:  # one column of every entity, in order
            if len(parts) == 1:
                return parts[0][col]  # type: ignore[no-any-return]
            return [v for part in parts for v in part[col]]

        if len(parts) == 1:
            ts = _ts_array(parts[0]["ts"])
        elif parts:
            ts = np.concatenate([_ts_array(part["ts"]) for part in parts])
        else:
            ts = np.empty(0, dtype=np.int64)
        # each record's T (one entity: a scalar, cheaper in every comparison below)
        row_as_of = int(as_of[0]) if self.n == 1 else as_of[seg]
        keep = ts < row_as_of
        if skip_leads is not None and n:
            skip = (
                repeat(skip_leads[0]) if self.n == 1 else map(skip_leads.__getitem__, seg.tolist())
            )
            keep &= np.fromiter(map(operator.ne, values("lead_id"), skip), dtype=bool, count=n)
        all_kept = bool(keep.all())

        def kept(arr: np.ndarray) -> np.ndarray:
            return arr if all_kept else arr[keep]

        self.seg = kept(seg)
        self.ts = kept(ts)
        self.as_of = as_of
        self.row_as_of = row_as_of if self.n == 1 else as_of[self.seg]
        self.codes: dict[str, np.ndarray] = {}
        for col, codes in sp.coded.items():
            arr = np.fromiter(map(codes.get, values(col), repeat(-1)), dtype=np.int16, count=n)
            self.codes[col] = kept(arr)
        self.raw: dict[str, np.ndarray] = {}
        for col in sp.raw:
            self.raw[col] = kept(np.asarray(values(col), dtype=object))
        self.num: dict[str, np.ndarray] = {}
        for col in sp.numeric:
            num = np.asarray(
                [np.nan if _none(v) else float(v) for v in values(col)] if n else [], dtype=float
            )
            self.num[col] = kept(num)
        self._windows: dict[int | None, np.ndarray | None] = {}
        self.masks: dict[tuple[str, int | None], np.ndarray | None] = {}

    def window(self, days: int | None) -> np.ndarray | None:
        if days not in self._windows:
            self._windows[days] = (
                None if days is None else self.ts >= self.row_as_of - days * DAY_US
            )
        return self._windows[days]


def _distinct(seg: np.ndarray, vals: np.ndarray, n: int) -> list[Value]:
    """Distinct non-missing values per entity."""
    if n == 1:
        return [len({v for v in vals.tolist() if not _none(v)})]
    counts = [0] * n
    for i, v in set(zip(seg.tolist(), vals.tolist(), strict=True)):
        if not _none(v):
            counts[i] += 1
    out: list[Value] = list(counts)
    return out


def _per_entity(ufunc: np.ufunc, seg: np.ndarray, vals: np.ndarray, n: int) -> tuple[Any, Any]:
    """``ufunc.reduce`` of each entity's values (``seg`` is sorted: the records of an
    entity are contiguous) and whether the entity has any; 0 where it has none."""
    if n == 1:
        has = np.array([len(vals) > 0])
        return np.array([ufunc.reduce(vals) if len(vals) else 0], dtype=vals.dtype), has
    counts = np.bincount(seg, minlength=n)
    has = counts > 0
    out = np.zeros(n, dtype=vals.dtype)
    if len(vals):
        starts = np.cumsum(counts) - counts
        out[has] = ufunc.reduceat(vals, starts[has])
    return out, has


def _aggregate(f: AggregateFeature, t: _Table, plan: _Plan) -> list[Value]:
    """The feature's value for each of the table's N entities."""
    days = plan.window_days[f.name]
    key = (plan.filter_key[f.name], days)
    if key in t.masks:
        mask = t.masks[key]
    else:
        fkey = (plan.filter_key[f.name], None)
        if fkey not in t.masks:
            fmask = None
            for col, lut in plan.lut[f.name]:
                m = lut[t.codes[col]]
                fmask = m if fmask is None else fmask & m
            t.masks[fkey] = fmask
        fmask, wmask = t.masks[fkey], t.window(days)
        mask = t.masks[key] = (
            wmask if fmask is None else (fmask if wmask is None else fmask & wmask)
        )

    a, n = f.aggregation, t.n
    if a in ("count", "exists"):  # most features: kept cheap for one entity
        if n == 1:
            k = len(t.ts) if mask is None else int(np.count_nonzero(mask))
            return [k if a == "count" else int(k > 0)]
        counts = np.bincount(t.seg if mask is None else t.seg[mask], minlength=n)
        return (counts if a == "count" else (counts > 0).astype(np.int64)).tolist()

    def pick(arr: np.ndarray) -> np.ndarray:
        return arr if mask is None else arr[mask]

    seg = pick(t.seg)
    if a == "distinct_count":
        column = "lead_id" if f.scope == "account_others" else f.column or ""
        return _distinct(seg, pick(t.raw[column]), n)
    if a in ("days_since_last", "days_since_first"):
        ufunc = np.maximum if a == "days_since_last" else np.minimum
        edge, has = _per_entity(ufunc, seg, pick(t.ts), n)
        since = (t.as_of - edge).astype(float) / _DAY
        return [float(d) if h else None for d, h in zip(since.tolist(), has.tolist(), strict=True)]
    vals = pick(t.num[f.column or ""])
    ok = ~np.isnan(vals)
    seg, vals = seg[ok], vals[ok]
    if a == "sum":
        return np.bincount(seg, weights=vals, minlength=n).astype(float).tolist()
    if a == "mean":
        counts = np.bincount(seg, minlength=n)
        out, has = np.bincount(seg, weights=vals, minlength=n) / np.maximum(counts, 1), counts > 0
    else:
        out, has = _per_entity(np.minimum if a == "min" else np.maximum, seg, vals, n)
    return [float(v) if h else None for v, h in zip(out.tolist(), has.tolist(), strict=True)]


def _attribute(f: AttributeFeature, row: Mapping[str, Any] | None, as_of: int) -> Value:
    v = None if row is None else row.get(f.column)
    if _none(v):
        return None
    if f.type == "days_since":
        return float(as_of - to_us(v)) / _DAY
    if f.type == "numeric":
        try:
            return float(v)  # type: ignore[arg-type]  # any number-like value; None is handled above
        except (TypeError, ValueError):
            return None
    return str(v)


def lead_status_at(
    vocab: Vocabulary, as_of: Any, status_history: Records, created_at: Any = None
) -> str | None:
    """A lead's status at ``as_of`` as the ``lead_status`` feature reads it (the latest
    row before as_of; none: the vocabulary's first status once the lead exists)."""
    rank = {s: i + 1 for i, s in enumerate(vocab.lead_statuses)}
    status = _status_at(rank, vocab.lead_statuses[0], status_history, to_us(as_of), created_at)
    return None if status["status"] is None else str(status["status"])


def _lead_state(
    plan: _Plan, records: Records, as_of: int, created_at: Any = None
) -> dict[str, Value]:
    return _status_at(plan.status_rank, plan.vocab.lead_statuses[0], records, as_of, created_at)


def _status_at(
    status_rank: Mapping[str, int], first: str, records: Records, as_of: int, created_at: Any
) -> dict[str, Value]:
    """The latest status before T and the days since it was entered; a lead created
    before T without any status row is in the first status of the vocabulary since its
    creation (a CRM records only changes; see the offline twin, ``lead_states``)."""
    n = _length(records)
    best: tuple[int, int] | None = None
    best_status = None
    if n:
        ts = _ts_array(_column(records, "ts", n))
        status = _column(records, "status", n)
        for t, s in zip(ts.tolist(), status, strict=True):
            if t >= as_of:
                continue
            k = (t, status_rank.get(s, 0))
            if best is None or k > best:
                best, best_status = k, s
    if best is None:
        created = None if _none(created_at) else to_us(created_at)
        if created is None or created >= as_of:
            return {"status": None, "days_in_status": None}
        return {
            "status": first,
            "days_in_status": float(as_of - created) / _DAY,
        }
    return {"status": best_status, "days_in_status": float(as_of - best[0]) / _DAY}


def _history_rows(
    plan: _Plan, records: Records, as_of: int | None
) -> list[tuple[int, int, float, int, str]]:
    """History rows (ts, stage rank, amount, expected close, stage) before T, in order."""
    n = _length(records)
    if not n:
        return []
    ts = _ts_array(_column(records, "ts", n)).tolist()
    stage = list(_column(records, "stage", n))
    amount = [float(v) for v in _column(records, "amount", n)]
    ecd = _ts_array(_column(records, "expected_close_date", n)).tolist()
    rows = [
        (ts[i], plan.stage_rank.get(stage[i], 0), amount[i], ecd[i], stage[i])
        for i in range(n)
        if as_of is None or ts[i] < as_of
    ]
    rows.sort(key=lambda r: r[:4])
    return rows


def _opportunity_state(plan: _Plan, records: Records, as_of: int) -> dict[str, Value]:
    rows = _history_rows(plan, records, as_of)
    if not rows:
        return {}
    entered = rows[0][0]
    amount_changes = pushes = stage_changes = regressions = 0
    for prev, cur in zip(rows, rows[1:], strict=False):
        if cur[4] != prev[4]:
            stage_changes += 1
            entered = cur[0]
        if cur[2] != prev[2]:
            amount_changes += 1
        if cur[3] > prev[3]:
            pushes += 1
        if cur[4] in plan.open_stages and prev[4] in plan.open_stages and cur[1] < prev[1]:
            regressions += 1
    last = rows[-1]
    to_close = float(last[3] - as_of) / _DAY
    return {
        "stage": last[4],
        "stage_index": last[1] - 1,
        "days_in_stage": float(as_of - entered) / _DAY,
        "amount": last[2],
        "amount_change": last[2] - rows[0][2],
        "amount_changes": amount_changes,
        "close_date_pushes": pushes,
        "days_to_expected_close": to_close,
        "days_past_expected_close": -to_close if -to_close > 0 else 0.0,
        "stage_changes": stage_changes,
        "stage_regressions": regressions,
        "days_since_update": float(as_of - last[0]) / _DAY,
    }


def _outcomes(
    f: OutcomesFeature, deals: Records, won_stage: str, as_of: int, self_id: Any
) -> Value:
    n = _length(deals)
    won = lost = 0
    won_amount = 0.0
    if n:
        ts = _ts_array(_column(deals, "ts", n)).tolist()
        ids = _column(deals, "opportunity_id", n)
        stages = _column(deals, "stage", n)
        amounts = _column(deals, "amount", n)
        start = None if f.window_days is None else as_of - f.window_days * DAY_US
        for i in range(n):
            t = ts[i]
            if (
                t >= as_of
                or (start is not None and t < start)
                or (self_id is not None and ids[i] == self_id)
            ):
                continue
            if stages[i] == won_stage:
                won += 1
                won_amount += float(amounts[i])
            else:
                lost += 1
    if f.metric == "won_count":
        return won
    if f.metric == "lost_count":
        return lost
    if f.metric == "won_amount":
        return won_amount
    return None if won + lost == 0 else float(won) / float(won + lost)


def _derived(f: DerivedFeature, a: Value, b: Value) -> Value:
    if a is None or b is None:
        return None
    fa, fb = float(a), float(b)  # type: ignore[arg-type]
    if f.op == "ratio":
        return None if fb == 0 else fa / fb
    if f.op == "difference":
        return fa - fb
    d = fa - fb
    return d if d > 0 else 0.0


@dataclass(frozen=True)
class _Item:
    """One entity's inputs: its row, account, record tables and as-of time (us)."""

    as_of: int
    row: Mapping[str, Any]
    account: Mapping[str, Any] | None
    sources: dict[tuple[str, str], Records]
    state: Callable[[], dict[str, Value]]
    closed: dict[str, Records]
    self_id: Any


def _compute(plan: _Plan, items: Sequence[_Item]) -> list[dict[str, Value]]:
    """Every feature of ``plan`` for each item, in catalog order. The aggregates of all
    items are computed together (one pass over their concatenated records per
    feature), so N entities in one call cost far less than N calls; each item reads
    only its own records before its own as-of time."""
    as_of = np.array([it.as_of for it in items], dtype=np.int64)
    tables: dict[tuple[str, str], _Table] = {}
    columns: dict[str, list[Value]] = {}  # feature -> its value for each item
    states: list[dict[str, Value]] | None = None
    won_stage = plan.vocab.won_stage
    for f in plan.features:
        if isinstance(f, AggregateFeature):
            key = (f.source, f.scope)
            t = tables.get(key)
            if t is None:
                skip = (
                    [it.row.get("lead_id") for it in items] if f.scope == "account_others" else None
                )
                t = tables[key] = _Table(
                    [it.sources.get(key) for it in items], plan.sources[key], as_of, skip
                )
            columns[f.name] = _aggregate(f, t, plan)
        elif isinstance(f, AttributeFeature):
            on_account = f.table == "account"
            columns[f.name] = [
                _attribute(f, it.account if on_account else it.row, it.as_of) for it in items
            ]
        elif isinstance(f, StateFeature):
            if states is None:
                states = [it.state() for it in items]
            columns[f.name] = [state.get(f.state) for state in states]
        elif isinstance(f, OutcomesFeature):
            columns[f.name] = [
                _outcomes(f, it.closed.get(f.group), won_stage, it.as_of, it.self_id)
                for it in items
            ]
        else:
            x, y = (columns[name] for name in f.inputs)
            columns[f.name] = [_derived(f, a, b) for a, b in zip(x, y, strict=True)]
    if not columns:
        return [{} for _ in items]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _lead_item(
    plan: _Plan,
    as_of: Any,
    lead: Mapping[str, Any],
    account: Mapping[str, Any] | None = None,
    events: Records = None,
    status_history: Records = None,
    activities: Records = None,
    *,
    account_events: Records = None,
    account_closed_deals: Records = None,
) -> _Item:
    t = to_us(as_of)
    sources = {
        ("events", "self"): events,
        ("activities", "self"): activities,
        ("lead_status_history", "self"): status_history,
        ("events", "account_others"): account_events,
    }
    return _Item(
        t,
        lead,
        account,
        sources,
        lambda: _lead_state(plan, status_history, t, lead.get("created_at")),
        {"account": account_closed_deals},
        None,
    )


def _opportunity_item(
    plan: _Plan,
    as_of: Any,
    opportunity: Mapping[str, Any],
    account: Mapping[str, Any] | None = None,
    history: Records = None,
    activities: Records = None,
    *,
    owner_closed_deals: Records = None,
    account_closed_deals: Records = None,
) -> _Item:
    t = to_us(as_of)
    sources = {("activities", "self"): activities, ("opportunity_history", "self"): history}
    return _Item(
        t,
        opportunity,
        account,
        sources,
        lambda: _opportunity_state(plan, history, t),
        {"owner": owner_closed_deals, "account": account_closed_deals},
        opportunity.get("opportunity_id"),
    )


def compute_lead_features_online(
    catalog: Catalog,
    as_of: Any,
    lead: Mapping[str, Any],
    account: Mapping[str, Any] | None = None,
    events: Records = None,
    status_history: Records = None,
    activities: Records = None,
    *,
    account_events: Records = None,
    account_closed_deals: Records = None,
) -> dict[str, Value]:
    """Every lead feature of the catalog as of ``as_of`` for one lead, in catalog order.

    ``lead`` is its ``leads`` row (``lead_id``, ``created_at``, ...), ``account`` its
    account's row. Record tables are the lead's own; ``account_events`` are the events
    of the leads at its account (its own are skipped). Only records with ``ts < as_of``
    are read. Counts are ints, other numbers floats, categories strings, missing None.
    """
    plan = _plan(catalog, "lead")
    item = _lead_item(
        plan,
        as_of,
        lead,
        account,
        events,
        status_history,
        activities,
        account_events=account_events,
        account_closed_deals=account_closed_deals,
    )
    return _compute(plan, [item])[0]


def compute_opportunity_features_online(
    catalog: Catalog,
    as_of: Any,
    opportunity: Mapping[str, Any],
    account: Mapping[str, Any] | None = None,
    history: Records = None,
    activities: Records = None,
    *,
    owner_closed_deals: Records = None,
    account_closed_deals: Records = None,
) -> dict[str, Value]:
    """Every opportunity feature of the catalog as of ``as_of`` for one deal.

    ``opportunity`` is its row (only immutable fields are read: ``opportunity_id``,
    ``created_at``, ``owner_id``, ``segment``); its state at T (stage, amount, expected
    close date, pushes, regressions) is rebuilt from ``history`` rows with ``ts < as_of``.
    ``owner_closed_deals`` / ``account_closed_deals`` are closings of other deals of the
    same owner / account (see :func:`closed_deals`); the deal itself is skipped.
    """
    plan = _plan(catalog, "opportunity")
    item = _opportunity_item(
        plan,
        as_of,
        opportunity,
        account,
        history,
        activities,
        owner_closed_deals=owner_closed_deals,
        account_closed_deals=account_closed_deals,
    )
    return _compute(plan, [item])[0]


def closed_deals(history: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """The first closing row of each opportunity (``opportunity_id, ts, stage, amount``),
    the record the outcome features read; rows of equal ts are ordered as offline."""
    vocab = catalog.vocabulary
    closed = history[history["stage"].isin(vocab.closed_stages)].copy()
    rank = {s: i for i, s in enumerate(vocab.stages)}
    closed["_rank"] = closed["stage"].map(rank)
    closed = closed.sort_values(["opportunity_id", "ts", "_rank", "amount", "expected_close_date"])
    first = closed.drop_duplicates("opportunity_id", keep="first")
    return first[["opportunity_id", "ts", "stage", "amount"]].reset_index(drop=True)


def entity_payload(
    tables: Mapping[str, pd.DataFrame], catalog: Catalog, entity: str, entity_id: str
) -> dict[str, Any]:
    """Slice the raw tables into the payload of one entity (all its records, at any time:
    the engine itself skips those at or after as_of). For tests, notebooks and batch."""
    if entity == "lead":
        leads = tables["leads"]
        lead = leads[leads["lead_id"] == entity_id].iloc[0].to_dict()
        acc = tables["accounts"]
        acc_row = acc[acc["account_id"] == lead["account_id"]]
        colleagues = set(leads.loc[leads["account_id"] == lead["account_id"], "lead_id"])
        ev = tables.get("events", pd.DataFrame(columns=["lead_id", "ts"]))
        st = tables.get("lead_status_history", pd.DataFrame(columns=["lead_id", "ts"]))
        act = tables.get("activities", pd.DataFrame(columns=["lead_id", "ts"]))
        return {
            "lead": lead,
            "account": acc_row.iloc[0].to_dict() if len(acc_row) else None,
            "events": ev[ev["lead_id"] == entity_id],
            "status_history": st[st["lead_id"] == entity_id],
            "activities": act[act["lead_id"] == entity_id],
            "account_events": ev[ev["lead_id"].isin(colleagues)],
            "account_closed_deals": _closed_of(tables, catalog, "account_id", lead["account_id"]),
        }
    if entity != "opportunity":
        raise DataError(f"unknown entity {entity!r}; valid: {', '.join(ENTITY_ID)}")
    opps = tables["opportunities"]
    opp = opps[opps["opportunity_id"] == entity_id].iloc[0].to_dict()
    acc = tables["accounts"]
    acc_row = acc[acc["account_id"] == opp["account_id"]]
    hist = tables.get("opportunity_history", pd.DataFrame(columns=["opportunity_id", "ts"]))
    act = tables.get("activities", pd.DataFrame(columns=["opportunity_id", "ts"]))
    return {
        "opportunity": opp,
        "account": acc_row.iloc[0].to_dict() if len(acc_row) else None,
        "history": hist[hist["opportunity_id"] == entity_id],
        "activities": act[act["opportunity_id"] == entity_id],
        "owner_closed_deals": _closed_of(tables, catalog, "owner_id", opp["owner_id"]),
        "account_closed_deals": _closed_of(tables, catalog, "account_id", opp["account_id"]),
    }


def _closed_of(
    tables: Mapping[str, pd.DataFrame], catalog: Catalog, col: str, value: Any
) -> pd.DataFrame:
    hist = tables.get("opportunity_history")
    opps = tables.get("opportunities")
    if hist is None or opps is None or not len(hist):
        return pd.DataFrame(
            {
                "opportunity_id": [],
                "ts": pd.Series([], dtype="datetime64[us, UTC]"),
                "stage": [],
                "amount": [],
            }
        )
    ids = set(opps.loc[opps[col] == value, "opportunity_id"])
    return closed_deals(hist[hist["opportunity_id"].isin(ids)], catalog)


def _grouped(df: pd.DataFrame | None, key: str) -> dict[Any, list[dict[str, Any]]]:
    if df is None or not len(df):
        return {}
    sub = df[df[key].notna()]
    return {k: g.to_dict("records") for k, g in sub.groupby(key, sort=False)}


def entity_payloads(
    tables: Mapping[str, pd.DataFrame], catalog: Catalog, entity: str
) -> dict[Any, dict[str, Any]]:
    """:func:`entity_payload` for every entity at once (records as lists of dicts)."""
    empty: list[dict[str, Any]] = []
    accounts = {r["account_id"]: r for r in tables["accounts"].to_dict("records")}
    hist = tables.get("opportunity_history")
    opps = tables.get("opportunities")
    closings: dict[str, list[dict[str, Any]]] = {"owner_id": [], "account_id": []}
    by_group: dict[str, dict[Any, list[dict[str, Any]]]] = {"owner_id": {}, "account_id": {}}
    if hist is not None and opps is not None and len(hist):
        first = closed_deals(hist, catalog).merge(
            opps[["opportunity_id", "owner_id", "account_id"]], on="opportunity_id"
        )
        for col in closings:
            by_group[col] = {
                k: g[["opportunity_id", "ts", "stage", "amount"]].to_dict("records")
                for k, g in first.groupby(col, sort=False)
            }
    act = tables.get("activities")
    if entity == "lead":
        leads = tables["leads"]
        events = _grouped(tables.get("events"), "lead_id")
        status = _grouped(tables.get("lead_status_history"), "lead_id")
        acts = _grouped(act, "lead_id")
        members = leads.groupby("account_id")["lead_id"].apply(list).to_dict()
        out = {}
        for lead in leads.to_dict("records"):
            acc = lead["account_id"]
            colleagues = [e for other in members.get(acc, []) for e in events.get(other, empty)]
            out[lead["lead_id"]] = {
                "lead": lead,
                "account": accounts.get(acc),
                "events": events.get(lead["lead_id"], empty),
                "status_history": status.get(lead["lead_id"], empty),
                "activities": acts.get(lead["lead_id"], empty),
                "account_events": colleagues,
                "account_closed_deals": by_group["account_id"].get(acc, empty),
            }
        return out
    history = _grouped(hist, "opportunity_id")
    acts = _grouped(act, "opportunity_id")
    out = {}
    for opp in opps.to_dict("records") if opps is not None else []:
        oid = opp["opportunity_id"]
        out[oid] = {
            "opportunity": opp,
            "account": accounts.get(opp["account_id"]),
            "history": history.get(oid, empty),
            "activities": acts.get(oid, empty),
            "owner_closed_deals": by_group["owner_id"].get(opp["owner_id"], empty),
            "account_closed_deals": by_group["account_id"].get(opp["account_id"], empty),
        }
    return out


def compute_online(
    catalog: Catalog, entity: str, as_of: Any, payload: Mapping[str, Any]
) -> dict[str, Value]:
    """Dispatch on ``entity`` with a payload as built by :func:`entity_payload`."""
    return compute_online_many(catalog, entity, [(as_of, payload)])[0]


def compute_online_many(
    catalog: Catalog, entity: str, items: Sequence[tuple[Any, Mapping[str, Any]]]
) -> list[dict[str, Value]]:
    """:func:`compute_online` of many ``(as_of, payload)`` pairs in one call: the same
    values, with the aggregates computed together (what the API's adaptive batching
    shares between the leads / deals of concurrent requests)."""
    if entity not in ("lead", "opportunity"):
        raise DataError(f"unknown entity {entity!r}; valid: {', '.join(ENTITY_ID)}")
    plan = _plan(catalog, entity)
    make = _lead_item if entity == "lead" else _opportunity_item
    return _compute(plan, [make(plan, as_of, **payload) for as_of, payload in items])


__all__ = [
    "SOURCES",
    "closed_deals",
    "compute_lead_features_online",
    "compute_online",
    "compute_online_many",
    "compute_opportunity_features_online",
    "entity_payload",
    "entity_payloads",
    "to_us",
]
