"""API payloads as feature-engine inputs.

A lead or deal in a request carries its raw records (events, status changes,
activities, account, colleagues' events, the account's / owner's closed deals).

* :func:`lead_payload` / :func:`deal_payload` lay them out as the payload of the
  online engine (:mod:`leadml.features.online`): rows for the entity and its
  account, and record tables as column mappings (timestamps as int microseconds
  since the epoch, the engine's fast path).

A closed deal sent with a lead/deal is the closing of another opportunity (its
``closed_at``, stage and amount: the only record the outcome features read).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Any

import numpy as np

from leadml.serving.schemas import AccountIn, ClosedDealIn, DealIn, LeadIn

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _us(values: Sequence[datetime]) -> np.ndarray:
    deltas = map(operator.sub, values, repeat(_EPOCH))
    return np.fromiter(
        map(operator.floordiv, deltas, repeat(_US)), dtype=np.int64, count=len(values)
    )


def account_id_of(lead: LeadIn) -> str:
    """The lead's account id; a lead sent without an account gets a private one."""
    return lead.account.account_id if lead.account is not None else f"__no_account__{lead.lead_id}"


def _account_row(account: AccountIn | None, account_id: str) -> dict[str, Any]:
    if account is None:
        return {
            "account_id": account_id,
            "industry": None,
            "employees": None,
            "country": None,
            "segment": None,
            "created_at": None,
        }
    return {
        **dict(account.attributes),
        "account_id": account.account_id,
        "industry": account.industry,
        "employees": account.employees,
        "country": account.country,
        "segment": account.segment,
        "created_at": account.created_at,
    }


def _lead_row(lead: LeadIn) -> dict[str, Any]:
    return {
        **dict(lead.attributes),
        "lead_id": lead.lead_id,
        "account_id": account_id_of(lead),
        "created_at": lead.created_at,
        "source": lead.source,
        "job_level": lead.job_level,
    }


def _events(events: Sequence[Any], lead_id: str | None) -> dict[str, Any]:
    return {
        "ts": _us([e.ts for e in events]),
        "lead_id": [lead_id if lead_id is not None else e.lead_id for e in events],
        "type": [e.type for e in events],
        "page_category": [e.page_category for e in events],
        "campaign_id": [e.campaign_id for e in events],
    }


def _activities(acts: Sequence[Any]) -> dict[str, Any]:
    return {
        "ts": _us([a.ts for a in acts]),
        "type": [a.type for a in acts],
        "rep_id": [a.rep_id for a in acts],
    }


def _closed(deals: Sequence[ClosedDealIn], skip: str | None = None) -> dict[str, Any]:
    kept = [d for d in deals if d.opportunity_id != skip]
    return {
        "opportunity_id": [d.opportunity_id for d in kept],
        "ts": _us([d.closed_at for d in kept]),
        "stage": [d.stage for d in kept],
        "amount": np.array([d.amount for d in kept], dtype=float),
    }


def lead_payload(lead: LeadIn) -> dict[str, Any]:
    """The online engine's payload for one lead (see
    :func:`leadml.features.online.compute_lead_features_online`)."""
    return {
        "lead": _lead_row(lead),
        "account": _account_row(lead.account, account_id_of(lead))
        if lead.account is not None
        else None,
        "events": _events(lead.events, lead.lead_id),
        "status_history": {
            "ts": _us([s.ts for s in lead.status_history]),
            "status": [s.status for s in lead.status_history],
        },
        "activities": _activities(lead.activities),
        "account_events": _events(lead.account_events, None),
        "account_closed_deals": _closed(lead.account_deals),
    }


def deal_payload(deal: DealIn) -> dict[str, Any]:
    """The online engine's payload for one deal (see
    :func:`leadml.features.online.compute_opportunity_features_online`)."""
    hist = deal.stage_history
    return {
        "opportunity": {
            "opportunity_id": deal.opportunity_id,
            "account_id": deal.account_id,
            "lead_id": deal.lead_id,
            "owner_id": deal.owner_id,
            "created_at": deal.created_at,
            "segment": deal.segment,
        },
        "account": _account_row(deal.account, deal.account_id)
        if deal.account is not None
        else None,
        "history": {
            "ts": _us([h.ts for h in hist]),
            "stage": [h.stage for h in hist],
            "amount": np.array([h.amount for h in hist], dtype=float),
            "expected_close_date": _us([h.expected_close_date for h in hist]),
        },
        "activities": _activities(deal.activities),
        "owner_closed_deals": _closed(deal.owner_deals, deal.opportunity_id),
        "account_closed_deals": _closed(deal.account_deals, deal.opportunity_id),
    }
