"""The registry workflow on a SQLite MLflow store in a temporary folder:
log + register (alias challenger), bundle round trip through pyfunc, promote,
gate failure, forced promotion, rollback, listing."""

from __future__ import annotations

import copy
from pathlib import Path

import mlflow
import numpy as np
import pytest

from leadml import tracking
from leadml.config import Settings, load_settings
from leadml.modeling.bundle import ScoringBundle
from leadml.modeling.train import TrainingResult


@pytest.fixture(scope="module")
def _store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture
def settings(_store: Path) -> Settings:
    """One SQLite store for the module (creating one costs seconds); the empty-registry
    test runs first."""
    s = load_settings(workspace=_store / "ws", tracking={"uri": f"sqlite:///{_store / 'reg.db'}"})
    tracking.configure(s)
    return s


def _worse(result: TrainingResult, **metric_changes: float) -> TrainingResult:
    """The same model with different backtest figures (to exercise the gate); a changed
    ``latest_roc_auc`` is its latest fold's too (the gate compares that fold with the
    champion's on the same window)."""
    other = copy.copy(result)
    other.metrics = {**result.metrics, **metric_changes}
    if "latest_roc_auc" in metric_changes:
        last = copy.copy(result.folds[-1])
        last.metrics = {**last.metrics, "roc_auc": metric_changes["latest_roc_auc"]}
        other.folds = [*result.folds[:-1], last]
    return other


def test_unknown_version_and_empty_registry_say_what_to_do(settings: Settings) -> None:
    with pytest.raises(tracking.RegistryError, match="no registered model 'lead_readiness'"):
        tracking.promote("lead_readiness", "7")
    with pytest.raises(tracking.RegistryError, match="no registered model 'deal_close'; known"):
        tracking.rollback("deal_close")
    assert tracking.list_versions().empty


def test_register_promote_gate_and_rollback(
    readiness_result: TrainingResult, settings: Settings, templates: dict[str, str]
) -> None:
    assert tracking.tracking_uri(settings).startswith("sqlite:///")
    v1 = tracking.log_training(readiness_result, settings, templates=templates)
    assert v1.version == "1"
    cl = tracking.client()
    assert str(cl.get_model_version_by_alias("lead_readiness", "challenger").version) == "1"

    # the pyfunc and the plain loader give identical scores, equal to the in-memory model
    rows = readiness_result.train_frame.head(40)
    feats = rows[readiness_result.spec.features].astype(
        {
            f: float
            for f in readiness_result.spec.features
            if f not in ("job_level", "source", "segment")
        }
    )
    pyfunc = mlflow.pyfunc.load_model("models:/lead_readiness@challenger")
    out = pyfunc.predict(feats, params={"reasons": 2})
    bundle = ScoringBundle.load("models:/lead_readiness@challenger")
    np.testing.assert_array_equal(
        out["probability"].to_numpy(), bundle.score(rows)["probability"].to_numpy()
    )
    np.testing.assert_allclose(
        out["probability"].to_numpy(), readiness_result.model.predict_proba(rows)
    )
    assert set(out.columns) >= {"probability", "percentile", "grade", "reasons_positive"}
    assert bundle.templates == templates and bundle.reference["score_quantiles"]

    first = tracking.promote("lead_readiness")
    assert first.version == "1" and first.previous is None and all(c.ok for c in first.checks)

    # a challenger whose latest-window ROC AUC is far below the champion's fails the gate
    v2 = tracking.log_training(
        _worse(
            readiness_result,
            latest_roc_auc=readiness_result.metrics["latest_roc_auc"] - 0.1,
            ece=0.2,
        ),
        settings,
    )
    assert v2.champion_comparison["version"] == "1"
    with pytest.raises(
        tracking.RegistryError, match=r"(?s)max_ece.*max_roc_auc_drop.*--force"
    ) as err:
        tracking.promote("lead_readiness")
    assert "0.2000" in str(err.value)
    assert str(cl.get_model_version_by_alias("lead_readiness", "champion").version) == "1"

    with pytest.raises(tracking.RegistryError, match="--reason"):
        tracking.promote("lead_readiness", "2", force=True)
    forced = tracking.promote("lead_readiness", "2", force=True, reason="hotfix for the demo")
    assert forced.forced and forced.previous == "1"
    mv = cl.get_model_version("lead_readiness", "2")
    assert mv.tags["leadml.force_reason"] == "hotfix for the demo"

    assert tracking.rollback("lead_readiness") == ("2", "1")
    assert str(cl.get_model_version_by_alias("lead_readiness", "champion").version) == "1"
    with pytest.raises(tracking.RegistryError, match="no earlier champion"):
        tracking.rollback("lead_readiness")

    listed = tracking.list_versions()
    assert list(listed["version"]) == [1, 2]
    assert listed.set_index("version").loc[1, "aliases"] == "champion"
    assert listed["roc_auc"].notna().all()


