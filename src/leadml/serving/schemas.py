"""Request and response models of the online scoring API.

These pydantic models ARE the API's documentation: BentoML turns them into the
OpenAPI page (``/docs.json``). Every field has a description; the ``EXAMPLE_*``
payloads are the OpenAPI examples and are reused by the tests and the benchmark.

Time semantics: every request has an ``as_of`` time T (default: the time the
request is received, moved just after a record stamped at most a few minutes later by
a sender whose clock runs ahead: :func:`leadml.serving.checks.default_as_of`). Scores
use only the records sent with ``ts < T``; a record stamped at or after T is rejected
(422) rather than silently dropped, because it means the caller's clock or query is
wrong. Timestamps are ISO 8601 text (numbers, and text of digits that pydantic would
read as a unix time, are refused); without a timezone they are read as UTC (like the
table contracts).

The models hold no personal data: a lead is identified by its id only; names,
e-mail addresses and phone numbers are not accepted (unknown fields are
rejected) and validation errors never echo input values
(``hide_input_in_errors``), so they cannot reach a log line either.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "EXAMPLE_DEAL",
    "EXAMPLE_FORECAST",
    "EXAMPLE_HANDOFF",
    "EXAMPLE_LEAD",
    "EXAMPLE_SCORE_DEALS",
    "EXAMPLE_SCORE_LEADS",
    "AccountIn",
    "ActivityIn",
    "ClosedDealIn",
    "DealIn",
    "DealScore",
    "EventIn",
    "ForecastRequest",
    "ForecastResponse",
    "HandoffDecision",
    "HandoffRequest",
    "HandoffResponse",
    "LeadIn",
    "LeadScore",
    "ModelRef",
    "Reason",
    "ScoreDealsRequest",
    "ScoreDealsResponse",
    "ScoreLeadsRequest",
    "ScoreLeadsResponse",
    "ServiceBatching",
    "ServiceLimits",
    "ServiceMetadata",
    "StageChangeIn",
    "StatusChangeIn",
]


# Timestamps outside these years are refused: they are typos or sentinel values
# (0001-01-01, 9999-12-31), and at the ends of the range converting to UTC overflows.
MIN_YEAR, MAX_YEAR = 1900, 2199


# Text pydantic would read as a unix time (seconds or milliseconds since 1970): digits
# with an optional sign, decimal point and exponent ("20251105", "1762336800000", "-5",
# ".5", "1.7E9").
_UNIX_TIME_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_only(value: object) -> object:
    """A timestamp is ISO 8601 text (or a datetime in Python): a number is refused,
    because an id or an amount in a date field would silently become a 1970 date; so
    is a number sent as text, which pydantic would read the same way (a compact date
    such as 20251105 became 1970-08-24)."""
    if isinstance(value, int | float | bool):
        raise ValueError("a timestamp must be ISO 8601 text such as 2025-06-02T09:30:00Z")
    if isinstance(value, str) and _UNIX_TIME_TEXT.fullmatch(value):
        raise ValueError(
            "a timestamp must be ISO 8601 text with dashes and colons such as "
            "2025-11-05T00:00:00Z; digits only (a compact date like 20251105 or a unix "
            "time) are refused, because they would be read as seconds since 1970"
        )
    return value


def _utc(value: datetime) -> datetime:
    """Naive timestamps are UTC; aware ones are converted to UTC."""
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"the year must be between {MIN_YEAR} and {MAX_YEAR}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# What the API accepts as a timestamp, as the OpenAPI document declares it: ISO 8601
# text whose year is MIN_YEAR..MAX_YEAR (the pattern; digits only and numbers fail it).
TIMESTAMP_PATTERN = r"^(19[0-9]{2}|2[01][0-9]{2})-[0-9]{2}-[0-9]{2}"
_TIMESTAMP_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "pattern": TIMESTAMP_PATTERN,
}
# Added to the description of every timestamp field.
TS_RULE = (
    f"ISO 8601 text such as 2025-06-02T09:30:00Z (no timezone = UTC; numbers and digits "
    f"only such as 20250602 are refused), years {MIN_YEAR}-{MAX_YEAR}"
)


def _when(text: str) -> str:
    """A timestamp field's description: ``text`` and the rules every timestamp follows."""
    return f"{text}. {TS_RULE}"


