"""The scoring API's contract without a model (audit 6): what the schema declares is
what the server accepts, size limits on the parsed body, deal histories that start
before the deal, the hand-off of leads whose status the model never saw."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from leadml.config import load_settings
from leadml.serving import checks, schemas
from leadml.serving.schemas import (
    EXAMPLE_DEAL,
    EXAMPLE_LEAD,
    DealIn,
    LeadIn,
    LeadScore,
    ModelRef,
    Reason,
    Timestamp,
)

AS_OF = datetime(2025, 6, 2, tzinfo=UTC)


# ---------------------------------------------------------------- size checks on the body


def _problems(call: Any) -> list[dict[str, Any]]:
    with pytest.raises(checks.RequestError) as err:
        call()
    assert err.value.status == 413
    return err.value.body()["detail"]


def test_size_checks_on_the_parsed_body_give_the_endpoint_checks_problems() -> None:
    """The server refuses an over-count body on its parsed JSON, before the schema
    validation (a million tiny leads took ~20 s to validate): same 413, same messages."""
    cfg = load_settings(serving={"max_leads_per_request": 2, "max_events_per_lead": 3}).serving
    lead = dict(copy.deepcopy(EXAMPLE_LEAD), events=[EXAMPLE_LEAD["events"][0]] * 4)
    leads = [dict(lead, lead_id=f"L-{i}") for i in range(3)]
    from_models = _problems(
        lambda: checks.check_sizes_leads([LeadIn.model_validate(x) for x in leads], cfg)
    )
    for endpoint in ("score_leads", "handoff"):
        assert (
            _problems(lambda e=endpoint: checks.check_sizes_json(e, {"leads": leads}, cfg))
            == from_models
        )
    assert ["leads"] in [p["loc"] for p in from_models]
    assert "max_leads_per_request" in from_models[0]["msg"]

    dcfg = load_settings(serving={"max_deals_per_request": 1, "max_records_per_deal": 2}).serving
    deals = [dict(copy.deepcopy(EXAMPLE_DEAL), opportunity_id=f"O-{i}") for i in range(2)]
    want = _problems(
        lambda: checks.check_sizes_deals([DealIn.model_validate(d) for d in deals], dcfg)
    )
    for endpoint in ("score_deals", "forecast"):
        assert (
            _problems(lambda e=endpoint: checks.check_sizes_json(e, {"deals": deals}, dcfg)) == want
        )


@pytest.mark.parametrize(
    "body",
    [[], "x", {"leads": "not a list"}, {"leads": [1, None, {"events": 5}]}, {"deals": None}],
)
def test_size_checks_on_the_body_leave_malformed_bodies_to_the_schema(body: Any) -> None:
    cfg = load_settings().serving
    checks.check_sizes_json("score_leads", body, cfg)  # nothing over: the schema says what
    checks.check_sizes_json("forecast", body, cfg)


# ---------------------------------------------------------------- schema = what is accepted


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("1899-12-31T23:59:59Z", False),
        ("1900-01-01T00:00:00Z", True),
        ("2025-06-02T09:30:00+09:00", True),
        ("2199-12-31T23:59:59Z", True),
        ("2200-01-01T00:00:00Z", False),
        ("0001-01-01T00:00:00Z", False),
        ("9999-12-31T23:59:59Z", False),
        ("20250602", False),
    ],
)
def test_the_declared_timestamp_pattern_is_the_range_the_server_accepts(
    text: str, accepted: bool
) -> None:
    """The schema declared any date-time; the server refuses years outside 1900-2199 (and
    digits only): the OpenAPI document now says so (pattern and description)."""
    declared = TypeAdapter(Timestamp).json_schema()
    assert declared["format"] == "date-time"
    assert bool(re.search(declared["pattern"], text)) is accepted
    try:
        TypeAdapter(Timestamp).validate_python(text)
        ok = True
    except ValidationError:
        ok = False
    assert ok is accepted
    described = LeadIn.model_json_schema()["properties"]["created_at"]["description"]
    assert "1900-2199" in described and "ISO 8601" in described


def test_the_declared_attribute_values_are_the_ones_the_server_accepts() -> None:
    schema = LeadIn.model_json_schema()["properties"]["attributes"]
    values = schema["additionalProperties"]
    kinds = {branch["type"] for branch in values["anyOf"]}
    assert kinds == {"string", "number", "boolean"} and values["nullable"] is True
    text = next(b for b in values["anyOf"] if b["type"] == "string")
    assert text["maxLength"] == 256
    assert schema["propertyNames"] == {"minLength": 1, "maxLength": 64}
    assert "256" in schema["description"] and "64" in schema["description"]
    base = {"lead_id": "L-1", "created_at": "2025-01-01T00:00:00Z"}
    for ok in ("x" * 256, 1.5, -3, True, None):
        LeadIn.model_validate({**base, "attributes": {"a": ok}})
    for bad in ("x" * 257, [1], {"k": 1}):
        with pytest.raises(ValidationError):
            LeadIn.model_validate({**base, "attributes": {"a": bad}})


def test_an_integer_too_large_for_a_float_is_a_validation_error_not_a_crash() -> None:
    """JSON allows integers of any size: 10**400 in an attribute raised OverflowError
    (a 500) where any other bad value is a 400."""
    body = json.dumps({"lead_id": "L-1", "created_at": "2025-01-01", "attributes": {"a": 10**400}})
    with pytest.raises(ValidationError) as err:
        LeadIn.model_validate_json(body)
    (problem,) = err.value.errors()
    assert problem["loc"] == ("attributes",) and "finite number" in problem["msg"]


def test_the_forecast_example_period_is_a_quarter_with_an_exclusive_end() -> None:
    """period_end is exclusive (its description): the example's 2025-06-30 left out the
    quarter's last day."""
    start = datetime.fromisoformat(schemas.EXAMPLE_FORECAST["period_start"])
    end = datetime.fromisoformat(schemas.EXAMPLE_FORECAST["period_end"])
    assert (start.month, start.day, end.month, end.day) == (4, 1, 7, 1)
    assert "exclusive" in schemas.ForecastRequest.model_fields["period_end"].description


