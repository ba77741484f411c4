"""The morning report: one self-contained HTML file for the RevOps lead at 9 am.

:func:`render_report` is pure: it takes the tables of one nightly run (as read
back from the outputs) and the funnel, and returns HTML with every plot embedded
as a base64 PNG, so the file can be mailed or opened offline. Sections:

1. **At a glance**: open leads and deals, call-list size and expected
   conversions, forecast P50 against target, alerts, drifted features.
2. **Funnel**: volumes per stage, conversion to the next, velocity, and the
   bottleneck stage (THE MODEL's measurement).
3. **Model health**: calibration (realised outcomes of earlier nights' scores
   where the horizon has passed, else the evidence logged at training), score
   distributions, drift (PSI per feature and of the scores).
4. **Forecast**: the fan chart of the current quarter (weekly P10/P50/P90 so
   far and tonight's), the waterfall won -> open -> new vs target, and the
   per-team / per-segment table for this and the next quarter.
5. **Call list**: per IS rep, slots, booked, capacity used, expected conversions.
6. **Alerts**: deal-hygiene alerts by type, the largest deals first.
7. **Run**: the manifest (inputs, models, rows written, timings).

:func:`build_report` reads a date's outputs from the workspace, computes the
funnel from the input tables as of that date, and writes
``<workspace>/reports/leadml-report-YYYY-MM-DD.html`` atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SECTIONS: tuple[tuple[str, str], ...] = (
    ("glance", "At a glance"),
    ("funnel", "Funnel"),
    ("model-health", "Model health"),
    ("forecast", "Forecast"),
    ("call-list", "Call list"),
    ("alerts", "Alerts"),
    ("run", "Run"),
)


@dataclass
class ReportInputs:
    """Everything one report shows (frames as the nightly run publishes them)."""

    as_of: date
    manifest: Mapping[str, Any]
    scores_leads: pd.DataFrame
    scores_deals: pd.DataFrame
    call_list: pd.DataFrame
    call_capacity: pd.DataFrame
    forecast: pd.DataFrame
    alerts: pd.DataFrame
    drift: pd.DataFrame
    funnel: pd.DataFrame | None = (
        None  # one row per stage: stage, entered, conversion, velocity_days
    )
    bottleneck: str | None = None
    funnel_note: str | None = None
    calibration: pd.DataFrame | None = None  # model, bin, predicted, observed, count
    calibration_note: str | None = None
    # model -> the training score's percentiles 0..100
    score_reference: dict[str, Sequence[float]] = field(default_factory=dict)


# ------------------------------------------------------------------ plotting


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="" src="data:image/png;base64,{data}">'


def _figure(width: float = 6.4, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _money(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:,.1f}{unit}"
    return f"{v:,.0f}"


def funnel_plot(funnel: pd.DataFrame, bottleneck: str | None) -> str:
    fig, ax = _figure(6.4, 2.8)
    stages = funnel["stage"].astype(str).tolist()
    colors = ["#d9534f" if s == bottleneck else "#4a7ab5" for s in stages]
    ax.barh(stages[::-1], funnel["entered"].to_numpy()[::-1], color=colors[::-1])
    ax.set_xlabel("entered in the window")
    return _png(fig)


def calibration_plot(cal: pd.DataFrame) -> str:
    fig, ax = _figure(4.2, 3.4)
    ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=1)
    for model, g in cal.groupby("model"):
        ax.plot(g["predicted"], g["observed"], marker="o", label=str(model))
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed rate")
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


def score_plot(scores: pd.Series, reference: Sequence[float] | None, title: str) -> str:
    """Tonight's score percentiles against the training (out-of-sample) percentiles."""
    fig, ax = _figure(4.2, 2.8)
    values = pd.to_numeric(scores, errors="coerce").dropna().to_numpy()
    levels = np.linspace(0, 100, 101)
    if len(values):
        ax.plot(levels, np.quantile(values, levels / 100), color="#4a7ab5", label="tonight")
    if reference is not None and len(reference):
        ref = np.asarray(reference, dtype="float64")
        ax.plot(np.linspace(0, 100, len(ref)), ref, color="#d9534f", ls="--", label="training")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("percentile")
    ax.set_ylabel("probability")
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