Timestamp = Annotated[
    datetime,
    BeforeValidator(_iso_only),
    AfterValidator(_utc),
    WithJsonSchema(_TIMESTAMP_SCHEMA),
]
# Amounts above this are refused: no deal is worth a trillion, and the revenue
# distribution's grid loses its meaning far beyond the realistic range.
MAX_AMOUNT = 1e12
Id = Annotated[str, Field(min_length=1, max_length=128)]


# Extra columns (``attributes``): names and values the API accepts.
MAX_ATTRIBUTE_NAME, MAX_ATTRIBUTE_TEXT = 64, 256


def _finite(v: float) -> bool:
    """A finite number that fits a float (JSON allows integers of any size)."""
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond the float range
        return False


def _attribute_values(value: dict[str, Any]) -> dict[str, Any]:
    """Names of at most 64 characters; values text (at most 256), finite numbers,
    true/false or null. Problems name the entry's position, never its name or value
    (a name may itself be personal data)."""
    for i, (name, v) in enumerate(value.items()):
        if not 1 <= len(name) <= MAX_ATTRIBUTE_NAME:
            raise ValueError(f"entry {i}: a name must have 1 to {MAX_ATTRIBUTE_NAME} characters")
        ok = (
            v is None
            or isinstance(v, bool)
            or (isinstance(v, str) and len(v) <= MAX_ATTRIBUTE_TEXT)
            or (isinstance(v, int | float) and _finite(v))
        )
        if not ok:
            raise ValueError(
                f"entry {i}: a value must be text (at most {MAX_ATTRIBUTE_TEXT} characters), "
                "a finite number, true/false or null"
            )
    return value


# The same rules in the OpenAPI document (OpenAPI 3.0: ``nullable`` rather than a null
# type; ``propertyNames`` is JSON Schema, read by schema-driven clients and fuzzers).
_ATTRIBUTES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"minLength": 1, "maxLength": MAX_ATTRIBUTE_NAME},
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "maxLength": MAX_ATTRIBUTE_TEXT},
            {"type": "number"},
            {"type": "boolean"},
        ],
        "nullable": True,
    },
}
ATTRIBUTES_RULE = (
    f"Names of 1-{MAX_ATTRIBUTE_NAME} characters, only the extra columns the model's "
    "feature catalog reads (another name is refused with 422, whose message lists them); "
    f"values text of at most {MAX_ATTRIBUTE_TEXT} characters, finite numbers, true/false "
    "or null"
)

Attributes = Annotated[
    dict[str, Any], AfterValidator(_attribute_values), WithJsonSchema(_ATTRIBUTES_SCHEMA)
]


class _In(BaseModel):
    # Unknown fields are errors (a typo must not silently change a score); input
    # values are never echoed in error messages (they may be personal data).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- raw records


class EventIn(_In):
    """One behavioural signal of the lead (a row of the ``events`` table)."""

    ts: Timestamp = Field(description=_when("When it happened; must be before as_of"))
    type: str = Field(
        min_length=1,
        max_length=64,
        description="Event type from the vocabulary (web_visit, page_view, email_open, "
        "email_click, "
        "form_submit, content_download, seminar_registered, seminar_attended, webinar_registered, "
        "webinar_attended); unknown types are rejected or ignored per serving.unknown_event_types",
    )
    page_category: str | None = Field(
        None,
        max_length=64,
        description="Category of the page viewed: pricing, case_study, docs, blog, product "
        "or careers (page_view events; null otherwise)",
    )
    campaign_id: Id | None = Field(None, description="Campaign that produced the event, if any")


