"""The in-process scorer: online features + champion bundles -> API answers.

Used by the BentoML service (``leadml.serving.service.LeadmlAPI``), by
the benchmark (``bench/bench_serving.py``) and by the parity tests. It holds the two
champion scoring bundles (:mod:`leadml.modeling.bundle`) and the feature catalog
they were trained with, and turns API tasks into scores:

* a lead as of T: its records (:mod:`leadml.serving.records`) -> the online feature
  engine (:mod:`leadml.features.online`, the catalog's definitions, records with
  ``ts < T`` only) -> the readiness bundle (calibrated probability, percentile
  against the training distribution, grade, reasons);
* a deal as of T: its records -> online features -> the deal-close bundle
  (P(won within the model horizon), P(won by the period end)) + hygiene flags.

Work is vectorised across a batch: features are computed per entity (they read
that entity's records only) and the model is called once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel

from leadml.config import Settings
from leadml.modeling.explain import render_reason, template_for
from leadml.serving.records import deal_payload, lead_payload
from leadml.serving.schemas import (
    BreakdownRow,
    DealIn,
    DealScore,
    ForecastRequest,
    ForecastResponse,
    HandoffDecision,
    HandoffResponse,
    HygieneFlag,
    LeadIn,
    LeadScore,
    ModelRef,
    Reason,
)

DAY_S = 86_400.0
Grade = Literal["A", "B", "C", "D"]
Decision = Literal["handoff", "nurture", "recycle_eligible", "not_eligible"]
TOP_REASONS = 3


class LeadTask(BaseModel):
    """One lead to score as of a time (a checked request's lead)."""

    as_of: datetime
    lead: LeadIn
    ignored_events: int = 0


class DealTask(BaseModel):
    """One open deal to score as of a time, with the period asked about."""

    as_of: datetime
    period_end: datetime
    period_start: datetime | None = None
    deal: DealIn


@dataclass
class ServedModel:
    """A champion bundle with its registry identity."""

    kind: str  # "lead_readiness" | "deal_close"
    registry_name: str
    registry_version: str
    bundle: Any
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.registry_name, version=self.registry_version)


def load_bundle(path: str | Path) -> Any:
    """The scoring bundle saved as an MLflow model at ``path`` (a local directory)."""
    from leadml.modeling.bundle import ScoringBundle

    return ScoringBundle.load(str(path))