def drift_plot(drift: pd.DataFrame, warn: float, alert: float) -> str:
    top = drift.dropna(subset=["psi"]).sort_values("psi", ascending=False).head(15)
    fig, ax = _figure(6.4, 0.3 * len(top) + 1.0)
    labels = [f"{m}: {f}" for m, f in zip(top["model"], top["feature"], strict=True)]
    colors = top["status"].map({"drift": "#d9534f", "warn": "#f0ad4e"}).fillna("#5cb85c")
    ax.barh(labels[::-1], top["psi"].to_numpy()[::-1], color=colors.to_numpy()[::-1])
    ax.axvline(warn, color="#f0ad4e", ls="--", lw=1)
    ax.axvline(alert, color="#d9534f", ls="--", lw=1)
    ax.set_xlabel("population stability index")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def fan_plot(fan: pd.DataFrame) -> str:
    fig, ax = _figure(6.4, 3.2)
    x = pd.to_datetime(fan["week_end"], utc=True)
    ax.fill_between(x, fan["p10"], fan["p90"], color="#4a7ab5", alpha=0.25, label="P10-P90")
    ax.plot(x, fan["p50"], color="#4a7ab5", label="P50")
    ax.plot(x, fan["won"], color="#5cb85c", ls=":", label="won before D")
    if fan["target"].notna().any():
        ax.axhline(
            float(fan["target"].dropna().iloc[-1]), color="#d9534f", ls="--", lw=1, label="target"
        )
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    ax.set_ylabel("revenue booked by week end")
    fig.autofmt_xdate()
    return _png(fig)


def waterfall_plot(row: pd.Series) -> str:
    fig, ax = _figure(5.0, 3.0)
    steps = [
        ("won", row["won"]),
        ("open (expected)", row["open_expected"]),
        ("new (expected)", row["new_expected"]),
    ]
    bottom = 0.0
    for i, (_label, value) in enumerate(steps):
        ax.bar(i, value, bottom=bottom, color=["#5cb85c", "#4a7ab5", "#9bb7dc"][i])
        ax.text(i, bottom + value, _money(value), ha="center", va="bottom", fontsize=8)
        bottom += value
    ax.bar(3, bottom, color="#333")
    ax.text(3, bottom, _money(bottom), ha="center", va="bottom", fontsize=8)
    ticks = [s[0] for s in steps] + ["expected"]
    if np.isfinite(row.get("target", np.nan)):
        ax.axhline(row["target"], color="#d9534f", ls="--", lw=1)
        ax.text(3.45, row["target"], "target", color="#d9534f", fontsize=8, va="center")
    ax.set_xticks(range(4), ticks, fontsize=8)
    return _png(fig)


# ------------------------------------------------------------------ HTML


CSS = "\n".join(
    [
        "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;"
        "margin:24px auto;max-width:1100px;color:#222}",
        "h1{font-size:22px;margin-bottom:4px}",
        "h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}",
        "h3{font-size:15px}",
        ".muted{color:#777;font-size:13px}",
        "nav a{margin-right:12px;font-size:13px}",
        "table{border-collapse:collapse;font-size:13px;margin:8px 0}",
        "td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}",
        "td:first-child,th:first-child{text-align:left}",
        "th{background:#f6f6f6}",
        ".kpis{display:flex;flex-wrap:wrap;gap:12px}",
        ".kpi{border:1px solid #e3e3e3;border-radius:6px;padding:8px 14px;min-width:150px}",
        ".kpi b{display:block;font-size:20px}",
        ".warn{color:#b35c00}",
        ".bad{color:#c9302c}",
        ".ok{color:#2d7d2d}",
        ".row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}",
    ]
)


def _e(text: object) -> str:
    return html.escape("" if text is None else str(text))


