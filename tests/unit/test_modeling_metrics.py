"""Metrics and calibration on small synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leadml.modeling.calibrate import Calibrator
from leadml.modeling.evaluate import (
    binary_metrics,
    capacity_metrics,
    evaluate_scores,
    expected_calibration_error,
    lift_at,
)


def test_ece_is_zero_when_each_bin_matches_and_measures_the_gap() -> None:
    p = np.array([0.05] * 20 + [0.55] * 20)
    y = np.array([1] + [0] * 19 + [1] * 11 + [0] * 9)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    # predicting 0.3 where the rate is 0.5, for every row: ECE is 0.2
    assert expected_calibration_error(np.array([1, 0] * 50), np.full(100, 0.3)) == pytest.approx(
        0.2
    )


def test_calibrated_probabilities_have_small_ece_and_shifted_ones_do_not() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(1, 8, 50_000)
    y = rng.binomial(1, p)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p * 1.8, 0, 1)) > 0.05
    assert expected_calibration_error(y, p, strategy="quantile") < 0.01


def test_lift_and_auc_of_a_perfect_ranking() -> None:
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)
    assert lift_at(y, p, 0.1) == pytest.approx(10.0)
    m = binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(1.0) and m["pr_auc"] == pytest.approx(1.0)
    assert m["positives"] == 10 and m["base_rate"] == pytest.approx(0.1)
    assert np.isnan(binary_metrics(np.zeros(5), np.full(5, 0.2))["roc_auc"])


def test_capacity_metrics_take_the_best_n_of_each_week() -> None:
    frame = pd.DataFrame(
        {
            "as_of": ["w1"] * 4 + ["w2"] * 4,
            "score": [0.9, 0.8, 0.1, 0.2, 0.7, 0.6, 0.5, 0.4],
            "label": [1, 0, 1, 0, 0, 0, 1, 1],
        }
    )
    m = capacity_metrics(frame, score="score", label="label", capacity=2)
    assert m["precision_at_capacity"] == pytest.approx(1 / 4)  # called 0.9,0.8,0.7,0.6
    assert m["recall_at_capacity"] == pytest.approx(1 / 4)  # 1 of 4 positives


def test_segment_metrics_are_prefixed() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"p": rng.random(200), "seg": ["a", "b"] * 100})
    frame["y"] = (frame["p"] > 0.5).astype(int)
    m = evaluate_scores(frame, score="p", label="y", segment="seg")
    assert m["a.roc_auc"] == pytest.approx(1.0) and m["b.rows"] == 100


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibrator_fixes_a_distorted_score_and_round_trips(method: str) -> None:
    rng = np.random.default_rng(2)
    p_true = rng.beta(1, 6, 40_000)
    y = rng.binomial(1, p_true)
    raw = p_true**0.5  # monotone but badly calibrated
    cal = Calibrator(method).fit(raw[:20_000], y[:20_000])
    fixed = cal.predict(raw[20_000:])
    assert expected_calibration_error(y[20_000:], raw[20_000:]) > 0.1
    assert expected_calibration_error(y[20_000:], fixed) < 0.02
    again = Calibrator.from_dict(cal.to_dict()).predict(raw[20_000:])
    np.testing.assert_allclose(again, fixed)
    # calibration keeps the order of scores (monotone)
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(cal.predict(grid)) >= -1e-12)


def test_isotonic_calibration_never_says_never_or_certainly() -> None:
    """DS review: 6.8% of the demo's leads scored exactly 0.0 (the lowest isotonic block
    held no conversion); such a block reads (0 + 1/2) / (n + 1) instead."""
    raw = np.r_[np.linspace(0.0, 0.1, 300), np.linspace(0.5, 1.0, 100)]
    y = np.r_[np.zeros(300), np.r_[np.zeros(30), np.ones(70)]]
    cal = Calibrator("isotonic").fit(raw, y)
    low = cal.predict(np.array([0.0, 0.05]))
    assert np.all(low > 0) and low[0] == low[1] and low[0] == pytest.approx(0.5 / 331)  # 330 rows
    high = cal.predict(np.array([1.0]))
    assert 0.5 < high[0] < 1
    grid = np.linspace(0, 1, 201)
    assert np.all(np.diff(cal.predict(grid)) >= -1e-12)
