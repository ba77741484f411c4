"""``POST /forecast`` without deals: the latest nightly forecast, as published.

The nightly run (``leadml batch``) writes this and next quarter's forecast, in total
and per team and segment, to its output tables (Parquet partitions or the SQL
database, see :mod:`leadml.batch.outputs`). The API answers from the newest run at or
before the request's as-of time, so that a CRM dashboard shows the same numbers as
the morning report and ``leadml forecast``: won so far, open deals from the run's
probability source (the empirical close rates by default) and deals not yet created.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from leadml.serving.checks import Problem, RequestError
from leadml.serving.schemas import BreakdownRow, ForecastRequest, ForecastResponse


def _none_if_nan(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _rows(frame: pd.DataFrame) -> list[BreakdownRow]:
    return [
        BreakdownRow(
            group=str(r.group),
            deals=int(r.open_deals),
            amount=float(r.open_pipeline),
            expected=float(r.open_expected),
            won=float(r.won),
            new_expected=float(r.new_expected),
            total_expected=float(r.expected),
            p10=float(r.p10),
            p50=float(r.p50),
            p90=float(r.p90),
            target=_none_if_nan(r.target),
            p_reach_target=_none_if_nan(r.p_reach_target),
        )
        for r in frame.sort_values("group").itertuples()
    ]


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def forecast_from_nightly(
    store: Any, request: ForecastRequest, as_of: datetime
) -> ForecastResponse:
    """The nightly forecast of the newest run at or before ``as_of`` for the request's
    period (default: that run's current quarter). Raises :class:`RequestError` (422)
    when there is no run yet or the period is not one the run forecast."""
    if request.model_fields_set & {"won_amount", "target"}:
        field = sorted(request.model_fields_set & {"won_amount", "target"})[0]
        raise RequestError(
            422,
            "1 problem with the request",
            [
                Problem(
                    (field,),
                    "comes from the nightly run's tables when no deals are sent; "
                    "send it only together with deals",
                    "not_with_nightly",
                )
            ],
        )
    # A run as of day D reads records before midnight (UTC) of D: usable from then on.
    found = store.latest("forecast", as_of.astimezone(UTC).date())
    if found is None:
        raise RequestError(
            404,
            "no nightly forecast",
            [
                Problem(
                    ("deals",),
                    f"no nightly forecast is published at or before as_of "
                    f"({as_of.isoformat()}); send the deals, or run `leadml batch` first",
                    "no_nightly_forecast",
                )
            ],
        )
    day, table = found
    snap = table[table["kind"] == "snapshot"].copy()
    snap["period_start"] = snap["period_start"].map(_utc)
    snap["period_end"] = snap["period_end"].map(_utc)
    periods = snap.drop_duplicates("period")[["period", "quarter", "period_start", "period_end"]]
    if request.period_start is None and request.period_end is None:
        chosen = periods[periods["quarter"] == "current"]
    else:
        chosen = periods
        if request.period_start is not None:
            chosen = chosen[chosen["period_start"] == _utc(request.period_start)]
        if request.period_end is not None:
            chosen = chosen[chosen["period_end"] == _utc(request.period_end)]
    if len(chosen) != 1:
        covers = "; ".join(
            f"{p.period} ({p.period_start:%Y-%m-%d} to {p.period_end:%Y-%m-%d})"
            for p in periods.itertuples()
        )
        raise RequestError(
            422,
            "1 problem with the period",
            [
                Problem(
                    ("period_start",),
                    f"the nightly forecast of {day} covers {covers or 'no period'}; ask for "
                    "one of them (period_start / period_end, end exclusive), or send the deals",
                    "period_not_forecast",
                )
            ],
        )
    period = chosen.iloc[0]
    if period["period_end"] <= as_of:
        raise RequestError(
            422,
            "1 problem with the period",
            [
                Problem(
                    ("as_of",),
                    f"the newest nightly forecast at or before as_of ({as_of.isoformat()}) is "
                    f"the run of {day}, and its period {period['period']} ended "
                    f"{period['period_end']:%Y-%m-%d}, before as_of; run `leadml batch` for a "
                    "later day, or send the deals",
                    "nightly_period_ended",
                )
            ],
        )
    rows = snap[snap["period"] == period["period"]]
    total = rows[rows["grouping"] == "total"].iloc[0]
    return ForecastResponse(
        source="nightly",
        probability_source=str(total["probability_source"]),
        as_of=pd.Timestamp(day, tz="UTC").to_pydatetime(),
        period_start=period["period_start"].to_pydatetime(),
        period_end=period["period_end"].to_pydatetime(),
        p10=float(total["p10"]),
        p50=float(total["p50"]),
        p90=float(total["p90"]),
        mean=float(total["expected"]),
        won_amount=float(total["won"]),
        open_expected=float(total["open_expected"]),
        new_expected=float(total["new_expected"]),
        target=_none_if_nan(total["target"]),
        p_reach_target=_none_if_nan(total["p_reach_target"]),
        by_stage=[],
        by_segment=_rows(rows[rows["grouping"] == "segment"]),
        by_team=_rows(rows[rows["grouping"] == "team"]),
        model=None,
    )