def test_the_pyfunc_keeps_the_id_requires_every_feature_and_flags_unseen_values(
    readiness_result: TrainingResult, deal_result: TrainingResult, settings: Settings
) -> None:
    """DS review: the pyfunc output had no id column (rows matched by position only), its
    signature called every feature optional while a missing one was refused, and a
    misspelt category (lead_status "nurturng") moved the score silently."""
    from mlflow.exceptions import MlflowException

    from leadml.modeling.pyfunc import signature_for

    spec = readiness_result.spec
    text = ("job_level", "source", "segment")
    rows = readiness_result.train_frame.head(4).reset_index(drop=True)
    given = rows[["lead_id", *spec.features]].astype(
        {f: float for f in spec.features if f not in text}
    )
    pyfunc = mlflow.pyfunc.load_model("models:/lead_readiness/1")
    bundle = ScoringBundle.load("models:/lead_readiness/1")
    out = pyfunc.predict(given)
    assert out.columns[0] == "lead_id" and list(out["lead_id"]) == list(rows["lead_id"])
    expected = bundle.score(given)
    assert list(out.columns[: len(expected.columns)]) == list(expected.columns)
    np.testing.assert_array_equal(out["probability"], expected["probability"])
    sig = pyfunc.metadata.signature.inputs
    assert sig.required_input_names() == list(spec.features)
    assert sig.optional_input_names() == ["lead_id"]
    with pytest.raises(MlflowException, match="pricing_page_views_30d"):
        pyfunc.predict(given.drop(columns=["pricing_page_views_30d"]))
    # a value the model never saw: flagged, as the online API's unseen_values does
    typo = given.assign(job_level=["directr", *given["job_level"].iloc[1:]])
    flagged = pyfunc.predict(typo)["unseen_values"].tolist()
    assert flagged == ['["job_level"]', "[]", "[]", "[]"]
    assert bundle.unseen_values(typo) == [["job_level"], [], [], []]
    deal_inputs = signature_for(ScoringBundle.from_training(deal_result)).inputs
    assert deal_inputs.optional_input_names() == ["opportunity_id", "horizon_days"]


