"""Request checks that depend on configuration and on the as-of time.

Pydantic (the schemas) rejects wrong types and missing fields (400). The checks
here need the request's as-of time, the vocabularies and the serving limits, so
they run after parsing: too many leads/deals/events (413; for a large body already on
the parsed JSON, before the schema validation: :func:`check_sizes_json`), timestamps at
or after as_of, unknown vocabulary values, inconsistent histories and periods (422).
Each problem names the field path (``leads.0.events.3.ts``) and the reason; input
values are not echoed (they may be personal data), only vocabulary words and limits are.

Unknown event types follow ``serving.unknown_event_types``: ``reject`` makes them
422 problems; ``ignore`` drops them from the lead and counts them (the response
reports ``ignored_events`` per lead).

Default as_of: a request without ``as_of`` is scored as of the time it arrives, or
just after its newest record when that record is at most ``serving.clock_skew_seconds``
(default :data:`CLOCK_SKEW`) ahead of the server's clock (:func:`default_as_of`): the
webhook's own event, stamped by a machine whose clock runs slightly ahead, is not
refused. An explicit ``as_of`` keeps the strict rule.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from leadml.config import ServingConfig, Vocabulary
from leadml.errors import LeadmlError
from leadml.serving.schemas import DealIn, LeadIn

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    loc: Loc
    msg: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class RequestError(LeadmlError):
    """A request the API refuses: HTTP ``status`` with one entry per problem."""

    def __init__(self, status: int, summary: str, problems: Sequence[Problem]) -> None:
        self.status = status
        self.summary = summary
        self.problems = list(problems)
        super().__init__(summary + "".join(f"\n  {_path(p.loc)}: {p.msg}" for p in problems))

    def body(self) -> dict[str, Any]:
        """The JSON error body; same shape as BentoML's 400 for schema errors."""
        return {"error": self.summary, "detail": [p.as_dict() for p in self.problems]}


def _path(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)


# Reported problems are capped so that a hostile request cannot make a huge answer.
MAX_PROBLEMS = 50


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)
    # added to "is not before as_of" problems (how a default as_of was chosen)
    as_of_note: str = ""

    def add(self, loc: Loc, msg: str, type_: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(loc, msg, type_))

    def raise_if_any(self, status: int, what: str) -> None:
        if self.problems:
            n = len(self.problems)
            raise RequestError(
                status, f"{n} problem{'s' if n != 1 else ''} with {what}", self.problems
            )


def _limit(col: _Collector, loc: Loc, n: int, limit: int, what: str, setting: str) -> None:
    if n > limit:
        col.add(loc, f"{n} {what}; at most {limit} are accepted (serving.{setting})", "too_many")


def _before(col: _Collector, loc: Loc, ts: datetime, as_of: datetime) -> None:
    if ts >= as_of:
        col.add(
            loc,
            f"is not before as_of ({as_of.isoformat()}); only records with ts < as_of may be "
            f"sent{col.as_of_note}",
            "after_as_of",
        )


# ---------------------------------------------------------------- default as_of

# How far the newest record of a request without as_of may be ahead of the server's
# clock (the sender's clock runs ahead): within it, as_of moves just after that record.
# The default of ``serving.clock_skew_seconds``.
CLOCK_SKEW = timedelta(minutes=5)
# A deal's stage-history row may be this much before its created_at: CRMs stamp the two
# at different precisions (a date-only created_at, milliseconds on one only), and the
# nightly run reads the first history row as the creation time anyway.
CREATED_SLACK = timedelta(days=1)
_TICK = timedelta(microseconds=1)
DEFAULT_AS_OF_NOTE = (
    "; as_of was not sent, so it is the time the request arrived (moved just after the "
    "newest record when that is at most {skew} ahead: clock skew): fix the sender's clock "
    "or send as_of"
)