def _table(df: pd.DataFrame, *, max_rows: int = 30, floats: str = "{:,.3f}") -> str:
    if df is None or df.empty:
        return '<p class="muted">none</p>'
    shown = df.head(max_rows)
    head = "".join(f"<th>{_e(c)}</th>" for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                v = float(v)
                cells.append(
                    "-"
                    if not np.isfinite(v)
                    else floats.format(v)
                    if abs(v) < 1000 and not v.is_integer()
                    else f"{v:,.0f}"
                )
            else:
                cells.append(_e(v))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    more = (
        f'<p class="muted">{len(df) - max_rows:,} more rows in the outputs</p>'
        if len(df) > max_rows
        else ""
    )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _kpi(label: str, value: str, cls: str = "") -> str:
    return (
        f'<div class="kpi"><span class="muted">{_e(label)}</span>'
        f'<b class="{cls}">{_e(value)}</b></div>'
    )


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_e(title)}</h2>{body}</section>'


def _snapshot(forecast: pd.DataFrame, quarter: str, grouping: str = "total") -> pd.DataFrame:
    if forecast.empty or "kind" not in forecast:
        return forecast.head(0)
    f = forecast
    return f[(f["kind"] == "snapshot") & (f["quarter"] == quarter) & (f["grouping"] == grouping)]


def _glance(inp: ReportInputs) -> str:
    m = inp.manifest
    cur = _snapshot(inp.forecast, "current")
    kpis = [
        _kpi("open leads scored", f"{len(inp.scores_leads):,}"),
        _kpi("open deals scored", f"{len(inp.scores_deals):,}"),
        _kpi("calls planned", f"{len(inp.call_list):,}"),
        _kpi(
            "expected conversions",
            f"{inp.call_list['readiness'].sum():,.1f}" if "readiness" in inp.call_list else "-",
        ),
    ]
    if len(cur):
        r = cur.iloc[0]
        p = r.get("p_reach_target", np.nan)
        cls = "" if not np.isfinite(p) else "ok" if p >= 0.6 else "warn" if p >= 0.3 else "bad"
        kpis.append(_kpi(f"{r['period']} forecast P50", _money(r["p50"])))
        kpis.append(_kpi(f"{r['period']} target", _money(r["target"])))
        kpis.append(_kpi("P(reach target)", _chance(p), cls))
    n_alerts = len(inp.alerts)
    deals = inp.alerts["opportunity_id"].nunique() if "opportunity_id" in inp.alerts else n_alerts
    kpis.append(
        _kpi(
            "deal alerts",
            f"{n_alerts:,} on {deals:,} deals" if deals != n_alerts else f"{n_alerts:,}",
            "warn" if n_alerts else "ok",
        )
    )
    drifted = list(m.get("drifted_features") or [])
    kpis.append(_kpi("drifted features", f"{len(drifted)}", "bad" if drifted else "ok"))
    lines = []
    if inp.bottleneck:
        lines.append(f"Bottleneck stage: <b>{_e(inp.bottleneck)}</b>.")
    if drifted:
        lines.append("Drifted: " + ", ".join(f"<b>{_e(d)}</b>" for d in drifted) + ".")
    return f'<div class="kpis">{"".join(kpis)}</div><p>{" ".join(lines)}</p>{_warnings(m)}'


def _warnings(m: Mapping[str, Any]) -> str:
    """The run's warnings (backfill with a later champion, missing tables, ...)."""
    found = [str(w) for w in (m.get("warnings") or [])]
    if not found:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in found)
    return f'<div class="warnings"><b class="warn">Warnings</b><ul>{items}</ul></div>'


def _funnel(inp: ReportInputs) -> str:
    if inp.funnel is None or inp.funnel.empty:
        return f'<p class="muted">{_e(inp.funnel_note or "no funnel figures for this date")}</p>'
    plot = funnel_plot(inp.funnel, inp.bottleneck)
    note = f'<p class="muted">{_e(inp.funnel_note)}</p>' if inp.funnel_note else ""
    bn = f"<p>Bottleneck: <b>{_e(inp.bottleneck)}</b></p>" if inp.bottleneck else ""
    return f'{bn}<div class="row">{plot}{_table(inp.funnel)}</div>{note}'


