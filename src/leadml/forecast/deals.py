"""Point-in-time state of the deal book, periods, and the empirical close-rate estimator.

Time semantics: the state of a deal *as of* T is rebuilt from its
``opportunity_history`` rows with ``ts < T`` (never from the current
``opportunities`` row, whose only use is the static owner, segment and creation
time). A deal is open at T when its latest row before T has an open stage. An
outcome (won / lost) is visible at T only when its row has ``ts < T``; every
function here that looks at outcomes takes the as-of time and masks the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from leadml.config import Vocabulary
from leadml.errors import LeadmlError

GROUPS = ("team", "segment", "owner")
GROUP_COLUMN = {"team": "team", "segment": "segment", "owner": "owner_id"}

# A probability source: (connection, as_of, period_end) -> DataFrame with
# opportunity_id and p_won_by (probability that the deal, open at as_of, is won
# at a time < period_end). It must read only data with ts < as_of.
DealProbabilities = Callable[[duckdb.DuckDBPyConnection, pd.Timestamp, pd.Timestamp], pd.DataFrame]


# How many days after the last record an as-of date may be (a weekly export still forecasts).
STALE_DAYS = 7
# how to forecast with a model's deal probabilities instead of the empirical close rates
FROM_A_MODEL = "leadml forecast --probabilities; for the nightly run batch.forecast_source: model"
# an as-of more than this many days after the newest record is read, with a warning
QUIET_DAYS = 2


def latest_usable(last_record: pd.Timestamp) -> pd.Timestamp:
    """The latest as-of (or range end) the data supports: ``STALE_DAYS`` days after the
    day of its last record (the forecast and the funnel refuse later ones)."""
    return last_record.normalize() + pd.Timedelta(days=STALE_DAYS)


class ForecastError(LeadmlError):
    """A forecast request that cannot be answered as asked."""


class TooLittleHistory(ForecastError):
    """The deal history before the as-of date is too short to forecast from (yet): a
    later as-of date would work."""


# ------------------------------------------------------------------ periods


@dataclass(frozen=True)
class Period:
    """A calendar period ``[start, end)`` in UTC: a quarter (``2026Q4``) or a month."""

    label: str
    start: pd.Timestamp
    end: pd.Timestamp
    months: int

    def shifted(self, k: int) -> Period:
        """The period ``k`` periods earlier (k > 0) or later (k < 0)."""
        start = self.start - pd.DateOffset(months=self.months * k)
        return period_starting(start, self.months)

    def earlier(self, k: int) -> Period:
        """The ``k``-th earlier period at the same place of its quarter (see
        :func:`lookback_months`): what a forecast of this period learns from."""
        start = self.start - pd.DateOffset(months=lookback_months(self.months) * k)
        return period_starting(start, self.months)

    def weeks_left(self, as_of: pd.Timestamp) -> float:
        return (self.end - as_of) / pd.Timedelta(days=7)


def lookback_months(months: int) -> int:
    """How far apart the earlier periods a forecast learns from are: whole quarters.

    B2B wins bunch in a quarter's last month (the demo company wins 2.4x as much in a
    quarter's third month as in its first, 2024Q3-2025Q3), so a month is compared with
    the same month of earlier quarters, not with the month before it."""
    return math.lcm(months, 3)


def period_starting(start: pd.Timestamp, months: int) -> Period:
    start = pd.Timestamp(start)
    end = start + pd.DateOffset(months=months)
    if months == 3:
        label = f"{start.year}Q{(start.month - 1) // 3 + 1}"
    else:
        label = f"{start.year}-{start.month:02d}"
    return Period(label, start, end, months)


def parse_period(text: str) -> Period:
    """``2026Q4`` / ``2026-Q4`` (a quarter) or ``2026-10`` (a month), in UTC."""
    raw = text.strip().upper()
    if m := re.fullmatch(r"(\d{4})-?Q([1-4])", raw):
        start = pd.Timestamp(int(m[1]), 3 * (int(m[2]) - 1) + 1, 1, tz="UTC")
        return period_starting(start, 3)
    if m := re.fullmatch(r"(\d{4})-(\d{2})", raw):
        if 1 <= int(m[2]) <= 12:
            return period_starting(pd.Timestamp(int(m[1]), int(m[2]), 1, tz="UTC"), 1)
    raise ForecastError(
        f"--period {text!r} is not a period; write a quarter like 2026Q4 or a month like 2026-10"
    )


def quarter_of(ts: pd.Timestamp) -> Period:
    return period_of(ts, 3)


def period_of(ts: pd.Timestamp, months: int) -> Period:
    """The period of ``months`` months (a quarter or a month) that holds ``ts``, in UTC."""
    ts = pd.Timestamp(ts)
    month = (ts.month - 1) // months * months + 1
    return period_starting(pd.Timestamp(ts.year, month, 1, tz="UTC"), months)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\S*)?$")


def as_utc(value: object, what: str = "--as-of") -> pd.Timestamp:
    """A timestamp in UTC (naive values are read as UTC). Text must be ISO 8601
    (2026-11-27, 2026-11-27T09:00): 11/10/2025 could be either month first or day first."""
    if isinstance(value, str) and value.strip() and not _ISO_DATE.match(value.strip()):
        raise ForecastError(
            f"{what} {value!r} is not a date in ISO form; write it like 2026-11-27 (year-month-day)"
        )
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ForecastError(
            f"{what} {value!r} is not a date; write an ISO date like 2026-11-27"
        ) from None
    if ts is pd.NaT:
        raise ForecastError(f"{what} is missing; write an ISO date like 2026-11-27")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


WEEK = pd.Timedelta(days=7)


def numeric_column(frame: pd.DataFrame, col: str, what: str) -> pd.Series:
    """``frame[col]`` as floats; a value that is not a number is a ForecastError naming
    ``what`` (e.g. "deal probabilities"), the column and an example."""
    raw = frame[col]
    out = pd.to_numeric(raw, errors="coerce").astype(float)
    _check_parsed(raw, out, col, what, "a number")
    return out


def time_column(frame: pd.DataFrame, col: str, what: str) -> pd.Series:
    """``frame[col]`` as UTC timestamps (ISO dates or times), with a clear error like
    :func:`numeric_column`."""
    raw = frame[col]
    out = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
    _check_parsed(raw, out, col, what, "an ISO date or time like 2026-11-27")
    return out


def _check_parsed(raw: pd.Series, parsed: pd.Series, col: str, what: str, expected: str) -> None:
    bad = raw.notna().to_numpy() & parsed.isna().to_numpy()
    if bad.any():
        example = raw[bad].iloc[0]
        raise ForecastError(
            f"{what}: column {col} has {int(bad.sum())} value(s) that are not {expected} "
            f"(e.g. {example!r}); fix those rows"
        )


def weekly_rhythm(months: int) -> bool:
    """Whether earlier periods are read at the same weekly call (:func:`same_moment`) or
    at the same calendar distance to their end: quarters follow the weekly rhythm; a
    month is too short for it, as the matched moment is up to 6 days off a horizon of
    3-4 weeks (on the default company, a month's forecast moved 19% or more from one
    day to the next at the 90th percentile with no new data, 8% by calendar distance)."""
    return months % 3 == 0


def monday_before(ts: pd.Timestamp) -> pd.Timestamp:
    """The Monday 00:00 UTC on or before ``ts``: the weekly forecast call.

    A quarter's forecast as of any day of a week replays the moments of that week's
    call in earlier periods (:func:`same_moment`), so a forecast moves with the data,
    not with the weekday: replaying each day's own weekday moved the default company's
    2025Q3 forecast by up to 6% from one day to the next (Sunday to Tuesday, 4.35M to
    4.85M from open deals, no deal won in between), as the horizon of each earlier
    moment shifts by days against the weekly rhythm of the period ends."""
    day = ts.normalize()
    return day - pd.Timedelta(days=day.weekday())


def same_moment(as_of: pd.Timestamp, period_end: pd.Timestamp, end_k: pd.Timestamp) -> pd.Timestamp:
    """The moment of an earlier period (ending ``end_k``) that matches ``as_of`` in a
    period ending ``period_end``: the same weekday and time as ``as_of``, with as many
    weekly cycles left before the period end (week starts at that weekday in
    ``[moment, end_k)``) as ``as_of`` has before ``period_end``.

    The weekly forecast call "two calls before quarter end" is the same moment in every
    quarter, while the calendar distance ``period_end - as_of`` is not: quarters end on
    different weekdays, and deals move, and are pulled into the quarter, in weekly
    rhythm (on the simulator, ``end_k - (period_end - as_of)`` left the last week of some
    quarters out and under-forecast week-1 revenue by up to half). The result is
    within 6 days of ``end_k - (period_end - as_of)``.
    """
    n = max(int(np.ceil((period_end - as_of) / WEEK)), 1)
    r = (end_k - as_of) % WEEK
    if r == pd.Timedelta(0):
        r = WEEK
    return end_k - r - WEEK * (n - 1)


# --------------------------------------------------------------- the deal book


class DealHistory:
    """The opportunity history in memory, sorted, with per-row derived columns.

    Build once per connection and ask it for the state at any time T:
    :meth:`snapshot` uses only rows with ``ts < T``; :meth:`won_in` and
    :meth:`outcomes_before` see only outcomes before their ``before`` argument.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, vocab: Vocabulary) -> None:
        self.vocab = vocab
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        for needed in ("opportunities", "opportunity_history"):
            if needed not in tables:
                raise ForecastError(
                    f"table {needed} is missing from the data; deal forecasts and alerts need "
                    "opportunities and opportunity_history (see `leadml validate`)"
                )
        team = "r.team" if "reps" in tables else "NULL"
        join = "LEFT JOIN reps r ON r.rep_id = o.owner_id" if "reps" in tables else ""
        self.static = con.execute(
            f"SELECT o.opportunity_id, o.owner_id, o.segment, o.created_at, "
            f"CAST({team} AS VARCHAR) AS team FROM opportunities o {join}"
        ).df()
        self.static["team"] = self.static["team"].fillna("(no team)")
        h = con.execute(
            "SELECT opportunity_id, ts, stage, amount, expected_close_date "
            "FROM opportunity_history ORDER BY opportunity_id, ts"
        ).df()
        self.targets = (
            con.execute("SELECT period_start, period_end, team, segment, amount FROM targets").df()
            if "targets" in tables
            else pd.DataFrame(columns=["period_start", "period_end", "team", "segment", "amount"])
        )
        self.history = self._derive(h)
        self.data_end = pd.Timestamp(h["ts"].max()) if len(h) else None
        self.data_start = pd.Timestamp(h["ts"].min()) if len(h) else None
        # The freshest record of any table: a quiet weekend in the deal history must not
        # make Monday's forecast "after the data".
        from leadml.features.labels import data_end

        self.last_record = data_end(con)
        won = h[h["stage"] == vocab.won_stage].groupby("opportunity_id", sort=False).head(1)
        closed = (
            h[h["stage"].isin(vocab.closed_stages)].groupby("opportunity_id", sort=False).head(1)
        )
        first = h.groupby("opportunity_id", sort=False)["ts"].min().rename("first_seen")
        out = pd.DataFrame({"first_seen": first})
        out["won_at"] = won.set_index("opportunity_id")["ts"]
        out["won_amount"] = won.set_index("opportunity_id")["amount"]
        out["closed_at"] = closed.set_index("opportunity_id")["ts"]
        self.outcomes = out.reset_index().merge(self.static, on="opportunity_id", how="left")
        self.won_at = self.outcomes.set_index("opportunity_id")["won_at"]
        # Static attributes on every row, so that a snapshot is a filter, not a join.
        static = self.static.drop(columns=["created_at"]).set_index("opportunity_id")
        ids = self.history["opportunity_id"]
        for col in ("owner_id", "segment", "team"):
            self.history[col] = static[col].reindex(ids).to_numpy()
        self.history["created"] = first.reindex(ids).to_numpy()
        self.history["_open"] = self.history["stage"].isin(vocab.open_stages).to_numpy()
        self._snapshots: dict[pd.Timestamp, pd.DataFrame] = {}

    @staticmethod
    def _derive(h: pd.DataFrame) -> pd.DataFrame:
        if h.empty:  # no deals yet: the derived columns, no rows
            return h.assign(
                stage_since=h["ts"], close_date_pushes=0, _last_of_opp=np.zeros(0, dtype=bool)
            )
        opp = h["opportunity_id"].to_numpy()
        new_opp = np.r_[True, opp[1:] != opp[:-1]]
        stage = h["stage"].to_numpy()
        new_spell = new_opp | np.r_[True, stage[1:] != stage[:-1]]
        spell_id = np.cumsum(new_spell)
        h = h.copy()
        h["stage_since"] = h["ts"].groupby(spell_id).transform("first")
        ecd = h["expected_close_date"]
        pushed = (ecd > ecd.shift(1)) & ~pd.Series(new_opp, index=h.index)
        h["close_date_pushes"] = pushed.astype(int).groupby(np.cumsum(new_opp)).cumsum()
        h["_last_of_opp"] = np.r_[opp[1:] != opp[:-1], True]
        return h

    def snapshot(self, t: pd.Timestamp) -> pd.DataFrame:
        """Deals open at ``t`` with their state rebuilt from rows with ``ts < t``.

        Columns: opportunity_id, stage, amount, expected_close_date, last_update,
        stage_since, close_date_pushes, created, owner_id, segment, team.
        """
        t = pd.Timestamp(t)
        if t in self._snapshots:
            return self._snapshots[t]
        h = self.history
        before = (h["ts"] < t).to_numpy()
        nxt_before = np.r_[before[1:], False] & ~h["_last_of_opp"].to_numpy()
        snap = h[before & ~nxt_before & h["_open"].to_numpy()]
        snap = snap.rename(columns={"ts": "last_update"}).drop(columns=["_last_of_opp", "_open"])
        snap = snap.reset_index(drop=True)
        if len(self._snapshots) > 512:
            self._snapshots.clear()
        self._snapshots[t] = snap
        return snap

    def won_in(
        self, start: pd.Timestamp, end: pd.Timestamp, *, before: pd.Timestamp
    ) -> pd.DataFrame:
        """Deals won in ``[start, min(end, before))`` with their amount at the win."""
        o = self.outcomes
        stop = min(pd.Timestamp(end), pd.Timestamp(before))
        return o[(o["won_at"] >= start) & (o["won_at"] < stop)]

    def outcomes_before(self, before: pd.Timestamp) -> pd.DataFrame:
        """Outcomes with everything at or after ``before`` masked out."""
        o = self.outcomes[self.outcomes["first_seen"] < before].copy()
        for col in ("won_at", "closed_at"):
            late = o[col] >= before
            o.loc[late, col] = pd.NaT
        o.loc[o["won_at"].isna(), "won_amount"] = np.nan
        return o

    @property
    def freshest(self) -> pd.Timestamp:
        """The latest record of any table (the deal history's own end at least)."""
        return max(t for t in (self.data_end, self.last_record) if t is not None)

    def check_has_history(self, as_of: pd.Timestamp) -> None:
        """Forecasts and alerts read the deals as they stood: none before the history."""
        if self.data_start is not None and as_of <= self.data_start:
            raise TooLittleHistory(
                f"--as-of {as_of.date()} is not after the deal history starts "
                f"({self.data_start:%Y-%m-%d %H:%M} UTC); choose a later --as-of"
            )

    def check_as_of(
        self, as_of: pd.Timestamp, what: str = "forecasts are not made", why: str = ""
    ) -> None:
        """as_of may be at most ``STALE_DAYS`` days after the last record of any table:
        later, ``what`` (e.g. "alerts are not raised"), for the reason ``why`` if given."""
        if self.data_end is None or self.data_start is None:
            raise ForecastError(
                "table opportunity_history has no rows: no deal stages to read; "
                "load the deals' stage history (an export of every stage, amount and close "
                "date change, see docs/byod.md) and check it with `leadml validate`"
            )
        last = self.freshest
        limit = latest_usable(last)
        if as_of > limit:
            raise ForecastError(
                f"--as-of {as_of.date()} is after the end of the data (last record "
                f"{last:%Y-%m-%d %H:%M} UTC); {what} more than {STALE_DAYS} days after it{why}: "
                f"choose --as-of {limit.date()} or earlier, or load newer data"
            )

    def quiet_note(self, as_of: pd.Timestamp) -> str | None:
        """A warning when ``as_of`` is more than ``QUIET_DAYS`` days after the newest record
        of any table (accepted up to ``STALE_DAYS``): the days between hold no wins, stage
        changes or activities, so open deals only age and the numbers lean low."""
        if self.data_end is None:
            return None
        last = self.freshest
        gap = (as_of - last) / pd.Timedelta(days=1)
        if gap <= QUIET_DAYS:
            return None
        next_day = (last.normalize() + pd.Timedelta(days=1)).date()
        return (
            f"the newest record of any table is {last:%Y-%m-%d %H:%M} UTC, {gap:.1f} days "
            f"before {as_of:%Y-%m-%d}: nothing in between is read (no wins, stage changes or "
            "activities), so open deals only age and forecasts lean low; if the export is "
            f"behind, load newer data or use --as-of {next_day}"
        )

    def target(self, period: Period, by: str | None) -> pd.Series:
        """Target for ``period`` (total under key ``"all"``, or per group value).

        A target row counts with the share of its days that fall inside the period
        (a quarterly target for a month counts about a third). A ``period_end`` at
        midnight of the last day of a month is read as inclusive (the whole day).
        """
        t = self.targets
        if t.empty or by == "owner":
            return pd.Series(dtype=float)
        start = pd.to_datetime(t["period_start"], utc=True)
        end = pd.to_datetime(t["period_end"], utc=True)
        inclusive = (end == end.dt.normalize()) & (end + pd.Timedelta(days=1)).dt.is_month_start
        end = end.where(~inclusive, end + pd.Timedelta(days=1))
        overlap = (end.clip(upper=period.end) - start.clip(lower=period.start)).dt.total_seconds()
        share = (overlap.clip(lower=0) / (end - start).dt.total_seconds()).to_numpy()
        frame = t.assign(part=t["amount"].to_numpy() * share)[share > 0]
        if by is None:
            total = frame[frame["team"].isna() & frame["segment"].isna()]
            if total.empty:
                total = frame[frame["team"].notna()] if frame["team"].notna().any() else frame
            return (
                pd.Series({"all": float(total["part"].sum())})
                if len(total)
                else pd.Series(dtype=float)
            )
        col = GROUP_COLUMN[by]
        rows = frame[frame[col].notna()]
        return rows.groupby(col)["part"].sum().astype(float)

    def target_is_prorated(self, period: Period) -> bool:
        """Whether a target row counted for ``period`` is longer than it (a quarterly
        target cut down to a month by days)."""
        t = self.targets
        if t.empty:
            return False
        start = pd.to_datetime(t["period_start"], utc=True)
        end = pd.to_datetime(t["period_end"], utc=True)
        overlaps = (start < period.end) & (end > period.start)
        longer = (end - start) > (period.end - period.start) * 1.5
        return bool((overlaps & longer).any())