def lead_record_times(leads: Iterable[LeadIn]) -> Iterator[datetime]:
    """Every time of the leads' records that must be before as_of."""
    for lead in leads:
        yield lead.created_at
        yield from (e.ts for e in lead.events)
        yield from (e.ts for e in lead.account_events)
        yield from (s.ts for s in lead.status_history)
        yield from (a.ts for a in lead.activities)
        yield from (d.closed_at for d in lead.account_deals)
        if lead.account is not None and lead.account.created_at is not None:
            yield lead.account.created_at


def deal_record_times(deals: Iterable[DealIn]) -> Iterator[datetime]:
    """Every time of the deals' records that must be before as_of (not the expected
    close dates: those are plans, in the future by nature)."""
    for deal in deals:
        yield deal.created_at
        yield from (h.ts for h in deal.stage_history)
        yield from (a.ts for a in deal.activities)
        yield from (d.closed_at for d in deal.account_deals)
        yield from (d.closed_at for d in deal.owner_deals)
        if deal.account is not None and deal.account.created_at is not None:
            yield deal.account.created_at


def default_as_of(
    now: datetime, record_times: Iterable[datetime], skew: timedelta = CLOCK_SKEW
) -> datetime:
    """The as_of of a request that sent none: ``now``, or 1 microsecond after the newest
    record that is at most ``skew`` after ``now`` (a sender whose clock runs ahead).
    Records further ahead stay after as_of and are refused by the checks (422)."""
    limit = now + skew
    newest = max((t for t in record_times if t <= limit), default=None)
    return now if newest is None or newest < now else newest + _TICK


def as_of_note(given: bool, skew: timedelta = CLOCK_SKEW) -> str:
    """What "is not before as_of" problems add when as_of was defaulted."""
    return "" if given else DEFAULT_AS_OF_NOTE.format(skew=_duration(skew))


def _duration(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} seconds"


def _vocab(
    col: _Collector, loc: Loc, value: str | None, allowed: Collection[str], what: str
) -> bool:
    if value is None or value in allowed:
        return True
    col.add(loc, f"unknown {what}; valid: {', '.join(allowed)}", "unknown_value")
    return False


def _check_attributes(
    col: _Collector, loc: Loc, given: Mapping[str, Any], allowed: frozenset[str], what: str
) -> None:
    """Extra columns the model does not read are refused: a misspelt name would
    otherwise be ignored without a word (and names of personal fields have no use)."""
    unknown = [i for i, name in enumerate(given) if name not in allowed]
    if unknown:
        reads = ", ".join(sorted(allowed)) if allowed else "none"
        col.add(
            (*loc, "attributes"),
            f"{len(unknown)} name(s) the {what} model does not read (entries "
            f"{', '.join(map(str, unknown))}); the extra columns it reads: {reads}",
            "unknown_attribute",
        )


def _check_unique(col: _Collector, loc: Loc, ids: Sequence[str], field_: str, what: str) -> None:
    """Each lead / deal once per request: a retried or merged webhook batch must not hand
    the same lead to inside sales twice or count a deal twice in a forecast."""
    first: dict[str, int] = {}
    for i, id_ in enumerate(ids):
        if id_ in first:
            col.add(
                (*loc, i, field_),
                f"the same {what} as {_path((*loc, first[id_]))}; send each {what} once",
                "duplicate_id",
            )
        else:
            first[id_] = i


def _check_same_time(col: _Collector, loc: Loc, rows: Sequence[Any], fields: Sequence[str]) -> None:
    """Two rows at the same ts that disagree leave the state at as_of ambiguous (which
    one is current?): refused rather than resolved by the order they were sent in."""
    seen: dict[datetime, int] = {}
    for j, row in enumerate(rows):
        k = seen.setdefault(row.ts, j)
        if k != j and any(getattr(row, f) != getattr(rows[k], f) for f in fields):
            col.add(
                (*loc, j, "ts"),
                f"same ts as {_path((*loc, k))} but a different {' / '.join(fields)}: which "
                "one holds at as_of is ambiguous; send one row per time (the state after "
                "the change)",
                "conflicting_rows",
            )