class AccountEventIn(EventIn):
    """An event of ANOTHER lead at the same account (the buying committee)."""

    lead_id: Id = Field(description="The colleague's lead id")


class StatusChangeIn(_In):
    """A change of the lead's marketing status (``lead_status_history``)."""

    ts: Timestamp = Field(description=_when("When the status changed; must be before as_of"))
    status: str = Field(
        description="The status from then on: lead, nurturing, mql, sql, disqualified or "
        "recycled (the vocabulary's lead statuses; another word is refused, 422)"
    )


class ActivityIn(_In):
    """An inside- or field-sales touch (``activities``)."""

    ts: Timestamp = Field(description=_when("When it happened; must be before as_of"))
    type: str = Field(
        description="call, connect, email, meeting or demo (the vocabulary's activity types; "
        "another word is refused, 422)"
    )
    rep_id: Id | None = Field(None, description="The rep who did it (the CRM's user id)")


class ClosedDealIn(_In):
    """A deal of the same account (or owner) and how it ended: feeds the
    point-in-time win-rate features. Only deals closed before as_of count."""

    opportunity_id: Id = Field(description="The closed deal's id in the CRM")
    closed_at: Timestamp = Field(description=_when("When it was won or lost; must be before as_of"))
    stage: Literal["closed_won", "closed_lost"] = Field(description="How it ended")
    amount: float = Field(
        0.0,
        ge=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="Deal amount (target currency), at most 1e12",
    )
    owner_id: Id | None = Field(None, description="Field-sales owner")


class AccountIn(_In):
    """The company the lead works for (a row of ``accounts``)."""

    account_id: Id = Field(description="The account's id in the CRM")
    industry: str | None = Field(
        None, max_length=128, description="Industry as the CRM records it (free text)"
    )
    employees: int | None = Field(
        None, ge=0, le=10_000_000, description="Number of employees (0 to 10 000 000)"
    )
    country: str | None = Field(
        None,
        max_length=64,
        description="Country code as the CRM records it (the demo uses ISO 3166 alpha-2, "
        "e.g. JP); a value the model never saw is read as missing and reported in "
        "unseen_values",
    )
    segment: str | None = Field(
        None,
        description="enterprise, mid_market or smb (the vocabulary's segments; another word "
        "is refused, 422)",
    )
    created_at: Timestamp | None = Field(
        None, description=_when("When the account was created; must be before as_of")
    )
    attributes: Attributes = Field(
        default_factory=dict,
        description=f"Extra account columns named by the feature catalog. {ATTRIBUTES_RULE}",
    )


class LeadIn(_In):
    """A lead with the raw records the readiness model reads (as the CRM knows them)."""

    lead_id: Id = Field(description="The lead's id (the only identifier the API takes)")
    created_at: Timestamp = Field(
        description=_when("When the lead was acquired; must be before as_of")
    )
    source: str | None = Field(
        None, max_length=64, description="Acquisition channel (e.g. seminar, web, referral)"
    )
    job_level: str | None = Field(
        None, max_length=64, description="Seniority of the contact (e.g. manager)"
    )
    attributes: Attributes = Field(
        default_factory=dict,
        description=f"Extra lead columns named by the feature catalog. {ATTRIBUTES_RULE}",
    )
    account: AccountIn | None = Field(None, description="The lead's account")
    events: list[EventIn] = Field(
        default_factory=list,
        description="The lead's behavioural events: the full history (some features count "
        "all of them), at least the last 90 days (limit: serving.max_events_per_lead)",
    )
    status_history: list[StatusChangeIn] = Field(
        default_factory=list,
        description="Marketing status changes; none before as_of = the first status "
        "(lead) since created_at, as a CRM records a new lead",
    )
    activities: list[ActivityIn] = Field(default_factory=list, description="Inside-sales touches")
    account_events: list[AccountEventIn] = Field(
        default_factory=list,
        description="Events of the other leads at the same account, the last 90 days "
        "(limit: serving.max_events_per_lead)",
    )
    account_deals: list[ClosedDealIn] = Field(
        default_factory=list, description="Closed deals of the same account"
    )


