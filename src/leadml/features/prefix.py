"""Count-like features by prefix sums over the records: the offline engine's ``prefix``
method, for spines with many as-of dates per entity (training sets).

The ``join`` method pairs every (entity, as_of) with every earlier record, so its cost
grows with records x as-of dates per entity. Here each source's records are read once
(one scan, every feature's filter as a bit) and a feature at a spine row is a lookup or
two: cost grows with records + spine rows.

Time semantics are the engine's: a value as of T reads records with ``ts < T``; a window
of ``n`` days reads ``W <= ts < T`` with ``W`` the spine's ``_w<n>`` column (T - n days,
computed by DuckDB as in the join method). To make "before T" one integer comparison,
every record gets its *rank* among the distinct query times Q (every as_of and window
start of the spine): ``r(ts) = #{q in Q: q <= ts}``, so ``ts < Q[j]`` exactly when
``r(ts) <= j``. Records are then counted per (group, rank) cell and cumulated over the
ranks (a *grid*: a count is a difference of two cells), or, when the grid would be too
large (every spine row at its own time), sorted by the composite ``group * (|Q| + 1) + r``
and searched with :func:`numpy.searchsorted` (a count is a difference of prefix sums).

A *group* is the key alone (own counts and recency), or (key, value) for distinct
counts: a spine row then sums, over its key's groups, whether each has a record in the
window. Account-scope features group the account's records by lead: the account total
over the groups, minus the lead's own. On the grid these sums are taken once per as-of
date for every key (spine rows with the same as_of read the same two grid rows), and
records before every window start are dropped first when no feature reads all time.

Handled here: ``count``, ``exists``, ``distinct_count``, ``days_since_last`` (any
window) and ``days_since_first`` (all time) of scope ``self``; ``count``, ``exists`` and
``distinct_count`` (of leads) of scope ``account_others``. Sums, means, minimums,
maximums and windowed first-times stay with the join method.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

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

    def narrowed(self, spans: set[int]) -> _Queries:
        """The same queries over only the times they read for windows ``spans``: the as-of
        times and those windows' starts. A grid of records whose features read only these
        is that much smaller (a 30-day distinct count at 52 weekly dates: 104 times of 157)."""
        used = np.zeros(len(self.times), dtype=bool)
        for rank in (self.rank_at, *(self.rank_w[d] for d in spans)):
            used[rank] = True
        new = np.cumsum(used) - 1  # a used time's rank among the used ones
        return _Queries(
            times=self.times[used],
            at=self.at,
            rank_at=new[self.rank_at],
            rank_w={d: new[self.rank_w[d]] for d in spans},
            top=self.top,
            m=int(used.sum()) + 1,
        )

    def by_date(self, window: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The queries by as-of time (rows with the same as_of share its ranks): each spine
        row's date index, and per date the rank of as_of and of the window's start (None:
        all time)."""
        present = np.zeros(self.m, dtype=bool)
        present[self.rank_at] = True
        ranks = np.flatnonzero(present)
        starts = None
        if window is not None:
            start_of = np.zeros(self.m, dtype=np.int64)
            start_of[self.rank_at] = self.rank_w[window]
            starts = start_of[ranks]
        return (np.cumsum(present) - 1)[self.rank_at], ranks, starts


GRID_CELLS = 100_000_000
"""Records are binned on a grid of (group, query-time rank) cells when it has at most this
many cells (one int64 array of that length at a time: 0.8 GB at the cap); above it they
are sorted by (group, ts) and searched, which needs memory for the records only."""

_NO_TS = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)  # no record: (last, first)


@dataclass
class _Rows:
    """Fetched records: ts (epoch microseconds), query-time rank, filter bit columns and
    which bit each filter is."""

    t: np.ndarray
    rank: np.ndarray
    bits: list[np.ndarray]
    flags: dict[str, tuple[int, int]]


