"""The deal-close model as the forecast's probability source, point in time at earlier
as-of dates (so the nightly forecast measures the shared quarter shock on the model's own
past forecasts): nothing at or after an as-of is read, later dates are refused, and the
nightly wiring gives the forecast a measured shock."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_forecast_backtest import AS_OF, LIGHT, _con, deal_book

from leadml.batch.nightly import score_deals
from leadml.config import Vocabulary, load_settings
from leadml.features.catalog import load_catalog
from leadml.features.offline import compute_features
from leadml.forecast.deals import DealHistory, ForecastError
from leadml.forecast.forecast import forecast
from leadml.forecast.modelsource import ModelProbabilities

EARLIER = pd.Timestamp("2025-08-11", tz="UTC")
END = pd.Timestamp("2025-10-01", tz="UTC")


class HazardModel:
    """A transparent deal-close model: a weekly win hazard from every numeric feature, so
    any change in any feature changes the probability."""

    name = "deal_close"
    version = "3"

    def __init__(self) -> None:
        self.calls = 0

    def _hazard(self, features: pd.DataFrame) -> np.ndarray:
        x = features.drop(columns=["opportunity_id", "as_of"]).select_dtypes("number")
        z = np.log1p(np.abs(x.astype("float64").fillna(0.0).to_numpy())).sum(axis=1)
        return 0.2 / (1.0 + np.exp(-(z / 10.0 - 3.0)))

    def won_by(self, features: pd.DataFrame, horizon_days: np.ndarray) -> np.ndarray:
        self.calls += 1
        weeks = np.asarray(horizon_days, dtype="float64") / 7.0
        return 1.0 - (1.0 - self._hazard(features)) ** weeks

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return self.won_by(features, np.full(len(features), 90.0))

    def grade(self, probability: np.ndarray) -> None:
        return None


@pytest.fixture(scope="module")
def book() -> dict[str, pd.DataFrame]:
    return deal_book()


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    return load_catalog(load_settings().config_file("features.yaml"), Vocabulary())


def _source(frames: dict[str, pd.DataFrame], catalog, **kw):  # type: ignore[no-untyped-def]
    con = _con(frames)
    return con, ModelProbabilities(HazardModel(), catalog, DealHistory(con, Vocabulary()), **kw)


def _tonight(frames: dict[str, pd.DataFrame], catalog):  # type: ignore[no-untyped-def]
    """As the nightly run as of AS_OF: the open deals, their features, the model and the
    forecast source ``score_deals`` gives."""
    con = _con(frames)
    history = DealHistory(con, Vocabulary())
    deals = history.snapshot(AS_OF)
    feats = compute_features(
        con, catalog, "opportunity", deals[["opportunity_id"]].assign(as_of=AS_OF)
    )
    model = HazardModel()
    _, source = score_deals(model, feats, deals, AS_OF, catalog=catalog, history=history)
    return con, history, deals, feats, model, source


def _rewrite_from(frames: dict[str, pd.DataFrame], t: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Every history row at or after ``t`` becomes a win at ten times the amount, a week
    earlier close date; three big deals appear at ``t``."""
    changed = {k: v.copy() for k, v in frames.items()}
    h = changed["opportunity_history"]
    late = h["ts"] >= t
    assert late.sum() > 20  # the test would be vacuous otherwise
    h.loc[late, "stage"] = "closed_won"
    h.loc[late, "amount"] *= 10
    h.loc[late, "expected_close_date"] = h.loc[late, "ts"].dt.normalize()
    extra = changed["opportunities"].iloc[:3].copy()
    extra["opportunity_id"] = ["x1", "x2", "x3"]
    extra["created_at"] = t
    changed["opportunities"] = pd.concat([changed["opportunities"], extra], ignore_index=True)
    changed["opportunity_history"] = pd.concat(
        [
            h,
            pd.DataFrame(
                {
                    "opportunity_id": ["x1", "x2", "x3"],
                    "ts": t,
                    "stage": "approval",
                    "amount": 5e6,
                    "expected_close_date": t,
                }
            ),
        ],
        ignore_index=True,
    )
    return changed