class Scorer:
    """Scores leads and deals with the champion bundles; no I/O after loading."""

    def __init__(self, readiness: ServedModel, deal: ServedModel, settings: Settings) -> None:
        self.readiness = readiness
        self.deal = deal
        self.settings = settings
        lead_catalog = catalog_of(readiness.bundle, settings)
        deal_catalog = catalog_of(deal.bundle, settings)
        self._lead_engine = _online_engine(readiness.bundle, "lead", lead_catalog)
        self._readiness = FastReadiness(readiness.bundle)
        self._deal_engine = _online_engine(deal.bundle, "opportunity", deal_catalog)
        # Per model, the values each categorical feature saw in training: free-text
        # attributes (source, country, ...) and states (lead status, deal stage) alike. A
        # status can be a valid vocabulary word and still unseen: the readiness model is
        # trained on open leads, so sql / disqualified (and statuses the training data
        # happened not to hold) are outside what it knows and read as missing.
        self._known = {m.kind: known_categories(m.bundle) for m in (readiness, deal)}
        self._status_feature = status_feature(lead_catalog, self._known["lead_readiness"])
        # The extra columns (``attributes``) each request object may carry: those the
        # models' catalogs read; anything else is refused (a typo must not be ignored).
        self.attribute_names: dict[str, frozenset[str]] = {
            "lead": extra_columns(lead_catalog, "lead", "lead"),
            "lead_account": extra_columns(lead_catalog, "lead", "account"),
            "deal_account": extra_columns(deal_catalog, "opportunity", "account"),
        }

    # ---- construction

    @classmethod
    def from_store(cls, readiness_stored: Any, deal_stored: Any, settings: Settings) -> Scorer:
        """Load the two models held in the BentoML store (``bentoml.Model`` objects
        imported by :mod:`leadml.serving.store`)."""
        return cls(
            _served("lead_readiness", readiness_stored),
            _served("deal_close", deal_stored),
            settings,
        )

    def describe(self) -> str:
        return (
            f"{self.readiness.registry_name} v{self.readiness.registry_version}, "
            f"{self.deal.registry_name} v{self.deal.registry_version}"
        )

    def metadata(self) -> dict[str, Any]:
        """What /metadata shows about each model."""
        out: dict[str, Any] = {}
        for m in (self.readiness, self.deal):
            out[m.kind] = {
                "name": m.registry_name,
                "version": m.registry_version,
                **_bundle_info(m.bundle),
            }
        return out

    # ---- features

    def deal_features(self, tasks: Sequence[DealTask]) -> pd.DataFrame:
        """One row of the deal-close model's features per task, as of its as_of."""
        rows = self._deal_engine([(deal_payload(t.deal), t.as_of) for t in tasks])
        return _frame(rows, self.deal.bundle)

    # ---- scoring

    def score_leads(self, tasks: Sequence[LeadTask]) -> list[LeadScore]:
        """Readiness of each lead as of its task's as_of (one model call per batch)."""
        if not tasks:
            return []
        rows = self._lead_engine([(lead_payload(t.lead), t.as_of) for t in tasks])
        p, pct, grades, why = self._readiness.score(rows)
        unseen = unseen_values(rows, self._known["lead_readiness"])
        status = self._status_feature
        ref = self.readiness.ref
        return [
            LeadScore(
                lead_id=t.lead.lead_id,
                readiness=_prob(p[i]),
                percentile=float(np.clip(pct[i], 0, 100)),
                grade=cast(Grade, str(grades[i])),
                reasons=why[i],
                ignored_events=t.ignored_events,
                unseen_values=unseen[i],
                unseen_status=str(rows[i][status]) if status in unseen[i] else None,
                model=ref,
            )
            for i, t in enumerate(tasks)
        ]

    def score_deals(self, tasks: Sequence[DealTask]) -> list[DealScore]:
        """P(won within the model horizon) and P(won by the period end) of each deal as
        of its task's as_of, with reasons and hygiene flags."""
        if not tasks:
            return []
        X = self.deal_features(tasks)
        bundle = self.deal.bundle
        unseen = unseen_values(X.to_dict("records"), self._known["deal_close"])
        # the model reads an unseen value as missing; so do the reasons (never one)
        X = read_as_missing(X, unseen)
        days = np.array([(t.period_end - t.as_of).total_seconds() / DAY_S for t in tasks])
        starts = [t.period_start for t in tasks]
        h0 = None
        if any(s is not None and s > t.as_of for s, t in zip(starts, tasks, strict=True)):
            h0 = np.array(
                [
                    max((s - t.as_of).total_seconds() / DAY_S, 0.0) if s is not None else 0.0
                    for s, t in zip(starts, tasks, strict=True)
                ]
            )
        p_won, by_end, before_start = won_by_horizons(bundle, X, days, h0)
        why = bundle.explain(X, k=TOP_REASONS)
        ref = self.deal.ref
        alerts = self.settings.forecast.alerts
        out = []
        for i, t in enumerate(tasks):
            p_end = _prob(by_end[i])
            p_in = (
                p_end if before_start is None else _prob(max(p_end - float(before_start[i]), 0.0))
            )
            out.append(
                DealScore(
                    opportunity_id=t.deal.opportunity_id,
                    stage=_stage_at(t.deal),
                    p_won=_prob(p_won[i]),
                    horizon_days=int(bundle.model.horizon_days),
                    p_won_by_period_end=p_end,
                    p_won_in_period=p_in,
                    reasons=_reasons(why[i]),
                    hygiene_flags=hygiene_flags(t.deal, t.as_of, alerts),
                    unseen_values=unseen[i],
                    model=ref,
                )
            )
        return out


