"""THE MODEL's funnel measurement on the raw tables, for a date range.

For every stage of the lead funnel (acquired -> nurturing -> MQL -> SQL, from
``lead_status_history``) and of the opportunity funnel (follow_up -> ... ->
approval -> closed_won / closed_lost, from ``opportunity_history``):

* **entered**: stage *episodes* starting in ``[start, end)``. An episode begins when
  the entity's status/stage changes to the stage (rows that repeat the stage, e.g. an
  amount change, do not start one); a recycled lead that reaches MQL again starts a
  new MQL episode, because inside sales works it again.
* **outcome** of each episode, read from the entity's next change before ``end``:
  *converted* (a later stage of the same funnel; skipping stages counts), *exited*
  (disqualified, recycled, closed_lost), *returned* (an earlier stage) or *open*
  (no change before ``end``).
* **conversion_rate** = converted / entered, as of ``end`` (the dashboard figure;
  recent entries have had little time, so it understates slow stages), and
  **conversion_adjusted**: the Aalen-Johansen estimate of the share that eventually
  converts, which treats open episodes as censored at ``end`` and exits/returns as
  competing outcomes. The bottleneck uses the adjusted rate so that a slow stage is
  not mistaken for a leaky one.
* **median_days**: Kaplan-Meier median time in the stage (open episodes censored at
  ``end``); ``None`` when fewer than half have left the stage by ``end``.

**Recycling**: a recycle is a change to the recycled status, or straight back to
nurturing from disqualified or SQL (a lost deal). Its source is the status it came
from. For each source: recycles in the range and how many of them came back to MQL
and to SQL before ``end``; plus the share of MQL and SQL episodes in the range whose
lead had been recycled before.

**Bottleneck**: among stages with a next stage, a benchmark and at least
``min_entries`` entries, the one with the lowest ``conversion_adjusted / benchmark``.
Revenue is (roughly) entries x the product of the stage conversions x the average
won amount, so lifting stage *s* to its benchmark multiplies revenue by
``benchmark / rate``: the lowest ratio is the stage whose repair adds the most revenue.
``revenue_at_stake`` puts a figure on it: extra conversions at benchmark x the chance
that a deal entering the next stage is won (product of the downstream adjusted rates)
x the average won amount in the range (of the group's own wins with ``--by``, shrunk
towards the overall average with ``AVG_PRIOR_WINS`` pseudo-wins: segments' deal sizes
differ twentyfold, and a group without wins of its own takes the overall average).

Point-in-time: only history rows with ``ts < end`` are read; episodes are counted
when they start in ``[start, end)``. ``end`` may be at most ``STALE_DAYS`` days after the
last record of any table (the forecast's margin): past the data, episodes would count
days nobody recorded as time in the stage and lower the adjusted rates. Grouping
attributes are the current rows of ``accounts`` / ``opportunities`` / ``reps`` (the
contracts keep no history of them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd

from leadml.config import FunnelConfig, Vocabulary
from leadml.errors import DataError, LeadmlError
from leadml.features.labels import latest_record
from leadml.forecast.deals import STALE_DAYS, latest_usable

Funnel = Literal["lead", "opportunity"]
GROUPINGS = ("team", "segment")
ALL = "all"
NOT_WORKED = "not worked"  # --by team: MQL/SQL episodes no rep worked (no team can act on it)
_DAY_SECONDS = 86_400.0


@dataclass
class StageStats:
    """One stage of one funnel for one group (``group == "all"`` for the whole company)."""

    funnel: Funnel
    stage: str
    group: str
    next_stage: str | None
    entered: int
    converted: int
    exited: int
    returned: int
    still_open: int
    conversion_rate: float | None
    conversion_adjusted: float | None
    benchmark: float | None
    median_days: float | None


@dataclass
class RecycleFlow:
    """Recycles from one source (disqualified lead, lost deal, ...) in the range."""

    source: str
    group: str
    recycled: int
    back_to_mql: int
    back_to_sql: int

    @property
    def mql_rate(self) -> float | None:
        return self.back_to_mql / self.recycled if self.recycled else None

    @property
    def sql_rate(self) -> float | None:
        return self.back_to_sql / self.recycled if self.recycled else None


@dataclass
class Bottleneck:
    """The stage whose conversion is furthest below its benchmark."""

    funnel: Funnel
    stage: str
    next_stage: str
    group: str
    entered: int
    conversion_adjusted: float
    benchmark: float
    ratio: float
    revenue_at_stake: float | None
    statement: str


@dataclass
class FunnelReport:
    """The funnel of ``[start, end)``; see the module docstring for every definition."""

    start: pd.Timestamp
    end: pd.Timestamp
    by: str | None
    stages: list[StageStats]
    recycling: list[RecycleFlow]
    bottleneck: Bottleneck | None
    group_bottlenecks: dict[str, Bottleneck]
    summary: dict[str, float | int | None]
    notes: list[str] = field(default_factory=list)
    group_notes: list[str] = field(default_factory=list)  # shown under the group bottlenecks

    def stages_of(self, funnel: Funnel, group: str = ALL) -> list[StageStats]:
        return [s for s in self.stages if s.funnel == funnel and s.group == group]

    def stage(self, funnel: Funnel, stage: str, group: str = ALL) -> StageStats:
        for s in self.stages:
            if s.funnel == funnel and s.stage == stage and s.group == group:
                return s
        raise KeyError((funnel, stage, group))

    @property
    def groups(self) -> list[str]:
        return sorted({s.group for s in self.stages} - {ALL})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (timestamps as ISO strings, NaN never appears)."""
        recycling = [
            {**asdict(r), "mql_rate": r.mql_rate, "sql_rate": r.sql_rate} for r in self.recycling
        ]
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "end_exclusive": True,
            "by": self.by,
            "summary": self.summary,
            "stages": [asdict(s) for s in self.stages],
            "recycling": recycling,
            "bottleneck": asdict(self.bottleneck) if self.bottleneck else None,
            "group_bottlenecks": {g: asdict(b) for g, b in self.group_bottlenecks.items()},
            "notes": self.notes,
            "group_notes": self.group_notes,
        }