def _model_health(inp: ReportInputs) -> str:
    m = inp.manifest
    versions = m.get("model_versions") or {}
    parts = [
        "<p>Champions: " + ", ".join(f"{_e(k)} v{_e(v)}" for k, v in versions.items()) + "</p>"
    ]
    metrics = m.get("model_metrics") or {}
    if any(metrics.values()):
        rows = [{"model": k, **v} for k, v in metrics.items() if v]
        parts.append(
            "<p>Backtest of the champions at training (held-out windows; ECE = expected "
            "calibration error):</p>" + _table(pd.DataFrame(rows))
        )
    parts.append("<h3>Calibration</h3>")
    if inp.calibration is not None and not inp.calibration.empty:
        parts.append(f'<div class="row">{calibration_plot(inp.calibration)}</div>')
    if inp.calibration_note:
        parts.append(f'<p class="muted">{_e(inp.calibration_note)}</p>')
    parts.append('<h3>Score distribution</h3><div class="row">')
    if "readiness" in inp.scores_leads:
        parts.append(
            score_plot(
                inp.scores_leads["readiness"],
                inp.score_reference.get("lead_readiness"),
                "lead readiness",
            )
        )
    if "probability" in inp.scores_deals:
        parts.append(
            score_plot(
                inp.scores_deals["probability"], inp.score_reference.get("deal_close"), "deal close"
            )
        )
    parts.append("</div>")
    if "grade" in inp.scores_leads and len(inp.scores_leads):
        grades = (
            inp.scores_leads.groupby("grade")
            .agg(leads=("lead_id", "size"), mean_readiness=("readiness", "mean"))
            .reset_index()
        )
        parts.append("<p>Lead grades</p>" + _table(grades))
    parts.append("<h3>Drift</h3>")
    settings = (m.get("settings") or {}).get("batch", {})
    warn, alert = float(settings.get("psi_warn", 0.1)), float(settings.get("psi_alert", 0.25))
    if m.get("drift_note"):
        parts.append(f'<p class="muted">{_e(str(m["drift_note"]))}.</p>')
    if inp.drift.empty:
        if not m.get("drift_note"):
            parts.append(
                '<p class="muted">no drift measured (the champions carry no training reference)</p>'
            )
    else:
        drifted = inp.drift[inp.drift["status"].isin(["drift", "missing"])]
        if len(drifted):
            names = ", ".join(
                f"{a}: {b}" for a, b in zip(drifted["model"], drifted["feature"], strict=True)
            )
            parts.append(f'<p class="bad">Drifted (PSI &ge; {alert:g}): {_e(names)}</p>')
        else:
            parts.append(f'<p class="ok">No feature or score drifted (all PSI &lt; {alert:g}).</p>')
        parts.append(drift_plot(inp.drift[inp.drift["status"] != "unwatched"], warn, alert))
        parts.append(
            _table(inp.drift[["model", "feature", "kind", "psi", "status", "rows"]], max_rows=20)
        )
    return "".join(parts)