def test_an_earlier_as_of_reads_nothing_at_or_after_it(book, catalog) -> None:  # type: ignore[no-untyped-def]
    con, source = _source(book, catalog)
    before = source(con, EARLIER, END)
    later = source(con, AS_OF, pd.Timestamp("2026-01-01", tz="UTC"))
    con2, changed = _source(_rewrite_from(book, EARLIER), catalog)
    after = changed(con2, EARLIER, END)
    pd.testing.assert_frame_equal(before, after)
    assert len(before) > 20 and before["p_won_by"].between(0, 1).all()
    # Not vacuous: the rewrite does change what is open (and scored) later on.
    assert not later.equals(changed(con2, AS_OF, pd.Timestamp("2026-01-01", tz="UTC")))
    # The deals are those open then, with their features as of then (not tonight's).
    assert set(before["opportunity_id"]) == set(
        DealHistory(con, Vocabulary()).snapshot(EARLIER)["opportunity_id"]
    )
    both = set(before["opportunity_id"]) & set(later["opportunity_id"])
    feats_then, feats_now = source.features_at(con, EARLIER), source.features_at(con, AS_OF)
    then = feats_then.set_index("opportunity_id").loc[sorted(both), "deal_age_days"]
    now = feats_now.set_index("opportunity_id").loc[sorted(both), "deal_age_days"]
    assert (now > then).all()


def test_one_query_for_many_dates_equals_one_per_date(book, catalog) -> None:  # type: ignore[no-untyped-def]
    dates = [EARLIER - pd.Timedelta(days=7 * k) for k in range(3)]
    con, single = _source(book, catalog)
    _, batched = _source(book, catalog)
    batched.prefetch(con, dates)
    for t in dates:
        pd.testing.assert_frame_equal(single(con, t, END), batched(con, t, END))


def test_the_nightly_source_measures_the_quarter_shock_and_refuses_later_dates(
    book, catalog
) -> None:  # type: ignore[no-untyped-def]
    con, history, deals, feats, model, source = _tonight(book, catalog)
    r = forecast(
        con, as_of=AS_OF, period="2025Q4", deal_probabilities=source, config=LIGHT, history=history
    )
    # Earlier quarters at the same moment were scored: the shock is measured on them.
    assert r.shock_periods >= 2
    assert r.probability_source == "deal_close v3"
    # Tonight's features are the ones scored (reused, not recomputed): whole model weeks
    # up to the quarter end, plus the share of the week that holds it measured on the
    # earlier quarters' wins.
    end = pd.Timestamp("2026-01-01", tz="UTC")
    days = (end - AS_OF).days
    full, rest = days // 7 * 7, days % 7
    lo = model.won_by(feats, np.full(len(feats), float(full)))
    hi = model.won_by(feats, np.full(len(feats), float(full + 7)))
    p = lo + (source.boundary_share(AS_OF, end, rest) * (hi - lo) if rest else 0)
    amounts = deals.set_index("opportunity_id").loc[feats["opportunity_id"], "amount"]
    assert r.total.open_expected == pytest.approx(p @ amounts.to_numpy(float))
    with pytest.raises(ForecastError, match="at the latest"):
        source(con, AS_OF + pd.Timedelta(days=1), pd.Timestamp("2026-01-01", tz="UTC"))
    # Without the catalog and history the source knows tonight only: deals independent.
    _, tonight_only = score_deals(model, feats, deals, AS_OF)
    r0 = forecast(
        con,
        as_of=AS_OF,
        period="2025Q4",
        deal_probabilities=tonight_only,
        config=LIGHT,
        history=history,
    )
    assert r0.shock_periods == 0 and r0.shock_sd == 0.0
    # ... and without the history the quarter-end week's share is the linear one
    linear = model.won_by(feats, np.full(len(feats), float(days))) @ amounts.to_numpy(float)
    assert r0.total.open_expected == pytest.approx(linear)
    assert r0.total.expected - r0.total.open_expected == pytest.approx(
        r.total.expected - r.total.open_expected
    )