# ------------------------------------------------------------------ helpers


def as_utc(value: date | datetime | pd.Timestamp | str, name: str = "date") -> pd.Timestamp:
    """A timezone-aware UTC timestamp; naive values and plain dates are read as UTC."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise LeadmlError(
            f"{name}: {value!r} is not a date; expected ISO format YYYY-MM-DD"
        ) from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _has(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    try:
        con.execute(f"SELECT * FROM {name} LIMIT 0").fetchall()
    except duckdb.CatalogException:
        return False
    return True


def data_range(con: duckdb.DuckDBPyConnection) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first day, day after the last day] of the status and stage histories (UTC)."""
    parts = [
        f"SELECT min(ts) AS lo, max(ts) AS hi FROM {t}"
        for t in ("lead_status_history", "opportunity_history")
        if _has(con, t)
    ]
    if not parts:
        raise DataError(
            "the funnel needs lead_status_history and/or opportunity_history; neither is present"
        )
    row = con.execute(f"SELECT min(lo), max(hi) FROM ({' UNION ALL '.join(parts)})").fetchall()[0]
    if row is None or row[0] is None:
        raise DataError("lead_status_history and opportunity_history have no rows")
    lo = as_utc(row[0]).floor("D")
    hi = as_utc(row[1]).floor("D") + pd.Timedelta(days=1)
    return lo, hi


def check_end(
    con: duckdb.DuckDBPyConnection, end: pd.Timestamp, what: str = "end"
) -> pd.Timestamp | None:
    """Refuse an ``end`` more than ``STALE_DAYS`` days after the last record (``what``
    names the argument in the message); return the last record."""
    last = latest_record(con)
    if last is None:
        return None  # no rows at all: the empty-range note says so
    limit = latest_usable(last)
    if end > limit:
        raise LeadmlError(
            f"{what} {end.date()} is after the end of the data (last record "
            f"{last:%Y-%m-%d %H:%M} UTC): the days after it would count as time in the stage "
            f"and skew the adjusted conversion rates and median days; choose {what} "
            f"{limit.date()} or earlier (at most {STALE_DAYS} days after the last record; "
            "by default the day after it), or load newer data"
        )
    return last