# ---------------------------------------------------------------- adapters


def _served(kind: str, stored: Any) -> ServedModel:
    labels = stored.info.labels
    path = stored.path_of("mlflow_model")
    return ServedModel(
        kind,
        labels.get("registry_name", kind),
        str(labels.get("registry_version", "0")),
        load_bundle(path),
    )


def _bundle_info(bundle: Any) -> dict[str, Any]:
    meta = dict(getattr(bundle, "meta", {}) or {})
    spec = meta.get("spec") or {}
    info: dict[str, Any] = {
        "kind": bundle.kind,
        "training_window": meta.get("data_window"),
        "rows": meta.get("rows"),
        "feature_hash": meta.get("feature_hash"),
        "features": list(bundle.features),
        "horizon_days": (spec.get("target") or {}).get("horizon_days"),
    }
    info["categories"] = {f: sorted(known) for f, known in known_categories(bundle).items()}
    if bundle.kind == "lead_readiness":
        info["grade_cutoffs"] = bundle.grade_cutoffs
        info["policy"] = spec.get("policy")
    return info


def known_categories(bundle: Any) -> dict[str, frozenset[str]]:
    """Per categorical feature, the values the model saw in training."""
    cats = bundle.model.encoder.categories_
    return {f: frozenset(str(c) for c in values) for f, values in cats.items()}


def status_feature(catalog: Any, known: Mapping[str, frozenset[str]]) -> str | None:
    """The model's feature holding the lead's status at as_of (a categorical state), if
    it reads one."""
    from leadml.features.catalog import StateFeature

    return next(
        (
            f.name
            for f in catalog.features("lead")
            if isinstance(f, StateFeature) and f.state == "status" and f.name in known
        ),
        None,
    )


def unseen_values(
    rows: Sequence[Mapping[str, Any]], known: Mapping[str, frozenset[str]]
) -> list[list[str]]:
    """Per row, the categorical features (attributes and states: source, country, lead
    status, deal stage) whose present value is not one the model saw in training: the
    model reads them as missing, which the caller should hear about."""
    return [
        [f for f, values in known.items() if not _missing(v := row.get(f)) and str(v) not in values]
        for row in rows
    ]


def read_as_missing(X: pd.DataFrame, unseen: Sequence[Sequence[str]]) -> pd.DataFrame:
    """``X`` with each row's ``unseen`` values set to missing, as the model's encoder reads
    them (predictions are unchanged; reasons then never cite a value the model did not
    use)."""
    if not any(unseen):
        return X
    X = X.copy()
    for i, features in enumerate(unseen):
        for f in features:
            X.at[X.index[i], f] = None
    return X


