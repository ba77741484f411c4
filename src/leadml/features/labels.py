"""Spines and labels of the training sets, as DuckDB SQL over the typed views.

Time semantics: who is in a spine at T (an open lead, an open deal) is decided from
records with ``ts < T`` only; a label for T reads only records in ``(T, T + H]``
(deal outcomes: ``(T, data end]``). A record exactly at T belongs to neither side;
a snapshot whose conversion or close happens exactly at T is excluded and counted
(``converted_at_as_of`` / ``closed_at_as_of``) rather than mislabelled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import duckdb
import pandas as pd

from leadml.config import Vocabulary
from leadml.contracts import HAPPENED_AT
from leadml.errors import DataError
from leadml.features.offline import DAY_US, days, ensure_tables, lit, present_tables

# Labels are known up to the latest event of the journey; accounts' creation dates are
# firmographics (an account created yesterday ends no label window).
_TS_COLUMNS = tuple(pair for pair in HAPPENED_AT if pair[0] != "accounts")


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?")


def to_timestamp(value: str | pd.Timestamp, what: str) -> pd.Timestamp:
    """An ISO date/time (or Timestamp) as a UTC Timestamp; naive means UTC.

    Text must be ISO (YYYY-MM-DD, optionally with a time): ``01/02/2025`` is refused
    rather than guessed as 2 January or 1 February."""
    if isinstance(value, str) and value.strip() and not _ISO.fullmatch(value.strip()):
        raise DataError(f"{what}: {value!r} is not an ISO date (YYYY-MM-DD); use e.g. 2025-06-02")
    try:
        ts = pd.Timestamp(value.strip() if isinstance(value, str) else value)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{what}: {value!r} is not a date ({exc}); use ISO, e.g. 2025-06-02"
        ) from None
    if ts is pd.NaT:
        raise DataError(f"{what}: missing date; use ISO, e.g. 2025-06-02")
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("us")


def as_of_dates(
    start: str | pd.Timestamp, end: str | pd.Timestamp, every_days: int = 7
) -> list[pd.Timestamp]:
    """As-of times from the first Monday 00:00 UTC on or after ``start`` up to ``end``
    (inclusive), every ``every_days`` days."""
    if every_days < 1:
        raise DataError(f"every: must be at least 1 day (got {every_days})")
    s, e = to_timestamp(start, "start"), to_timestamp(end, "end")
    if e < s:
        raise DataError(
            f"no as-of dates: start {s.date()} is after end {e.date()} (the end is the data's "
            "end unless --end is given); choose an earlier start or a later end"
        )
    first = s.normalize()
    if first < s:
        first += pd.Timedelta(days=1)
    first += pd.Timedelta(days=(7 - first.weekday()) % 7)
    out: list[pd.Timestamp] = []
    t = first
    while t <= e:
        out.append(t)
        t += pd.Timedelta(days=every_days)
    return out


def data_end(con: duckdb.DuckDBPyConnection) -> pd.Timestamp | None:
    """The latest timestamp anywhere in the data: labels are known up to here (absent
    optional tables become empty views first, as the label and feature code expects)."""
    ensure_tables(con)
    return latest_record(con)


def latest_record(con: duckdb.DuckDBPyConnection) -> pd.Timestamp | None:
    """The latest timestamp of the record tables ``con`` has (nothing is created)."""
    present = present_tables(con)
    parts = " UNION ALL ".join(
        f"SELECT max({c}) AS t FROM {t}" for t, c in _TS_COLUMNS if t in present
    )
    if not parts:
        return None
    row = next(iter(con.execute(f"SELECT max(t) FROM ({parts})").fetchall()), None)
    if row is None or row[0] is None:
        return None
    return to_timestamp(row[0], "data end")


def data_start(con: duckdb.DuckDBPyConnection) -> pd.Timestamp | None:
    """The earliest lead creation: the first sensible as-of date."""
    row = next(iter(con.execute("SELECT min(created_at) FROM leads").fetchall()), None)
    return None if row is None or row[0] is None else to_timestamp(row[0], "data start")


def _dates_table(con: duckdb.DuckDBPyConnection, name: str, dates: Sequence[pd.Timestamp]) -> None:
    values = ", ".join(f"(TIMESTAMPTZ '{d.isoformat()}')" for d in dates)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM (VALUES {values}) v(as_of)")


def lead_readiness_spine(
    con: duckdb.DuckDBPyConnection,
    vocab: Vocabulary,
    dates: Sequence[pd.Timestamp],
    horizon_days: int,
    end: pd.Timestamp,
    table: str,
) -> dict[str, int]:
    """Create ``table`` (``_sid, lead_id, as_of, label``) of leads open at each date; return
    the excluded counts by reason.

    Open at T: created before T; the latest status before T (ties broken by the status
    order of the vocabulary) is not ``sql`` and not ``disqualified`` (a later ``recycled``
    reopens); no opportunity of the lead created before T. Label: an opportunity of the
    lead is created, or its status becomes ``sql``, in ``(T, T + H]``.
    """
    ensure_tables(con)
    _dates_table(con, "_rd_dates", dates)
    ranks = "[" + ", ".join(lit(s) for s in vocab.lead_statuses) + "]"
    h = f"INTERVAL {int(horizon_days)} DAY"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _rd_all AS
        WITH c AS (
          SELECT l.lead_id, d.as_of FROM leads l JOIN _rd_dates d ON l.created_at < d.as_of
        ), st AS (
          SELECT c.lead_id, c.as_of,
                 arg_max(s.status, (s.ts, list_position({ranks}, s.status))) AS status
          FROM c JOIN lead_status_history s ON s.lead_id = c.lead_id AND s.ts < c.as_of
          GROUP BY c.lead_id, c.as_of
        ), conv AS (
          SELECT lead_id, created_at AS ts FROM opportunities WHERE lead_id IS NOT NULL
          UNION ALL
          SELECT lead_id, ts FROM lead_status_history WHERE status = 'sql'
        ), opp_first AS (
          SELECT lead_id, min(created_at) AS first_opp FROM opportunities
          WHERE lead_id IS NOT NULL GROUP BY lead_id
        ), open_leads AS (
          SELECT c.lead_id, c.as_of FROM c
          LEFT JOIN st ON st.lead_id = c.lead_id AND st.as_of = c.as_of
          LEFT JOIN opp_first o ON o.lead_id = c.lead_id
          WHERE coalesce(st.status NOT IN ('sql', 'disqualified'), TRUE)
            AND (o.first_opp IS NULL OR o.first_opp >= c.as_of)
        ), lab AS (
          SELECT ol.lead_id, ol.as_of,
                 min(v.ts) FILTER (WHERE v.ts > ol.as_of) AS next_conv,
                 count(v.ts) FILTER (WHERE v.ts = ol.as_of) AS conv_at
          FROM open_leads ol LEFT JOIN conv v ON v.lead_id = ol.lead_id AND v.ts >= ol.as_of
                                              AND v.ts <= ol.as_of + {h}
          GROUP BY ol.lead_id, ol.as_of
        )
        SELECT lead_id, as_of,
               CAST(coalesce(next_conv <= as_of + {h}, FALSE) AS BIGINT) AS label,
               CASE WHEN as_of + {h} > TIMESTAMPTZ '{end.isoformat()}'
                    THEN 'label_window_incomplete'
                    WHEN conv_at > 0 THEN 'converted_at_as_of' END AS excluded
        FROM lab"""
    )
    excluded = dict(
        con.execute(
            "SELECT excluded, count(*) FROM _rd_all WHERE excluded IS NOT NULL GROUP BY excluded"
        ).fetchall()
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS "
        "SELECT row_number() OVER (ORDER BY as_of, lead_id) - 1 AS _sid, "
        "lead_id, as_of, label FROM _rd_all WHERE excluded IS NULL"
    )
    con.execute("DROP TABLE IF EXISTS _rd_all")
    return {str(k): int(v) for k, v in excluded.items()}


