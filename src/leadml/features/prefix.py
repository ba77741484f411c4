"""Count-like features by prefix sums over time-sorted records: the offline engine's
``prefix`` method, for spines with many as-of dates per entity (training sets).

The ``join`` method pairs every (entity, as_of) with every earlier record, so its cost
grows with records x as-of dates per entity. Here each source's records are read once,
sorted by (key, ts), and a feature at a spine row is a few binary searches and a
difference of prefix sums: cost grows with records + spine rows.

Time semantics are the engine's: a value as of T reads records with ``ts < T``; a window
of ``n`` days reads ``W <= ts < T`` with ``W`` the spine's ``_w<n>`` column (T - n days,
computed by DuckDB as in the join method). To make "before T" one integer comparison,
every record gets its *rank* among the distinct query times Q (every as_of and window
start of the spine): ``r(ts) = #{q in Q: q <= ts}``, so ``ts < Q[j]`` exactly when
``r(ts) <= j``. Records sorted by (group, ts) are then sorted by the composite
``group * (|Q| + 1) + r`` too, and :func:`numpy.searchsorted` on it answers every spine
row at once.

A *group* is the key alone (own counts and recency), or (key, value) for distinct
counts: a spine row then sums, over its key's groups, whether each has a record in the
window. Account-scope features group the account's records by lead: the account total
over the groups, minus the lead's own.

Handled here: ``count``, ``exists``, ``distinct_count``, ``days_since_last`` (any
window) and ``days_since_first`` (all time) of scope ``self``; ``count``, ``exists`` and
``distinct_count`` (of leads) of scope ``account_others``. Sums, means, minimums,
maximums and windowed first-times stay with the join method.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from leadml.features.catalog import AggregateFeature
from leadml.features.offline import DAY_US, flag_columns, q


def handles(f: AggregateFeature) -> bool:
    """Whether the prefix method computes ``f`` (else the join method does)."""
    a = f.aggregation
    if a in ("count", "exists"):
        return True
    if a == "distinct_count":  # of values, or (account scope) of the account's leads
        return f.scope == "self" or f.column == "lead_id"
    return f.scope == "self" and (
        a == "days_since_last" or (a == "days_since_first" and f.window_days is None)
    )


@dataclass
class _Queries:
    """The spine's query times: as_of in microseconds, and the ranks of as_of and of each
    window start among the sorted distinct query times."""

    times: np.ndarray
    at: np.ndarray
    rank_at: np.ndarray
    rank_w: dict[int, np.ndarray]
    top: str  # TIMESTAMPTZ literal: the last as_of (no record at or after it is read)
    m: int  # number of distinct query times + 1


class _Sorted:
    """Records sorted by (group, ts), with their filter bits and query-time rank.

    ``select`` yields ``_code`` (the key's code), optionally ``_v`` (a value code: then a
    group is (key, value)), ``_t`` (epoch microseconds) and ``_fb<i>`` flag bits."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, select: str, flags: Sequence[str], qs: _Queries
    ) -> None:
        got = con.execute(select).fetchnumpy()
        self.flags = flag_columns(flags)[0]
        n_cols = len({col for col, _ in self.flags.values()})
        self.bits = [np.asarray(got[f"_fb{i}"], dtype=np.int64) for i in range(n_cols)]
        self.t = np.asarray(got["_t"], dtype=np.int64)
        self.n = len(self.t)
        self.m = qs.m
        code = np.asarray(got["_code"], dtype=np.int64)
        if "_v" in got:
            v = np.asarray(got["_v"], dtype=np.int64)
            new = np.ones(self.n, dtype=bool)
            new[1:] = (code[1:] != code[:-1]) | (v[1:] != v[:-1])
            group = np.cumsum(new) - 1
            self.group_key = code[new]  # the key of each group, ascending
        else:
            group = code
            self.group_key = None
        self.comp = group * self.m + np.searchsorted(qs.times, self.t, side="right")
        self._pre: tuple[str | None, np.ndarray] | None = None

    def mask(self, cond: str | None) -> np.ndarray:
        if cond is None:
            return np.ones(self.n, dtype=bool)
        col, bit = self.flags[cond]
        return (self.bits[col] & bit) != 0

    def prefix(self, cond: str | None) -> np.ndarray:
        """Running count of the records passing ``cond`` (length n + 1). Only the last
        one is kept (one array per record is large at 100M records): callers go through
        their features grouped by condition (:func:`_by_cond`)."""
        if self._pre is None or self._pre[0] != cond:
            self._pre = None
            small = self.n < np.iinfo(np.int32).max
            out = np.zeros(self.n + 1, dtype=np.int32 if small else np.int64)
            np.cumsum(self.mask(cond), out=out[1:])
            self._pre = (cond, out)
        return self._pre[1]

    def _search(self, needles: np.ndarray, side: str) -> np.ndarray:
        # sorted needles walk the records once instead of jumping around them
        order = np.argsort(needles, kind="stable")
        out = np.empty(len(needles), dtype=np.int64)
        out[order] = np.searchsorted(self.comp, needles[order], side=side)  # type: ignore[call-overload]
        return out

    def before(self, group: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Per query: an index into the records: all of groups < group, and those of
        ``group`` with ts < times[rank]."""
        return self._search(group * self.m + rank, "right")

    def start(self, group: np.ndarray) -> np.ndarray:
        return self._search(group * self.m, "left")

    def bounds(self, group: np.ndarray, qs: _Queries, row: np.ndarray | None = None) -> _Bounds:
        """Record index bounds for queries (``group``, the spine rows ``row`` of ``qs``,
        default all), shared by every feature read over them."""
        return _Bounds(self, group, qs, row)

    def expand(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (query, group of the query's key) pair: query indices and group ids."""
        assert self.group_key is not None
        lo = np.searchsorted(self.group_key, key, side="left")
        reps = np.searchsorted(self.group_key, key, side="right") - lo
        row = np.repeat(np.arange(len(key)), reps)
        offset = np.arange(len(row)) - np.repeat(np.cumsum(reps) - reps, reps)
        return row, np.repeat(lo, reps) + offset


class _Bounds:
    """Per query, the index of its first record before as_of (``end``) and, per window,
    of its first record in the window (cached): a count is a difference of prefix sums."""

    def __init__(
        self, recs: _Sorted, group: np.ndarray, qs: _Queries, row: np.ndarray | None
    ) -> None:
        self.recs, self.group, self.qs, self.row = recs, group, qs, row
        self.end = recs.before(group, qs.rank_at if row is None else qs.rank_at[row])
        self._lo: dict[int | None, np.ndarray] = {}

    def lo(self, window: int | None) -> np.ndarray:
        if window not in self._lo:
            if window is None:
                self._lo[window] = self.recs.start(self.group)
            else:
                rank = self.qs.rank_w[window]
                self._lo[window] = self.recs.before(
                    self.group, rank if self.row is None else rank[self.row]
                )
        return self._lo[window]

    def count(self, cond: str | None, window: int | None) -> np.ndarray:
        """Records passing ``cond`` in the window (None: all time) before as_of."""
        pre = self.recs.prefix(cond)
        return pre[self.end] - pre[self.lo(window)]


def _by_cond(
    feats: Sequence[AggregateFeature], cond_sql: dict[str, str | None]
) -> list[AggregateFeature]:
    """``feats`` ordered so that those with the same filter are next to each other."""
    return sorted(feats, key=lambda f: (cond_sql[f.name] is not None, cond_sql[f.name] or ""))


def _select(code: str, value: str | None, joined: str, flags: Sequence[str], qs: _Queries) -> str:
    """The SELECT for :class:`_Sorted` over ``joined`` (the source as ``x``)."""
    cols = [f"{code} AS _code", "epoch_us(x.ts) AS _t", *flag_columns(flags)[1]]
    if value is not None:
        cols.insert(1, f"{value} AS _v")
    order = "_code, _v, _t" if value is not None else "_code, _t"
    return f"SELECT {', '.join(cols)} FROM {joined} WHERE x.ts < {qs.top} ORDER BY {order}"


def _days(as_of_us: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """(T - ts) in days, bit-identical to the SQL ``days()`` of the join method."""
    return (as_of_us - ts_us).astype(np.float64) / float(DAY_US)


class _Codes:
    """Integer codes for string ids, registered in DuckDB for the duration of a ``with``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, ids: np.ndarray, column: str) -> None:
        self.con = con
        self.frame = pd.DataFrame({column: pd.unique(ids)})
        self.frame["_c"] = np.arange(len(self.frame), dtype=np.int64)
        self.index = pd.Series(self.frame["_c"].to_numpy(), index=self.frame[column])
        self.name = f"_codes_{uuid.uuid4().hex[:8]}"

    def of(self, ids: np.ndarray) -> np.ndarray:
        """Codes of ``ids``; -1 for an id without one."""
        return self.index.reindex(ids).fillna(-1).to_numpy(dtype=np.int64)

    def __enter__(self) -> str:
        self.con.register(self.name, self.frame)
        return self.name

    def __exit__(self, *exc: object) -> None:
        self.con.unregister(self.name)


def prefix_features(
    con: duckdb.DuckDBPyConnection,
    spine: str,
    eid: str,
    source: str,
    key: str,
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
) -> pd.DataFrame:
    """The features ``feats`` (all of ``source``, all :func:`handles`) for every row of
    ``spine`` (``_sid``, ``eid``, ``as_of``, ``_w<n>``), as a frame with ``_sid`` and
    one column per feature. ``cond_sql`` maps a feature name to its filter over alias
    ``x`` (None: every record). Counts are int64, days float64 (NaN: missing)."""
    spans = sorted({f.window_days for f in feats if f.window_days is not None})
    wcols = "".join(f", epoch_us(_w{d}) AS _w{d}" for d in spans)
    sp = con.execute(
        f"SELECT _sid, {q(eid)} AS _k, epoch_us(as_of) AS _t{wcols} FROM {spine} ORDER BY _sid"
    ).fetchnumpy()
    top = con.execute(f"SELECT CAST(max(as_of) AS VARCHAR) FROM {spine}").fetchall()[0][0]
    out: dict[str, np.ndarray] = {"_sid": np.asarray(sp["_sid"], dtype=np.int64)}
    if top is None:  # an empty spine
        return pd.DataFrame({**out, **{f.name: np.zeros(0) for f in feats}})
    at = np.asarray(sp["_t"], dtype=np.int64)
    starts = {d: np.asarray(sp[f"_w{d}"], dtype=np.int64) for d in spans}
    times = np.unique(np.concatenate([at, *starts.values()]))
    qs = _Queries(
        times=times,
        at=at,
        rank_at=np.searchsorted(times, at),
        rank_w={d: np.searchsorted(times, w) for d, w in starts.items()},
        top="'" + top.replace("'", "''") + "'::TIMESTAMPTZ",
        m=len(times) + 1,
    )
    keys = np.asarray(sp["_k"], dtype=object)
    codes = _Codes(con, keys, "_k")
    code = codes.of(keys)
    own = [f for f in feats if f.scope == "self"]
    acct = [f for f in feats if f.scope == "account_others"]
    plain = [f for f in own if f.aggregation != "distinct_count"]
    with codes as name:
        joined = f"{source} x JOIN {name} c ON c._k = x.{q(key)}"
        if plain or acct:
            flags = sorted({c for f in [*plain, *acct] if (c := cond_sql[f.name]) is not None})
            recs = _Sorted(con, _select("c._c", None, joined, flags, qs), flags, qs)
            b = recs.bounds(code, qs)
            _own(recs, b, plain, cond_sql, qs, out)
            mine = {
                f.name: b.count(cond_sql[f.name], f.window_days) for f in _by_cond(acct, cond_sql)
            }
            del recs
        for column in sorted({f.column or "" for f in own if f.aggregation == "distinct_count"}):
            group = [f for f in own if f.aggregation == "distinct_count" and f.column == column]
            _distinct(con, joined, column, group, cond_sql, code, qs, out)
    if acct:
        _account_others(con, source, key, keys, acct, cond_sql, mine, qs, out)
    return pd.DataFrame(out)


def _own(
    recs: _Sorted,
    b: _Bounds,
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
    qs: _Queries,
    out: dict[str, np.ndarray],
) -> None:
    """Counts and recency of the spine rows' own records (``b``: their bounds)."""
    first, end = b.lo(None), b.end
    for f in _by_cond(feats, cond_sql):
        cond = cond_sql[f.name]
        if f.aggregation in ("count", "exists"):
            n = b.count(cond, f.window_days)
            out[f.name] = n if f.aggregation == "count" else (n > 0).astype(np.int64)
            continue
        mask = recs.mask(cond)
        if f.aggregation == "days_since_last":
            lo = b.lo(f.window_days)
            # the largest masked index < end
            idx = np.where(mask, np.arange(recs.n), -1)
            last = np.concatenate([[-1], np.maximum.accumulate(idx)]) if recs.n else np.array([-1])
            j = last[end]
            ok = j >= lo
        else:  # days_since_first, all time: the smallest masked index >= the key's first
            idx = np.where(mask, np.arange(recs.n), recs.n)
            nxt = np.concatenate([np.minimum.accumulate(idx[::-1])[::-1], [recs.n]])
            j = nxt[first]
            ok = j < end
        ts = recs.t[np.where(ok, j, 0)] if recs.n else np.zeros(len(end), dtype=np.int64)
        out[f.name] = np.where(ok, _days(qs.at, ts), np.nan)


def _distinct(
    con: duckdb.DuckDBPyConnection,
    joined: str,
    column: str,
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
    code: np.ndarray,
    qs: _Queries,
    out: dict[str, np.ndarray],
) -> None:
    """Distinct non-missing values of ``column`` per feature: records grouped by (key,
    value), only those some feature counts."""
    flags = sorted({c for f in feats if (c := cond_sql[f.name]) is not None})
    counted = (
        "TRUE"
        if any(cond_sql[f.name] is None for f in feats)
        else " OR ".join(f"({c})" for c in flags)
    )
    values = (
        con.execute(
            f"SELECT DISTINCT CAST(x.{q(column)} AS VARCHAR) AS v FROM {joined} "
            f"WHERE x.{q(column)} IS NOT NULL AND ({counted}) AND x.ts < {qs.top}"
        )
        .df()["v"]
        .to_numpy(dtype=object)
    )
    vcodes = _Codes(con, values, "_val")
    with vcodes as vname:
        select = _select(
            "c._c",
            "v._c",
            f"{joined} JOIN {vname} v ON v._val = CAST(x.{q(column)} AS VARCHAR)",
            flags,
            qs,
        )
        recs = _Sorted(con, select, flags, qs)
    row, group = recs.expand(code)
    b = recs.bounds(group, qs, row)
    for f in _by_cond(feats, cond_sql):
        has = b.count(cond_sql[f.name], f.window_days) > 0
        out[f.name] = np.bincount(row, weights=has, minlength=len(code)).astype(np.int64)


def _account_others(
    con: duckdb.DuckDBPyConnection,
    source: str,
    key: str,
    leads: np.ndarray,
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
    mine: dict[str, np.ndarray],
    qs: _Queries,
    out: dict[str, np.ndarray],
) -> None:
    """Over the other leads of the lead's account: the account's records (of every lead
    of it, in the spine or not) grouped by lead; counts are the account's total minus the
    lead's own, distinct leads count the groups with a record, less the lead itself."""
    lead_codes = _Codes(con, leads, "lead_id")
    with lead_codes as lname:
        links = con.execute(
            f"SELECT c.lead_id, l.account_id FROM {lname} c "
            "LEFT JOIN leads l ON l.lead_id = c.lead_id"
        ).df()
    account_of = pd.Series(links["account_id"].to_numpy(), index=links["lead_id"])
    accounts = _Codes(con, links["account_id"].dropna().to_numpy(dtype=object), "account_id")
    acode = accounts.of(account_of.reindex(leads).to_numpy(dtype=object))
    flags = sorted({c for f in feats if (c := cond_sql[f.name]) is not None})
    with accounts as aname:
        colleagues = (
            con.execute(
                f"SELECT l.lead_id FROM leads l JOIN {aname} a ON a.account_id = l.account_id"
            )
            .df()["lead_id"]
            .to_numpy(dtype=object)
        )
        everyone = _Codes(con, colleagues, "lead_id")
        with everyone as ename:
            joined = (
                f"{source} x JOIN {ename} e ON e.lead_id = x.{q(key)} "
                f"JOIN leads l ON l.lead_id = x.{q(key)} "
                f"JOIN {aname} c ON c.account_id = l.account_id"
            )
            recs = _Sorted(con, _select("c._c", "e._c", joined, flags, qs), flags, qs)
    has = acode >= 0
    row, group = recs.expand(acode)
    b = recs.bounds(group, qs, row)
    for f in _by_cond(feats, cond_sql):
        per = b.count(cond_sql[f.name], f.window_days)
        if f.aggregation == "distinct_count":
            n = np.bincount(row, weights=per > 0, minlength=len(leads)) - (mine[f.name] > 0)
        else:
            n = np.bincount(row, weights=per, minlength=len(leads)) - mine[f.name]
        n = np.where(has, n, 0).astype(np.int64)
        out[f.name] = (n > 0).astype(np.int64) if f.aggregation == "exists" else n