def _competing_risks(days: np.ndarray, code: np.ndarray) -> tuple[float | None, float | None]:
    """(eventual share with code 1, median time to any event) for right-censored spells.

    ``code``: 0 censored, 1 converted, anything else another way out. Aalen-Johansen cumulative
    incidence of code 1 at the last time seen, and the Kaplan-Meier median of leaving.
    """
    n = len(days)
    if n == 0 or not (code != 0).any():
        return None, None  # nothing has left the stage yet: the eventual share is unknown
    order = np.argsort(days, kind="stable")
    days, code = days[order], code[order]
    times, first = np.unique(days, return_index=True)
    at_risk = n - first
    d_conv = np.add.reduceat((code == 1).astype(np.int64), first)
    d_any = np.add.reduceat((code != 0).astype(np.int64), first)
    surv = np.cumprod(1.0 - d_any / at_risk)
    surv_before = np.concatenate(([1.0], surv[:-1]))
    incidence = float(np.sum(surv_before * d_conv / at_risk))
    below = np.nonzero(surv <= 0.5)[0]
    median = float(times[below[0]]) if len(below) else None
    return incidence, median


# ------------------------------------------------------------------ episodes


def _lead_episodes(
    con: duckdb.DuckDBPyConnection,
    vocab: Vocabulary,
    cfg: FunnelConfig,
    start: pd.Timestamp,
    end: pd.Timestamp,
    by: str | None,
) -> pd.DataFrame:
    """One row per lead status episode starting in [start, end), with its next change."""
    mql_status, sql_status = cfg.lead_stages[-2], cfg.lead_stages[-1]
    group_sql, join_sql = "'all'", ""
    if by == "segment":
        join_sql = (
            "LEFT JOIN leads l ON l.lead_id = e.lead_id "
            "LEFT JOIN accounts a ON a.account_id = l.account_id"
        )
        group_sql = "coalesce(a.segment, 'unknown')"
    elif by == "team":
        # Marketing owns a lead until MQL. An MQL episode belongs to the team of the rep
        # who first worked the lead at or after it started; an SQL episode to the team
        # of the rep who worked it last before it became SQL (who qualified it).
        if _has(con, "activities") and _has(con, "reps"):
            worked = (
                "(SELECT a.lead_id, a.ts AS act_ts, r.team FROM activities a "
                "JOIN reps r ON r.rep_id = a.rep_id WHERE a.ts < $end AND a.lead_id IS NOT NULL)"
            )
            join_sql = (
                f"ASOF LEFT JOIN {worked} w ON w.lead_id = e.lead_id AND w.act_ts >= e.ts "
                f"ASOF LEFT JOIN {worked} q ON q.lead_id = e.lead_id AND q.act_ts <= e.ts"
            )
            team = (
                f"CASE WHEN e.rank_ >= $sql_rank THEN coalesce(q.team, '{NOT_WORKED}') "
                f"ELSE coalesce(w.team, '{NOT_WORKED}') END"
            )
        else:
            team = f"'{NOT_WORKED}'"
        group_sql = f"CASE WHEN e.rank_ >= $mql_rank THEN {team} ELSE 'marketing' END"
    sql = f"""
        WITH h AS (
            SELECT lead_id, ts, status, coalesce(list_position($order, status), 999) AS rank_
            FROM lead_status_history WHERE ts < $end
        ), o AS (
            SELECT *, lag(status) OVER (PARTITION BY lead_id ORDER BY ts, rank_) AS prev_status
            FROM h
        ), c AS (
            SELECT * FROM o WHERE prev_status IS DISTINCT FROM status
        ), e AS (
            SELECT lead_id, ts, status, prev_status, rank_,
                   lead(status) OVER w AS next_status, lead(ts) OVER w AS next_ts
            FROM c WINDOW w AS (PARTITION BY lead_id ORDER BY ts, rank_)
        )
        SELECT e.lead_id AS entity, e.ts, e.status AS stage, e.prev_status,
               e.next_status, e.next_ts, {group_sql} AS grp
        FROM e {join_sql}
        WHERE e.ts >= $start
    """
    order = [*vocab.lead_statuses]
    params: dict[str, object] = {"order": order, "start": start, "end": end}
    if by == "team":
        # list_position is 1-based; the last two funnel stages are MQL and SQL
        params["mql_rank"] = order.index(mql_status) + 1
        params["sql_rank"] = order.index(sql_status) + 1
        if "$sql_rank" not in join_sql + group_sql:
            params.pop("sql_rank")
    return con.execute(sql, params).df()