def won_by_horizons(
    bundle: Any, X: pd.DataFrame, days: np.ndarray, before_days: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Calibrated P(won) of each deal within the model's horizon, by ``days`` after as_of
    and (when given) by ``before_days``, from ONE evaluation of the hazard model: the
    per-period hazards do not depend on the horizon, so each probability is the same
    :meth:`DealCloseModel.predict_proba` computes, without predicting the hazards again
    per horizon (each prediction is most of a deal's fixed scoring cost)."""
    from leadml.modeling.train import won_by

    model = bundle.model
    bundle.check_input(X)
    hazards = model.hazards(X)

    def at(horizon: float | np.ndarray) -> np.ndarray:
        return np.asarray(model.calibrator.predict(won_by(hazards, horizon, model.week_days)))

    before = None if before_days is None else at(before_days)
    return at(float(model.horizon_days)), at(days), before


def catalog_of(bundle: Any, settings: Settings) -> Any:
    """The feature catalog the bundle was trained with (else the configured one)."""
    from leadml.features.catalog import load_catalog, parse_catalog

    if bundle.catalog:
        return parse_catalog(
            bundle.catalog, settings.vocabulary, f"catalog of the {bundle.name} bundle"
        )
    return load_catalog(settings.config_file("features.yaml"), settings.vocabulary)


def extra_columns(catalog: Any, entity: str, table: str) -> frozenset[str]:
    """The extra (non-contract) columns of ``table`` that ``entity``'s features read."""
    return frozenset(
        f.column
        for f in catalog.features(entity)
        if f.kind == "attribute" and f.extra and f.table == table
    )


def _online_engine(bundle: Any, entity: str, catalog: Any) -> Any:
    """A function [(payload, as_of), ...] -> [{feature: value}, ...] over the bundle's
    catalog (the entities of one call are computed together, see
    :func:`leadml.features.online.compute_online_many`)."""
    from leadml.errors import ConfigError
    from leadml.features.online import compute_online_many

    missing = [f for f in bundle.features if f not in catalog.names(entity)]
    if missing:
        raise ConfigError(
            f"the {bundle.name} bundle uses features its catalog does not define: "
            f"{', '.join(missing)}; retrain it with the current configs/features.yaml"
        )

    def compute(items: Sequence[tuple[dict[str, Any], datetime]]) -> list[dict[str, Any]]:
        return compute_online_many(catalog, entity, [(as_of, p) for p, as_of in items])

    return compute


def _frame(rows: list[dict[str, Any]], bundle: Any) -> pd.DataFrame:
    """Feature rows as the offline engine types them: numbers float64 (NaN = missing),
    categories strings (None = missing)."""
    data: dict[str, Any] = {}
    for f in bundle.features:
        values = [r.get(f) for r in rows]
        if f in bundle.categories:
            data[f] = pd.Series([None if v is None else str(v) for v in values], dtype=object)
        else:
            data[f] = pd.Series(
                [np.nan if v is None else float(v) for v in values], dtype="float64"
            )
    return pd.DataFrame(data)


def _prob(value: Any) -> float:
    return float(np.clip(float(value), 0.0, 1.0))


def _reasons(found: dict[str, list[dict[str, Any]]]) -> list[Reason]:
    """Reasons for and against, strongest first."""
    items = [*found.get("positive", []), *found.get("negative", [])]
    items.sort(key=lambda r: -abs(float(r["contribution"])))
    return [
        Reason(feature=r["feature"], text=r["text"], contribution=float(r["contribution"]))
        for r in items
    ]


def _stage_at(deal: Any) -> str:
    return max(deal.stage_history, key=lambda h: h.ts).stage


class FastReadiness:
    """The readiness bundle's scoring on plain numpy, for small online batches.

    Same booster, calibrator, percentile reference, grade cut-offs and reason
    templates as :meth:`ScoringBundle.score` / :meth:`ScoringBundle.explain` (the
    parity tests hold the two equal), without the pandas round trips that dominate
    the cost of scoring one row: categories become the codes of the categories
    fixed at training (unseen or missing = NaN, as LightGBM's pandas path does) and
    LightGBM predicts single-threaded (OpenMP threads only add latency to tiny inputs).
    """

    def __init__(self, bundle: Any, k: int = TOP_REASONS) -> None:
        self.bundle = bundle
        self.features = list(bundle.features)
        model = bundle.model
        self.booster = model.booster
        self.rounds = model.rounds
        self.calibrator = model.calibrator
        self.codes = {
            f: {c: float(i) for i, c in enumerate(cats)}
            for f, cats in model.encoder.categories_.items()
        }
        self.cutoffs = bundle.grade_cutoffs
        self.templates = dict(bundle.templates)
        self.k = k

    def matrix(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        X = np.full((len(rows), len(self.features)), np.nan)
        for i, row in enumerate(rows):
            for j, f in enumerate(self.features):
                v = row.get(f)
                if v is None:
                    continue
                codes = self.codes.get(f)
                if codes is not None:
                    X[i, j] = codes.get(str(v), np.nan)
                else:
                    X[i, j] = float(v)
        return X

    def score(
        self, rows: Sequence[dict[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[list[Reason]]]:
        """Calibrated probability, percentile, grade and top reasons per feature row."""
        from leadml.modeling.policy import grade

        X = self.matrix(rows)
        raw = self.booster.predict(X, num_iteration=self.rounds, num_threads=1)
        p = self.calibrator.predict(raw)
        pct = self.bundle.percentile(p)
        grades = list(grade(p, self.cutoffs)) if self.cutoffs else ["D"] * len(p)
        contrib = self.booster.predict(
            X, num_iteration=self.rounds, pred_contrib=True, num_threads=1
        )
        return p, pct, grades, [self._reasons(rows[i], contrib[i, :-1]) for i in range(len(rows))]

    def _read_as_missing(self, row: Mapping[str, Any], j: int) -> bool:
        """The model reads the feature as missing: no value, or a category it never saw."""
        f = self.features[j]
        value = row.get(f)
        codes = self.codes.get(f)
        return _missing(value) or (codes is not None and str(value) not in codes)

    def _reasons(self, row: dict[str, Any], c: np.ndarray) -> list[Reason]:
        # as leadml.modeling.explain.top_reasons: k largest positive, k most negative, and
        # a feature the model reads as missing is not a reason (it gives a rep nothing to
        # act on): no value, or a value it never saw in training (a lead status such as
        # disqualified, a misspelt source), whose contribution is that of a missing value
        order = [j for j in np.argsort(-c, kind="stable") if not self._read_as_missing(row, j)]
        pos = [j for j in order if c[j] > 1e-6][: self.k]
        neg = [j for j in reversed(order) if c[j] < -1e-6][: self.k]
        chosen = sorted([*pos, *neg], key=lambda j: -abs(c[j]))
        out = []
        for j in chosen:
            f = self.features[j]
            value = row.get(f)
            if value is not None and f not in self.codes:
                value = float(value)
            out.append(
                Reason(
                    feature=f,
                    text=render_reason(f, *template_for(self.templates, f, value)),
                    contribution=float(c[j]),
                )
            )
        return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------- hygiene


def hygiene_flags(deal: Any, as_of: datetime, alerts: Any) -> list[HygieneFlag]:
    """Deal-hygiene flags as of ``as_of`` from the deal's own history, with the rule
    names and thresholds of the nightly alerts (:mod:`leadml.forecast.alerts`,
    ``forecast.alerts`` in the configuration): ``past_close_date`` (expected close
    date before the as-of day), ``stale`` (no change in the deal's history, nor with
    ``stale_counts_activities`` an activity, for ``stale_days``), ``close_date_pushed``
    (moved later ``close_date_pushes`` times or more). The rules that need other deals
    or a score history stay in the nightly run."""
    hist = sorted(deal.stage_history, key=lambda h: h.ts)
    last = hist[-1]
    day = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    flags = []
    if last.expected_close_date < day:
        overdue = int((day - last.expected_close_date).total_seconds() // 86400)
        flags.append(
            HygieneFlag(
                rule="past_close_date",
                message=f"expected close date {last.expected_close_date:%Y-%m-%d} passed "
                f"{overdue} day(s) ago",
            )
        )
    touched, what = last.ts, "update"
    if alerts.stale_counts_activities:
        touched = max([last.ts, *(a.ts for a in deal.activities if a.ts < as_of)])
        what = "update or activity"
    idle = (as_of - touched).total_seconds() / 86400.0
    if idle >= alerts.stale_days:
        flags.append(
            HygieneFlag(
                rule="stale",
                message=f"no {what} for {int(idle)} days (last "
                f"{'touch' if alerts.stale_counts_activities else 'change'} {touched:%Y-%m-%d}; "
                f"threshold {alerts.stale_days})",
            )
        )
    pushes = sum(
        1
        for a, b in zip(hist, hist[1:], strict=False)
        if b.expected_close_date > a.expected_close_date
    )
    if pushes >= alerts.close_date_pushes:
        flags.append(
            HygieneFlag(
                rule="close_date_pushed",
                message=f"expected close date pushed {pushes} times "
                f"(now {last.expected_close_date:%Y-%m-%d}; threshold {alerts.close_date_pushes})",
            )
        )
    return flags


# ---------------------------------------------------------------- hand-off


def policy_of(readiness_info: dict[str, Any]) -> Any:
    """The hand-off policy the readiness champion was trained with (its model spec)."""
    from leadml.modeling.spec import PolicySpec

    return PolicySpec.model_validate(readiness_info.get("policy") or {})


def decide_handoff(
    scores: Sequence[LeadScore],
    capacity_slots: int,
    as_of: datetime,
    policy: Any,
    *,
    statuses: Sequence[str | None],
    eligible: Sequence[str],
) -> HandoffResponse:
    """Fill the IS slots left this week with the leads of highest readiness
    (:func:`leadml.modeling.policy.handoff`); the others are nurtured, or recycle-eligible
    below the policy's ``recycle_below``. Only leads whose status at as_of
    (``statuses``) is one of ``eligible`` (``batch.call_list_statuses``, as the nightly
    call list) compete for the slots; the rest are ``not_eligible``, ranked after them.
    An eligible lead whose status the readiness model never saw (``unseen_status``: its
    readiness is an extrapolation, "do not route on it") competes for no slot either: it
    is ``nurture``, ranked after the leads that compete, with a reason saying why.
    Equal readiness is ordered by lead_id (as the nightly call list), never by the order
    of the request."""
    from leadml.modeling.policy import handoff

    ok = [st in eligible for st in statuses]
    competing = [good and not s.unseen_status for s, good in zip(scores, ok, strict=True)]
    candidates = [s for s, good in zip(scores, competing, strict=True) if good]
    frame = pd.DataFrame(
        {
            "readiness": [s.readiness for s in candidates],
            "lead_id": [s.lead_id for s in candidates],
        }
    )
    out = handoff(frame, float(capacity_slots), policy)
    places = int(capacity_slots // policy.slots_per_lead)
    decisions = []
    for i, s in enumerate(candidates):
        rank = int(out["rank"].iat[i])
        decision = str(out["decision"].iat[i])
        if decision == "handoff":
            head = f"rank {rank} by readiness is within the {places} leads IS can take this week"
        elif decision == "recycle":
            head = (
                f"readiness {s.readiness:.3f} is below the recycle threshold "
                f"{policy.recycle_below:g} and IS has no place for it"
            )
        else:
            head = f"rank {rank} by readiness is beyond the {places} leads IS can take this week"
        decisions.append(
            HandoffDecision(
                lead_id=s.lead_id,
                decision=cast(Decision, "recycle_eligible" if decision == "recycle" else decision),
                readiness=s.readiness,
                grade=s.grade,
                rank=rank,
                reasons=[head, *(r.text for r in s.reasons if r.contribution > 0)],
                ignored_events=s.ignored_events,
            )
        )
    unseen = sorted(
        (i for i, (good, comp) in enumerate(zip(ok, competing, strict=True)) if good and not comp),
        key=lambda i: (-scores[i].readiness, scores[i].lead_id),
    )
    for k, i in enumerate(unseen):
        s = scores[i]
        decisions.append(
            HandoffDecision(
                lead_id=s.lead_id,
                decision="nurture",
                readiness=s.readiness,
                grade=s.grade,
                rank=len(candidates) + k + 1,
                reasons=[
                    f"not handed off: status {s.unseen_status} was not in the readiness "
                    "model's training data, so its readiness is an extrapolation (the model "
                    "reads the status as missing); review the lead by hand",
                    *(r.text for r in s.reasons if r.contribution > 0),
                ],
                ignored_events=s.ignored_events,
                unseen_status=s.unseen_status,
            )
        )
    others = sorted(
        (i for i, good in enumerate(ok) if not good),
        key=lambda i: (-scores[i].readiness, scores[i].lead_id),
    )
    for k, i in enumerate(others):
        s, status = scores[i], statuses[i] or "unknown (created after as_of)"
        decisions.append(
            HandoffDecision(
                lead_id=s.lead_id,
                decision="not_eligible",
                readiness=s.readiness,
                grade=s.grade,
                rank=len(candidates) + len(unseen) + k + 1,
                reasons=[
                    f"status {status} is not one inside sales calls "
                    f"(batch.call_list_statuses: {', '.join(eligible)})",
                    *(r.text for r in s.reasons if r.contribution > 0),
                ],
                ignored_events=s.ignored_events,
                unseen_status=s.unseen_status,
            )
        )
    decisions.sort(key=lambda d: d.rank)
    handed = sum(d.decision == "handoff" for d in decisions)
    left = max(capacity_slots - int(round(handed * policy.slots_per_lead)), 0)
    return HandoffResponse(
        as_of=as_of,
        is_capacity=capacity_slots,
        slots_per_lead=float(policy.slots_per_lead),
        capacity_left=left,
        decisions=decisions,
        model=scores[0].model,
    )


# ---------------------------------------------------------------- forecast


def forecast_from_scores(
    request: ForecastRequest, as_of: datetime, scores: Sequence[DealScore], max_cells: int = 1 << 14
) -> ForecastResponse:
    """Revenue in the period = won_amount + sum over deals of Bernoulli(p_i) * amount_i,
    with p_i = P(won within the period) from the deal-close model (independent deals)."""
    from leadml.forecast.distribution import open_deals

    deals = request.deals
    assert deals is not None and request.period_start is not None and request.period_end
    amounts = np.array([max(d.stage_history, key=lambda h: h.ts).amount for d in deals])
    probs = np.array(
        [
            s.p_won_in_period if s.p_won_in_period is not None else s.p_won_by_period_end
            for s in scores
        ]
    )
    dist = open_deals(amounts, probs, max_cells=max_cells).shift(request.won_amount)
    p10, p50, p90 = (float(v) for v in np.atleast_1d(dist.quantile([0.1, 0.5, 0.9])))
    target = request.target
    stages = [s.stage for s in scores]
    segments = [d.segment for d in deals]
    open_expected = float(np.dot(amounts, probs))
    model = scores[0].model
    return ForecastResponse(
        source="deals",
        probability_source=f"{model.name} v{model.version}",
        as_of=as_of,
        period_start=request.period_start,
        period_end=request.period_end,
        p10=p10,
        p50=p50,
        p90=p90,
        # exact (the grid's mean is off by up to its rounding error bound), so that the
        # mean is the won amount plus the breakdown's expected values
        mean=request.won_amount + open_expected,
        won_amount=request.won_amount,
        open_expected=open_expected,
        new_expected=0.0,
        target=target,
        p_reach_target=None if target is None else dist.prob_at_least(target),
        by_stage=_breakdown(stages, amounts, probs),
        by_segment=_breakdown(segments, amounts, probs),
        model=model,
    )


def _breakdown(groups: Sequence[str], amounts: np.ndarray, probs: np.ndarray) -> list[BreakdownRow]:
    out = []
    for g in sorted(set(groups)):
        mask = np.array([x == g for x in groups])
        out.append(
            BreakdownRow(
                group=g,
                deals=int(mask.sum()),
                amount=float(amounts[mask].sum()),
                expected=float((amounts[mask] * probs[mask]).sum()),
            )
        )
    return out
