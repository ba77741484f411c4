"""The issue's behavioural checks on models trained with the shipped specs and feature
catalog on a simulated company (test_behaviour.py checks on synthetic frames that the
model class learns each direction; these check the shipped models do not reverse them).

Audit: the shipped deal-close model scored a deal 10 days past its close date with no
activity for 30 days *above* the same deal due in 20 days with recent activity, for 94% of
the open late-stage deals: its shifted copy of the expected-close distance read "past due
at as-of" like "due soon, some weeks later", whose won hazard is high. The simulated
company is small (12,000 leads, 18 months), so only directions the simulator makes strong
are asserted as strict; the others as "not reversed"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from leadml.modeling.bundle import ScoringBundle


@dataclass
class Trained:
    deal: ScoringBundle
    deals: pd.DataFrame  # open late-stage deals of the last four weekly snapshots
    lead: ScoringBundle
    leads: pd.DataFrame  # open leads of the last snapshot


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from leadml.config import SimulatorConfig, load_settings
    from leadml.contracts import connect
    from leadml.features.catalog import load_catalog
    from leadml.features.datasets import deal_close_dataset, lead_readiness_dataset
    from leadml.modeling import workflow
    from leadml.modeling.train import train
    from leadml.simulate import simulate

    settings = load_settings()
    data = tmp_path_factory.mktemp("behaviour") / "data"
    sim = SimulatorConfig(leads=12_000, start="2024-01-01", end="2025-06-30", seed=3)
    simulate(sim, settings.vocabulary, data)
    con, _ = connect(data, settings.vocabulary)
    catalog = load_catalog(settings.config_file("features.yaml"), settings.vocabulary)
    bundles, frames = {}, {}
    for kind, build, every in (
        ("deal-close", deal_close_dataset, 7),
        ("lead-readiness", lead_readiness_dataset, 14),
    ):
        shipped = workflow.load_model_spec(settings, kind)
        # the shipped spec, one backtest fold instead of three (the final fit is the same)
        spec = shipped.model_copy(
            update={"backtest": shipped.backtest.model_copy(update={"origins": 1})}
        )
        frame, _ = build(con, catalog, every_days=every)
        bundles[kind] = ScoringBundle.from_training(train(frame, spec))
        frames[kind] = frame
    con.close()
    d = frames["deal-close"]
    deals = d[(d["as_of"] >= d["as_of"].max() - pd.Timedelta(days=21))]
    deals = deals[deals["stage"].isin(["evaluation", "negotiation", "approval"])]
    leads = frames["lead-readiness"]
    leads = leads[leads["as_of"] == leads["as_of"].max()]
    return Trained(
        bundles["deal-close"],
        deals.reset_index(drop=True),
        bundles["lead-readiness"],
        leads.reset_index(drop=True),
    )


def _p(bundle: ScoringBundle, frame: pd.DataFrame) -> np.ndarray:
    return bundle.score(frame)["probability"].to_numpy()


def test_a_deal_past_its_close_date_without_activity_does_not_score_higher(
    trained: Trained,
) -> None:
    deals = trained.deals
    assert len(deals) > 300  # the thresholds were set on this company (12,000 leads, seed 3)
    healthy = deals.assign(
        days_to_expected_close=20.0,
        days_past_expected_close=0.0,
        deal_activities_14d=4.0,
        deal_activities_30d=8.0,
        deal_meetings_30d=1.0,
        days_since_last_activity=2.0,
    )
    stale = deals.assign(
        days_to_expected_close=-10.0,
        days_past_expected_close=10.0,
        deal_activities_14d=0.0,
        deal_activities_30d=0.0,
        deal_meetings_30d=0.0,
        days_since_last_activity=30.0,
        activity_trend_14d_30d=0.0,
    )
    p_ok, p_stale = _p(trained.deal, healthy), _p(trained.deal, stale)
    # with the shifted copy: 0.534 against 0.498, lower for 6% of the deals
    assert p_stale.mean() <= p_ok.mean() + 0.005
    assert (p_stale <= p_ok + 1e-9).mean() > 0.6


def test_later_stage_deals_are_more_likely_won(trained: Trained) -> None:
    deals = trained.deals
    early = _p(trained.deal, deals.assign(stage="follow_up", stage_index=1))
    late = _p(trained.deal, deals.assign(stage="approval", stage_index=4))
    assert late.mean() > 2 * early.mean() and (late > early).mean() > 0.9


def test_more_pricing_page_views_raise_readiness(trained: Trained) -> None:
    leads = trained.leads
    base = _p(trained.lead, leads)
    more = _p(
        trained.lead,
        leads.assign(
            pricing_views_7d=leads["pricing_views_7d"] + 2,
            pricing_views_30d=leads["pricing_views_30d"] + 2,
            days_since_last_pricing_view=1.0,
        ),
    )
    assert more.mean() > 1.1 * base.mean() and (more >= base - 1e-12).mean() > 0.95


def test_attending_a_seminar_does_not_lower_readiness(trained: Trained) -> None:
    """Registered for a seminar: attended vs did not show (the simulator's seminar
    effect is small at this size, so "not lower")."""
    leads = trained.leads
    registered = leads.assign(seminar_registrations_90d=leads["seminar_registrations_90d"] + 1)
    attended = _p(
        trained.lead,
        registered.assign(seminar_attended_90d=registered["seminar_attended_90d"] + 1),
    )
    no_show = _p(
        trained.lead,
        registered.assign(seminar_no_shows_90d=registered["seminar_no_shows_90d"] + 1),
    )
    assert attended.mean() >= no_show.mean() and (attended >= no_show - 1e-12).mean() > 0.95


def test_ids_change_nothing(trained: Trained) -> None:
    deals, leads = trained.deals, trained.leads
    renamed = deals.assign(opportunity_id=[f"x{i}" for i in range(len(deals))])
    np.testing.assert_array_equal(_p(trained.deal, deals), _p(trained.deal, renamed))
    renamed_leads = leads.assign(lead_id=[f"y{i}" for i in range(len(leads))])
    np.testing.assert_array_equal(_p(trained.lead, leads), _p(trained.lead, renamed_leads))