def _forecast(inp: ReportInputs) -> str:
    f = inp.forecast
    if f.empty:
        return '<p class="muted">no forecast for this date</p>'
    parts = []
    cur = _snapshot(f, "current")
    fan = f[(f["kind"] == "fan")] if "kind" in f else f.head(0)
    tonight = cur.iloc[0] if len(cur) else None
    row = ['<div class="row">']
    if len(fan):
        row.append(fan_plot(fan.sort_values("week_end")))
    if tonight is not None:
        row.append(waterfall_plot(tonight))
    row.append("</div>")
    parts.append("".join(row))
    cols = [
        "period",
        "grouping",
        "group",
        "won",
        "open_expected",
        "new_expected",
        "expected",
        "p10",
        "p50",
        "p90",
        "target",
        "p_reach_target",
        "coverage",
        "open_deals",
    ]
    for quarter in ("current", "next"):
        snap = pd.concat([_snapshot(f, quarter, g) for g in ("total", "team", "segment")])
        if len(snap):
            label = snap["period"].iloc[0]
            parts.append(f"<h3>{_e(label)} ({quarter} quarter)</h3>")
            parts.append(_table(snap[[c for c in cols if c in snap]], floats="{:,.2f}"))
    if tonight is not None:
        parts.append(_open_deals_note(tonight, inp.scores_deals))
    return "".join(parts)


def _open_deals_note(tonight: pd.Series, deals: pd.DataFrame) -> str:
    """Say where the forecast's open-deal revenue comes from and what the per-deal scores
    add up to, when they differ (the forecast may use another probability source)."""
    col = "expected_amount_this_quarter"
    source = str(tonight.get("probability_source") or "")
    if col not in deals or not source or "model" in source:
        return ""
    by_deals = float(deals[col].sum())
    return (
        f'<p class="muted">From open deals: {tonight["open_expected"]:,.0f} with the '
        f"{_e(source)} close rates, the source the forecast is backtested with "
        f"(batch.forecast_source); the deal scores' expected_amount_this_quarter (the "
        f"deal_close model) adds up to {by_deals:,.0f}.</p>"
    )


def _chance(p: float) -> str:
    """A probability as a whole percentage that never rounds to a certainty it is not
    (0.9995 is '>99%', 0.004 '<1%')."""
    if not np.isfinite(p):
        return "-"
    if 0.99 < p < 1:
        return ">99%"
    if 0 < p < 0.01:
        return "<1%"
    return f"{p:.0%}"


def _call_list(inp: ReportInputs) -> str:
    cap = inp.call_capacity
    if cap.empty:
        return '<p class="muted">no IS reps with slots this week</p>'
    calls = inp.call_list
    summary = cap.copy()
    if len(calls):
        top = calls.sort_values("rank").groupby("rep_id").first()
        summary["first_call"] = summary["rep_id"].map(top["lead_id"])
        summary["recycled"] = (
            summary["rep_id"]
            .map(
                calls[calls.get("status", pd.Series(dtype=str)) == "recycled"]
                .groupby("rep_id")
                .size()
            )
            .fillna(0)
            .astype(int)
        )
    # A lead takes the hand-off policy's slots (a call and its follow-up): ``leads`` is how
    # many leads a rep's free slots hold, so a full rep has assigned == leads.
    places = summary["leads"] if "leads" in summary else summary["capacity"]
    summary["utilisation"] = np.where(
        places > 0, summary["assigned"] / places.clip(lower=1), np.nan
    )
    total = (
        f"{int(summary['assigned'].sum()):,} leads planned for {int(places.sum()):,} places "
        f"(the {int(summary['capacity'].sum()):,} free slots of the list's days, "
        f"{int(summary['booked'].sum()):,} already booked this week); expected conversions "
        f"{summary['expected_conversions'].sum():,.1f}."
    )
    keep = [
        c
        for c in (
            "rep_id",
            "team",
            "segment",
            "weekly_slots",
            "booked",
            "capacity",
            "leads",
            "assigned",
            "utilisation",
            "expected_conversions",
            "recycled",
            "first_call",
        )
        if c in summary
    ]
    unused = int(places.sum() - summary["assigned"].sum())
    if unused > 0:
        batch = (inp.manifest.get("settings") or {}).get("batch", {})
        statuses = " or ".join(map(str, batch.get("call_list_statuses", ["mql", "recycled"])))
        total += (
            f" {unused:,} places stay empty: there are fewer eligible leads (status "
            f"{statuses}) than places in those reps' {batch.get('assign_by', 'segment')}s; "
            "consider handing over more leads (the MQL rule) or moving slots."
        )
    summary = summary.rename(columns={"capacity": "free slots", "leads": "places"})
    keep = [{"capacity": "free slots", "leads": "places"}.get(c, c) for c in keep]
    return f"<p>{_e(total)}</p>" + _table(summary[keep], max_rows=200, floats="{:,.2f}")


