"""Request parsing and as-of rules of the scoring API that need no model: timestamps
(ISO 8601 text only) and the default as_of (tolerant of a sender's clock skew)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from leadml.serving import checks
from leadml.serving.schemas import (
    EXAMPLE_DEAL,
    EXAMPLE_LEAD,
    DealIn,
    LeadIn,
    ScoreLeadsRequest,
    Timestamp,
)

NOW = datetime(2025, 11, 5, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        *("20251105", "1762336800", "1762336800000", "1762336800.5", "+1762336800", "-5"),
        *(".5", "5.", "1.7E9", "17e8"),
    ],
)
def test_a_timestamp_of_digits_is_refused_not_read_as_a_unix_time(text: str) -> None:
    """Pydantic reads a string of digits as seconds (or ms) since 1970: 20251105 became
    1970-08-24. The API takes ISO 8601 text only, as a number is refused."""
    with pytest.raises(ValidationError) as err:
        TypeAdapter(Timestamp).validate_python(text)
    msg = err.value.errors()[0]["msg"]
    assert "ISO 8601" in msg and "2025-11-05T00:00:00Z" in msg, msg
    with pytest.raises(ValidationError) as other:
        TypeAdapter(Timestamp).validate_python("42")
    assert other.value.errors()[0]["msg"] == msg  # the value is never echoed


@pytest.mark.parametrize(
    "text", ["2025-11-05T00:00:00Z", "2025-11-05", "2025-11-05T09:30:00+09:00", "2025-11-05 10:00"]
)
def test_iso_8601_text_is_still_read(text: str) -> None:
    got = TypeAdapter(Timestamp).validate_python(text)
    assert got.tzinfo is not None and got.year == 2025 and got.month == 11


def _set(body: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        body = body[key]
    body[path[-1]] = value


@pytest.mark.parametrize(
    "path",
    [
        ("as_of",),
        ("leads", 0, "created_at"),
        ("leads", 0, "events", 1, "ts"),
        ("leads", 0, "account_events", 0, "ts"),
        ("leads", 0, "status_history", 1, "ts"),
        ("leads", 0, "activities", 0, "ts"),
        ("leads", 0, "account", "created_at"),
    ],
)
def test_every_timestamp_of_a_lead_request_refuses_digits_at_its_path(
    path: tuple[Any, ...],
) -> None:
    import copy

    from leadml.serving.schemas import EXAMPLE_SCORE_LEADS

    body = copy.deepcopy(EXAMPLE_SCORE_LEADS)
    _set(body, path, "20251105")
    with pytest.raises(ValidationError) as err:
        ScoreLeadsRequest.model_validate(body)
    (problem,) = err.value.errors()
    assert problem["loc"] == path


# ---------------------------------------------------------------- default as_of


def test_default_as_of_moves_just_after_a_record_within_the_clock_skew() -> None:
    ahead = NOW + timedelta(seconds=0.5)
    assert checks.default_as_of(NOW, [NOW - timedelta(days=1), ahead]) == ahead + timedelta(
        microseconds=1
    )
    # at the limit still; past records or none: now
    edge = NOW + checks.CLOCK_SKEW
    assert checks.default_as_of(NOW, [edge]) > edge
    assert checks.default_as_of(NOW, [NOW - timedelta(seconds=1)]) == NOW
    assert checks.default_as_of(NOW, []) == NOW
    assert checks.default_as_of(NOW, [NOW]) > NOW  # ts < as_of: a record at now passes


def test_default_as_of_ignores_records_beyond_the_skew_so_they_are_refused() -> None:
    far = NOW + checks.CLOCK_SKEW + timedelta(seconds=1)
    near = NOW + timedelta(seconds=2)
    as_of = checks.default_as_of(NOW, [far, near])
    assert near < as_of < far
    assert checks.default_as_of(NOW, [far]) == NOW


def test_record_times_cover_every_record_that_must_precede_as_of() -> None:
    lead = LeadIn.model_validate(EXAMPLE_LEAD)
    times = list(checks.lead_record_times([lead]))
    expected = (
        1
        + len(lead.events)
        + len(lead.account_events)
        + len(lead.status_history)
        + len(lead.activities)
        + len(lead.account_deals)
        + 1  # the account's created_at
    )
    assert len(times) == expected and lead.created_at in times
    deal = DealIn.model_validate(EXAMPLE_DEAL)
    deal_times = list(checks.deal_record_times([deal]))
    # expected close dates are plans, not records: never move as_of
    assert not {h.expected_close_date for h in deal.stage_history} & set(deal_times)
    assert {h.ts for h in deal.stage_history} <= set(deal_times)


def test_a_record_beyond_the_skew_names_how_the_default_as_of_was_chosen() -> None:
    from leadml.config import load_settings

    settings = load_settings()
    lead = LeadIn.model_validate(
        {**EXAMPLE_LEAD, "events": [{"ts": "2025-11-05T10:30:00Z", "type": "web_visit"}]}
    )
    as_of = checks.default_as_of(NOW, checks.lead_record_times([lead]))
    with pytest.raises(checks.RequestError) as err:
        checks.check_leads([lead], as_of, settings.serving, settings.vocabulary, note="x")
    (problem,) = err.value.problems
    assert problem.loc == ("leads", 0, "events", 0, "ts") and problem.msg.endswith("x")
    note = checks.as_of_note(False)
    assert "as_of was not sent" in note and "5 minutes" in note and checks.as_of_note(True) == ""
