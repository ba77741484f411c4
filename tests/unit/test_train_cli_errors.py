"""Training and registry mistakes a user can make: a clear message naming the file or
flag and the fix, exit code 2, no traceback (QA pass of the retraining CLIs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadml.cli import main
from leadml.errors import ConfigError, DataError, LeadmlError
from leadml.modeling import synthetic
from leadml.modeling.spec import load_spec
from leadml.modeling.train import train


def _spec_file(tmp_path: Path, params: str) -> Path:
    path = tmp_path / "variant.yaml"
    path.write_text(
        f"name: deal_close\nkind: deal_close\nfeatures: [stage]\nestimator:\n  params: {params}\n"
    )
    return path


def test_a_typo_in_lightgbm_params_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"variant.yaml(?s:.*)'learnig_rate' \(did you mean "):
        load_spec(_spec_file(tmp_path, "{learnig_rate: 0.05}"))
    # LightGBM's aliases are accepted
    assert load_spec(_spec_file(tmp_path, "{eta: 0.05, num_leaf: 7}")).estimator.params


def test_a_bad_lightgbm_value_names_the_spec_and_the_param(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(
        ConfigError,
        match=r"variant.yaml: estimator.params.num_leaves: must be > 1 \(got -5\)",
    ):
        load_spec(_spec_file(tmp_path, "{num_leaves: -5}"))


def test_a_lightgbm_error_during_training_names_the_spec() -> None:
    df, _ = synthetic.readiness_frame(2000, weeks=30, seed=3)
    spec = synthetic.readiness_spec(min_positives=1, estimator={"params": {"num_leaves": 1}})
    with pytest.raises(ConfigError, match=r"models/lead_readiness.yaml: estimator.params.num"):
        train(df, spec)


def test_spec_folder_and_errors_name_the_spec_file_used(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder; pass a YAML file"):
        load_spec(tmp_path)
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: lead_readiness\nkind: lead_readiness\nmin_positives: 100000\nfeatures: ["
        + ", ".join(synthetic.READINESS_FEATURES)
        + "]\nbacktest: {origins: 1, gap_days: 30}\n"
    )
    spec = load_spec(path)
    assert spec.model_copy().source == str(path)
    df, _ = synthetic.readiness_frame(600, weeks=12, seed=3)
    with pytest.raises(LeadmlError, match=rf"min_positives in {path}\)") as err:
        train(df, spec)
    # BYOD review: a lead is a row in each weekly snapshot, so rows overstated a small
    # company 4-6x; the message gives both
    rows, leads = int(df["label"].sum()), df.loc[df["label"] == 1, "lead_id"].nunique()
    assert f"has {rows} positive snapshot row(s) (labelled positive, {leads} distinct lead(s))" in (
        str(err.value)
    )


def test_no_fold_message_states_the_requirement() -> None:
    df, _ = synthetic.readiness_frame(1500, weeks=12, seed=3)
    need = int(df["label"].sum())  # the whole set passes, no earlier training window does
    spec = synthetic.readiness_spec(min_positives=need)
    with pytest.raises(LeadmlError) as err:
        train(df, spec)
    text = str(err.value)
    assert f"{need} needed (min_positives)" in text and "lower min_positives" in text


def test_unknown_feature_gets_a_did_you_mean() -> None:
    from leadml.modeling.workflow import check_features

    class Catalog:
        def names(self, entity: str) -> list[str]:
            return ["web_visits_7d", "email_clicks_30d"]

    spec = synthetic.readiness_spec(features=["web_visits_7days"])
    with pytest.raises(ConfigError, match=r"web_visits_7days \(did you mean web_visits_7d\?\)"):
        check_features(spec, Catalog())


def test_dates_must_be_iso() -> None:
    from leadml.features.labels import as_of_dates, to_timestamp

    with pytest.raises(DataError, match=r"'01/02/2025' is not an ISO date \(YYYY-MM-DD\)"):
        to_timestamp("01/02/2025", "--as-of")
    assert str(to_timestamp("2025-02-01T10:00:00Z", "x")) == "2025-02-01 10:00:00+00:00"
    with pytest.raises(DataError, match="start 2030-01-06 is after end 2025-11-09"):
        as_of_dates("2030-01-06", "2025-11-09")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "deal-close", "--start", "13/11/2024"], "'13/11/2024' is not an ISO date"),
        (["features", "lead", "--as-of", "01/02/2025", "--out", "f.parquet"], "not an ISO date"),
        (
            ["train", "--table", "nope.csv", "--target", "y", "--name", "Lead-Table"],
            "--name: 'Lead-Table' is not a valid model name",
        ),
    ],
)
def test_bad_flags_are_refused_before_any_work(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and says in err.replace("\n", " ") and "Traceback" not in err


def test_ctrl_c_exits_130_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from leadml.cli import models

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(models.common, "settings", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["models"])
    assert exc.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_training_notes_warn_before_a_promotion_that_cannot_pass() -> None:
    from types import SimpleNamespace

    from leadml.cli.models import _warnings_after_training

    spec = synthetic.readiness_spec(gate={"max_ece": 0.03, "min_roc_auc": 0.6})
    good = {
        "roc_auc": 0.8,
        "baseline_roc_auc": 0.7,
        "brier": 0.1,
        "baseline_brier": 0.2,
        "mean_ratio_error": 0.05,
    }
    assert (
        _warnings_after_training(
            SimpleNamespace(metrics={**good, "ece": 0.01, "latest_roc_auc": 0.8}), spec
        )
        == []
    )
    notes = _warnings_after_training(
        SimpleNamespace(
            metrics={
                **good,
                "roc_auc": 0.6,
                "ece": 0.049,
                "latest_roc_auc": 0.55,
                "mean_ratio_error": 2.0,
                "mean_probability": 0.03,
                "base_rate": 0.01,
            }
        ),
        spec,
    )
    assert "below the logistic baseline: ROC AUC 0.600 < 0.700" in notes[0]
    assert "max_ece" in notes[1] and "min_roc_auc" in notes[1]
    assert (
        "max_mean_ratio_error (mean probability 0.03 vs observed rate 0.01: off by 200.0%"
        in (notes[1])
    )


def test_a_misspelt_param_is_pointed_at_its_own_name_not_an_alias(tmp_path: Path) -> None:
    """DS review: num_leafs suggested the alias num_leaf rather than num_leaves."""
    with pytest.raises(ConfigError, match=r"'num_leafs' \(did you mean 'num_leaves'\?\)"):
        load_spec(_spec_file(tmp_path, "{num_leafs: 15}"))


def test_a_whole_spec_check_reads_without_pydantic_noise(tmp_path: Path) -> None:
    """DS review: "<top level>: Value error, backtest.gap_days ..." """
    path = tmp_path / "gap.yaml"
    path.write_text(
        "name: lead_readiness\nkind: lead_readiness\nfeatures: [job_level]\n"
        "backtest: {gap_days: 7}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    text = str(err.value)
    assert "<top level>" not in text and "Value error" not in text
    assert text.endswith("\n  backtest.gap_days (7) must be at least target.horizon_days (30)")


def test_train_dataset_says_a_missing_file_does_not_exist_and_why_it_needs_the_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DS review: a missing --dataset file was "not a Parquet file"; a saved set without
    --data failed with "data folder .../data does not exist" and no reason."""
    missing = tmp_path / "nope.parquet"
    with pytest.raises(SystemExit) as exc:
        main(["train", "lead-readiness", "--dataset", str(missing), "--no-register"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert exc.value.code == 2 and "does not exist" in err and "not a Parquet" not in err
    saved = tmp_path / "set.parquet"
    synthetic.readiness_frame(200, weeks=4, seed=1)[0].to_parquet(saved)
    with pytest.raises(SystemExit) as exc:
        main(["train", "lead-readiness", "--dataset", str(saved), "--no-register"])
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and "Traceback" not in err
    assert "still reads the tables it was built from" in err and "pass --data" in err