def _opportunity_episodes(
    con: duckdb.DuckDBPyConnection,
    vocab: Vocabulary,
    start: pd.Timestamp,
    end: pd.Timestamp,
    by: str | None,
) -> pd.DataFrame:
    group_sql, join_sql = "'all'", ""
    if by in GROUPINGS and _has(con, "opportunities"):
        join_sql = "LEFT JOIN opportunities op ON op.opportunity_id = e.opportunity_id"
        group_sql = "coalesce(op.segment, 'unknown')"
        if by == "team":
            if _has(con, "reps"):
                join_sql += " LEFT JOIN reps r ON r.rep_id = op.owner_id"
                group_sql = "coalesce(r.team, 'unassigned')"
            else:
                group_sql = "'unassigned'"
    elif by in GROUPINGS:
        group_sql = "'unknown'"
    sql = f"""
        WITH h AS (
            SELECT opportunity_id, ts, stage, amount,
                   coalesce(list_position($order, stage), 999) AS rank_
            FROM opportunity_history WHERE ts < $end
        ), o AS (
            SELECT *, lag(stage) OVER (PARTITION BY opportunity_id ORDER BY ts, rank_) AS prev
            FROM h
        ), c AS (
            SELECT * FROM o WHERE prev IS DISTINCT FROM stage
        ), e AS (
            SELECT opportunity_id, ts, stage, amount,
                   lead(stage) OVER w AS next_status, lead(ts) OVER w AS next_ts
            FROM c WINDOW w AS (PARTITION BY opportunity_id ORDER BY ts, rank_)
        )
        SELECT e.opportunity_id AS entity, e.ts, e.stage, e.amount, e.next_status, e.next_ts,
               {group_sql} AS grp
        FROM e {join_sql}
        WHERE e.ts >= $start
    """
    return con.execute(sql, {"order": vocab.stages, "start": start, "end": end}).df()


def _outcomes(ep: pd.DataFrame, chain: list[str], end: pd.Timestamp) -> pd.DataFrame:
    """Add ``outcome`` (converted / exited / returned / open), ``days`` and ``code``."""
    rank = {s: i for i, s in enumerate(chain)}
    cur = ep["stage"].map(rank)
    nxt = ep["next_status"].map(rank)
    has_next = ep["next_ts"].notna()
    outcome = np.where(
        ~has_next,
        "open",
        np.where(
            nxt.notna() & (nxt > cur), "converted", np.where(nxt.notna(), "returned", "exited")
        ),
    )
    until = ep["next_ts"].where(has_next, end)
    days = (pd.to_datetime(until, utc=True) - pd.to_datetime(ep["ts"], utc=True)).dt.total_seconds()
    out = ep.assign(outcome=outcome, days=days.to_numpy() / _DAY_SECONDS)
    # 0 open (censored at end), 1 converted, 2 exited, 3 returned to an earlier stage
    out["code"] = np.select(
        [out["outcome"] == "open", out["outcome"] == "converted", out["outcome"] == "exited"],
        [0, 1, 2],
        3,
    ).astype(np.int64)
    return out


def _stage_rows(
    funnel: Funnel,
    ep: pd.DataFrame,
    stages: list[str],
    chain: list[str],
    benchmarks: dict[str, float],
    groups: list[str],
) -> list[StageStats]:
    # One pass of numpy arrays per (group, stage) cell instead of a mask per cell.
    cells: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    days, code = ep["days"].to_numpy(dtype=float), ep["code"].to_numpy()
    for key, idx in ep.groupby("stage", sort=False).indices.items():
        cells[(ALL, str(key))] = (days[idx], code[idx])
    if len(groups) > 1:
        for (grp, stage), idx in ep.groupby(["grp", "stage"], sort=False).indices.items():
            cells[(str(grp), str(stage))] = (days[idx], code[idx])
    empty = (np.empty(0), np.empty(0, dtype=np.int64))
    rows: list[StageStats] = []
    for grp in groups:
        for stage in stages:
            d, c = cells.get((grp, stage), empty)
            i = chain.index(stage) if stage in chain else None
            nxt = chain[i + 1] if i is not None and i + 1 < len(chain) else None
            entered = len(d)
            converted = int((c == 1).sum()) if nxt else 0
            adjusted, median = _competing_risks(d, c) if nxt else (None, None)
            rows.append(
                StageStats(
                    funnel=funnel,
                    stage=stage,
                    group=grp,
                    next_stage=nxt,
                    entered=entered,
                    converted=converted,
                    exited=int((c == 2).sum()),
                    returned=int((c == 3).sum()),
                    still_open=int((c == 0).sum()),
                    conversion_rate=(converted / entered) if (nxt and entered) else None,
                    conversion_adjusted=adjusted,
                    benchmark=benchmarks.get(stage) if nxt else None,
                    median_days=median,
                )
            )
    return rows