class StageChangeIn(_In):
    """A change of the deal (``opportunity_history``): stage, amount or close date."""

    ts: Timestamp = Field(
        description=_when(
            "When it changed; must be before as_of and not more than a day before the "
            "deal's created_at"
        )
    )
    stage: str = Field(
        description="The stage from then on: follow_up, problem_recognised, evaluation, "
        "negotiation, approval (open stages), closed_won or closed_lost (a deal closed "
        "before as_of is refused, 422)"
    )
    amount: float = Field(
        ge=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="Amount after the change (target currency), at most 1e12",
    )
    expected_close_date: Timestamp = Field(
        description=_when("Expected close date after the change (a plan: may be after as_of)")
    )


class DealIn(_In):
    """An open opportunity with its history (``opportunities`` + ``opportunity_history``)."""

    opportunity_id: Id = Field(description="The deal's id in the CRM")
    account_id: Id = Field(description="The account the deal is with")
    owner_id: Id = Field(description="Field-sales owner")
    lead_id: Id | None = Field(None, description="The lead the deal came from, if any")
    created_at: Timestamp = Field(
        description=_when("When the deal was created; must be before as_of")
    )
    segment: str = Field(
        description="enterprise, mid_market or smb (the vocabulary's segments; another word "
        "is refused, 422)"
    )
    stage_history: list[StageChangeIn] = Field(
        min_length=1,
        description="Every change of the deal since its creation (no row more than a day "
        "before created_at); the state at as_of is rebuilt from it",
    )
    activities: list[ActivityIn] = Field(default_factory=list, description="Sales touches")
    account: AccountIn | None = Field(None, description="The deal's account")
    account_deals: list[ClosedDealIn] = Field(
        default_factory=list, description="Closed deals of the same account"
    )
    owner_deals: list[ClosedDealIn] = Field(
        default_factory=list, description="Closed deals of the same owner"
    )


# ---------------------------------------------------------------- examples
# Shown on the OpenAPI page and posted by the tests (they must stay valid requests).

EXAMPLE_LEAD: dict = {
    "lead_id": "L-1042",
    "created_at": "2025-04-02T09:30:00Z",
    "source": "seminar",
    "job_level": "manager",
    "account": {
        "account_id": "A-311",
        "industry": "manufacturing",
        "employees": 420,
        "country": "JP",
        "segment": "mid_market",
        "created_at": "2024-11-12T00:00:00Z",
    },
    "events": [
        {"ts": "2025-05-20T08:15:00Z", "type": "web_visit"},
        {"ts": "2025-05-20T08:16:00Z", "type": "page_view", "page_category": "pricing"},
        {"ts": "2025-05-27T13:02:00Z", "type": "seminar_attended", "campaign_id": "C-77"},
    ],
    "status_history": [
        {"ts": "2025-04-02T09:30:00Z", "status": "lead"},
        {"ts": "2025-05-21T00:00:00Z", "status": "mql"},
    ],
    "activities": [{"ts": "2025-05-28T10:00:00Z", "type": "call", "rep_id": "R-IS-3"}],
    "account_events": [
        {
            "lead_id": "L-1043",
            "ts": "2025-05-26T11:00:00Z",
            "type": "page_view",
            "page_category": "case_study",
        }
    ],
    "account_deals": [],
}
EXAMPLE_DEAL: dict = {
    "opportunity_id": "O-208",
    "account_id": "A-311",
    "owner_id": "R-FS-1",
    "lead_id": "L-1042",
    "created_at": "2025-03-03T00:00:00Z",
    "segment": "mid_market",
    "stage_history": [
        {
            "ts": "2025-03-03T00:00:00Z",
            "stage": "follow_up",
            "amount": 24000,
            "expected_close_date": "2025-06-30T00:00:00Z",
        },
        {
            "ts": "2025-04-14T00:00:00Z",
            "stage": "evaluation",
            "amount": 30000,
            "expected_close_date": "2025-07-31T00:00:00Z",
        },
    ],
    "activities": [{"ts": "2025-05-22T15:00:00Z", "type": "demo", "rep_id": "R-FS-1"}],
    "owner_deals": [
        {
            "opportunity_id": "O-150",
            "closed_at": "2025-02-10T00:00:00Z",
            "stage": "closed_won",
            "amount": 18000,
        }
    ],
}
EXAMPLE_SCORE_LEADS: dict = {"as_of": "2025-06-02T00:00:00Z", "leads": [EXAMPLE_LEAD]}
EXAMPLE_HANDOFF: dict = {
    "as_of": "2025-06-02T00:00:00Z",
    "leads": [EXAMPLE_LEAD],
    "is_capacity": 12,
}
EXAMPLE_SCORE_DEALS: dict = {
    "as_of": "2025-06-02T00:00:00Z",
    "period_end": "2025-07-01T00:00:00Z",
    "deals": [EXAMPLE_DEAL],
}
EXAMPLE_FORECAST: dict = {
    "as_of": "2025-06-02T00:00:00Z",
    "period_start": "2025-04-01T00:00:00Z",
    "period_end": "2025-07-01T00:00:00Z",  # exclusive: the quarter 2025Q2
    "deals": [EXAMPLE_DEAL],
    "won_amount": 52000,
    "target": 90000,
}