def _alerts(inp: ReportInputs) -> str:
    a = inp.alerts
    if a.empty:
        return '<p class="ok">No deal-hygiene alerts.</p>'
    kind = next((c for c in ("alert", "type", "kind", "rule") if c in a), None)
    parts = []
    if kind:
        parts.append(_table(a.groupby(kind).size().rename("deals").reset_index()))
    if "amount" in a:
        a = a.sort_values("amount", ascending=False)
    parts.append(_table(a.drop(columns=["as_of"], errors="ignore"), max_rows=40, floats="{:,.1f}"))
    return "".join(parts)


def _run(inp: ReportInputs) -> str:
    from leadml.batch.outputs import masked_url

    m = inp.manifest
    rows = [
        ("run id", m.get("run_id")),
        ("status", m.get("status")),
        ("started / finished (UTC)", f"{m.get('started_at')} / {m.get('finished_at')}"),
        ("data", m.get("data_location")),
        ("SQL outputs", masked_url(str(m["sql_url"])) if m.get("sql_url") else None),
        ("peak RSS (MiB)", m.get("peak_rss_mb")),
    ]
    meta = pd.DataFrame(rows, columns=["", "value"])
    inputs = pd.DataFrame(
        [
            (t, n, (m.get("quarantined_rows") or {}).get(t, 0))
            for t, n in (m.get("input_rows") or {}).items()
        ],
        columns=["table", "rows", "quarantined"],
    )
    written = pd.DataFrame(list((m.get("rows_written") or {}).items()), columns=["output", "rows"])
    timings = pd.DataFrame(list((m.get("timings_s") or {}).items()), columns=["step", "seconds"])
    return (
        f'{_table(meta)}{_warnings(m)}<div class="row">{_table(inputs)}{_table(written)}'
        f"{_table(timings, floats='{:,.2f}')}</div>"
    )


def render_report(inp: ReportInputs) -> str:
    """The report as one HTML document (no external resources)."""
    bodies = {
        "glance": _glance(inp),
        "funnel": _funnel(inp),
        "model-health": _model_health(inp),
        "forecast": _forecast(inp),
        "call-list": _call_list(inp),
        "alerts": _alerts(inp),
        "run": _run(inp),
    }
    nav = "".join(f'<a href="#{k}">{_e(t)}</a>' for k, t in SECTIONS)
    sections = "".join(_section(k, t, bodies[k]) for k, t in SECTIONS)
    title = f"leadml: revenue morning report, as of {inp.as_of.isoformat()}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"
        '<p class="muted">Everything below uses only data recorded before '
        f"{inp.as_of.isoformat()} 00:00 UTC. "
        f"Generated by leadml.</p><nav>{nav}</nav>{sections}</body></html>"
    )


# ------------------------------------------------------------------ reading a run back