def _recycling(
    lead_ep: pd.DataFrame, cfg: FunnelConfig, groups: list[str]
) -> tuple[list[RecycleFlow], dict[str, float | None]]:
    """Recycle flows in the range and the recycled share of MQL/SQL episodes."""
    sql_status = cfg.lead_stages[-1]
    mql_status = cfg.lead_stages[-2] if len(cfg.lead_stages) >= 2 else sql_status
    nurture = cfg.lead_stages[1] if len(cfg.lead_stages) >= 2 else cfg.lead_stages[0]
    back_from = {cfg.disqualified_status, sql_status}
    is_recycle = (lead_ep["stage"] == cfg.recycled_status) | (
        (lead_ep["stage"] == nurture) & lead_ep["prev_status"].isin(back_from)
    )
    rec = lead_ep[is_recycle]
    source = rec["prev_status"].map(
        {cfg.disqualified_status: "disqualified lead", sql_status: "lost deal"}
    )
    rec = rec.assign(source=source.fillna("from " + rec["prev_status"].fillna("new")))
    # Later MQL / SQL episodes of the same lead (all starting before end by construction).
    later = lead_ep[lead_ep["stage"].isin([mql_status, sql_status])][["entity", "ts", "stage"]]
    merged = (
        rec[["entity", "ts", "source", "grp"]]
        .reset_index(names="rid")
        .merge(later, on="entity", how="left", suffixes=("", "_later"))
    )
    after = merged[merged["ts_later"] > merged["ts"]]
    back_mql = set(after.loc[after["stage"] == mql_status, "rid"])
    back_sql = set(after.loc[after["stage"] == sql_status, "rid"])
    rec = rec.reset_index(names="rid")
    rec["back_mql"] = rec["rid"].isin(back_mql)
    rec["back_sql"] = rec["rid"].isin(back_sql)
    flows: list[RecycleFlow] = []
    for grp in groups:
        part = rec if grp == ALL else rec[rec["grp"] == grp]
        for src, sel in part.groupby("source", sort=True):
            flows.append(
                RecycleFlow(
                    str(src), grp, len(sel), int(sel["back_mql"].sum()), int(sel["back_sql"].sum())
                )
            )
    # Share of MQL / SQL episodes whose lead was recycled earlier in the range.
    first_rec = rec.groupby("entity")["ts"].min()
    shares: dict[str, float | None] = {}
    for name, status in (
        ("recycled_share_of_mql", mql_status),
        ("recycled_share_of_sql", sql_status),
    ):
        eps = lead_ep[lead_ep["stage"] == status]
        if not len(eps):
            shares[name] = None
            continue
        if rec.empty:
            shares[name] = 0.0
            continue
        recycled_at = eps[["entity", "ts"]].merge(
            first_rec.rename("recycled_at"), left_on="entity", right_index=True, how="left"
        )["recycled_at"]
        shares[name] = float((recycled_at < eps["ts"].to_numpy()).sum() / len(eps))
    return flows, shares


def _downstream_win(
    stages: list[StageStats], group: str, funnel: Funnel, stage: str
) -> float | None:
    """P(won | an episode enters ``stage``): product of adjusted rates from it to won.

    Uses the group's own rates where the group has them (an IS team has no deal
    stages, so its MQLs are valued at the company's deal conversion).
    """

    def pick(f: Funnel) -> dict[str, StageStats]:
        rows = {s.stage: s for s in stages if s.funnel == f and s.group == ALL}
        for s in stages:
            if s.funnel == f and s.group == group and s.entered:
                rows[s.stage] = s
        return rows

    lead, opp = pick("lead"), pick("opportunity")
    chain: list[StageStats] = []
    if funnel == "lead":
        names = list(lead)
        chain += [lead[n] for n in names[names.index(stage) :] if lead[n].next_stage]
        stage_in_opp: str | None = next(iter(opp), None)  # an SQL becomes a deal at the first stage
    else:
        stage_in_opp = stage
    if stage_in_opp is not None and stage_in_opp in opp:
        names = list(opp)
        chain += [opp[n] for n in names[names.index(stage_in_opp) :] if opp[n].next_stage]
    if not chain:
        return 1.0 if funnel == "opportunity" else None
    p = 1.0
    for s in chain:
        if s.conversion_adjusted is None:
            return None
        p *= s.conversion_adjusted
    return p


