"""The promotion gate's comparisons, on constructed run metadata (no MLflow store):
which window the challenger and the champion are compared on, and calibration in the
large (DS review: a monthly retrain, and probabilities off by 3x that pass ECE)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from leadml import tracking
from leadml.modeling.evaluate import binary_metrics
from leadml.modeling.spec import GateSpec


def _ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def _folds(*starts_and_aucs: tuple[str, float]) -> list[SimpleNamespace]:
    """Challenger folds as a run stores them: test window start and metrics."""
    return [SimpleNamespace(origin=_ts(d), metrics={"roc_auc": auc}) for d, auc in starts_and_aucs]


# the reviewer's deal-close retrain a month (4 weeks) later: the champion's latest window
# (from 2025-07-15) is the challenger's second fold
CHALLENGER = _folds(("2025-06-17", 0.8501), ("2025-07-15", 0.8496), ("2025-08-12", 0.8461))
CHAMPION_WINDOW = (_ts("2025-07-15"), _ts("2025-08-12"))


def test_the_challenger_fold_on_the_champions_latest_window_is_compared() -> None:
    got = tracking.stored_comparison(
        CHALLENGER, 28, 0.8461, "1", CHAMPION_WINDOW, 0.8494, "too few unseen rows"
    )
    assert got["method"] == "same_window"
    assert got["roc_auc"] == 0.8494 and got["challenger_roc_auc"] == 0.8496  # not 0.8461
    assert got["window"] == "2025-07-15..2025-08-12"
    assert got["detail"].startswith(
        "same window 2025-07-15..2025-08-12: challenger's fold 2 of 3 vs champion v1's latest, "
        "both out of sample"
    )
    assert got["detail"].endswith("because too few unseen rows")


def test_an_identical_retrain_compares_its_latest_fold() -> None:
    window = (_ts("2025-08-12"), _ts("2025-09-09"))
    got = tracking.stored_comparison(CHALLENGER, 28, 0.8461, "3", window, 0.8461, "why")
    assert got["method"] == "same_window" and "challenger's latest fold vs" in got["detail"]


@pytest.mark.parametrize(
    ("window", "test_days"),
    [
        ((_ts("2025-07-22"), _ts("2025-08-19")), 28),  # retrained 5 weeks later: no shared window
        ((_ts("2025-07-15"), _ts("2025-08-12")), 21),  # same start, other length
    ],
)
def test_without_a_shared_window_the_latest_windows_are_compared_and_said_to_differ(
    window: tuple[pd.Timestamp, pd.Timestamp], test_days: int
) -> None:
    got = tracking.stored_comparison(CHALLENGER, test_days, 0.8461, "1", window, 0.8494, "few")
    assert got["method"] == "stored_backtest" and got["challenger_roc_auc"] == 0.8461
    assert "different windows" in got["detail"]
    assert "its folds start 2025-06-17, 2025-07-15, 2025-08-12" in got["detail"]


def test_the_gate_message_names_the_same_window() -> None:
    tags = {
        "leadml.compared_champion_version": "1",
        "leadml.gate.max_roc_auc_drop": "0.01",
        "leadml.champion_latest_roc_auc": "0.8494",
        "leadml.champion_comparison": "same_window",
        "leadml.challenger_compared_roc_auc": "0.8496",
        "leadml.champion_comparison_detail": "same window 2025-07-15..2025-08-12: ...",
    }
    check = tracking._drop_check(tags, "1", "2", 0.8461)
    assert check.ok and "drop -0.0002" in check.detail
    assert "champion's own out-of-sample backtest on the same window v1" in check.detail
    assert "same window 2025-07-15..2025-08-12" in check.detail


def _rare_positives(n: int = 200_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Readiness-like rows: 98% of probabilities under 0.1, base rate about 1%."""
    rng = np.random.default_rng(seed)
    p = np.clip(rng.beta(0.5, 45, n), 0, 1)
    return (rng.random(n) < p).astype(int), p


def test_a_model_3x_off_passes_ece_but_fails_calibration_in_the_large() -> None:
    y, p = _rare_positives()
    limit = GateSpec().max_mean_ratio_error
    calibrated, scaled = binary_metrics(y, p), binary_metrics(y, np.clip(3 * p, 0, 1))
    # equal-width bins put nearly every row in the first bin: ECE does not see 3x
    assert calibrated["ece"] < GateSpec().max_ece and scaled["ece"] < GateSpec().max_ece
    assert scaled["mean_ratio_error"] == pytest.approx(2.0, abs=0.1)
    ok = tracking.mean_ratio_check(limit, calibrated)
    off = tracking.mean_ratio_check(limit, scaled)
    assert ok.ok and not off.ok and off.criterion == "max_mean_ratio_error"
    assert "off by 2" in off.detail and "limit 25%" in off.detail
    # a constant at 4x the base rate (ROC AUC 0.5) fails too
    assert not tracking.mean_ratio_check(limit, binary_metrics(y, np.full(len(y), 0.04))).ok


def test_metrics_are_logged_as_test_counts_and_params_as_train_counts() -> None:
    names = {k: tracking.metric_name(k) for k in ("rows", "positives", "latest_rows")}
    assert names == {
        "rows": "test_rows",
        "positives": "test_positives",
        "latest_rows": "latest_test_rows",
    }
    assert tracking.metric_name("oracle_positives") == "oracle_test_positives"
    assert tracking.metric_name("enterprise.rows") == "enterprise.test_rows"
    assert tracking.metric_name("roc_auc") == "roc_auc"
    assert tracking.metric_name("model_on_oracle_rows_roc_auc") == "model_on_oracle_rows_roc_auc"


def test_a_champion_whose_run_is_gone_has_no_known_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older champion (no end tag) in a registry without its run (copied models): the
    run lookup raised and aborted the challenger's registration after the whole
    training; now the gate falls back to the other comparisons."""

    class Gone(Exception):
        error_code = "RESOURCE_DOES_NOT_EXIST"

    class Client:
        def get_run(self, run_id: str) -> None:
            raise Gone(f"run {run_id} not found")

    monkeypatch.setattr(tracking, "client", lambda: Client())
    old = SimpleNamespace(tags={"leadml.latest_window_start": "2025-07-15"}, run_id="r1")
    assert tracking._champion_window(old) is None
    tagged = SimpleNamespace(
        tags={
            "leadml.latest_window_start": "2025-07-15",
            "leadml.latest_window_end": "2025-08-12",
        },
        run_id="r1",
    )
    assert tracking._champion_window(tagged) == (
        pd.Timestamp("2025-07-15"),
        pd.Timestamp("2025-08-12"),
    )