# ------------------------------------------------- the empirical close rates


# The cells of the empirical close rates, coarse to fine; each shrinks to the one before.
LEVELS: tuple[list[str], ...] = (
    ["stage"],
    ["stage", "segment"],
    ["stage", "segment", "close_in_period"],
    ["stage", "segment", "close_in_period", "age"],
)


def age_bucket(days: pd.Series, edges: list[int]) -> np.ndarray:
    """Labels like ``<30d``, ``30-90d``, ``>=180d`` (left-closed buckets)."""
    labels = [f"<{edges[0]}d"] + [f"{a}-{b}d" for a, b in zip(edges, edges[1:], strict=False)]
    labels += [f">={edges[-1]}d"]
    return np.asarray(labels, dtype=object)[
        np.searchsorted(np.asarray(edges, float), days.to_numpy(), side="right")
    ]


def _features(
    snap: pd.DataFrame, t: pd.Timestamp, end: pd.Timestamp, edges: list[int]
) -> pd.DataFrame:
    age = (t - snap["created"]).dt.total_seconds() / 86400.0
    return pd.DataFrame(
        {
            "stage": snap["stage"].to_numpy(),
            "segment": snap["segment"].fillna("(none)").astype(str).to_numpy(),
            "close_in_period": np.where(snap["expected_close_date"] < end, "due", "later"),
            "age": age_bucket(age, edges),
        }
    )