def _label(stage: str) -> str:
    return {"lead": "acquired", "mql": "MQL", "sql": "SQL"}.get(stage, stage)


def _never_entered(stages: list[StageStats]) -> set[tuple[str, str]]:
    """(funnel, stage) of stages with no entry in the range, in a funnel that has entries:
    e.g. ``nurturing`` for an import whose leads go straight from lead to SQL."""
    whole = [s for s in stages if s.group == ALL]
    busy = {s.funnel for s in whole if s.entered}
    return {(s.funnel, s.stage) for s in whole if s.funnel in busy and s.entered == 0}


def _skipped_step_notes(stages: list[StageStats], never: set[tuple[str, str]]) -> list[str]:
    """Why a step into a stage that never occurs is not named as the bottleneck."""
    notes = []
    for s in stages:
        if s.group == ALL and (s.funnel, s.next_stage) in never and s.entered and s.benchmark:
            nxt = _label(str(s.next_stage))
            notes.append(
                f"no {s.funnel} entered {nxt} in the range, so {_label(s.stage)} -> {nxt} is "
                f"not a bottleneck candidate: the {_label(s.stage)} rate counts {s.funnel}s "
                f"that skipped {nxt} (does the data record that stage?)"
            )
    return notes


def _empty_range_note(con: duckdb.DuckDBPyConnection, lo: pd.Timestamp, hi: pd.Timestamp) -> str:
    try:
        first, after_last = data_range(con)
        span = f"; the data covers {first.date()} to {(after_last - pd.Timedelta(days=1)).date()}"
    except DataError:  # no history rows at all
        span = "; the histories have no rows"
    return f"no status or stage change in [{lo.date()}, {hi.date()}){span}"


def _bottleneck(
    stages: list[StageStats],
    group: str,
    cfg: FunnelConfig,
    avg_won: float | None,
    skip: set[tuple[str, str]] | None = None,
) -> Bottleneck | None:
    """The stage furthest below its benchmark. A step into a stage of ``skip`` (one that
    never occurs) is not a candidate: its rate counts entities that went past the missing
    stage, so it is not the rate its benchmark is for."""
    skip = skip or set()
    mine = [s for s in stages if s.group == group]
    eligible = [
        s
        for s in mine
        if s.next_stage
        and s.benchmark
        and s.conversion_adjusted is not None
        and s.entered >= cfg.min_entries
        and (s.funnel, s.next_stage) not in skip
    ]
    if not eligible:
        return None
    worst = min(eligible, key=lambda s: (s.conversion_adjusted or 0.0) / (s.benchmark or 1.0))
    rate, bench = float(worst.conversion_adjusted or 0.0), float(worst.benchmark or 0.0)
    ratio = rate / bench
    p_win = _downstream_win(stages, group, worst.funnel, str(worst.next_stage))
    at_stake = None
    if p_win is not None and avg_won is not None and rate < bench:
        at_stake = worst.entered * (bench - rate) * p_win * avg_won
    where = "" if group == ALL else f" [{group}]"
    head = (
        f"Bottleneck{where}: {_label(worst.stage)} -> {_label(str(worst.next_stage))} converts "
        f"{rate:.1%} against a {bench:.0%} benchmark ({ratio:.2f}x, {worst.entered:,} entries)"
    )
    if rate >= bench:
        head = (
            f"No stage{where} is below its benchmark; the weakest relative to it is "
            f"{_label(worst.stage)} -> {_label(str(worst.next_stage))} at {rate:.1%} "
            f"({ratio:.2f}x its {bench:.0%} benchmark)"
        )
    elif at_stake is not None:
        head += f"; reaching the benchmark would add about {at_stake:,.0f} in won revenue"
    return Bottleneck(
        worst.funnel,
        worst.stage,
        str(worst.next_stage),
        group,
        worst.entered,
        rate,
        bench,
        ratio,
        at_stake,
        head + ".",
    )