def test_the_fan_spreads_with_the_quarter_shock(book) -> None:  # type: ignore[no-untyped-def]
    from leadml.batch.nightly import forecast_fan
    from leadml.forecast.deals import quarter_of

    con = _con(book)
    history = DealHistory(con, Vocabulary())
    deals = history.snapshot(AS_OF)
    rate = np.linspace(0.01, 0.05, len(deals))  # weekly win hazard per deal

    def won_by(horizon_days: np.ndarray) -> np.ndarray:
        return 1.0 - (1.0 - rate) ** (np.asarray(horizon_days, dtype="float64") / 7.0)

    total = pd.DataFrame(
        [{"group": "all", "won": 1e5, "target": 2e6, "new_expected": 5e4, "expected": 9e5}]
    ).assign(p10=8e5, p50=9e5, p90=1e6)
    q = quarter_of(AS_OF)
    fans = [
        forecast_fan(history, AS_OF, q, won_by, total, LIGHT, shock_sd=tau) for tau in (0.0, 1.0)
    ]
    inner = [f.iloc[1:-1] for f in fans]  # the coming week ends (not D, not the quarter end)
    assert len(inner[0]) >= 4
    np.testing.assert_allclose(inner[1]["expected"], inner[0]["expected"])
    width = [f["p90"] - f["p10"] for f in inner]
    assert (width[1] >= width[0] - 1e-6 * inner[0]["expected"]).all()
    assert (width[1] > width[0]).any()


def test_the_nightly_forecast_is_leadml_forecast_unless_set_to_the_model(book, catalog) -> None:  # type: ignore[no-untyped-def]
    """By default (``batch.forecast_source: empirical``) the morning report's forecast is
    the one ``leadml forecast`` gives for the same date and quarter (the empirical close
    rates), its fan climbing to it; "model" switches both to the deal champion."""
    from leadml.batch.nightly import forecast_snapshot, forecast_source

    con, history, deals, feats, model, source = _tonight(book, catalog)

    def won_by(horizon_days: np.ndarray) -> np.ndarray:
        return model.won_by(feats, horizon_days)

    settings = load_settings().model_copy(update={"forecast": LIGHT})
    by_source = {}
    for name in ("empirical", "model"):
        batch = settings.batch.model_copy(update={"forecast_source": name})
        tonight = settings.model_copy(update={"batch": batch})
        chosen = forecast_source(con, tonight, history, AS_OF, source, won_by)
        table = forecast_snapshot(con, tonight, history, AS_OF, *chosen)
        snap = table[(table["kind"] == "snapshot") & (table["grouping"] == "total")]
        by_source[name] = (snap.set_index("quarter"), table[table["kind"] == "fan"])

    cli = forecast(con, as_of=AS_OF, period="2025Q4", config=LIGHT, history=history)
    snap, fan = by_source["empirical"]
    assert snap.loc["current", "probability_source"] == cli.probability_source == "empirical"
    for column in ("expected", "open_expected", "p10", "p50", "p90"):
        assert snap.loc["current", column] == pytest.approx(getattr(cli.total, column))
    assert len(fan) >= 6 and fan["expected"].is_monotonic_increasing
    assert fan["expected"].iloc[-1] == pytest.approx(cli.total.expected)

    snap_m, fan_m = by_source["model"]
    assert snap_m.loc["current", "probability_source"] == "deal_close v3"
    assert snap_m.loc["current", "open_expected"] != pytest.approx(cli.total.open_expected)
    assert fan_m["expected"].iloc[-1] == pytest.approx(snap_m.loc["current", "expected"])