# ---------------------------------------------------------------- deal histories


def test_a_stage_change_before_the_deal_was_created_is_422_at_its_path() -> None:
    """A history row before created_at was accepted: a one-month-old deal was then "in
    the current stage for 518 days"."""
    settings = load_settings()
    deal = copy.deepcopy(EXAMPLE_DEAL)
    deal["created_at"] = "2025-04-01T00:00:00Z"  # after the first row (03-03), not the 2nd
    with pytest.raises(checks.RequestError) as err:
        checks.check_deals([DealIn.model_validate(deal)], AS_OF, settings.vocabulary)
    assert err.value.status == 422
    (problem,) = err.value.problems
    assert problem.loc == ("deals", 0, "stage_history", 0, "ts")
    assert "created_at" in problem.msg and problem.type == "before_created"
    # a row at the creation time itself is the deal's first state
    checks.check_deals([DealIn.model_validate(EXAMPLE_DEAL)], AS_OF, settings.vocabulary)
    # review: CRMs stamp created_at and the history at different precisions; a row
    # 250 ms (or a date-only created_at's hours) before it is the same moment
    first = datetime.fromisoformat(EXAMPLE_DEAL["stage_history"][0]["ts"])
    for late in (timedelta(milliseconds=250), timedelta(hours=10)):
        deal["created_at"] = (first + late).isoformat()
        checks.check_deals([DealIn.model_validate(deal)], AS_OF, settings.vocabulary)


# ---------------------------------------------------------------- hand-off


def _score(lead_id: str, readiness: float, unseen_status: str | None = None) -> LeadScore:
    return LeadScore(
        lead_id=lead_id,
        readiness=readiness,
        percentile=50.0,
        grade="A",
        reasons=[Reason(feature="f", text="Visited pricing", contribution=0.5)],
        unseen_status=unseen_status,
        model=ModelRef(name="lead_readiness", version="1"),
    )


def test_a_lead_in_a_status_the_model_never_saw_is_never_handed_off() -> None:
    """/score_leads says "do not route on" a lead in an unseen status; /handoff gave such
    a lead (recycled, the best score) a slot. Now it is nurture, after the leads that
    compete for the slots, says why, and carries unseen_status; it takes no slot."""
    from leadml.modeling.spec import PolicySpec
    from leadml.serving.scorer import decide_handoff

    policy = PolicySpec()
    scores = [_score("L-recycled", 0.9, "recycled"), _score("L-mql", 0.5), _score("L-sql", 0.8)]
    capacity = int(10 * policy.slots_per_lead)
    out = decide_handoff(
        scores,
        capacity,
        AS_OF - timedelta(days=1),
        policy,
        statuses=["recycled", "mql", "sql"],
        eligible=["mql", "recycled"],
    )
    by_id = {d.lead_id: d for d in out.decisions}
    assert by_id["L-mql"].decision == "handoff" and by_id["L-mql"].rank == 1
    assert by_id["L-mql"].unseen_status is None
    odd = by_id["L-recycled"]
    assert odd.decision == "nurture" and odd.unseen_status == "recycled" and odd.rank == 2
    assert "not handed off" in odd.reasons[0] and "recycled" in odd.reasons[0]
    assert by_id["L-sql"].decision == "not_eligible" and by_id["L-sql"].rank == 3
    assert out.capacity_left == capacity - round(policy.slots_per_lead)
    assert [d.rank for d in out.decisions] == [1, 2, 3]