def _count(record: Any, name: str) -> int:
    """Length of a list field of a record: a model, or an object of the parsed JSON body
    (0 when absent or not a list: the schema validation reports those)."""
    value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
    return len(value) if isinstance(value, list | tuple) else 0


def check_sizes_leads(leads: Sequence[Any], cfg: ServingConfig) -> None:
    """413 when a request is over the configured size limits (checked first, cheaply).
    ``leads``: the request's leads, as models or as the parsed JSON body's objects
    (:func:`check_sizes_json`)."""
    col = _Collector()
    _limit(col, ("leads",), len(leads), cfg.max_leads_per_request, "leads", "max_leads_per_request")
    for i, lead in enumerate(leads):
        _limit(
            col,
            ("leads", i, "events"),
            _count(lead, "events"),
            cfg.max_events_per_lead,
            "events",
            "max_events_per_lead",
        )
        _limit(
            col,
            ("leads", i, "account_events"),
            _count(lead, "account_events"),
            cfg.max_events_per_lead,
            "account events",
            "max_events_per_lead",
        )
        others = (
            _count(lead, "status_history")
            + _count(lead, "activities")
            + _count(lead, "account_deals")
        )
        _limit(
            col,
            ("leads", i),
            others,
            cfg.max_events_per_lead,
            "status changes + activities + account deals",
            "max_events_per_lead",
        )
    col.raise_if_any(413, "the request size")


def check_sizes_deals(deals: Sequence[Any], cfg: ServingConfig) -> None:
    """As :func:`check_sizes_leads`, for deals (models or parsed JSON objects)."""
    col = _Collector()
    _limit(col, ("deals",), len(deals), cfg.max_deals_per_request, "deals", "max_deals_per_request")
    for i, deal in enumerate(deals):
        n = (
            _count(deal, "stage_history")
            + _count(deal, "activities")
            + _count(deal, "account_deals")
            + _count(deal, "owner_deals")
        )
        _limit(
            col,
            ("deals", i),
            n,
            cfg.max_records_per_deal,
            "stage changes + activities + closed deals",
            "max_records_per_deal",
        )
    col.raise_if_any(413, "the request size")


def check_sizes_json(endpoint: str, body: Any, cfg: ServingConfig) -> None:
    """The size checks of an endpoint's request on its parsed JSON body, before the
    schema validation (which costs far more than parsing: a body of a million tiny
    leads held the server ~20 s before :func:`check_sizes_leads` refused it). Anything
    the schema would refuse anyway (not an object, leads not a list) passes here."""
    if not isinstance(body, Mapping):
        return
    if endpoint in ("score_leads", "handoff"):
        name = "leads"
    elif endpoint in ("score_deals", "forecast"):
        name = "deals"
    else:
        return
    records = body.get(name)
    if not isinstance(records, list):
        return
    if name == "leads":
        check_sizes_leads(records, cfg)
    else:
        check_sizes_deals(records, cfg)


def _event_ok(
    col: _Collector | None,
    loc: Loc,
    type_: str,
    page: str | None,
    vocab: Vocabulary,
    known: tuple[frozenset[str], frozenset[str]] | None = None,
) -> bool:
    """True when the event's type and page category are in the vocabulary; adds the
    problems to ``col`` when given (reject policy). ``known``: the two vocabularies as
    sets (the per-event fast path; problems are built only for a bad event)."""
    types, pages = known or (frozenset(vocab.event_types), frozenset(vocab.page_categories))
    if type_ in types and (page is None or page in pages):
        return True
    if col is not None:
        _vocab(col, (*loc, "type"), type_, vocab.event_types, "event type")
        _vocab(col, (*loc, "page_category"), page, vocab.page_categories, "page category")
    return False