@dataclass
class EmpiricalCloseRates:
    """The point-in-time baseline for P(won by period end).

    For a forecast as of T for a period ending at E (horizon h = E - T), it looks
    at the same moment of the ``lookback_periods`` previous periods (T_k = the same
    weekly call before E_k, :func:`same_moment`, within 6 days of E_k - h; only periods
    with E_k <= T, so every outcome used is known before T), takes
    the deals open then, and measures the share won before E_k, per stage x segment
    x expected-close-date-due-in-period x age bucket (segment matters: large
    enterprise deals win less often). Sparse cells shrink towards the coarser
    level (see :data:`LEVELS`, then all) with ``prior_strength``
    pseudo-deals. When no earlier period is complete yet it falls back to weekly
    snapshots T_k = T - h - 7j.
    """

    history: DealHistory
    lookback_periods: int = 8
    age_edges: tuple[int, ...] = (30, 90, 180)
    prior_strength: float = 30.0
    period_months: int = 3
    # Earlier periods' moments: the same weekly call (see :func:`same_moment`), or the
    # same calendar distance to the period end (False; the behaviour before).
    align_weeks: bool = True
    name: str = "empirical"
    _memo: dict[tuple[pd.Timestamp, ...], pd.DataFrame] = field(default_factory=dict, repr=False)
    _rows_memo: dict[tuple[pd.Timestamp, ...], pd.DataFrame] = field(
        default_factory=dict, repr=False
    )

    def training_rows(
        self,
        as_of: pd.Timestamp,
        period_end: pd.Timestamp,
        period_start: pd.Timestamp,
        call: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """The labelled deals of earlier periods' moments that match the weekly call
        ``call`` (default: the Monday on or before ``as_of``); periods that ended by
        ``as_of`` only."""
        h = period_end - as_of
        rows = []
        anchors = []
        first = self.history.data_start
        call = monday_before(as_of) if call is None else call
        for k in range(1, self.lookback_periods + 1):
            back = pd.DateOffset(months=lookback_months(self.period_months) * k)
            end_k, start_k = period_end - back, period_start - back
            t_k = same_moment(call, period_end, end_k) if self.align_weeks else end_k - h
            if period_start <= as_of:
                # a deal open at as_of cannot have been won before it: neither can one
                # open at t_k before t_k, which may be days before period_start's date
                start_k = min(start_k, t_k)
            # a snapshot at t reads rows before t: at the history's first row it is empty
            if end_k <= as_of and first is not None and t_k > first:
                anchors.append((t_k, start_k, end_k))
        if not anchors:  # too little history: weekly snapshots with the same horizon
            t = as_of - h
            for _ in range(self.lookback_periods * 4):
                if first is None or t <= first:
                    break
                anchors.append((t, t + (period_start - as_of), t + h))
                t = t - pd.Timedelta(days=7)
        for anchor in anchors:
            if anchor not in self._rows_memo:
                self._rows_memo[anchor] = self._labelled(*anchor)
            if len(self._rows_memo[anchor]):
                rows.append(self._rows_memo[anchor])
        if not rows:
            return pd.DataFrame(columns=[*LEVELS[-1], "won"])
        return pd.concat(rows, ignore_index=True)

    def _labelled(
        self, t_k: pd.Timestamp, start_k: pd.Timestamp, end_k: pd.Timestamp
    ) -> pd.DataFrame:
        """Deals open at t_k with their cell and whether they were won in [start_k, end_k)."""
        snap = self.history.snapshot(t_k)
        feats = _features(snap, t_k, end_k, list(self.age_edges))
        won_at = self.history.won_at.reindex(snap["opportunity_id"])
        feats["won"] = _won_between(won_at.to_numpy(), start_k, end_k)
        return feats

    def rates(self, train: pd.DataFrame) -> dict[tuple[str, ...], float]:
        """Shrunken win rates keyed by the cell values of each level of :data:`LEVELS`
        (and () for all deals)."""
        out: dict[tuple[str, ...], float] = {}
        overall = float(train["won"].mean()) if len(train) else 0.0
        out[()] = overall
        m = self.prior_strength
        for cols in LEVELS:
            if train.empty:
                break
            agg = train.groupby(cols, sort=False)["won"].agg(["sum", "count"])
            keys = [k if isinstance(k, tuple) else (k,) for k in agg.index]
            for key, won, n in zip(
                keys, agg["sum"].to_numpy(), agg["count"].to_numpy(), strict=True
            ):
                out[key] = (won + m * out.get(key[:-1], overall)) / (n + m)
        return out

    def __call__(
        self,
        con: duckdb.DuckDBPyConnection | None,
        as_of: pd.Timestamp,
        period_end: pd.Timestamp,
        period_start: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """P(won in [period_start, period_end)) for every deal open at ``as_of``
        (``period_start`` None = from as_of on). Answers are memoised per moment."""
        start = as_of if period_start is None else period_start
        key = (as_of, start, period_end)
        if key in self._memo:
            return self._memo[key]
        call = monday_before(as_of)
        train = self.training_rows(as_of, period_end, start, call=call)
        snap = self.history.snapshot(as_of)
        if train.empty and len(snap):
            h_days = int(np.ceil((period_end - as_of) / pd.Timedelta(days=1)))
            first = self.history.data_start or as_of
            # the weekly fallback needs as_of - (period_end - as_of) > first
            earliest = (first + (period_end - first) / 2).floor("D") + pd.Timedelta(days=1)
            if earliest > latest_usable(self.history.freshest):
                raise TooLittleHistory(
                    f"a period ending {period_end:%Y-%m-%d} is too far ahead for this deal "
                    f"history ({first:%Y-%m-%d} to {self.history.freshest:%Y-%m-%d}): the "
                    f"empirical close rates learn from deals open {h_days} days before an "
                    "earlier period's end; forecast a nearer period, or give the deal "
                    f"probabilities from a model ({FROM_A_MODEL})"
                )
            raise TooLittleHistory(
                f"too little deal history for the empirical close rates as of {as_of:%Y-%m-%d}: "
                f"they learn from the deals open {h_days} days before the end of an earlier "
                f"period, or {h_days} days before {as_of:%Y-%m-%d}, and the deal history starts "
                f"{first:%Y-%m-%d}; for a period ending {period_end:%Y-%m-%d} choose --as-of "
                f"{earliest:%Y-%m-%d} or later, or use a model's deal probabilities "
                f"({FROM_A_MODEL})"
            )
        feats = _features(snap, as_of, period_end, list(self.age_edges))
        p = _cell_rates(self.rates(train), feats)
        if self.align_weeks and as_of > call:
            # between two weekly calls: from this call's rates to the next one's (zero at
            # the period end), in proportion to the time gone, so the forecast moves
            # smoothly with the calendar instead of jumping from one weekday to the next
            nxt = min(call + WEEK, period_end)
            w = (as_of - call) / (nxt - call)
            if nxt >= period_end:
                p = p * (1 - w)
            elif len(later := self.training_rows(as_of, period_end, start, call=nxt)):
                p = p * (1 - w) + _cell_rates(self.rates(later), feats) * w
        out = pd.DataFrame(
            {"opportunity_id": snap["opportunity_id"].to_numpy(), "p_won_by": p.to_numpy()}
        )
        self._memo[key] = out
        return out


def _cell_rates(rates: dict[tuple[str, ...], float], feats: pd.DataFrame) -> pd.Series:
    """Each deal's rate: its finest cell of :data:`LEVELS` that has one (else all deals')."""
    p = pd.Series(np.nan, index=feats.index)
    for cols in reversed(LEVELS):
        level = {k: v for k, v in rates.items() if len(k) == len(cols)}
        keys = pd.Series(list(zip(*(feats[c] for c in cols), strict=True)), index=feats.index)
        p = p.fillna(keys.map(level))
    return p.fillna(rates[()])


def _won_between(won_at: np.ndarray, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    won = pd.to_datetime(pd.Series(won_at), utc=True)
    return ((won >= start) & (won < end)).to_numpy(dtype=float)


def stage_win_rates(history: DealHistory, before: pd.Timestamp) -> pd.Series:
    """Classic stage weights: among deals closed before ``before``, the share won of
    those that were ever in each open stage (from rows with ts < before)."""
    o = history.outcomes_before(before)
    closed = o[o["closed_at"].notna()].set_index("opportunity_id")["won_at"].notna()
    h = history.history
    visited = h.loc[
        (h["ts"] < before) & h["stage"].isin(history.vocab.open_stages), ["opportunity_id", "stage"]
    ]
    visited = visited.drop_duplicates()
    visited = visited[visited["opportunity_id"].isin(closed.index)]
    visited["won"] = closed.loc[visited["opportunity_id"]].to_numpy()
    return visited.groupby("stage")["won"].mean()