class _Records:
    """A source's records in groups, with their filter bits and query-time rank.

    ``group`` is each record's group (< ``n_groups``): the key's code itself, or a
    (key, value) pair (a distinct-counted value; a lead of an account), in which case
    ``group_key`` holds each group's key and groups are numbered in key order.

    Two layouts, the same answers: a *grid* of per-(group, rank) counts cumulated over
    the ranks, so a count before as_of is one lookup (no sort, no search: the spines of
    training sets and nightly runs, few distinct as-of dates); or, when the grid would be
    too large (:data:`GRID_CELLS`, e.g. every spine row at its own time), the records
    sorted by (group, ts), a count being a difference of prefix sums at binary-searched
    bounds."""

    def __init__(
        self,
        rows: _Rows,
        group: np.ndarray,
        m: int,
        n_groups: int,
        group_key: np.ndarray | None = None,
    ) -> None:
        self.flags = rows.flags
        t, rank, bits = rows.t, rows.rank, rows.bits
        self.n, self.m, self.n_groups = len(t), m, n_groups
        group = group.astype(np.int64)
        self.group_key = group_key
        self.grid = self.n_groups * self.m <= GRID_CELLS
        if self.grid:  # rank-major: a date's cells are one block, in key order
            self.cell = self.cells(group, rank)
        else:
            order = np.lexsort((t, group))
            t, bits = t[order], [b[order] for b in bits]
            self.comp = (group * self.m + rank)[order]
        self.t, self.bits = t, bits
        self._cache: dict[str, tuple[str | None, np.ndarray]] = {}

    def cells(self, group: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Grid layout: the cell of each (group, rank)."""
        return rank * self.n_groups + group

    def mask(self, cond: str | None) -> np.ndarray:
        if cond is None:
            return np.ones(self.n, dtype=bool)
        col, bit = self.flags[cond]
        return (self.bits[col] & bit) != 0

    def _cached(self, what: str, cond: str | None, make: Callable[[], np.ndarray]) -> np.ndarray:
        """One array per record or cell is large at 100M records: only the last one of
        each kind is kept, and callers go through their features grouped by condition
        (:func:`_by_cond`)."""
        hit = self._cache.get(what)
        if hit is None or hit[0] != cond:
            self._cache.pop(what, None)
            self._cache[what] = (cond, make())
        return self._cache[what][1]

    def _int(self) -> type:
        return np.int32 if self.n < np.iinfo(np.int32).max else np.int64

    def prefix(self, cond: str | None) -> np.ndarray:
        """Sorted layout: running count of the records passing ``cond`` (length n + 1).
        Grid layout: per cell, the records passing ``cond`` of its group with rank up to
        the cell's (cumulated over the ranks)."""

        def make() -> np.ndarray:
            if self.grid:
                cells = self.cell if cond is None else self.cell[self.mask(cond)]
                per = np.bincount(cells, minlength=self.m * self.n_groups).reshape(self.m, -1)
                return _down_ranks(np.add, per).ravel()
            out: np.ndarray = np.zeros(self.n + 1, dtype=self._int())
            np.cumsum(self.mask(cond), out=out[1:])
            return out

        return self._cached("prefix", cond, make)

    def extreme(self, cond: str | None, last: bool) -> np.ndarray:
        """Grid layout: per cell, the last (or first) ts of a record passing ``cond`` of
        its group with rank up to the cell's (:data:`_NO_TS` if none). Sorted layout: per
        record index i, the largest index < i (last; -1 if none) or the smallest >= i
        (first; n if none) of a record passing ``cond``."""

        def make() -> np.ndarray:
            mask = self.mask(cond)
            if self.grid:
                ufunc = np.maximum if last else np.minimum
                out = np.full(self.m * self.n_groups, _NO_TS[0 if last else 1], dtype=np.int64)
                ufunc.at(out, self.cell[mask], self.t[mask])
                grid = out.reshape(self.m, -1)
                return _down_ranks(ufunc, grid).ravel()
            if last:
                idx = np.where(mask, np.arange(self.n), -1)
                return np.concatenate([[-1], np.maximum.accumulate(idx)])
            idx = np.where(mask, np.arange(self.n), self.n)
            return np.concatenate([np.minimum.accumulate(idx[::-1])[::-1], [self.n]])

        return self._cached("last" if last else "first", cond, make)

    def _search(self, needles: np.ndarray, side: str) -> np.ndarray:
        # sorted needles walk the records once instead of jumping around them
        order = np.argsort(needles, kind="stable")
        out = np.empty(len(needles), dtype=np.int64)
        out[order] = np.searchsorted(self.comp, needles[order], side=side)  # type: ignore[call-overload]
        return out

    def bounds(self, group: np.ndarray, qs: _Queries, row: np.ndarray | None = None) -> _Bounds:
        """Lookups for queries (``group``, the spine rows ``row`` of ``qs``, default all),
        shared by every feature read over them."""
        return _Bounds(self, group, qs, row)

    def expand(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (query, group of the query's key) pair: query indices and group ids."""
        assert self.group_key is not None
        # key k's groups are first[k]:first[k + 1] (keys are few, queries many); -1: none
        n = max(int(key.max(initial=-1)), int(self.group_key.max(initial=-1))) + 1
        first = np.searchsorted(self.group_key, np.arange(n + 1))
        ok = key >= 0
        k = np.where(ok, key, 0)
        lo = first[k]
        reps = np.where(ok, first[k + 1] - lo, 0)
        row = np.repeat(np.arange(len(key)), reps)
        offset = np.arange(len(row)) - np.repeat(np.cumsum(reps) - reps, reps)
        return row, np.repeat(lo, reps) + offset


class _Bounds:
    """Per query (a group at a spine row's as_of), where its records before as_of end and,
    per window, where they start: grid cells, or record indices into the sorted layout
    (cached per window). Counts, last and first times are lookups there."""

    def __init__(
        self, recs: _Records, group: np.ndarray, qs: _Queries, row: np.ndarray | None
    ) -> None:
        self.recs, self.group, self.qs, self.row = recs, group, qs, row
        rank = qs.rank_at if row is None else qs.rank_at[row]
        if recs.grid:
            self.end = recs.cells(group, rank)
        else:
            self.end = recs._search(group * recs.m + rank, "right")
        self._lo: dict[int | None, np.ndarray] = {}

    def _rank_w(self, window: int) -> np.ndarray:
        rank = self.qs.rank_w[window]
        return rank if self.row is None else rank[self.row]

    def lo(self, window: int | None) -> np.ndarray:
        """Sorted layout: the first record index of the window (None: of the group).
        Grid layout: the cell of the records before the window's start."""
        if window not in self._lo:
            recs, m = self.recs, self.recs.m
            if recs.grid:
                assert window is not None
                self._lo[window] = recs.cells(self.group, self._rank_w(window))
            elif window is None:
                self._lo[window] = recs._search(self.group * m, "left")
            else:
                self._lo[window] = recs._search(self.group * m + self._rank_w(window), "right")
        return self._lo[window]

    def count(self, cond: str | None, window: int | None) -> np.ndarray:
        """Records passing ``cond`` in the window (None: all time) before as_of."""
        pre = self.recs.prefix(cond)
        if self.recs.grid and window is None:
            return pre[self.end].astype(np.int64)
        return pre[self.end].astype(np.int64) - pre[self.lo(window)]

    def last(self, cond: str | None, window: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(whether there is one, ts) of the last record passing ``cond`` in the window."""
        recs = self.recs
        ext = recs.extreme(cond, last=True)
        if recs.grid:
            ts = ext[self.end]
            start = _NO_TS[0] + 1 if window is None else self.qs.times[self._rank_w(window)]
            return ts >= start, ts
        j = ext[self.end]
        ok = j >= self.lo(window)
        return ok, recs.t[np.where(ok, j, 0)] if recs.n else np.zeros(len(j), dtype=np.int64)

    def first(self, cond: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(whether there is one, ts) of the first record passing ``cond``, all time."""
        recs = self.recs
        ext = recs.extreme(cond, last=False)
        if recs.grid:
            ts = ext[self.end]
            return ts < _NO_TS[1], ts
        j = ext[self.lo(None)]
        ok = j < self.end
        return ok, recs.t[np.where(ok, j, 0)] if recs.n else np.zeros(len(j), dtype=np.int64)


def _down_ranks(ufunc: np.ufunc, grid: np.ndarray) -> np.ndarray:
    """``ufunc`` cumulated down the rank axis of a (rank, group) grid, in place. Row by
    row: ``np.cumsum(grid, axis=0, out=grid)`` copies the grid and walks it column-wise,
    3-4x slower at 10^7 cells."""
    for r in range(1, len(grid)):
        ufunc(grid[r], grid[r - 1], out=grid[r])
    return grid


def _by_cond(
    feats: Sequence[AggregateFeature], cond_sql: dict[str, str | None]
) -> list[AggregateFeature]:
    """``feats`` ordered so that those with the same filter are next to each other."""
    return sorted(feats, key=lambda f: (cond_sql[f.name] is not None, cond_sql[f.name] or ""))


def _days(as_of_us: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """(T - ts) in days, bit-identical to the SQL ``days()`` of the join method."""
    return (as_of_us - ts_us).astype(np.float64) / float(DAY_US)


def _temp_table(con: duckdb.DuckDBPyConnection, stack: ExitStack, sql: str) -> str:
    """A temporary table made by ``sql`` (a SELECT), dropped when ``stack`` closes."""
    name = f"_prefix_{uuid.uuid4().hex[:10]}"
    con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
    stack.callback(con.execute, f"DROP TABLE IF EXISTS {name}")
    return name


def prefix_features(
    con: duckdb.DuckDBPyConnection,
    spine: str,
    eid: str,
    keys: dict[str, str],
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
) -> pa.Table:
    """The features ``feats`` (all :func:`handles`) for every row of ``spine`` (``_sid``,
    ``eid``, ``as_of``), as an Arrow table with ``_sid`` and one column per feature.
    ``keys`` maps each source table to its column holding the entity id; ``cond_sql`` maps
    a feature name to its filter over alias ``x`` (None: every record). Counts are int64,
    days float64 (NaN: missing).

    Entity ids become integer codes once, in DuckDB (the spine's entities first, then the
    other leads of their accounts when account features ask for them). Each source's
    records before the last as_of are read once, with the key's code, the filter bits of
    its features and, per distinct-counted column, a value code; own counts, distinct
    counts and the account's other leads are three groupings of them."""
    spans = sorted({f.window_days for f in feats if f.window_days is not None})
    top = con.execute(f"SELECT CAST(max(as_of) AS VARCHAR) FROM {spine}").fetchall()[0][0]
    if top is None:  # an empty spine
        return pa.table(
            {"_sid": np.zeros(0, dtype=np.int64), **{f.name: np.zeros(0) for f in feats}}
        )
    acct = any(f.scope == "account_others" for f in feats)
    with ExitStack() as stack:
        codes = _temp_table(
            con,
            stack,
            "SELECT _k, CAST(row_number() OVER (ORDER BY _k) - 1 AS BIGINT) AS _c FROM "
            f"(SELECT DISTINCT CAST({q(eid)} AS VARCHAR) AS _k FROM {spine})",
        )
        n_spine = con.execute(f"SELECT count(*) FROM {codes}").fetchall()[0][0]
        sp = con.execute(
            f"SELECT s._sid, c._c, epoch_us(s.as_of) AS _t FROM {spine} s "
            f"JOIN {codes} c ON c._k = CAST(s.{q(eid)} AS VARCHAR) ORDER BY s._sid"
        ).fetchnumpy()
        account = None
        if acct:  # the accounts' other leads get the codes after the spine's
            con.execute(
                f"INSERT INTO {codes} SELECT lead_id, {n_spine} - 1 + row_number() OVER "
                "(ORDER BY lead_id) FROM (SELECT DISTINCT l.lead_id FROM leads l "
                f"WHERE l.account_id IN (SELECT a.account_id FROM {codes} c "
                "JOIN leads a ON a.lead_id = c._k) "
                f"AND l.lead_id NOT IN (SELECT _k FROM {codes}))"
            )
            links = con.execute(
                f"SELECT c._c, dense_rank() OVER (ORDER BY l.account_id) AS a, "
                f"l.account_id IS NULL AS none FROM {codes} c "
                "LEFT JOIN leads l ON l.lead_id = c._k"
            ).fetchnumpy()
            n_codes = len(links["_c"])
            account = np.full(n_codes, -1, dtype=np.int64)  # per lead code, -1: none
            account[np.asarray(links["_c"])] = np.where(
                np.asarray(links["none"]), -1, np.asarray(links["a"], dtype=np.int64) - 1
            )
        at = np.asarray(sp["_t"], dtype=np.int64)
        starts = {d: at - d * DAY_US for d in spans}  # window starts: days of 86,400 s
        distinct = np.unique(at)  # few as-of dates in a training set: unique them once
        times = np.unique(np.concatenate([distinct, *(distinct - d * DAY_US for d in spans)]))
        qs = _Queries(
            times=times,
            at=at,
            rank_at=np.searchsorted(times, at),
            rank_w={d: np.searchsorted(times, w) for d, w in starts.items()},
            top="'" + top.replace("'", "''") + "'::TIMESTAMPTZ",
            m=len(times) + 1,
        )
        code = np.asarray(sp["_c"], dtype=np.int64)
        out: dict[str, np.ndarray] = {"_sid": np.asarray(sp["_sid"], dtype=np.int64)}
        for source, key in keys.items():
            group = [f for f in feats if f.source == source]
            if group:
                _source_features(
                    con, stack, source, key, group, cond_sql, codes, code, n_spine, account, qs, out
                )
    # An Arrow table, not a DataFrame: no copy into pandas blocks (0.6 s at 3.9M rows x 12
    # features); NaN (a missing recency) becomes NULL, as DuckDB reads a DataFrame's NaN.
    return pa.table({k: pa.array(v, from_pandas=True) for k, v in out.items()})


def _source_features(
    con: duckdb.DuckDBPyConnection,
    stack: ExitStack,
    source: str,
    key: str,
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
    codes: str,
    code: np.ndarray,
    n_spine: int,
    account: np.ndarray | None,
    qs: _Queries,
    out: dict[str, np.ndarray],
) -> None:
    """The features of one source table into ``out`` (see :func:`prefix_features`):
    ``codes`` is the table of entity codes, ``code`` the spine rows' codes (the first
    ``n_spine`` codes are the spine's), ``account`` each code's account (-1: none)."""
    own = [f for f in feats if f.scope == "self"]
    acct = [f for f in feats if f.scope == "account_others"]
    plain = [f for f in own if f.aggregation != "distinct_count"]
    columns = sorted({f.column or "" for f in own if f.aggregation == "distinct_count"})
    flags = sorted({c for f in feats if (c := cond_sql[f.name]) is not None})
    bit_of, flag_exprs = flag_columns(flags)
    joins = [f"{source} x JOIN {codes} c ON c._k = x.{q(key)}"]
    cols = ["CAST(c._c AS INTEGER) AS _code", "epoch_us(x.ts) AS _t", *flag_exprs]
    for i, column in enumerate(columns):
        col = f"CAST(x.{q(column)} AS VARCHAR)"
        values = _temp_table(
            con,
            stack,
            "SELECT _val, CAST(row_number() OVER (ORDER BY _val) - 1 AS INTEGER) AS _c FROM "
            f"(SELECT DISTINCT {col} AS _val FROM {source} x "
            f"WHERE x.{q(column)} IS NOT NULL AND x.ts < {qs.top})",
        )
        joins.append(f"LEFT JOIN {values} v{i} ON v{i}._val = {col}")
        cols.append(f"coalesce(v{i}._c, -1) AS _v{i}")
    # the colleagues' records (codes from n_spine on) only count for account features
    only_spine = "" if acct else f" AND c._c < {n_spine}"
    got = con.execute(
        f"SELECT {', '.join(cols)} FROM {' '.join(joins)} WHERE x.ts < {qs.top}{only_spine}"
    ).fetchnumpy()
    t, rec_code = np.asarray(got["_t"], dtype=np.int64), np.asarray(got["_code"])
    rows = _Rows(
        t,
        np.searchsorted(qs.times, t, side="right"),
        [np.asarray(got[f"_fb{i}"], dtype=np.int64) for i in range(len(flag_exprs))],
        bit_of,
    )

    def reads(keep: np.ndarray, feats: list[AggregateFeature]) -> tuple[np.ndarray, _Queries]:
        """The query times ``feats`` read, and ``keep`` less the records before all of
        them when every feature is windowed (a 30-day window at one date reads 3% of the
        records)."""
        sub = qs.narrowed({f.window_days for f in feats if f.window_days is not None})
        if all(f.window_days is not None for f in feats):
            keep = keep & (rows.t >= sub.times[0])  # the earliest window start
        return keep, sub

    def records(
        keep: np.ndarray, sub: _Queries, group: np.ndarray, group_key: np.ndarray
    ) -> _Records:
        """The kept records in groups (``group``: each kept record's; ``group_key``: each
        group's key, in key order), on the query times ``sub``."""
        t = rows.t[keep]
        rank = np.searchsorted(sub.times, t, side="right")
        kept = _Rows(t, rank, [b[keep] for b in rows.bits], bit_of)
        return _Records(kept, group, sub.m, len(group_key), group_key)

    if plain or acct:
        n_keys = n_spine if account is None else len(account)
        recs = _Records(rows, rec_code, qs.m, n_keys)
        b = recs.bounds(code, qs)
        _own(b, plain, cond_sql, qs, out)
        mine = {f.name: b.count(cond_sql[f.name], f.window_days) for f in _by_cond(acct, cond_sql)}
        del recs, b
    for i, column in enumerate(columns):
        group = [f for f in own if f.aggregation == "distinct_count" and f.column == column]
        value = np.asarray(got[f"_v{i}"])
        # records of colleagues not in the spine are only for account features
        keep, sub = reads((value >= 0) & (rec_code < n_spine), group)
        pairs, pair_key = _pairs(rec_code[keep], value[keep])
        # distinct values: a spine row counts its key's (key, value) groups with a record
        recs = records(keep, sub, pairs, pair_key)
        for f, n in _over_groups(recs, sub, code, group, cond_sql, lambda f: True):
            out[f.name] = n
    if acct:
        assert account is not None
        # a group per lead with an account, numbered in account order
        leads = np.flatnonzero(account >= 0)
        leads = leads[np.argsort(account[leads], kind="stable")]
        lead_group = np.full(len(account), -1, dtype=np.int64)
        lead_group[leads] = np.arange(len(leads))
        keep, sub = reads(lead_group[rec_code] >= 0, acct)
        recs = records(keep, sub, lead_group[rec_code[keep]], account[leads])
        _account_others(recs, sub, acct, cond_sql, mine, account[code], out)


def _pairs(key: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Records grouped by (key, value): each record's group, numbered in (key, value)
    order, and each group's key."""
    width = int(value.max()) + 1 if len(value) else 1
    seen, pairs = pd.factorize(key.astype(np.int64) * width + value)
    order = np.argsort(pairs)
    renum = np.empty(len(pairs), dtype=np.int64)
    renum[order] = np.arange(len(pairs))
    return renum[seen], pairs[order] // width


def _own(
    b: _Bounds,
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
    qs: _Queries,
    out: dict[str, np.ndarray],
) -> None:
    """Counts and recency of the spine rows' own records (``b``: their bounds)."""
    for f in _by_cond(feats, cond_sql):
        cond = cond_sql[f.name]
        if f.aggregation in ("count", "exists"):
            n = b.count(cond, f.window_days)
            out[f.name] = n if f.aggregation == "count" else (n > 0).astype(np.int64)
        else:
            last = f.aggregation == "days_since_last"  # else days_since_first, all time
            ok, ts = b.last(cond, f.window_days) if last else b.first(cond)
            out[f.name] = np.where(ok, _days(qs.at, np.where(ok, ts, qs.at)), np.nan)


def _over_groups(
    recs: _Records,
    qs: _Queries,
    key: np.ndarray,
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
    groups_with_one: Callable[[AggregateFeature], bool],
) -> Iterator[tuple[AggregateFeature, np.ndarray]]:
    """Per feature, at each spine row: over the groups of the row's key (``key``; -1: no
    key, 0), the records passing the feature's filter in its window before as_of, summed,
    or (if ``groups_with_one(feature)``) the number of groups with one.

    Grid layout: spine rows with the same as_of read the same two rows of the cumulated
    grid, so the sums are taken per date for every key at once (a row difference and a
    bincount over the groups) and each spine row picks its key's; the sorted layout
    pairs every spine row with each group of its key (:meth:`_Records.expand`)."""
    ok = key >= 0
    if recs.grid:
        assert recs.group_key is not None
        n_keys = max(int(key.max(initial=-1)), int(recs.group_key.max(initial=-1))) + 1
        dates = {w: qs.by_date(w) for w in {f.window_days for f in feats}}
        for f in _by_cond(feats, cond_sql):
            pre = recs.prefix(cond_sql[f.name]).reshape(recs.m, recs.n_groups)
            date, ends, starts = dates[f.window_days]
            per_date = np.empty((len(ends), n_keys), dtype=np.int64)
            for j, end in enumerate(ends):
                n = pre[end] if starts is None else pre[end] - pre[starts[j]]
                w = n > 0 if groups_with_one(f) else n
                per_date[j] = np.bincount(recs.group_key, weights=w, minlength=n_keys)
            yield f, np.where(ok, per_date[date, np.where(ok, key, 0)], 0)
        return
    row, group = recs.expand(key)
    b = recs.bounds(group, qs, row)
    for f in _by_cond(feats, cond_sql):
        n = b.count(cond_sql[f.name], f.window_days)
        w = n > 0 if groups_with_one(f) else n
        yield f, np.bincount(row, weights=w, minlength=len(key)).astype(np.int64)


def _account_others(
    recs: _Records,
    qs: _Queries,
    feats: Sequence[AggregateFeature],
    cond_sql: dict[str, str | None],
    mine: dict[str, np.ndarray],
    account: np.ndarray,
    out: dict[str, np.ndarray],
) -> None:
    """Over the other leads of the lead's account: ``recs`` are the account's records (of
    every lead of it, in the spine or not) grouped by (account, lead); counts are the
    account's total minus the lead's own (``mine``), distinct leads count the groups with
    a record, less the lead itself. ``account``: the spine rows' account codes (-1: none)."""
    has = account >= 0

    def leads(f: AggregateFeature) -> bool:
        return f.aggregation == "distinct_count"

    for f, total in _over_groups(recs, qs, account, feats, cond_sql, leads):
        n = np.where(has, total - ((mine[f.name] > 0) if leads(f) else mine[f.name]), 0)
        out[f.name] = (n > 0).astype(np.int64) if f.aggregation == "exists" else n