def _events_ok(
    col: _Collector,
    loc: Loc,
    events: Sequence[Any],
    as_of: datetime,
    vocab: Vocabulary,
    reject: bool,
    known: tuple[frozenset[str], frozenset[str]],
) -> list[Any]:
    """The events to keep: every event must be before as_of (a problem otherwise);
    unknown types/pages are problems (reject) or dropped (ignore)."""
    types, pages = known
    kept = []
    for j, ev in enumerate(events):
        if ev.ts >= as_of:
            _before(col, (*loc, j, "ts"), ev.ts, as_of)
        page = ev.page_category
        if ev.type in types and (page is None or page in pages):
            kept.append(ev)
        else:  # a problem (reject) or dropped (ignore)
            _event_ok(col if reject else None, (*loc, j), ev.type, page, vocab, known)
    return kept


def _check_account(
    col: _Collector,
    loc: Loc,
    account: Any,
    vocab: Vocabulary,
    as_of: datetime,
    allowed: frozenset[str],
    model: str,
) -> None:
    """An account's segment, creation time and attributes (``allowed``: the names the
    ``model`` reads)."""
    if account is None:
        return
    _vocab(col, (*loc, "segment"), account.segment, vocab.segments, "segment")
    if account.created_at is not None:
        _before(col, (*loc, "created_at"), account.created_at, as_of)
    _check_attributes(col, loc, account.attributes, allowed, model)


def _check_closed(col: _Collector, loc: Loc, deals: Sequence[Any], as_of: datetime) -> None:
    for k, d in enumerate(deals):
        _before(col, (*loc, k, "closed_at"), d.closed_at, as_of)


NO_ATTRIBUTES: Mapping[str, frozenset[str]] = {}


def check_leads(
    leads: Sequence[LeadIn],
    as_of: datetime,
    cfg: ServingConfig,
    vocab: Vocabulary,
    attributes: Mapping[str, frozenset[str]] = NO_ATTRIBUTES,
    *,
    note: str = "",
) -> tuple[list[LeadIn], list[int]]:
    """Check every lead as of ``as_of``; return the leads to score (unknown events
    dropped under the ignore policy) and the number dropped per lead.
    ``attributes``: the extra column names the model reads, for ``lead`` and
    ``lead_account`` (none when not given). ``note``: added to the problems of records
    not before as_of (:func:`as_of_note`).

    Raises :class:`RequestError` (422) listing every problem.
    """
    col = _Collector(as_of_note=note)
    _check_unique(col, ("leads",), [lead.lead_id for lead in leads], "lead_id", "lead")
    reject = cfg.unknown_event_types == "reject"
    known = (frozenset(vocab.event_types), frozenset(vocab.page_categories))
    kept_leads: list[LeadIn] = []
    dropped: list[int] = []
    for i, lead in enumerate(leads):
        loc: Loc = ("leads", i)
        _before(col, (*loc, "created_at"), lead.created_at, as_of)
        _check_attributes(
            col, loc, lead.attributes, attributes.get("lead", frozenset()), "readiness"
        )
        _check_account(
            col,
            (*loc, "account"),
            lead.account,
            vocab,
            as_of,
            attributes.get("lead_account", frozenset()),
            "readiness",
        )
        _check_same_time(col, (*loc, "status_history"), lead.status_history, ["status"])
        kept = _events_ok(col, (*loc, "events"), lead.events, as_of, vocab, reject, known)
        kept_others = _events_ok(
            col, (*loc, "account_events"), lead.account_events, as_of, vocab, reject, known
        )
        for j, st in enumerate(lead.status_history):
            _before(col, (*loc, "status_history", j, "ts"), st.ts, as_of)
            _vocab(
                col,
                (*loc, "status_history", j, "status"),
                st.status,
                vocab.lead_statuses,
                "lead status",
            )
        for j, act in enumerate(lead.activities):
            _before(col, (*loc, "activities", j, "ts"), act.ts, as_of)
            _vocab(
                col,
                (*loc, "activities", j, "type"),
                act.type,
                vocab.activity_types,
                "activity type",
            )
        _check_closed(col, (*loc, "account_deals"), lead.account_deals, as_of)
        n_dropped = len(lead.events) - len(kept) + len(lead.account_events) - len(kept_others)
        dropped.append(n_dropped)
        if n_dropped:
            lead = lead.model_copy(update={"events": kept, "account_events": kept_others})
        kept_leads.append(lead)
    col.raise_if_any(422, "the leads")
    return kept_leads, dropped


