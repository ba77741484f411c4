"""The feature catalog: the default one is valid and complete; every kind of mistake is
reported, before any data is read, with the entry and the valid choices."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from leadml.config import Vocabulary
from leadml.errors import ConfigError
from leadml.features.catalog import (
    AggregateFeature,
    AttributeFeature,
    DerivedFeature,
    OutcomesFeature,
    StateFeature,
    load_catalog,
    parse_catalog,
)

VOCAB = Vocabulary()
DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "features.yaml"


def _minimal() -> dict:
    return {
        "lead": [
            {
                "name": "pricing_7d",
                "kind": "aggregate",
                "source": "events",
                "filter": {"type": "page_view", "page_category": "pricing"},
                "aggregation": "count",
                "window": "7d",
                "label": "Viewed pricing {value} times",
            },
            {
                "name": "visits_30d",
                "kind": "aggregate",
                "source": "events",
                "filter": {"type": "web_visit"},
                "aggregation": "count",
                "window": "30d",
                "label": "{value} visits",
            },
            {
                "name": "trend",
                "kind": "derived",
                "op": "ratio",
                "inputs": ["pricing_7d", "visits_30d"],
                "label": "trend {value}",
            },
            {
                "name": "industry",
                "kind": "attribute",
                "table": "account",
                "column": "industry",
                "type": "categorical",
                "label": "in {value}",
            },
        ],
        "opportunity": [
            {"name": "stage_now", "kind": "state", "state": "stage", "label": "at {value}"},
            {
                "name": "owner_rate",
                "kind": "outcomes",
                "group": "owner",
                "metric": "win_rate",
                "label": "{value}",
            },
        ],
    }


def test_default_catalog_is_valid_and_covers_the_model() -> None:
    cat = load_catalog(DEFAULT, VOCAB)
    lead, opp = cat.features("lead"), cat.features("opportunity")
    aggs = [f for f in lead if isinstance(f, AggregateFeature)]
    event_types = {
        v for f in aggs if f.source == "events" for v in dict(f.filter_items()).get("type", [])
    }
    # every behavioural signal THE MODEL names is read by some feature
    assert set(VOCAB.event_types) <= event_types
    pages = {v for f in aggs for v in dict(f.filter_items()).get("page_category", [])}
    assert {"pricing", "case_study", "docs"} <= pages
    assert {f.source for f in aggs} == {"events", "activities", "lead_status_history"}
    assert {f.window for f in aggs} >= {"7d", "30d", "90d", "all"}
    assert any(f.scope == "account_others" for f in aggs)  # buying committee
    assert any(f.aggregation == "days_since_last" for f in aggs)
    assert any(isinstance(f, DerivedFeature) and f.op == "ratio" for f in lead)  # trend
    assert any(isinstance(f, DerivedFeature) and f.op == "shortfall" for f in lead)  # no-shows
    assert any(isinstance(f, AttributeFeature) and f.type == "days_since" for f in lead)
    states = {f.state for f in opp if isinstance(f, StateFeature)}
    assert {
        "stage",
        "days_in_stage",
        "amount",
        "close_date_pushes",
        "days_past_expected_close",
        "stage_regressions",
    } <= states
    assert {(f.group, f.metric) for f in opp if isinstance(f, OutcomesFeature)} >= {
        ("owner", "win_rate"),
        ("account", "won_count"),
        ("account", "lost_count"),
    }
    for f in [*lead, *opp]:
        assert "{value}" in f.label, f.name
    assert cat.categorical("lead") and "stage" in cat.categorical("opportunity")


def test_minimal_catalog_parses() -> None:
    cat = parse_catalog(_minimal(), VOCAB)
    assert cat.names("lead") == ["pricing_7d", "visits_30d", "trend", "industry"]
    assert cat.vocabulary is VOCAB


def _error(mutate) -> str:
    data = copy.deepcopy(_minimal())
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_catalog(data, VOCAB, "features.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # unknown event type: names the entry, the column and the valid types
        (
            lambda d: d["lead"][0]["filter"].update(type="page_veiw"),
            ["lead[0] 'pricing_7d'", "unknown event type 'page_veiw'", "web_visit, page_view"],
        ),
        # unknown page category
        (
            lambda d: d["lead"][0]["filter"].update(page_category="pricng"),
            ["'pricing_7d'", "'pricng'", "pricing, case_study, docs"],
        ),
        # unknown filter column
        (
            lambda d: d["lead"][0]["filter"].update(colour="red"),
            ["'pricing_7d'", "unknown column events.colour", "valid: lead_id, type, page_category"],
        ),
        # unknown aggregation
        (
            lambda d: d["lead"][0].update(aggregation="median"),
            ["lead[0] 'pricing_7d'", "aggregation", "'count'", "'days_since_last'"],
        ),
        # unknown window
        (
            lambda d: d["lead"][1].update(window="month"),
            ["lead[1] 'visits_30d'", "window", "unknown window 'month'", "7d, 30d, 90d"],
        ),
        # unknown source table
        (
            lambda d: d["lead"][1].update(source="opportunity_history"),
            [
                "'visits_30d'",
                "unknown table 'opportunity_history'",
                "valid: events, activities, lead_status_history",
            ],
        ),
        # numeric aggregation without a numeric column
        (
            lambda d: d["lead"][1].update(aggregation="sum", column="type"),
            [
                "'visits_30d'",
                "needs a numeric column of events",
                "this table has no numeric column",
            ],
        ),
        # unknown attribute column
        (
            lambda d: d["lead"][3].update(column="revenue"),
            [
                "lead[3] 'industry'",
                "unknown column account.revenue",
                "valid: industry, employees",
                "extra: true",
            ],
        ),
        # attribute type that does not fit the column
        (
            lambda d: d["lead"][3].update(column="created_at", type="numeric"),
            ["'industry'", "numeric needs a number column"],
        ),
        # derived input that is not an earlier feature
        (
            lambda d: d["lead"][2].update(inputs=["pricing_7d", "visits_90d"]),
            [
                "lead[2] 'trend'",
                "'visits_90d' is not an earlier lead feature",
                "valid: pricing_7d, visits_30d",
            ],
        ),
        # derived input that is categorical
        (
            lambda d: d["lead"].append(
                {
                    "name": "bad",
                    "kind": "derived",
                    "op": "ratio",
                    "inputs": ["industry", "visits_30d"],
                    "label": "{value}",
                }
            ),
            ["'bad'", "'industry' is categorical"],
        ),
        # unknown state
        (
            lambda d: d["opportunity"][0].update(state="mood"),
            [
                "opportunity[0] 'stage_now'",
                "unknown opportunity state 'mood'",
                "valid: stage, stage_index",
            ],
        ),
        # unknown outcomes group
        (
            lambda d: d["opportunity"][1].update(group="team"),
            ["opportunity[1] 'owner_rate'", "unknown group 'team'", "valid: owner, account"],
        ),
        # unknown kind
        (
            lambda d: d["lead"][0].update(kind="magic"),
            [
                "lead[0] 'pricing_7d'",
                "kind must be one of: aggregate, attribute, state, outcomes, derived",
            ],
        ),
        # duplicate name
        (
            lambda d: d["lead"].append(dict(d["lead"][1])),
            ["lead[4] 'visits_30d'", "duplicate feature name"],
        ),
        # label placeholder other than {value}
        (
            lambda d: d["lead"][1].update(label="{count} visits"),
            ["'visits_30d'", "label", "{count}"],
        ),
        # names reserved for training-set columns
        (
            lambda d: d["lead"][1].update(name="label"),
            ["lead[1]", "reserved for training-set columns"],
        ),
        # unknown field
        (
            lambda d: d["lead"][1].update(windw="7d"),
            ["'visits_30d'", "windw", "Extra inputs are not permitted"],
        ),
        # buying-committee scope on a source that has no account meaning
        (
            lambda d: d["lead"][1].update(source="activities", filter={}, scope="account_others"),
            ["'visits_30d'", "account_others is only for lead features over events"],
        ),
    ],
)
def test_each_mistake_is_named_with_the_valid_choices(mutate, expected: list[str]) -> None:
    message = _error(mutate)
    assert message.startswith("features.yaml: invalid feature catalog")
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_all_problems_are_reported_at_once() -> None:
    def two(d: dict) -> None:
        d["lead"][0]["filter"]["type"] = "nope"
        d["opportunity"][0]["state"] = "nope"

    message = _error(two)
    assert "'pricing_7d'" in message and "'stage_now'" in message and "2 problem(s)" in message


def test_vocabulary_from_settings_is_used() -> None:
    """A company with its own event vocabulary validates against it."""
    vocab = Vocabulary(event_types=[*VOCAB.event_types, "trial_started"])
    data = _minimal()
    data["lead"][1]["filter"] = {"type": "trial_started"}
    assert parse_catalog(data, vocab).features("lead")[1].filter == {"type": "trial_started"}
    with pytest.raises(ConfigError, match="unknown event type 'trial_started'"):
        parse_catalog(data, VOCAB)


def test_load_catalog_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_catalog(tmp_path / "missing.yaml", VOCAB)
    bad = tmp_path / "features.yaml"
    bad.write_text("lead: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(bad, VOCAB)
    bad.write_text(yaml.safe_dump(["not", "a", "mapping"]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_catalog(bad, VOCAB)


def test_cli_rejects_a_bad_catalog_before_reading_any_data(tmp_path: Path, capsys) -> None:
    from leadml.cli import main

    data = _minimal()
    data["lead"][0]["aggregation"] = "median"
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "leadml.yaml").write_text("{}\n")  # every other setting: the defaults
    with pytest.raises(SystemExit) as info:
        main(
            [
                "--config-dir",
                str(tmp_path),
                "dataset",
                "lead-readiness",
                "--data",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path / "out.parquet"),
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "pricing_7d" in err and "aggregation" in err
    assert "nowhere" not in err  # the missing data folder was never looked at