def manifest_dict(frame: pd.DataFrame) -> dict[str, Any]:
    """The manifest row read back from the outputs, JSON fields decoded."""
    from leadml.batch.manifest import JSON_FIELDS
    from leadml.batch.outputs import is_null

    if frame.empty:
        return {}
    # a null read back from Parquet / DuckDB is NaN or NA here, and NaN is truthy
    row: dict[str, Any] = {
        str(k): (None if is_null(v) else v) for k, v in frame.iloc[0].to_dict().items()
    }
    for key in JSON_FIELDS:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def realised_calibration(
    con: Any,
    history: Mapping[date, pd.DataFrame],
    as_of: date,
    *,
    horizon_days: int,
    entity: str,
    bins: int = 10,
) -> pd.DataFrame:
    """Calibration of earlier nights' scores whose horizon has passed by ``as_of``.

    ``history`` maps an earlier run date D' to its scores (``lead_id, readiness`` or
    ``opportunity_id, p_won_90d``). Only runs with ``D' + horizon <= as_of`` count,
    and outcomes are read from records with ``ts < as_of``: a lead converted when
    it reached ``sql`` in ``[D', D' + horizon)``; a deal when it was won in that window.
    Returns ``model, bin, predicted, observed, count``.
    """
    rows = []
    for day, scores in history.items():
        if (
            pd.Timestamp(day) + pd.Timedelta(days=horizon_days) > pd.Timestamp(as_of)
            or scores.empty
        ):
            continue
        lo = pd.Timestamp(day, tz="UTC")
        hi = lo + pd.Timedelta(days=horizon_days)
        if entity == "lead":
            hit = con.execute(
                "SELECT DISTINCT lead_id FROM lead_status_history WHERE status = 'sql' "
                "AND ts >= $lo AND ts < $hi AND ts < $t",
                {"lo": lo, "hi": hi, "t": pd.Timestamp(as_of, tz="UTC")},
            ).df()["lead_id"]
            frame = pd.DataFrame({"p": scores["readiness"], "y": scores["lead_id"].isin(set(hit))})
        else:
            hit = con.execute(
                "SELECT DISTINCT opportunity_id FROM opportunity_history "
                "WHERE stage = 'closed_won' "
                "AND ts >= $lo AND ts < $hi AND ts < $t",
                {"lo": lo, "hi": hi, "t": pd.Timestamp(as_of, tz="UTC")},
            ).df()["opportunity_id"]
            frame = pd.DataFrame(
                {"p": scores["p_won_90d"], "y": scores["opportunity_id"].isin(set(hit))}
            )
        rows.append(frame)
    if not rows:
        return pd.DataFrame(columns=["model", "bin", "predicted", "observed", "count"])
    all_rows = pd.concat(rows, ignore_index=True)
    q = pd.qcut(all_rows["p"].rank(method="first"), min(bins, len(all_rows)), labels=False)
    out = all_rows.groupby(q).agg(
        predicted=("p", "mean"), observed=("y", "mean"), count=("p", "size")
    )
    out = out.reset_index(names="bin")
    out.insert(0, "model", "lead_readiness" if entity == "lead" else "deal_close (90 days)")
    return out


def build_report(
    settings: Any,
    as_of: str | date,
    *,
    data: str | Path | None = None,
    sql_source: str | None = None,
) -> Path:
    """Write the report of the nightly run of ``as_of`` and return its path.

    Reads the run's outputs (Parquet in the workspace, or the SQL database when
    Parquet is off; ``sql_source`` names where its URL came from in messages) and, for
    the funnel and the realised calibration, the input tables (only records before
    ``as_of``).
    """
    from leadml.batch.nightly import BatchError, parse_as_of
    from leadml.batch.outputs import reader
    from leadml.sources import write_text

    day, t = parse_as_of(as_of)
    store = reader(settings, sql_source)
    manifest = manifest_dict(store.read("manifest", day))
    if not manifest:
        raise BatchError(
            f"no nightly run for {day} in {store.where}; run `leadml batch --as-of {day}` "
            "first (or point the report at the store that run wrote: batch.parquet, --sql-url)"
        )
    tables = {
        name: store.read(name, day).drop(columns=["as_of"], errors="ignore")
        for name in (
            "scores_leads",
            "scores_deals",
            "call_list",
            "call_capacity",
            "forecast",
            "alerts",
            "drift",
        )
    }
    inputs = ReportInputs(as_of=day, manifest=manifest, **tables)
    ref = tables["drift"]
    if "reference_percentiles" in ref:
        for model, pct in zip(ref["model"], ref["reference_percentiles"], strict=True):
            if isinstance(pct, str) and pct:
                inputs.score_reference[str(model)] = json.loads(pct)

    location = (
        Path(data) if data is not None else Path(manifest.get("data_location") or settings.data_dir)
    )
    _add_data_sections(inputs, settings, location, store, day, t)
    target = settings.reports_dir / f"leadml-report-{day.isoformat()}.html"
    write_text(render_report(inputs), target)
    return target