def check_deals(
    deals: Sequence[DealIn],
    as_of: datetime,
    vocab: Vocabulary,
    attributes: Mapping[str, frozenset[str]] = NO_ATTRIBUTES,
    *,
    note: str = "",
) -> None:
    """Check every deal as of ``as_of``: each deal once, records before it, known
    stages/types, no stage-history row before the deal's created_at, no two
    stage-history rows at one time that disagree, account
    attributes the model reads (``attributes["deal_account"]``), and the deal still
    open at as_of (its last stage change before as_of is an open stage). ``note``: as
    :func:`check_leads`."""
    col = _Collector(as_of_note=note)
    _check_unique(col, ("deals",), [d.opportunity_id for d in deals], "opportunity_id", "deal")
    for i, deal in enumerate(deals):
        loc: Loc = ("deals", i)
        _before(col, (*loc, "created_at"), deal.created_at, as_of)
        _vocab(col, (*loc, "segment"), deal.segment, vocab.segments, "segment")
        _check_account(
            col,
            (*loc, "account"),
            deal.account,
            vocab,
            as_of,
            attributes.get("deal_account", frozenset()),
            "deal-close",
        )
        _check_same_time(
            col,
            (*loc, "stage_history"),
            deal.stage_history,
            ["stage", "amount", "expected_close_date"],
        )
        last = None
        for j, ch in enumerate(deal.stage_history):
            _before(col, (*loc, "stage_history", j, "ts"), ch.ts, as_of)
            if ch.ts < deal.created_at - CREATED_SLACK:
                col.add(
                    (*loc, "stage_history", j, "ts"),
                    "is more than a day before the deal's created_at; a deal's history "
                    "starts when it is "
                    "created (the time in stage and the deal's age are read from both): send "
                    "the deal's real created_at or leave out rows from before it",
                    "before_created",
                )
            _vocab(col, (*loc, "stage_history", j, "stage"), ch.stage, vocab.stages, "stage")
            if last is None or ch.ts >= last.ts:
                last = ch
        if last is not None and last.stage in vocab.closed_stages:
            col.add(
                (*loc, "stage_history"),
                f"the deal is already {last.stage} before as_of; only open deals are scored",
                "deal_closed",
            )
        for j, act in enumerate(deal.activities):
            _before(col, (*loc, "activities", j, "ts"), act.ts, as_of)
            _vocab(
                col,
                (*loc, "activities", j, "type"),
                act.type,
                vocab.activity_types,
                "activity type",
            )
        _check_closed(col, (*loc, "account_deals"), deal.account_deals, as_of)
        _check_closed(col, (*loc, "owner_deals"), deal.owner_deals, as_of)
    col.raise_if_any(422, "the deals")


def check_period(
    as_of: datetime,
    period_start: datetime | None,
    period_end: datetime | None,
    *,
    needs_start: bool = False,
) -> datetime:
    """A period that ends after as_of (and after its start); ``needs_start``: a
    forecast of given deals needs both ends. Returns the period's end."""
    col = _Collector()
    missing = [
        name
        for name, value in (("period_start", period_start), ("period_end", period_end))
        if value is None and (needs_start or name == "period_end")
    ]
    for name in missing:
        col.add((name,), "is required when deals are sent", "missing")
    col.raise_if_any(422, "the period")
    assert period_end is not None
    if period_start is not None and period_end <= period_start:
        col.add(("period_end",), "must be after period_start", "bad_period")
    if period_end <= as_of:
        col.add(("period_end",), f"must be after as_of ({as_of.isoformat()})", "bad_period")
    col.raise_if_any(422, "the period")
    return period_end