def _example(example: dict) -> ConfigDict:
    return ConfigDict(json_schema_extra={"example": example})


# BentoML 1.4 flattens the top-level fields of an endpoint's request and response
# models for the OpenAPI page, keeping only the first branch of ``X | None``
# (``anyOf``): without this mark a field that may be null is declared as never null.
# OpenAPI 3.0 (the version BentoML writes) says it with ``nullable``.
NULLABLE: dict[str, Any] = {"nullable": True}


# ---------------------------------------------------------------- requests

_AS_OF = _when(
    "Score as of this time. Records at or after it are rejected. Default: when the request "
    "arrives, or just after the newest record when that is at most 5 minutes later "
    "(serving.clock_skew_seconds: the sender's clock running ahead); records further ahead "
    "are rejected"
)


class ScoreLeadsRequest(_In):
    model_config = _example(EXAMPLE_SCORE_LEADS)

    as_of: Timestamp | None = Field(None, description=_AS_OF, json_schema_extra=NULLABLE)
    leads: list[LeadIn] = Field(
        min_length=1, description="Leads to score (limit: serving.max_leads_per_request)"
    )


class HandoffRequest(_In):
    model_config = _example(EXAMPLE_HANDOFF)

    as_of: Timestamp | None = Field(None, description=_AS_OF, json_schema_extra=NULLABLE)
    leads: list[LeadIn] = Field(
        min_length=1,
        description="Candidate leads for inside sales (limit: serving.max_leads_per_request)",
    )
    is_capacity: int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        json_schema_extra=NULLABLE,
        description="IS slots left this week (default: serving.is_capacity). A slot is a "
        "calendar slot, not a lead: a hand-off takes the readiness model's policy."
        "slots_per_lead slots (2 by default; /metadata shows it), so 12 slots = 6 leads",
    )


class ScoreDealsRequest(_In):
    model_config = _example(EXAMPLE_SCORE_DEALS)

    as_of: Timestamp | None = Field(None, description=_AS_OF, json_schema_extra=NULLABLE)
    period_end: Timestamp = Field(
        description=_when(
            "End of the period, exclusive: P(won before period_end) is returned; must be "
            "after as_of"
        )
    )
    deals: list[DealIn] = Field(
        min_length=1, description="Open deals to score (limit: serving.max_deals_per_request)"
    )


