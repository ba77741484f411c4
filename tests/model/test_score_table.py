"""`leadml score-table`: a model trained by `leadml train --table` scores new rows of the
table (no outcome needed) exactly as it read the training rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.cli import main
from leadml.importing.tabular import prepare_table

MISSING = "Select,unknown,Employees=999"
MODEL = "lead_readiness_table"


def _table(n: int, seed: int) -> pd.DataFrame:
    """The training test's table (mixed types, sentinels, a time column, a planted
    signal) with ids of their own, so that echoed ids can be told apart."""
    from test_train_table import _table as training_table

    return training_table(n, seed).assign(**{"Lead ID": [f"S{seed}-{i}" for i in range(n)]})


def _train(tmp_path: Path, capsys: pytest.CaptureFixture[str], promote: bool = True) -> None:
    train_csv = tmp_path / "train.csv"
    _table(800, seed=11).to_csv(train_csv, sep=";", index=False)
    main(
        [
            "train",
            "--table",
            str(train_csv),
            "--target",
            "Outcome",
            "--time-column",
            "Created",
            "--missing-values",
            MISSING,
            "--positive",
            "Won",
            "--quick",
            "--json",
        ]
    )
    if promote:  # --force: the gate is not what is tested here (the quick model is small)
        main(["promote", MODEL, "--force", "--reason", "test", "--json"])
    capsys.readouterr()


def _score(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    main(["score-table", *args, "--json"])
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def _fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["score-table", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    return " ".join(err.split())


def _champion() -> object:
    from leadml.config import load_settings
    from leadml.modeling.bundle import ScoringBundle
    from leadml.tracking import configure

    configure(load_settings())
    return ScoringBundle.load(f"models:/{MODEL}@champion")


@pytest.mark.slow
def test_scores_equal_the_bundle_on_rows_typed_as_for_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _train(tmp_path, capsys)
    new = _table(120, seed=23)  # later leads, outcome still in the file
    new.loc[0, "Industry"] = "aerospace"  # a category the model never saw
    new["Region"] = "EMEA"  # a column the model does not know
    with_outcome = tmp_path / "new_with_outcome.csv"
    new.to_csv(with_outcome, index=False)
    out = tmp_path / "scores.csv"
    summary, _ = _score([str(with_outcome), "--id-column", "Lead ID", "--out", str(out)], capsys)

    scores = pd.read_csv(out, dtype={"Lead ID": str})
    assert len(scores) == len(new) == summary["rows"]
    assert scores["Lead ID"].tolist() == new["Lead ID"].tolist()  # ids echoed, file order
    # the same numbers as the registered bundle on the rows typed by training's own code
    bundle = _champion()
    typed, report = prepare_table(new.drop(columns=["Region"]), "Outcome", missing_values=MISSING)
    assert set(report.features) == set(bundle.features)
    expected = bundle.predict_proba(typed[bundle.features])
    np.testing.assert_allclose(scores["probability"].to_numpy(), expected, rtol=1e-9)
    assert summary["mean_probability"] == pytest.approx(float(expected.mean()))
    assert set(scores["grade"]) <= set("ABCD")
    assert sum(summary["grades"].values()) == len(new)
    assert scores["percentile"].between(0, 100).all()
    assert scores["reasons"].fillna("").str.len().gt(0).any()
    # training's sentinels were applied without being repeated
    assert any("Select,unknown,Employees=999" in n for n in summary["notes"])
    # the outcome column is ignored and said so; the unknown column too
    assert any("'Outcome'" in n and "ignored" in n for n in summary["notes"])
    assert any("'Region'" in n and "ignored" in n for n in summary["notes"])
    # the unseen category is named and scored as missing
    unseen = [n for n in summary["notes"] if "never saw" in n]
    assert len(unseen) == 1 and "'aerospace'" in unseen[0] and "'Industry'" in unseen[0]
    as_missing = typed.head(1).copy()
    as_missing["Industry"] = pd.NA
    assert scores["probability"].iloc[0] == pytest.approx(
        float(bundle.predict_proba(as_missing[bundle.features])[0])
    )
    top = [r["probability"] for r in summary["top"]]
    assert top == sorted(top, reverse=True) and top[0] == pytest.approx(expected.max())

    # without the outcome column: the same scores (it was never read), no outcome note
    without = tmp_path / "new_leads.parquet"
    new.drop(columns=["Outcome"]).to_parquet(without, index=False)
    parquet_out = tmp_path / "scores.parquet"
    summary2, _ = _score([str(without), "--out", str(parquet_out)], capsys)
    scores2 = pd.read_parquet(parquet_out)
    assert scores2["row"].tolist() == list(range(1, len(new) + 1))  # no --id-column: row n
    np.testing.assert_allclose(scores2["probability"], scores["probability"], rtol=1e-9)
    assert not any("'Outcome'" in n for n in summary2["notes"])


@pytest.mark.slow
def test_missing_feature_column_fails_clearly_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _train(tmp_path, capsys)
    new = _table(50, seed=5).drop(columns=["Outcome", "Employees"])
    new = new.rename(columns={"Web visits": "web visits"})
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    out = tmp_path / "scores.csv"
    err = _fails([str(path), "--out", str(out)], capsys)
    assert "'Employees'" in err and "'Web visits'" in err
    assert "did you mean 'web visits'" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if "scores" in p.name] == []  # no temp file left

    # the input file is never overwritten
    before = path.read_bytes()
    err = _fails([str(path), "--out", str(path)], capsys)
    assert "input file" in err and path.read_bytes() == before
    # an unknown id column is named with its close match
    full = tmp_path / "full.csv"
    _table(20, seed=6).to_csv(full, index=False)
    err = _fails([str(full), "--id-column", "lead id"], capsys)
    assert "'lead id'" in err and "'Lead ID'" in err
    # an --out that cannot be written is named, not a traceback (review)
    err = _fails([str(full), "--out", str(full / "x.csv")], capsys)  # under a file
    assert "--out" in err and "cannot write there" in err and "Traceback" not in err


@pytest.mark.slow
def test_without_a_champion_says_how_to_promote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _train(tmp_path, capsys, promote=False)
    path = tmp_path / "new.csv"
    _table(30, seed=7).drop(columns=["Outcome"]).to_csv(path, index=False)
    err = _fails([str(path)], capsys)
    assert "@champion" in err and f"leadml promote {MODEL}" in err
    err = _fails([str(path), "--model", "lead_readines_table"], capsys)
    assert "leadml train --table" in err and f"did you mean '{MODEL}'" in err
    # the challenger can be scored explicitly, by alias or by number
    by_alias, _ = _score([str(path), "--version", "challenger"], capsys)
    by_number, _ = _score([str(path), "--version", "1", "--out", str(tmp_path / "v1.csv")], capsys)
    assert by_alias["version"] == by_number["version"] == "1"
    assert by_alias["mean_probability"] == pytest.approx(by_number["mean_probability"])
    assert Path(by_alias["out"]).is_file()  # default: the workspace's scores folder