def _group_notes(groups: list[str], per_group: dict[str, Bottleneck]) -> list[str]:
    """What the per-group bottleneck lines do not say themselves."""
    notes = []
    if NOT_WORKED in groups:
        notes.append(
            f"'{NOT_WORKED}' (MQL/SQL episodes no rep has worked) is not a team, so it gets "
            "no bottleneck; its rows are in the tables"
        )
    if sum(b.revenue_at_stake is not None for b in per_group.values()) > 1:
        notes.append(
            "each group's added revenue assumes that group alone reaches the benchmark at its "
            "own bottleneck stage; the figures do not add up to the overall one"
        )
    return notes


def _summary(
    con: duckdb.DuckDBPyConnection,
    lead_ep: pd.DataFrame,
    opp_ep: pd.DataFrame,
    vocab: Vocabulary,
    cfg: FunnelConfig,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> dict[str, float | int | None]:
    def n(frame: pd.DataFrame, stage: str) -> int:
        return int((frame["stage"] == stage).sum()) if len(frame) else 0

    won = opp_ep[opp_ep["stage"] == vocab.won_stage] if len(opp_ep) else opp_ep
    lost = n(opp_ep, vocab.lost_stage)
    won_amount = float(won["amount"].sum()) if len(won) else 0.0
    created = None
    cycle = None
    if _has(con, "opportunities"):
        created = con.execute(
            "SELECT count(*) FROM opportunities WHERE created_at >= $s AND created_at < $e",
            {"s": start, "e": end},
        ).fetchall()[0][0]
        if len(won):
            ids = won[["entity", "ts"]]
            con.register("_won_deals", ids)
            try:
                cycle = con.execute(
                    "SELECT median(date_diff('second', o.created_at, w.ts)) / 86400.0 "
                    "FROM _won_deals w JOIN opportunities o ON o.opportunity_id = w.entity"
                ).fetchall()[0][0]
            finally:
                con.unregister("_won_deals")
    stages = cfg.lead_stages
    return {
        "leads_acquired": n(lead_ep, stages[0]),
        "mqls": n(lead_ep, stages[-2]) if len(stages) >= 2 else None,
        "sqls": n(lead_ep, stages[-1]),
        "opportunities_created": created,
        "deals_won": len(won),
        "deals_lost": lost,
        "win_rate": len(won) / (len(won) + lost) if (len(won) + lost) else None,
        "won_amount": won_amount,
        "average_won_amount": won_amount / len(won) if len(won) else None,
        "median_sales_cycle_days": float(cycle) if cycle is not None else None,
    }


AVG_PRIOR_WINS = 5.0


def _group_average_won(
    opp_ep: pd.DataFrame, won_stage: str, overall: float | None
) -> dict[str, float | None]:
    """Each group's average won amount, shrunk towards ``overall`` with
    :data:`AVG_PRIOR_WINS` pseudo-wins."""
    if overall is None or opp_ep.empty:
        return {}
    won = opp_ep[opp_ep["stage"] == won_stage]
    agg = won.groupby("grp")["amount"].agg(["sum", "count"])
    return {
        str(g): float((row["sum"] + AVG_PRIOR_WINS * overall) / (row["count"] + AVG_PRIOR_WINS))
        for g, row in agg.iterrows()
    }


def funnel(
    con: duckdb.DuckDBPyConnection,
    vocab: Vocabulary,
    *,
    start: date | datetime | pd.Timestamp | str,
    end: date | datetime | pd.Timestamp | str,
    by: str | None = None,
    config: FunnelConfig | None = None,
    end_name: str = "end",
) -> FunnelReport:
    """Measure the funnel of ``[start, end)`` on the checked views of ``con``.

    ``con`` is a connection from :func:`leadml.contracts.connect`. Only history rows
    with ``ts < end`` are read; stage episodes are counted when they start in the
    range. ``by`` is ``None``, ``"team"`` (deal owner's team; for leads from MQL on,
    the team of the rep who first worked it) or ``"segment"`` (account / deal segment).
    ``end_name`` names ``end`` in the error for an end after the data (the CLI: --end).
    """
    cfg = config or FunnelConfig.model_validate({})
    lo, hi = as_utc(start, "start"), as_utc(end, "end")
    if lo >= hi:
        raise LeadmlError(
            f"start {lo.date()} is not before end {hi.date()}; the range is [start, end)"
        )
    if by is not None and by not in GROUPINGS:
        raise LeadmlError(f"by: {by!r} is not a grouping; use one of {', '.join(GROUPINGS)}")
    unknown = [s for s in cfg.lead_stages if s not in vocab.lead_statuses]
    if unknown or len(cfg.lead_stages) < 2:
        raise LeadmlError(
            f"funnel.lead_stages {cfg.lead_stages}: needs at least two statuses, all from "
            f"vocabulary.lead_statuses ({', '.join(vocab.lead_statuses)}); fix configs/leadml.yaml"
        )
    notes: list[str] = []
    has_leads = _has(con, "lead_status_history")
    has_opps = _has(con, "opportunity_history")
    if not (has_leads or has_opps):
        raise DataError(
            "the funnel needs lead_status_history and/or opportunity_history; neither is present"
        )
    last = check_end(con, hi, end_name)
    if last is not None and hi > (day_after := last.floor("D") + pd.Timedelta(days=1)):
        notes.append(
            f"the range ends {hi.date()}, after the last record ({last:%Y-%m-%d %H:%M} UTC): "
            "episodes still open count the days after it as time in the stage; end the "
            f"range on {day_after.date()} to leave them out"
        )
    opp_chain = [*vocab.open_stages, vocab.won_stage]
    lead_cols = ["entity", "ts", "stage", "prev_status", "next_status", "next_ts", "grp"]
    opp_cols = ["entity", "ts", "stage", "amount", "next_status", "next_ts", "grp"]
    lead_ep = (
        _outcomes(_lead_episodes(con, vocab, cfg, lo, hi, by), cfg.lead_stages, hi)
        if has_leads
        else pd.DataFrame(columns=lead_cols)
    )
    opp_ep = (
        _outcomes(_opportunity_episodes(con, vocab, lo, hi, by), opp_chain, hi)
        if has_opps
        else pd.DataFrame(columns=opp_cols)
    )
    if not has_leads:
        notes.append("lead_status_history is absent: no lead funnel")
    if not has_opps:
        notes.append("opportunity_history is absent: no opportunity funnel")
    groups = [ALL]
    if by:
        seen = set(lead_ep["grp"].dropna()) | set(opp_ep["grp"].dropna())
        groups += sorted(str(g) for g in seen - {ALL})
    stages = []
    if has_leads:
        stages += _stage_rows(
            "lead", lead_ep, cfg.lead_stages, cfg.lead_stages, cfg.benchmarks, groups
        )
    if has_opps:
        opp_stages = [*vocab.open_stages, vocab.won_stage, vocab.lost_stage]
        stages += _stage_rows("opportunity", opp_ep, opp_stages, opp_chain, cfg.benchmarks, groups)
    recycling, shares = _recycling(lead_ep, cfg, groups) if has_leads and len(lead_ep) else ([], {})
    summary = _summary(con, lead_ep, opp_ep, vocab, cfg, lo, hi)
    summary.update(shares)
    avg_won = summary.get("average_won_amount")
    avg = float(avg_won) if isinstance(avg_won, int | float) and not math.isnan(avg_won) else None
    never = _never_entered(stages)
    notes += _skipped_step_notes(stages, never)
    unbenched = [
        s
        for s in (cfg.lead_stages[:-1] if has_leads else [])
        + (vocab.open_stages if has_opps else [])
        if s not in cfg.benchmarks
    ]
    if unbenched:
        notes.append(
            f"no benchmark for {', '.join(unbenched)} (funnel.benchmarks names "
            f"{', '.join(cfg.benchmarks) or 'no stage'}): those stages cannot be named the "
            "bottleneck; set funnel.benchmarks for your stage names"
        )
    overall = _bottleneck(stages, ALL, cfg, avg, never)
    if overall is None:
        notes.append(
            f"no bottleneck named: no stage with a benchmark has {cfg.min_entries}+ entries "
            "in the range (funnel.min_entries)"
        )
    group_avg = _group_average_won(opp_ep, vocab.won_stage, avg)
    per_group = {
        g: b
        for g in groups[1:]
        if g != NOT_WORKED
        and (b := _bottleneck(stages, g, cfg, group_avg.get(g, avg), never)) is not None
    }
    group_notes = _group_notes(groups, per_group)
    if lead_ep.empty and opp_ep.empty:
        notes.insert(0, _empty_range_note(con, lo, hi))
    return FunnelReport(
        start=lo,
        end=hi,
        by=by,
        stages=stages,
        recycling=recycling,
        bottleneck=overall,
        group_bottlenecks=per_group,
        summary=summary,
        notes=notes,
        group_notes=group_notes,
    )