class ForecastRequest(_In):
    model_config = _example(EXAMPLE_FORECAST)

    as_of: Timestamp | None = Field(None, description=_AS_OF, json_schema_extra=NULLABLE)
    period_start: Timestamp | None = Field(
        None,
        json_schema_extra=NULLABLE,
        description=_when(
            "Start of the forecast period, inclusive (needed with deals; without deals: "
            "default the nightly forecast's current quarter)"
        ),
    )
    period_end: Timestamp | None = Field(
        None,
        json_schema_extra=NULLABLE,
        description=_when(
            "End of the forecast period, exclusive (a quarter 2025Q2 is 2025-04-01 to "
            "2025-07-01; needed with deals)"
        ),
    )
    deals: list[DealIn] | None = Field(
        None,
        min_length=1,
        json_schema_extra=NULLABLE,
        description="Open deals that may close in the period (limit: "
        "serving.max_deals_per_request). Leave out to get the latest "
        "nightly forecast (`leadml batch`) published at or before as_of: won, open and "
        "new deals, by team and segment, as the morning report shows it",
    )
    won_amount: float = Field(
        0.0,
        ge=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="Revenue already won in the period (with deals; at most 1e12)",
    )
    target: float | None = Field(
        None,
        ge=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="Revenue target of the period (at most 1e12): P(reach target) is returned",
        json_schema_extra=NULLABLE,
    )


# ---------------------------------------------------------------- responses


class ModelRef(_Out):
    name: str = Field(description="Registered model name")
    version: str = Field(description="Registry version of the champion that answered")


class Reason(_Out):
    feature: str = Field(description="Feature behind the reason")
    text: str = Field(description="Readable reason")
    contribution: float = Field(
        description="Contribution to the score's log-odds (TreeSHAP; for a deal, of P(won "
        "within the model horizon), integrated over the hazard model's weekly periods)"
    )


_UNSEEN = (
    "Categorical features whose value the model never saw in training, so it reads them as "
    "missing and never cites them as a reason: a spelling (Seminar for seminar, Japan for "
    "JP), or a valid status / stage outside the model's training data (lead_status sql or "
    "disqualified); /metadata lists the known values (models.*.categories)"
)
_UNSEEN_STATUS = (
    "The lead's status at as_of when the readiness model never saw it in "
    "training (null otherwise): the model is trained on open leads in the statuses "
    "/metadata lists (categories.lead_status), so e.g. an sql or disqualified lead is "
    "outside what it knows. The lead is still scored (status read as missing) but its "
    "readiness and grade are an extrapolation: do not route on them"
)
_MODEL = "The champion that scored (registry name and version)"


class LeadScore(_Out):
    lead_id: str = Field(description="The lead's id, as sent")
    readiness: float = Field(
        ge=0, le=1, description="Calibrated P(lead becomes an opportunity within the horizon)"
    )
    percentile: float = Field(
        ge=0, le=100, description="Percentile against the training score distribution"
    )
    grade: Literal["A", "B", "C", "D"] = Field(
        description="A = most ready (cut-offs: /metadata models.lead_readiness.grade_cutoffs)"
    )
    reasons: list[Reason] = Field(description="Top reasons, strongest first")
    ignored_events: int = Field(
        0, ge=0, description="Events dropped for an unknown type (policy ignore)"
    )
    unseen_values: list[str] = Field(default_factory=list, description=_UNSEEN)
    unseen_status: str | None = Field(None, description=_UNSEEN_STATUS)
    model: ModelRef = Field(description=_MODEL)


class ScoreLeadsResponse(_Out):
    as_of: datetime = Field(description="The as_of used (sent, or the default), UTC")
    scores: list[LeadScore] = Field(description="One per lead, in the order sent")


