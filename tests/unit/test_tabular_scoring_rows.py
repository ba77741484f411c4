"""Rows to score are typed by the same code as the training table (prepare_rows vs
prepare_table), without an outcome and without inferring anything from the new rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leadml.errors import DataError
from leadml.importing.tabular import prepare_rows, prepare_table


def _table(n: int = 80, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "visits": np.where(rng.uniform(size=n) < 0.1, "unknown", rng.poisson(3, n).astype(str)),
            "industry": rng.choice(["software", "retail", "Select"], n),
            "pdays": np.where(rng.uniform(size=n) < 0.3, "999", rng.integers(0, 30, n).astype(str)),
            "y": rng.choice(["yes", "no"], n),
        }
    )


def test_prepare_rows_types_like_prepare_table() -> None:
    table = _table()
    missing = "Select,unknown,pdays=999"
    frame, report = prepare_table(table, "y", missing_values=missing)
    kinds = {c.name: c.kind for c in report.columns if c.is_feature}
    rows, infos = prepare_rows(table.drop(columns=["y"]), kinds, missing_values=missing)
    pd.testing.assert_frame_equal(rows.reset_index(drop=True), frame[list(kinds)])
    assert {i.name: i.sentinels for i in infos} == {
        c.name: c.sentinels for c in report.columns if c.is_feature
    }


def test_prepare_rows_keeps_the_training_kind_and_notes_non_numbers() -> None:
    # two new rows: alone they would look constant / categorical; the model's kinds rule
    new = pd.DataFrame({"visits": ["3", "lots"], "industry": ["retail", "retail"]})
    rows, infos = prepare_rows(new, {"visits": "numeric", "industry": "categorical"})
    assert rows["visits"].dtype == float and np.isnan(rows["visits"].iloc[1])
    assert rows["industry"].tolist() == ["retail", "retail"]
    note = next(i.note for i in infos if i.name == "visits")
    assert "'lots'" in note and "missing" in note
    with pytest.raises(DataError, match="pday"):
        prepare_rows(new, {"visits": "numeric"}, missing_values="pday=999")


def test_a_table_model_without_a_spec_must_rank_better_than_chance_to_be_champion() -> None:
    """Review: a table model whose latest backtest window ranked at ROC AUC 0.500 passed
    the gate's min_roc_auc (default 0.5) and only calibration held it back."""
    import pandas as pd

    from leadml.importing.tabular import table_spec

    training = pd.DataFrame(
        {"as_of": pd.date_range("2024-01-01", periods=60, freq="7D", tz="UTC"), "x": 1.0}
    )
    spec = table_spec(training, ["x"])
    assert spec.gate.min_roc_auc == 0.6


def test_a_numeric_column_of_decimal_commas_stops_scoring() -> None:
    """Review: a ';' file from a European Excel (1,405 for 1.405) scored five feature
    columns as missing for every row, with exit code 0 and grades all different."""
    kinds = {"rate": "numeric", "visits": "numeric", "industry": "categorical"}
    eu = pd.DataFrame({"rate": ["1,405", "4,857"], "visits": ["3", "4"], "industry": ["x", "y"]})
    with pytest.raises(DataError, match=r"'rate' \('1,405', '4,857'\).*decimal commas"):
        prepare_rows(eu, kinds)
    some = eu.assign(rate=["1.405", "n/a"])  # one bad value: noted, scored as missing
    rows, infos = prepare_rows(some, kinds)
    assert np.isnan(rows["rate"].iloc[1]) and "not numbers" in infos[0].note