def test_a_fresh_notebook_reads_the_configured_store_without_configure(
    settings: Settings, _store: Path, tmp_path: Path
) -> None:
    """Runs after the registry test above (versions 1 and 2, a champion). A new process
    that lists or loads models before training anything reads the configured store, not
    an empty ./mlflow.db in its current folder."""
    import os
    import subprocess
    import sys

    code = (
        "from leadml import tracking\n"
        "from leadml.modeling.bundle import ScoringBundle\n"
        "print(len(tracking.list_versions()))\n"
        "print(ScoringBundle.load('models:/lead_readiness@champion').kind)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["LEADML_WORKSPACE"] = str(settings.workspace)
    env["LEADML_TRACKING__URI"] = f"sqlite:///{_store / 'reg.db'}"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["2", "lead_readiness"]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_default_tracking_uri_is_in_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    s = load_settings(workspace=tmp_path / "ws")
    assert tracking.tracking_uri(s) == f"sqlite:///{tmp_path / 'ws' / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri(s) == "http://127.0.0.1:5999"


def test_cli_lists_versions_and_refuses_a_failing_promotion(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs after the registry test above, on the same store (versions 1 and 2)."""
    import json

    from leadml.cli import main

    monkeypatch.setenv("LEADML_TRACKING__URI", tracking.tracking_uri(settings))
    main(["models", "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["aliases"]) for r in listed] == [(1, "champion"), (2, "")]
    # the horizon and a forced promotion are shown; small figures keep 4 significant
    # digits (3 decimals printed every readiness version as "ece 0.001") (DS review)
    assert [(r["horizon_days"], r["forced"]) for r in listed] == [(30, False), (30, True)]
    monkeypatch.setenv("COLUMNS", "250")
    main(["models"])
    text = capsys.readouterr().out
    assert "horizon_days" in text and "FORCED" in text and " 30d " in text
    assert f"{listed[0]['ece']:.4g}" in text and f"{listed[0]['brier']:.4g}" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["promote", "lead_readiness", "--version", "2"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "max_ece" in err and "Traceback" not in err


def test_tuning_starts_from_the_spec_and_logs_a_normal_runs_param_names(
    readiness_result: TrainingResult, settings: Settings
) -> None:
    from leadml.modeling import workflow

    frame = readiness_result.train_frame
    spec = readiness_result.spec
    tuned = workflow.tune(frame, spec, settings, 2)
    trials = tuned.trials
    assert len(trials) == 3  # trial 0 is the spec's own parameters, then 2 tuned ones
    assert trials[0]["source"] == "spec"
    assert {k: trials[0][k] for k in spec.estimator.params} == spec.estimator.params
    assert tuned.spec_log_loss == trials[0]["log_loss"]
    best_tuned = min(trials[1:], key=lambda t: t["log_loss"])
    assert tuned.tuned_log_loss == best_tuned["log_loss"]
    chosen = tuned.spec_log_loss if tuned.winner == "spec" else tuned.tuned_log_loss
    assert chosen <= trials[0]["log_loss"]  # never worse than the untuned spec
    if tuned.winner == "spec":
        assert tuned.spec is spec and tuned.tuned_log_loss >= tuned.spec_log_loss
    else:
        assert tuned.tuned_log_loss < tuned.spec_log_loss
        assert tuned.spec.estimator.params["num_leaves"] == best_tuned["num_leaves"]
    summary = tuned.summary()  # says who won, with both objective values
    assert ("spec's own parameters won" in summary) == (tuned.winner == "spec")
    assert f"{tuned.spec_log_loss:.5f}" in summary and f"{tuned.tuned_log_loss:.5f}" in summary

    runs = mlflow.search_runs(experiment_names=[settings.tracking.experiment])
    parent = runs[runs["tags.mlflow.runName"] == "lead_readiness-tuning"]
    assert len(parent) == 1
    assert parent["params.tuning_winner"].iloc[0] == tuned.winner
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert len(children) == 3

    # the trial runs carry a normal run's parameter names (lgb_num_leaves, rows, ...)
    client = mlflow.MlflowClient()
    normal = workflow.log_and_register(readiness_result, settings, register=False)
    normal_names = set(client.get_run(normal.run_id).data.params)
    assert "lgb_num_leaves" in normal_names
    for _, child in children.iterrows():
        names = set(client.get_run(child["run_id"]).data.params)
        assert "num_leaves" not in names and "lgb_num_leaves" in names
        if child["tags.mlflow.runName"] == "trial-0":
            assert names == normal_names
        else:  # the same, plus the tuned parameters the spec leaves at their defaults
            assert normal_names <= names
            assert {n for n in names - normal_names if not n.startswith("lgb_")} == set()