class HandoffDecision(_Out):
    lead_id: str = Field(description="The lead's id, as sent")
    decision: Literal["handoff", "nurture", "recycle_eligible", "not_eligible"] = Field(
        description="handoff: call this week; nurture: not now (and every lead whose status "
        "the model never saw: see unseen_status); recycle_eligible: below the "
        "policy's recycle threshold; not_eligible: its status at as_of is not one inside "
        "sales calls (batch.call_list_statuses, as the nightly call list), e.g. already sql"
    )
    readiness: float = Field(ge=0, le=1, description="The lead's readiness (as /score_leads)")
    grade: Literal["A", "B", "C", "D"] = Field(description="The lead's grade (as /score_leads)")
    rank: int = Field(
        ge=1,
        description="Order of the decisions (1 = first to call): eligible leads by "
        "readiness (ties by lead_id), then leads in a status the model never saw, then "
        "not_eligible ones",
    )
    reasons: list[str] = Field(description="Why this decision (policy) and why this score (model)")
    ignored_events: int = Field(
        0, ge=0, description="Events dropped for an unknown type (serving.unknown_event_types)"
    )
    unseen_status: str | None = Field(
        None,
        description="The lead's status at as_of when the readiness model never saw it (null "
        "otherwise; as /score_leads). Such a lead is never handed off: its readiness is an "
        "extrapolation, so an eligible one is nurture, for a person to review",
    )


class HandoffResponse(_Out):
    as_of: datetime = Field(description="The as_of used (sent, or the default), UTC")
    is_capacity: int = Field(description="IS slots that were available")
    slots_per_lead: float = Field(description="Slots one hand-off takes (the model's policy)")
    capacity_left: int = Field(description="Slots left after these hand-offs")
    decisions: list[HandoffDecision] = Field(description="One per lead, by rank")
    model: ModelRef = Field(description=_MODEL)


class HygieneFlag(_Out):
    rule: Literal["past_close_date", "stale", "close_date_pushed"] = Field(
        description="Rule id (the nightly alerts' rule names)",
        json_schema_extra={"example": "past_close_date"},
    )
    message: str = Field(description="What the rule found, for a person to read")


class DealScore(_Out):
    opportunity_id: str = Field(description="The deal's id, as sent")
    stage: str = Field(description="Stage as of as_of")
    p_won: float = Field(
        ge=0, le=1, description="P(won within the model's horizon, horizon_days after as_of)"
    )
    horizon_days: int = Field(description="The model's horizon that p_won refers to")
    p_won_by_period_end: float = Field(
        ge=0,
        le=1,
        description="P(won before period_end); above p_won when period_end is more than "
        "horizon_days away",
    )
    # Internal to /forecast (P(won between period_start and period_end)): neither in
    # answers nor in the OpenAPI document.
    p_won_in_period: SkipJsonSchema[float | None] = Field(None, ge=0, le=1, exclude=True)
    reasons: list[Reason] = Field(
        description="What raises and lowers p_won, strongest first (they add up to its log-odds)"
    )
    hygiene_flags: list[HygieneFlag] = Field(
        description="Deal-hygiene rules the deal breaks (empty when none)"
    )
    unseen_values: list[str] = Field(default_factory=list, description=_UNSEEN)
    model: ModelRef = Field(description=_MODEL)


class ScoreDealsResponse(_Out):
    as_of: datetime = Field(description="The as_of used (sent, or the default), UTC")
    period_end: datetime = Field(description="The period end p_won_by_period_end refers to")
    scores: list[DealScore] = Field(description="One per deal, in the order sent")


class BreakdownRow(_Out):
    group: str = Field(description="Value of the grouping (e.g. a stage)")
    deals: int = Field(description="Open deals")
    amount: float = Field(description="Open pipeline amount")
    expected: float = Field(description="Expected revenue in the period from the open deals")
    won: float | None = Field(None, description="Won in the period so far (nightly forecast)")
    new_expected: float | None = Field(
        None, description="Expected revenue from deals not yet created (nightly forecast)"
    )
    total_expected: float | None = Field(
        None,
        description="won + expected + new_expected: the group's whole period, as `leadml "
        "forecast` and the report show it (nightly forecast)",
    )
    p10: float | None = Field(None, description="P10 of the group's period revenue (nightly)")
    p50: float | None = Field(None, description="P50 of the group's period revenue (nightly)")
    p90: float | None = Field(None, description="P90 of the group's period revenue (nightly)")
    target: float | None = Field(None, description="The group's target (nightly; null if none)")
    p_reach_target: float | None = Field(
        None, description="P(revenue >= target) for the group (nightly; null without a target)"
    )


