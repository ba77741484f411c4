"""The funnel measurement on a hand-made company whose every figure is worked out
by hand below (range 2024-01-01 .. 2024-04-01, end exclusive).

Leads (status history):
  L1  lead 01-01, nurturing 01-02, mql 01-10, sql 01-20            -> deal O1 (won)
  L2  lead 01-03, nurturing 01-04, mql 01-15, disqualified 01-25,
      recycled 02-05, nurturing 02-06, mql 03-01                  (recycled, back to MQL)
  L3  lead 01-05, nurturing 01-06                                  (still nurturing)
  L4  lead 01-07, mql 01-08 (skips nurture), sql 01-12, nurturing 02-14  -> deal O2 (lost)
  L5  lead 2023-12-20, nurturing 2023-12-21, mql 01-02             (only the MQL is in range)
  L6  lead 03-31, mql 04-05                                        (the MQL is after the end)
Deals (stage history):
  O1  follow_up 01-20, problem_recognised 02-01, evaluation 02-10, (evaluation again 02-15,
      an amount change), negotiation 02-20, approval 03-01, closed_won 03-10 (1000)
  O2  follow_up 01-12, closed_lost 02-12
  O3  follow_up 2023-12-01, problem_recognised 01-05, evaluation 03-25 (open)
  O4  follow_up 03-20, problem_recognised 04-10 (after the end)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from leadml.analytics.funnel import FunnelReport, funnel
from leadml.config import FunnelConfig, Vocabulary
from leadml.contracts import connect
from leadml.errors import LeadmlError
from leadml.sources import frames_source

START, END = "2024-01-01", "2024-04-01"

LEAD_HISTORY = [
    ("L1", "2024-01-01", "lead"),
    ("L1", "2024-01-02", "nurturing"),
    ("L1", "2024-01-10", "mql"),
    ("L1", "2024-01-20", "sql"),
    ("L2", "2024-01-03", "lead"),
    ("L2", "2024-01-04", "nurturing"),
    ("L2", "2024-01-15", "mql"),
    ("L2", "2024-01-25", "disqualified"),
    ("L2", "2024-02-05", "recycled"),
    ("L2", "2024-02-06", "nurturing"),
    ("L2", "2024-03-01", "mql"),
    ("L3", "2024-01-05", "lead"),
    ("L3", "2024-01-06", "nurturing"),
    ("L4", "2024-01-07", "lead"),
    ("L4", "2024-01-08", "mql"),
    ("L4", "2024-01-12", "sql"),
    ("L4", "2024-02-14", "nurturing"),
    ("L5", "2023-12-20", "lead"),
    ("L5", "2023-12-21", "nurturing"),
    ("L5", "2024-01-02", "mql"),
    ("L6", "2024-03-31", "lead"),
    ("L6", "2024-04-05", "mql"),
]
OPP_HISTORY = [
    ("O1", "2024-01-20", "follow_up", 1000.0),
    ("O1", "2024-02-01", "problem_recognised", 1000.0),
    ("O1", "2024-02-10", "evaluation", 1000.0),
    ("O1", "2024-02-15", "evaluation", 1000.0),
    ("O1", "2024-02-20", "negotiation", 1000.0),
    ("O1", "2024-03-01", "approval", 1000.0),
    ("O1", "2024-03-10", "closed_won", 1000.0),
    ("O2", "2024-01-12", "follow_up", 400.0),
    ("O2", "2024-02-12", "closed_lost", 400.0),
    ("O3", "2023-12-01", "follow_up", 500.0),
    ("O3", "2024-01-05", "problem_recognised", 500.0),
    ("O3", "2024-03-25", "evaluation", 500.0),
    ("O4", "2024-03-20", "follow_up", 700.0),
    ("O4", "2024-04-10", "problem_recognised", 700.0),
]


def company(
    lead_history: list[tuple[str, str, str]] | None = None,
    opp_history: list[tuple[str, str, str, float]] | None = None,
) -> dict[str, pd.DataFrame]:
    lh = pd.DataFrame(lead_history or LEAD_HISTORY, columns=["lead_id", "ts", "status"])
    oh = pd.DataFrame(
        opp_history or OPP_HISTORY, columns=["opportunity_id", "ts", "stage", "amount"]
    )
    oh["expected_close_date"] = "2024-06-30"
    return {
        "accounts": pd.DataFrame(
            {
                "account_id": ["A_smb", "A_ent"],
                "segment": ["smb", "enterprise"],
                "created_at": ["2023-01-01", "2023-01-01"],
            }
        ),
        "leads": pd.DataFrame(
            {
                "lead_id": ["L1", "L2", "L3", "L4", "L5", "L6"],
                "account_id": ["A_smb", "A_ent", "A_smb", "A_ent", "A_ent", "A_ent"],
                "created_at": ["2023-12-01"] * 6,
            }
        ),
        "lead_status_history": lh,
        "reps": pd.DataFrame(
            {
                "rep_id": ["is1", "fs1", "fs2"],
                "role": ["IS", "FS", "FS"],
                "team": ["is_east", "fs_east", "fs_west"],
            }
        ),
        "activities": pd.DataFrame(
            {"ts": ["2024-01-11"], "rep_id": ["is1"], "lead_id": ["L1"], "type": ["call"]}
        ),
        "opportunities": pd.DataFrame(
            {
                "opportunity_id": ["O1", "O2", "O3", "O4"],
                "account_id": ["A_smb", "A_ent", "A_ent", "A_smb"],
                "lead_id": ["L1", "L4", None, None],
                "owner_id": ["fs1", "fs2", "fs2", "fs1"],
                "created_at": ["2024-01-20", "2024-01-12", "2023-12-01", "2024-03-20"],
                "amount": [1000.0, 400.0, 500.0, 700.0],
                "segment": ["smb", "enterprise", "enterprise", "smb"],
            }
        ),
        "opportunity_history": oh,
    }


_CONNECTIONS: dict[int, duckdb.DuckDBPyConnection] = {}


def measure(frames: dict[str, pd.DataFrame] | None = None, **kwargs: object) -> FunnelReport:
    """The funnel of the range on ``frames`` (the hand-made company by default)."""
    if frames is None:
        if 0 not in _CONNECTIONS:  # checked once per module, reused read-only
            _CONNECTIONS[0] = connect(frames_source(company()), Vocabulary())[0]
        con = _CONNECTIONS[0]
    else:
        con = connect(frames_source(frames), Vocabulary())[0]
    kwargs.setdefault("start", START)
    kwargs.setdefault("end", END)
    try:
        return funnel(con, Vocabulary(), **kwargs)  # type: ignore[arg-type]
    finally:
        if frames is not None:
            con.close()


@pytest.fixture(scope="module", autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    for con in _CONNECTIONS.values():
        con.close()
    _CONNECTIONS.clear()


@pytest.fixture(scope="module")
def report() -> FunnelReport:
    return measure()


def test_lead_stage_volumes_and_conversions(report: FunnelReport) -> None:
    acquired = report.stage("lead", "lead")
    # L1-L4 and L6 (L5 was acquired before the range); L6's MQL is after the end -> open
    assert (acquired.entered, acquired.converted, acquired.still_open) == (5, 4, 1)
    assert acquired.conversion_rate == pytest.approx(4 / 5)
    nurturing = report.stage("lead", "nurturing")
    # L1, L2 twice (before and after the recycle), L3, L4 after the lost deal
    assert (nurturing.entered, nurturing.converted, nurturing.still_open) == (5, 3, 2)
    mql = report.stage("lead", "mql")
    # L1, L2 twice, L4, L5; L1 and L4 reach SQL, L2's first MQL is disqualified
    assert (mql.entered, mql.converted, mql.exited, mql.still_open) == (5, 2, 1, 2)
    assert report.stage("lead", "sql").entered == 2
    assert report.stage("lead", "sql").conversion_rate is None  # SQL continues as a deal


def test_opportunity_stage_volumes_and_conversions(report: FunnelReport) -> None:
    follow_up = report.stage("opportunity", "follow_up")
    assert (follow_up.entered, follow_up.converted, follow_up.exited) == (3, 1, 1)
    evaluation = report.stage("opportunity", "evaluation")
    # O1 (the amount change on 02-15 is not a new entry) and O3 (still open)
    assert (evaluation.entered, evaluation.converted, evaluation.still_open) == (2, 1, 1)
    assert evaluation.conversion_rate == pytest.approx(0.5)
    assert report.stage("opportunity", "problem_recognised").conversion_rate == 1.0
    assert report.stage("opportunity", "closed_won").entered == 1
    assert report.stage("opportunity", "closed_lost").entered == 1


def test_adjusted_conversion_treats_open_episodes_as_censored(report: FunnelReport) -> None:
    # evaluation: O3 is censored after 7 days, O1 converts after 10 -> eventually all convert
    assert report.stage("opportunity", "evaluation").conversion_adjusted == pytest.approx(1.0)
    # MQL: converts at day 4 (1 of 5 at risk) and day 10 (1 of 4, with an exit) -> 1/5 + 1/5
    assert report.stage("lead", "mql").conversion_adjusted == pytest.approx(0.4)


def test_median_days_in_stage_is_kaplan_meier(report: FunnelReport) -> None:
    # follow_up: O1 leaves after 12 days, O4 censored at 12, O2 leaves after 31
    assert report.stage("opportunity", "follow_up").median_days == pytest.approx(31.0)
    # approval: O1 only, 9 days
    assert report.stage("opportunity", "approval").median_days == pytest.approx(9.0)


def test_recycle_flows(report: FunnelReport) -> None:
    flows = {f.source: f for f in report.recycling if f.group == "all"}
    assert set(flows) == {"disqualified lead", "lost deal"}
    assert (flows["disqualified lead"].recycled, flows["disqualified lead"].back_to_mql) == (1, 1)
    assert (flows["lost deal"].recycled, flows["lost deal"].back_to_mql) == (1, 0)
    assert flows["disqualified lead"].back_to_sql == 0
    # one of the five MQL episodes (L2's second) comes from a recycled lead
    assert report.summary["recycled_share_of_mql"] == pytest.approx(0.2)
    assert report.summary["recycled_share_of_sql"] == 0.0


def test_summary(report: FunnelReport) -> None:
    s = report.summary
    assert (s["deals_won"], s["deals_lost"], s["win_rate"]) == (1, 1, 0.5)
    assert s["won_amount"] == 1000.0 and s["opportunities_created"] == 3
    assert s["median_sales_cycle_days"] == pytest.approx(50.0)  # 2024-01-20 -> 2024-03-10
    assert (s["leads_acquired"], s["mqls"], s["sqls"]) == (5, 5, 2)


def test_bottleneck_is_the_stage_furthest_below_benchmark() -> None:
    cfg = FunnelConfig(benchmarks={"follow_up": 0.9, "mql": 0.5}, min_entries=1)
    rep = measure(config=cfg)
    assert rep.bottleneck is not None
    # follow_up: 1/3 vs 0.9 (0.37x) is further below than MQL: 0.4 vs 0.5 (0.8x)
    assert (rep.bottleneck.stage, rep.bottleneck.next_stage) == ("follow_up", "problem_recognised")
    assert rep.bottleneck.ratio == pytest.approx((1 / 3) / 0.9)
    # 3 entries x (0.9 - 1/3) extra conversions x P(win | problem_recognised) = 1 x 1000
    assert rep.bottleneck.revenue_at_stake == pytest.approx(1700.0)
    assert "follow_up" in rep.bottleneck.statement and "33.3%" in rep.bottleneck.statement
    # with a higher bar for volume no stage qualifies, and the report says why
    none = measure(config=FunnelConfig(min_entries=100))
    assert none.bottleneck is None and any("min_entries" in n for n in none.notes)
    # stages without a benchmark (e.g. renamed ones) are named, with the fix
    (note,) = [n for n in rep.notes if n.startswith("no benchmark for")]
    assert "lead, nurturing, problem_recognised" in note and "set funnel.benchmarks" in note
    assert not [n for n in measure().notes if n.startswith("no benchmark for")]


def test_by_segment_partitions_the_company(report: FunnelReport) -> None:
    rep = measure(by="segment")
    assert rep.groups == ["enterprise", "smb"]
    for stage in rep.stages_of("lead") + rep.stages_of("opportunity"):
        parts = [rep.stage(stage.funnel, stage.stage, g).entered for g in rep.groups]
        assert sum(parts) == stage.entered
    assert rep.stage("opportunity", "follow_up", "smb").entered == 2  # O1, O4
    assert rep.stage("lead", "mql", "smb").entered == 1  # L1


def test_by_team_uses_deal_owner_and_the_rep_who_worked_the_lead() -> None:
    rep = measure(by="team")
    assert rep.stage("opportunity", "follow_up", "fs_east").entered == 2  # O1, O4
    assert rep.stage("opportunity", "follow_up", "fs_west").entered == 1  # O2
    assert rep.stage("lead", "mql", "is_east").entered == 1  # L1, called on 01-11
    assert rep.stage("lead", "sql", "is_east").entered == 1  # L1, qualified after that call
    assert rep.stage("lead", "sql", "not worked").entered == 1  # L4, no activity
    assert rep.stage("lead", "mql", "not worked").entered == 4
    assert rep.stage("lead", "nurturing", "marketing").entered == 5


def test_nothing_at_or_after_the_end_is_read(report: FunnelReport) -> None:
    future_leads = [*LEAD_HISTORY, ("L3", "2024-04-01", "mql"), ("L5", "2024-05-01", "sql")]
    future_opps = [*OPP_HISTORY, ("O3", "2024-04-01", "closed_lost", 500.0)]
    frames = company(future_leads, future_opps)
    frames["activities"] = pd.concat(
        [
            frames["activities"],
            pd.DataFrame(
                {"ts": ["2024-04-02"], "rep_id": ["is1"], "lead_id": ["L5"], "type": ["call"]}
            ),
        ]
    )
    assert measure(frames).to_dict() == report.to_dict()
    assert measure(frames, by="team").to_dict() == measure(by="team").to_dict()


def test_to_dict_is_strict_json(report: FunnelReport) -> None:
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["end"].startswith("2024-04-01") and back["end_exclusive"] is True
    assert {s["stage"] for s in back["stages"]} >= {"lead", "mql", "approval", "closed_won"}


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(LeadmlError, match="not before end"):
        measure(start="2024-04-01", end="2024-01-01")
    with pytest.raises(LeadmlError, match="by: 'region'"):
        measure(by="region")
    with pytest.raises(LeadmlError, match="funnel.lead_stages"):
        measure(config=FunnelConfig(lead_stages=["lead", "hot"]))


def test_needs_a_history_table() -> None:
    con = duckdb.connect()
    with pytest.raises(LeadmlError, match="lead_status_history and/or opportunity_history"):
        funnel(con, Vocabulary(), start=START, end=END)
    con.close()


def _worked_by_is_east() -> dict[str, pd.DataFrame]:
    """The company with IS rep is1 also calling L2 (both MQLs), L4 and L5 after their MQL."""
    frames = company()
    calls = [("2024-01-16", "L2"), ("2024-03-02", "L2"), ("2024-01-09", "L4"), ("2024-01-03", "L5")]
    frames["activities"] = pd.concat(
        [
            frames["activities"],
            pd.DataFrame(
                {
                    "ts": [t for t, _ in calls],
                    "rep_id": ["is1"] * len(calls),
                    "lead_id": [lead for _, lead in calls],
                    "type": ["call"] * len(calls),
                }
            ),
        ]
    )
    return frames


def test_group_bottleneck_values_an_is_team_at_company_deal_rates() -> None:
    rep = measure(
        _worked_by_is_east(), by="team", config=FunnelConfig(benchmarks={"mql": 0.9}, min_entries=1)
    )
    b = rep.group_bottlenecks["is_east"]
    # MQLs of L1 (SQL day 10), L2 (exits day 10), L4 (SQL day 4), L5 and L2 again (censored):
    # AJ = 1/5 + (4/5)(1/4) = 0.4
    assert (b.stage, b.entered) == ("mql", 5)
    assert b.conversion_adjusted == pytest.approx(0.4)
    # the group has no deal stages: P(won | SQL) is the company's follow_up (1/3) x 1 x 1 x 1 x 1
    assert b.revenue_at_stake == pytest.approx(5 * (0.9 - 0.4) * (1 / 3) * 1000)


def test_not_worked_gets_no_bottleneck_and_group_uplifts_are_said_not_to_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = _worked_by_is_east()  # except L4: its MQL and SQL are not worked
    frames["activities"] = frames["activities"][frames["activities"]["lead_id"] != "L4"]
    cfg = FunnelConfig(benchmarks={"mql": 0.9, "follow_up": 0.9}, min_entries=1)
    rep = measure(frames, by="team", config=cfg)
    # L4's MQL episode, no rep worked it: no bottleneck although "not worked" has rows
    assert rep.stage("lead", "mql", "not worked").entered == 1
    assert "not worked" not in rep.group_bottlenecks
    assert any("'not worked'" in n and "no bottleneck" in n for n in rep.group_notes)
    # two teams below a benchmark (is_east at MQL, fs_east at follow_up), each valued alone
    stakes = {g: b.revenue_at_stake for g, b in rep.group_bottlenecks.items()}
    assert stakes["is_east"] and stakes["fs_east"]
    assert any("do not add up" in n for n in rep.group_notes)
    assert measure(config=cfg).group_notes == []  # no groups, no group notes

    from leadml.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    for name, frame in frames.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    monkeypatch.setenv("LEADML_FUNNEL__BENCHMARKS", json.dumps({"mql": 0.9, "follow_up": 0.9}))
    monkeypatch.setenv("LEADML_FUNNEL__MIN_ENTRIES", "1")
    main(["funnel", "--data", str(tmp_path), "--start", START, "--end", END, "--by", "team"])
    lines = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("Bottleneck [not worked]") for line in lines)
    group_lines = [i for i, line in enumerate(lines) if line.startswith("Bottleneck [")]
    assert len(group_lines) >= 2
    add_up = [i for i, line in enumerate(lines) if "do not add up" in line]
    assert len(add_up) == 1 and add_up[0] > max(group_lines)  # one note, under the groups


def test_bottleneck_skips_a_step_into_a_stage_that_never_occurs() -> None:
    # an import whose leads go straight from lead to SQL (no nurturing or MQL status):
    # the lead rate counts leads that skipped nurturing, so lead -> nurturing is not a
    # bottleneck, although its 20% is far below a 90% benchmark
    leads = [("L1", "2024-01-01", "lead"), ("L1", "2024-01-20", "sql")]
    for lead, day in (("L2", "03"), ("L3", "05"), ("L4", "07"), ("L5", "09")):
        leads += [(lead, f"2024-01-{day}", "lead"), (lead, f"2024-01-{day}T12:00", "disqualified")]
    rep = measure(
        company(leads),
        config=FunnelConfig(benchmarks={"lead": 0.9, "follow_up": 0.9}, min_entries=1),
    )
    assert rep.stage("lead", "lead").conversion_adjusted == pytest.approx(0.2)
    assert rep.bottleneck is not None
    assert (rep.bottleneck.stage, rep.bottleneck.next_stage) == ("follow_up", "problem_recognised")
    assert "nurturing" not in rep.bottleneck.statement
    assert any("no lead entered nurturing" in n for n in rep.notes)
    # with nurturing in the data, the same step is a candidate again
    assert measure(config=FunnelConfig(benchmarks={"lead": 1.0}, min_entries=1)).bottleneck


def test_empty_range_names_the_range_and_the_span_of_the_data() -> None:
    rep = measure(start="2020-01-01", end="2020-02-01")
    assert rep.summary["leads_acquired"] == 0
    assert rep.notes[0] == (
        "no status or stage change in [2020-01-01, 2020-02-01); "
        "the data covers 2023-12-01 to 2024-04-10"
    )


def test_cli_funnel_over_an_empty_range_says_so_and_formats_money(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadml.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    for name, frame in company().items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    main(["funnel", "--data", str(tmp_path), "--start", "2020-01-01", "--end", "2020-02-01"])
    out = capsys.readouterr().out
    assert "the data covers 2023-12-01 to 2024-04-10" in out
    won = next(line for line in out.splitlines() if "won amount" in line and "average" not in line)
    assert won.split()[-2:] == ["0", "│"] and "0.000" not in out


# The company's last record is O4's problem_recognised on 2024-04-10: an end may be at most
# 7 days (STALE_DAYS, as for the forecast) after it, i.e. 2024-04-17.


def test_an_end_after_the_data_is_refused_with_the_last_record_and_the_fix() -> None:
    with pytest.raises(LeadmlError) as err:
        measure(end="2024-12-31")
    text = str(err.value)
    assert text.startswith("end 2024-12-31 is after the end of the data")
    assert "last record 2024-04-10 00:00 UTC" in text
    assert "choose end 2024-04-17 or earlier" in text and "load newer data" in text
    with pytest.raises(LeadmlError, match="end 2024-04-18 is after the end of the data"):
        measure(end="2024-04-18")


def test_an_end_a_few_days_after_the_data_is_measured_with_a_note() -> None:
    rep = measure(end="2024-04-17")
    assert rep.end == pd.Timestamp("2024-04-17", tz="UTC")
    assert any(
        n.startswith("the range ends 2024-04-17, after the last record (2024-04-10 00:00 UTC)")
        and "end the range on 2024-04-11" in n
        for n in rep.notes
    )
    assert not any("after the last record" in n for n in measure(end="2024-04-11").notes)


def test_cli_funnel_refuses_an_end_after_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadml.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    for name, frame in company().items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["funnel", "--data", str(tmp_path), "--end", "2024-12-31"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "--end 2024-12-31 is after the end of the data (last record 2024-04-10" in err
    assert "choose --end 2024-04-17 or earlier" in err


def test_group_revenue_at_stake_uses_the_groups_own_deal_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RevOps review: every segment was valued at the company's average won deal, so SMB
    (7k deals) looked worth more than enterprise (152k deals). O1 (smb) wins 1,000 and O2
    (enterprise) now wins 10,000: overall 5,500; with 5 pseudo-wins smb reads
    (1,000 + 5 x 5,500) / 6 = 4,750."""
    import importlib

    fn = importlib.import_module("leadml.analytics.funnel")  # the module, not the function
    history = [r for r in OPP_HISTORY if r[0] != "O2"]
    history += [
        ("O2", "2024-01-12", "follow_up", 10000.0),
        ("O2", "2024-02-12", "closed_won", 10000.0),
    ]
    frames = company(opp_history=history)
    cfg = FunnelConfig(benchmarks={"mql": 0.99, "follow_up": 0.99}, min_entries=1)
    own = measure(frames, by="segment", config=cfg).group_bottlenecks
    monkeypatch.setattr(fn, "AVG_PRIOR_WINS", 1e12)  # every group at the overall average
    flat = measure(frames, by="segment", config=cfg).group_bottlenecks
    assert own["smb"].stage == "follow_up"  # enterprise's (MQL) has no downstream win rate
    assert own["smb"].revenue_at_stake == pytest.approx(
        flat["smb"].revenue_at_stake * 4750.0 / 5500.0
    )