def _add_data_sections(
    inputs: ReportInputs, settings: Any, location: Path, store: Any, day: date, t: pd.Timestamp
) -> None:
    """Funnel and realised calibration from the input tables (best effort, with a note)."""
    from leadml.contracts import connect
    from leadml.errors import LeadmlError

    try:
        con, _ = connect(location, settings.vocabulary, bad_rows="quarantine")
    except LeadmlError as err:
        inputs.funnel_note = f"input tables not readable at {location}: {err}"
        inputs.calibration_note = inputs.funnel_note
        return
    try:
        _funnel_into(inputs, con, settings, t)
        past_dates = (
            [d for d in store.parquet.dates("scores_leads") if d < day] if store.parquet else []
        )
        cal = []
        for entity, table, horizon in (
            ("lead", "scores_leads", 30),
            ("opportunity", "scores_deals", 90),
        ):
            hist = {
                d: store.read(table, d)
                for d in past_dates
                if pd.Timestamp(d) + pd.Timedelta(days=horizon) <= pd.Timestamp(day)
            }
            if hist:
                cal.append(
                    realised_calibration(con, hist, day, horizon_days=horizon, entity=entity)
                )
        if cal:
            inputs.calibration = pd.concat(cal, ignore_index=True)
            inputs.calibration_note = (
                "Realised: earlier nights' scores against what happened since "
                "(leads: SQL within 30 days; deals: won within 90 days)."
            )
        else:
            inputs.calibration_note = (
                "No earlier nightly run is old enough to compare with outcomes yet "
                "(30 days for leads, "
                "90 for deals). The champions' calibration on held-out data is logged in MLflow "
                "(calibration plot and ECE of each registered version)."
            )
    finally:
        con.close()


FUNNEL_WINDOW_DAYS = 90


def _funnel_into(inputs: ReportInputs, con: Any, settings: Any, t: pd.Timestamp) -> None:
    """The funnel of the trailing ``FUNNEL_WINDOW_DAYS`` days before D (:mod:`leadml.analytics`)."""
    from leadml.analytics.funnel import funnel
    from leadml.errors import LeadmlError

    start = t - pd.Timedelta(days=FUNNEL_WINDOW_DAYS)
    try:
        result = funnel(
            con, settings.vocabulary, start=start, end=t, config=getattr(settings, "funnel", None)
        )
    except LeadmlError as err:
        inputs.funnel_note = f"funnel not measured: {err}"
        return
    except Exception as err:  # one failed section must not cost the whole morning report
        inputs.funnel_note = f"funnel not measured (internal error {type(err).__name__}: {err})"
        return
    inputs.funnel, inputs.bottleneck = funnel_frame(result)
    notes = [f"Stage episodes that started in the {FUNNEL_WINDOW_DAYS} days before {t.date()}."]
    if result.bottleneck is not None:
        notes.append(result.bottleneck.statement)
    notes += list(result.notes)
    inputs.funnel_note = " ".join(notes)


def funnel_frame(result: Any) -> tuple[pd.DataFrame, str | None]:
    """The company-wide stage table of a :class:`~leadml.analytics.funnel.FunnelReport`
    and the bottleneck stage's name."""
    rows = [
        {
            "funnel": s.funnel,
            "stage": s.stage,
            "entered": s.entered,
            "converted": s.converted,
            "conversion": s.conversion_rate,
            "conversion_adjusted": s.conversion_adjusted,
            "benchmark": s.benchmark,
            "median_days": s.median_days,
        }
        for s in result.stages
        if s.group == "all"
    ]
    table = pd.DataFrame(rows)
    for col in ("conversion", "conversion_adjusted", "benchmark", "median_days"):
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype("float64")
    bottleneck = result.bottleneck.stage if result.bottleneck is not None else None
    return table, bottleneck
