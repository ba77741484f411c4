"""The retraining workflow's advice agrees with the registry (audit 4): `leadml train`
recommends what `leadml promote` would do, says the champion comparison once, `leadml
models` shows rollbacks, a tuned version's optimism is said at promotion, the demo's
forced reason says whose champion it replaced, and the notebook can compare versions."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from leadml import tracking
from leadml.cli import main
from leadml.cli.models import _print_next
from leadml.config import Settings, load_settings
from leadml.modeling import workflow
from leadml.modeling.train import TrainingResult

BELOW = "the model is below the logistic baseline: ROC AUC 0.872 < 0.876"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    uri = f"sqlite:///{tmp_path / 'r.db'}"
    monkeypatch.setenv("LEADML_TRACKING__URI", uri)  # the CLI reads the same store
    s = load_settings(workspace=tmp_path / "ws", tracking={"uri": uri})
    tracking.configure(s)
    return s


def _next_step(
    settings: Settings, version: str, notes: list[str], comparison: dict | None = None
) -> str:
    out = Console(file=io.StringIO(), width=400)
    extra = [comparison] if comparison is not None else []
    _print_next(out, settings, "lead_readiness", version, notes, *extra)
    return out.file.getvalue()  # type: ignore[attr-defined]


def _worse_latest_fold(result: TrainingResult, drop: float) -> TrainingResult:
    """The same model with a latest fold (and latest window) ``drop`` lower in ROC AUC."""
    other = copy.copy(result)
    auc = result.metrics["latest_roc_auc"] - drop
    other.metrics = {**result.metrics, "latest_roc_auc": auc}
    last = copy.copy(result.folds[-1])
    last.metrics = {**last.metrics, "roc_auc": auc}
    other.folds = [*result.folds[:-1], last]
    return other


def test_train_recommends_plain_promote_when_only_the_baseline_note_fires(
    readiness_result: TrainingResult, settings: Settings
) -> None:
    """It recommended `--force --reason` for a version the gate passes; promote then
    said "--force not needed"."""
    tracking.log_training(readiness_result, settings)
    text = _next_step(settings, "1", [BELOW])
    assert "next: leadml promote lead_readiness (v1 passes the gate" in text
    assert "below the logistic baseline" in text and "--force" not in text
    promoted = tracking.promote("lead_readiness")  # what the advice said: no force needed
    assert promoted.version == "1" and not promoted.forced

    worse = copy.copy(readiness_result)
    worse.metrics = {**readiness_result.metrics, "ece": 0.9}
    tracking.log_training(worse, settings)
    refused = _next_step(settings, "2", [BELOW])
    assert "the gate would refuse v2: max_ece" in refused
    assert "`leadml promote lead_readiness --force --reason TEXT`" in refused


def test_an_identical_retrain_says_why_the_same_window_briefly_and_once(
    readiness_result: TrainingResult, settings: Settings
) -> None:
    tracking.log_training(readiness_result, settings)
    tracking.promote("lead_readiness")
    again = tracking.log_training(readiness_result, settings).champion_comparison
    assert again["method"] == "same_window"
    cut = again["cutoff"]
    assert again["detail"].endswith(
        f"because no latest-window row comes after champion v1's label cutoff {cut}"
    )
    assert "positive(s)" not in again["detail"]  # was "0 positive(s) and 0 negative(s) ..."

    # a failing drop: `train` prints the comparison, then the refusal without repeating it
    logged = tracking.log_training(_worse_latest_fold(readiness_result, 0.1), settings)
    c = logged.champion_comparison
    assert c["method"] == "same_window"
    text = _next_step(settings, str(logged.version), [], c)
    assert "the gate would refuse v3: max_roc_auc_drop" in text
    assert c["detail"] not in text and "(compared as above)" in text
    # promote, which shows no comparison line, keeps the whole explanation
    drop = next(
        x for x in tracking.gate_checks("lead_readiness", "3") if x.criterion == "max_roc_auc_drop"
    )
    assert drop.detail.endswith(c["detail"])


def test_models_shows_a_rolled_back_version_and_compare_lists_versions(
    readiness_result: TrainingResult,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracking.log_training(readiness_result, settings)
    tracking.promote("lead_readiness")
    tracking.log_training(readiness_result, settings)
    tracking.promote("lead_readiness")
    assert tracking.rollback("lead_readiness") == ("2", "1")
    capsys.readouterr()
    main(["models", "--json"])
    listed = {r["version"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[1]["rolled_back"] == "" and listed[2]["rolled_back"].startswith("20")
    monkeypatch.setenv("COLUMNS", "300")
    main(["models"])
    text = capsys.readouterr().out
    assert "rolled_back" in text and listed[2]["rolled_back"] in text

    # the notebook's view of the same rows, plus metrics of the runs
    table = workflow.compare("lead-readiness", metrics=("pr_auc", "baseline_roc_auc"))
    assert list(table["version"]) == [1, 2]
    assert list(table["aliases"]) == ["champion", ""]
    assert table["rolled_back"].iloc[1] == listed[2]["rolled_back"]
    assert table["pr_auc"].iloc[0] == pytest.approx(readiness_result.metrics["pr_auc"])
    assert table["baseline_roc_auc"].notna().all()
    with pytest.raises(tracking.RegistryError, match="no registered model 'deal_close'; known"):
        workflow.compare("deal-close")


def test_a_tuned_version_is_tagged_and_promote_says_its_figures_are_optimistic(
    readiness_result: TrainingResult, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = readiness_result.spec
    tuned = workflow.TuneResult(spec, [], "tuned", 1, 0.06, 0.05, run_id="tuning-run")
    kept = workflow.TuneResult(spec, [], "spec", 1, 0.05, 0.06, run_id="tuning-run")
    assert tuned.tags()[tracking.TUNED_TAG] == "true" and tuned.caveat()
    assert kept.tags()[tracking.TUNED_TAG] == "false" and kept.caveat() is None

    logged = tracking.log_training(readiness_result, settings, extra_tags=tuned.tags())
    run = tracking.client().get_run(logged.run_id)
    assert run.data.tags["leadml.tuned_on_reported_folds"] == "true"
    capsys.readouterr()
    main(["promote", "lead_readiness", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    assert out["notes"] == [
        "version 1 was tuned (--tune) on the same backtest folds these checks read, so its "
        "figures are slightly optimistic"
    ]
    # a refusal says it too
    worse = copy.copy(readiness_result)
    worse.metrics = {**readiness_result.metrics, "ece": 0.9}
    tracking.log_training(worse, settings, extra_tags=tuned.tags())
    with pytest.raises(tracking.GateFailed, match="version 2 was tuned"):
        tracking.promote("lead_readiness")
    # an untuned version has no such note
    tracking.log_training(readiness_result, settings, extra_tags=kept.tags())
    assert tracking.promote("lead_readiness", "3").notes == []


def test_the_demos_forced_reason_names_the_champion_it_replaced(
    readiness_result: TrainingResult, settings: Settings
) -> None:
    from leadml.cli.demo import forced_reason

    assert tracking.champion_version("lead_readiness") is None
    assert forced_reason(tracking.champion_version("lead_readiness")).startswith(
        "leadml demo: first champion promoted despite the gate"
    )
    tracking.log_training(readiness_result, settings)
    tracking.promote("lead_readiness")
    reason = forced_reason(tracking.champion_version("lead_readiness"))
    assert reason.startswith("leadml demo: replaced champion v1 despite the gate")
    assert "first" not in reason
