"""The morning report: one self-contained HTML file with every section, after a nightly run."""

from __future__ import annotations

import base64
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from _batch_data import make_company, stand_in_champions

from leadml.batch.nightly import BatchError, run_nightly
from leadml.config import load_settings
from leadml.report.html import (
    SECTIONS,
    ReportInputs,
    _call_list,
    build_report,
    realised_calibration,
)

AS_OF = "2025-06-02"


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_company(tmp_path_factory.mktemp("report-company") / "data", n_leads=300)


def test_report_has_every_section_and_embeds_its_plots(company: Path) -> None:
    champions = stand_in_champions(company)
    s = load_settings()
    with pytest.raises(BatchError, match="run `leadml batch --as-of 2025-06-02` first"):
        build_report(s, AS_OF, data=company)
    # an earlier night (more than 30 days before) gives the realised calibration
    run_nightly(s, "2025-04-28", data=company, champions=champions)
    result = run_nightly(s, AS_OF, data=company, champions=champions)
    path = build_report(s, AS_OF, data=company)

    assert path == s.reports_dir / f"leadml-report-{AS_OF}.html"
    text = path.read_text()
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in text
    # self-contained: every image is an inline PNG that decodes, nothing is fetched
    images = re.findall(r'<img alt="" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', text)
    assert len(images) >= 7  # funnel, calibration, 2 score histograms, drift, fan, waterfall
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert not re.search(r'(src|href)="(https?:)?//', text)

    section = {k: _section(text, k) for k, _ in SECTIONS}
    # funnel: stage names and the bottleneck from leadml.analytics.funnel
    assert "mql" in section["funnel"] and "Bottleneck" in section["funnel"]
    # model health: calibration from the earlier night, both score plots, drift named
    assert "Realised" in section["model-health"]
    assert result.manifest.drift_note is None and ">nan.<" not in section["model-health"]
    for name in result.manifest.drifted_features:
        model, feature = name.split(":")
        assert f"{model}: {feature}" in section["model-health"]
    # forecast: both quarters
    assert (
        "2025Q2 (current quarter)" in section["forecast"]
        and "2025Q3 (next quarter)" in section["forecast"]
    )
    # RevOps review: the deal scores did not add up to the forecast's open deals, unsaid
    deals_sum = result.tables["scores_deals"]["expected_amount_this_quarter"].sum()
    assert f"adds up to {deals_sum:,.0f}" in section["forecast"]
    assert "<th>grouping</th>" in section["forecast"]
    # call list: one row per IS rep with its planned calls
    cap = result.tables["call_capacity"]
    for rep, n in zip(cap["rep_id"], cap["assigned"], strict=True):
        assert re.search(rf"<td>{rep}</td>.*?<td>{n}</td>", section["call-list"])
    # alerts: every rule raised tonight is listed
    for rule in set(result.tables["alerts"].get("rule", pd.Series(dtype=str))):
        assert rule in section["alerts"]
    # run: the manifest's models and row counts
    assert result.manifest.run_id in section["run"]
    assert f"<td>scores_leads</td><td>{len(result.tables['scores_leads']):,}</td>" in section["run"]


def _section(text: str, key: str) -> str:
    start = text.index(f'<section id="{key}">')
    return text[start : text.index("</section>", start)]


def test_realised_calibration_reads_only_outcomes_inside_the_horizon_and_before_d() -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE lead_status_history AS SELECT * FROM (VALUES "
        "('a', TIMESTAMPTZ '2025-03-05 00:00+00', 'sql'),"  # inside [D', D'+30d): converted
        "('b', TIMESTAMPTZ '2025-04-20 00:00+00', 'sql'),"  # after the horizon: not converted
        "('c', TIMESTAMPTZ '2025-02-20 00:00+00', 'sql')"  # before D': not this window
        ") t(lead_id, ts, status)"
    )
    scores = pd.DataFrame({"lead_id": ["a", "b", "c", "d"], "readiness": [0.9, 0.8, 0.2, 0.1]})
    day = pd.Timestamp("2025-03-01").date()
    cal = realised_calibration(
        con,
        {day: scores},
        pd.Timestamp("2025-05-01").date(),
        horizon_days=30,
        entity="lead",
        bins=4,
    )
    assert cal["count"].sum() == 4
    assert cal.sort_values("predicted")["observed"].tolist() == [0.0, 0.0, 0.0, 1.0]
    # a night whose horizon has not passed by D is not used
    early = realised_calibration(
        con, {day: scores}, pd.Timestamp("2025-03-20").date(), horizon_days=30, entity="lead"
    )
    assert early.empty


def test_cli_batch_without_champions_is_a_clear_error_and_report_prints_its_path(
    company: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leadml.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["batch", "--as-of", AS_OF, "--data", str(company)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no champion for lead_readiness" in err and "leadml train" in err
    assert "Traceback" not in err

    s = load_settings()
    run_nightly(s, AS_OF, data=company, champions=stand_in_champions(company))
    main(["report", "--as-of", AS_OF, "--data", str(company)])
    out = capsys.readouterr().out
    assert f"leadml-report-{AS_OF}.html" in out.replace("\n", "")
    assert (s.reports_dir / f"leadml-report-{AS_OF}.html").exists()


def test_the_call_list_section_counts_leads_against_places_not_slots() -> None:
    """Nightly review: with 2 slots per lead every full rep showed utilisation 0.50 and
    '320 free slots stay unused ... consider handing over more leads'."""

    cap = pd.DataFrame(
        {
            "rep_id": ["r1", "r2"],
            "weekly_slots": [80, 80],
            "booked": [0, 20],
            "capacity": [80, 60],
            "leads": [40, 30],
            "assigned": [40, 25],
            "expected_conversions": [9.0, 5.0],
        }
    )
    empty = pd.DataFrame()
    settings = {"batch": {"call_list_statuses": ["mql"], "assign_by": "team"}}
    inp = ReportInputs(
        date(2025, 6, 2), {"settings": settings}, empty, empty, empty, cap, empty, empty, empty
    )
    html = _call_list(inp)
    assert "65 leads planned for 70 places (the 140 free slots" in html
    # r1 is full: 40 leads in 40 places; r2 holds 25 of 30
    assert re.search(r"<td>r1</td>(<td>\d+</td>){5}<td>1(\.00)?</td>", html)
    assert re.search(r"<td>r2</td>(<td>\d+</td>){5}<td>0\.83</td>", html)
    assert "5 places stay empty" in html and "(status mql)" in html and "reps&#x27; teams" in html
    full = ReportInputs(
        date(2025, 6, 2),
        {"settings": settings},
        *[empty] * 3,
        cap.assign(assigned=cap["leads"]),
        *[empty] * 3,
    )
    assert "stay empty" not in _call_list(full)


def test_chances_never_round_to_a_certainty_they_are_not() -> None:
    from leadml.report.html import _chance

    assert [_chance(p) for p in (0.9995, 1.0, 0.004, 0.0, 0.42)] == [
        ">99%",
        "100%",
        "<1%",
        "0%",
        "42%",
    ]
    assert _chance(float("nan")) == "-"