class ForecastResponse(_Out):
    source: Literal["deals", "nightly"] = Field(
        description="deals: the deals in the request, scored now; nightly: the latest "
        "nightly forecast (then as_of is that run's date)"
    )
    probability_source: str = Field(
        description="Where each deal's P(won in the period) comes from (the deal-close "
        "model, or the nightly run's empirical close rates)"
    )
    as_of: datetime = Field(description="The as_of used (or the nightly run's), UTC")
    period_start: datetime = Field(description="Start of the period, inclusive")
    period_end: datetime = Field(description="End of the period, exclusive")
    p10: float = Field(description="10th percentile of the period's revenue")
    p50: float = Field(description="Median of the period's revenue")
    p90: float = Field(description="90th percentile of the period's revenue")
    mean: float = Field(description="Expected revenue: won + open + new")
    won_amount: float = Field(description="Revenue already won in the period")
    open_expected: float = Field(description="Expected revenue from the open deals")
    new_expected: float = Field(
        description="Expected revenue from deals not yet created (0 with deals in the request)"
    )
    target: float | None = Field(
        description="The revenue target (the request's, or the nightly run's); null without one",
        json_schema_extra=NULLABLE,
    )
    p_reach_target: float | None = Field(
        description="P(revenue >= target); null without a target", json_schema_extra=NULLABLE
    )
    by_stage: list[BreakdownRow] = Field(description="Per stage (deals in the request only)")
    by_segment: list[BreakdownRow] = Field(description="Per segment")
    by_team: list[BreakdownRow] = Field(
        default_factory=list, description="Per field-sales team (nightly forecast only)"
    )
    model: ModelRef | None = Field(
        description="The deal-close champion that scored the deals (null for the nightly forecast)",
        json_schema_extra=NULLABLE,
    )


class ServiceLimits(_Out):
    """The request limits in force (``serving:`` settings)."""

    max_leads_per_request: int = Field(description="Leads per /score_leads or /handoff (413)")
    max_events_per_lead: int = Field(
        description="Per lead: events, colleagues' events, and status changes + activities + "
        "account deals, each (413)"
    )
    max_deals_per_request: int = Field(description="Deals per /score_deals or /forecast (413)")
    max_records_per_deal: int = Field(
        description="Per deal: stage changes + activities + closed deals (413)"
    )
    max_request_bytes: int = Field(description="Largest request body accepted, in bytes (413)")
    unknown_event_types: Literal["reject", "ignore"] = Field(
        description="reject: an event type outside the vocabulary is a 422; ignore: it is "
        "dropped and counted in ignored_events"
    )
    is_capacity: int = Field(description="IS slots /handoff assumes when the request omits it")


class ServiceBatching(_Out):
    """Adaptive batching of the scoring work (``serving.batching``)."""

    enabled: bool = Field(
        description="true: the leads (deals) of concurrent requests are scored together"
    )
    max_batch_size: int = Field(description="Leads (or deals) per model call at most")
    max_latency_ms: int = Field(
        description="Queue budget: a request that waited longer is shed (503, Retry-After)"
    )


class ServiceMetadata(_Out):
    models: dict[str, dict[str, object]] = Field(
        description="Per model (lead_readiness, deal_close): name, version, training window, "
        "horizon, features, the values each categorical feature knows (categories), grade "
        "cut-offs and the hand-off policy"
    )
    limits: ServiceLimits = Field(description="The request limits in force")
    batching: ServiceBatching = Field(description="Adaptive batching settings")
