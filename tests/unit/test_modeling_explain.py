"""Reasons from TreeSHAP contributions."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from leadml.modeling.explain import render_reason, top_reasons


def test_render_uses_the_catalog_template() -> None:
    assert (
        render_reason("pricing_views_30d", 4.0, "Viewed pricing {value} times")
        == "Viewed pricing 4 times"
    )
    assert render_reason("x", 1.5, None) == "x = 1.50"
    assert render_reason("x", float("nan"), "Label") == "Label: unknown"


def test_top_reasons_pick_the_largest_signed_contributions() -> None:
    contrib = np.array([[0.5, -0.2, 0.1, -0.7, 0.0, 1.0]])
    values = pd.DataFrame({"a": [1], "b": [2], "c": [3], "d": [4], "e": [5]})
    found = top_reasons(contrib, list("abcde"), values, {"a": "A is {value}"}, k=2)[0]
    assert [r["feature"] for r in found["positive"]] == ["a", "c"]
    assert [r["feature"] for r in found["negative"]] == ["d", "b"]
    assert found["positive"][0]["text"] == "A is 1"


def test_a_count_of_one_reads_in_the_singular() -> None:
    cases = {
        "Engaged {value} times in total": "Engaged 1 time in total",
        "Attended {value} seminars or webinars in total": "Attended 1 seminar or webinar in total",
        "Last engaged {value} days ago": "Last engaged 1 day ago",
        "Downloaded {value} pieces of content": "Downloaded 1 piece of content",
        "Passed {value} class tests": "Passed 1 class tests",  # only the word after it
    }
    for template, one in cases.items():
        assert render_reason("f", 1.0, template) == one
        assert render_reason("f", 2.0, template) == template.replace("{value}", "2")


def test_missing_values_are_not_reasons() -> None:
    # "status unknown" gives a rep nothing to act on: the next present feature is shown
    contrib = np.array([[2.0, 0.5, 0.3, -0.4, 0.0], [2.0, 0.5, 0.3, -0.4, 0.0]])
    values = pd.DataFrame(
        {"status": [None, "mql"], "visits": [3.0, 3.0], "days": [np.nan, 4.0], "age": [9.0, 9.0]}
    )
    found = top_reasons(contrib, ["status", "visits", "days", "age"], values, k=2)
    assert [r["feature"] for r in found[0]["positive"]] == ["visits"]
    assert [r["feature"] for r in found[1]["positive"]] == ["status", "visits"]
    assert [r["feature"] for r in found[0]["negative"]] == ["age"]


def test_treeshap_contributions_add_up_to_the_raw_score() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x1": rng.normal(size=2000), "x2": rng.normal(size=2000)})
    y = (X["x1"] + 0.2 * rng.normal(size=2000) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), 30
    )
    contrib = booster.predict(X.head(20), pred_contrib=True)
    np.testing.assert_allclose(
        contrib.sum(axis=1), booster.predict(X.head(20), raw_score=True), atol=1e-9
    )
    found = top_reasons(contrib, ["x1", "x2"], X.head(20), k=1)
    # x1 drives the label: it is the top reason, in the direction of its value
    assert all(
        r["positive"][0]["feature"] == "x1"
        for r, v in zip(found, X["x1"].head(20), strict=True)
        if v > 0.5
    )


def test_a_negative_value_reads_with_the_negative_template() -> None:
    """API review: an overdue deal read '-32 days to the expected close date'."""
    from pathlib import Path

    from leadml.config import Vocabulary
    from leadml.features.catalog import load_catalog

    root = Path(__file__).resolve().parents[2]
    labels = load_catalog(root / "configs" / "features.yaml", Vocabulary()).labels("opportunity")
    assert labels["days_to_expected_close<0"] == "{value} days past the expected close date"
    values = pd.DataFrame({"days_to_expected_close": [-32.0, 12.0]})
    found = top_reasons(
        np.array([[0.4, 0.0], [0.3, 0.0]]), ["days_to_expected_close"], values, labels, k=1
    )
    texts = [row["positive"][0]["text"] for row in found]
    assert texts == [
        "32 days past the expected close date",
        "12 days to the expected close date",
    ]
    assert found[0]["positive"][0]["value"] == -32.0  # the value itself is unchanged


def test_days_read_in_whole_days() -> None:
    """DS review: 'In the current status for 580.43 days', 'Last engaged 3.12 days ago'."""
    status = "In the current status for {value} days"
    assert render_reason("d", 580.43, status) == "In the current status for 580 days"
    assert render_reason("d", 3.62, "Last engaged {value} days ago") == "Last engaged 4 days ago"
    assert render_reason("d", 0.4, "Last engaged {value} days ago") == "Last engaged 0.4 days ago"
    # other numbers keep two decimals
    assert render_reason("r", 0.257, "Won {value} of their deals") == "Won 0.26 of their deals"