def deal_close_spine(
    con: duckdb.DuckDBPyConnection,
    vocab: Vocabulary,
    dates: Sequence[pd.Timestamp],
    end: pd.Timestamp,
    table: str,
) -> dict[str, int]:
    """Create ``table`` (``_sid, opportunity_id, as_of, outcome, outcome_days, segment,
    owner_id, amount``) of deals open at each date; return excluded counts by reason.

    Open at T: created before T and the last history row before T (ties ordered by
    stage, amount, expected close date) has an open stage. Outcome: the stage of the
    first closed row after T (``won``/``lost``), ``outcome_days`` from T to it; with no
    such row, ``open`` and the days from T to the data end (censored). ``amount`` is
    the amount as of T (last history row), ``segment`` and ``owner_id`` are immutable.
    """
    ensure_tables(con)
    _dates_table(con, "_dc_dates", dates)
    stages = "[" + ", ".join(lit(s) for s in vocab.stages) + "]"
    closed = f"({lit(vocab.won_stage)}, {lit(vocab.lost_stage)})"
    key = f"(h.ts, list_position({stages}, h.stage), h.amount, h.expected_close_date)"
    end_lit = f"TIMESTAMPTZ '{end.isoformat()}'"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _dc_all AS
        WITH c AS (
          SELECT o.opportunity_id, d.as_of, o.segment, o.owner_id
          FROM opportunities o JOIN _dc_dates d ON o.created_at < d.as_of
        ), st AS (
          SELECT c.opportunity_id, c.as_of, arg_max(h.stage, {key}) AS stage,
                 arg_max(CAST(h.amount AS DOUBLE), {key}) AS amount
          FROM c JOIN opportunity_history h
            ON h.opportunity_id = c.opportunity_id AND h.ts < c.as_of
          GROUP BY c.opportunity_id, c.as_of
        ), openc AS (
          SELECT c.*, st.stage, st.amount FROM c LEFT JOIN st
            ON st.opportunity_id = c.opportunity_id AND st.as_of = c.as_of
          WHERE st.stage IS NULL OR st.stage NOT IN {closed}
        ), fate AS (
          SELECT oc.opportunity_id, oc.as_of,
                 min(h.ts) FILTER (WHERE h.ts > oc.as_of) AS close_ts,
                 arg_min(h.stage, {key}) FILTER (WHERE h.ts > oc.as_of) AS close_stage,
                 count(*) FILTER (WHERE h.ts = oc.as_of) AS closed_at
          FROM openc oc JOIN opportunity_history h ON h.opportunity_id = oc.opportunity_id
            AND h.ts >= oc.as_of AND h.stage IN {closed}
          GROUP BY oc.opportunity_id, oc.as_of
        )
        SELECT oc.opportunity_id, oc.as_of,
               CASE WHEN f.close_ts IS NULL THEN 'open'
                    WHEN f.close_stage = {lit(vocab.won_stage)} THEN 'won'
                    ELSE 'lost' END AS outcome,
               {days(f"epoch_us(coalesce(f.close_ts, {end_lit})) - epoch_us(oc.as_of)")}
                 AS outcome_days,
               oc.segment, oc.owner_id, oc.amount,
               CASE WHEN oc.stage IS NULL THEN 'no_history_before_as_of'
                    WHEN oc.as_of >= {end_lit} THEN 'as_of_after_data_end'
                    WHEN coalesce(f.closed_at, 0) > 0 THEN 'closed_at_as_of' END AS excluded
        FROM openc oc LEFT JOIN fate f
          ON f.opportunity_id = oc.opportunity_id AND f.as_of = oc.as_of"""
    )
    excluded = dict(
        con.execute(
            "SELECT excluded, count(*) FROM _dc_all WHERE excluded IS NOT NULL GROUP BY excluded"
        ).fetchall()
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS "
        "SELECT row_number() OVER (ORDER BY as_of, opportunity_id) - 1 "
        "AS _sid, opportunity_id, as_of, outcome, outcome_days, segment, owner_id, amount "
        "FROM _dc_all WHERE excluded IS NULL"
    )
    con.execute("DROP TABLE IF EXISTS _dc_all")
    return {str(k): int(v) for k, v in excluded.items()}


__all__ = [
    "DAY_US",
    "as_of_dates",
    "data_end",
    "data_start",
    "deal_close_spine",
    "lead_readiness_spine",
    "to_timestamp",
]
