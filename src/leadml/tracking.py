"""MLflow: where runs go, what a training run logs, and the registry workflow.

* Tracking URI: ``settings.tracking.uri``, else ``MLFLOW_TRACKING_URI``, else
  ``sqlite:///<workspace>/mlflow/mlflow.db`` with artifacts in
  ``<workspace>/mlflow/artifacts``. An ``http://`` server URI works unchanged.
* A training run logs params, data window, feature-list hash, metrics (overall,
  per fold as steps, per segment, baseline and oracle), plots, the model card
  and the scoring bundle, registered under the spec's name with alias
  ``challenger``.
* :func:`promote` moves ``champion`` only when the gate stored on the version
  holds; :func:`rollback` restores the previous champion. The champion history
  is a JSON list in the registered model's tag ``leadml.champion_history``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from leadml.config import Settings
from leadml.errors import LeadmlError

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "leadml.champion_history"
MODEL_NAMES = ("lead_readiness", "deal_close")


class RegistryError(LeadmlError):
    """A registry operation cannot be done (unknown model/version, gate failed, ...)."""


# ------------------------------------------------------------------ setup


def tracking_uri(settings: Settings) -> str:
    """The tracking URI this workspace uses (see the module docstring)."""
    if settings.tracking.uri:
        return settings.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"


def configure(settings: Settings) -> str:
    """Point MLflow at this workspace's tracking store; returns the URI."""
    import mlflow

    uri = tracking_uri(settings)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(settings: Settings, name: str | None = None) -> str:
    """The experiment's id, created on first use (local stores keep artifacts in the workspace)."""
    import mlflow

    name = name or settings.tracking.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if tracking_uri(settings).startswith("sqlite:"):
        location = (settings.mlflow_dir / "artifacts").resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


# ------------------------------------------------------------------ logging


@dataclass
class LoggedVersion:
    """What :func:`log_training` produced."""

    run_id: str
    name: str
    version: str | None
    model_uri: str
    metrics: dict[str, float]
    champion_comparison: dict[str, Any] = field(default_factory=dict)


def _clean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
            continue
        out[k.replace(" ", "_")] = float(v)
    return out


def _params(result: Any) -> dict[str, Any]:
    spec = result.spec
    p: dict[str, Any] = {
        "kind": spec.kind,
        "horizon_days": spec.target.horizon_days,
        "n_features": len(spec.features),
        "feature_hash": result.feature_hash,
        "num_boost_round_used": result.model.rounds,
        "calibration": spec.calibration.method,
        "calibration_holdout_days": spec.calibration.holdout_days,
        "backtest_origins": spec.backtest.origins,
        "backtest_gap_days": spec.backtest.gap_days,
        "backtest_test_days": spec.backtest.test_days,
        "min_positives": spec.min_positives,
        "baseline_C": spec.baseline.C,
        "data_start": result.data_window[0].isoformat(),
        "data_end": result.data_window[1].isoformat(),
        "rows": result.rows,
        "positives": result.positives,
    }
    for k, v in spec.estimator.params.items():
        p[f"lgb_{k}"] = v
    if spec.kind == "deal_close":
        p["week_days"] = spec.target.week_days
        p["max_weeks"] = spec.target.max_weeks
    return p


def champion_on_latest_window(result: Any, name: str) -> dict[str, Any]:
    """Score the current champion on the challenger's latest backtest window.

    Returns ``{}`` when there is no champion; otherwise its version and ROC AUC,
    ECE and Brier on exactly the rows the challenger's ``latest_*`` metrics use.
    """
    from leadml.modeling.bundle import ScoringBundle
    from leadml.modeling.evaluate import binary_metrics

    cl = client()
    try:
        champ = cl.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no registered model or no alias
        return {}
    bundle = ScoringBundle.load(f"models:/{name}@{CHAMPION}")
    spec = result.spec
    preds = result.predictions
    latest = preds[(preds["fold"] == preds["fold"].max()) & preds["label"].notna()]
    key = [spec.id_column, "as_of"]
    frame = result.train_frame.drop(columns=["label"], errors="ignore")
    rows = latest[key + ["label"]].merge(frame, on=key, how="left")
    missing = [f for f in bundle.features if f not in rows.columns]
    if missing:
        return {
            "version": str(champ.version),
            "error": f"champion needs features not in this data: {missing}",
        }
    p = bundle.predict_proba(rows, spec.target.horizon_days if spec.kind == "deal_close" else None)
    m = binary_metrics(rows["label"].astype(int).to_numpy(), p)
    return {
        "version": str(champ.version),
        "roc_auc": m["roc_auc"],
        "ece": m["ece"],
        "brier": m["brier"],
    }


def log_training(
    result: Any,
    settings: Settings,
    *,
    templates: dict[str, str] | None = None,
    catalog: dict[str, Any] | None = None,
    run_name: str | None = None,
    register: bool = True,
    extra_tags: dict[str, str] | None = None,
) -> LoggedVersion:
    """Log a :class:`~leadml.modeling.train.TrainingResult` as one MLflow run and register
    its scoring bundle (alias ``challenger``). Call :func:`configure` first."""
    import mlflow

    from leadml.modeling import plots
    from leadml.modeling.bundle import ScoringBundle
    from leadml.modeling.evaluate import model_card
    from leadml.modeling.pyfunc import BundleModel, pip_requirements, signature_for

    spec = result.spec
    comparison = champion_on_latest_window(result, spec.name) if register else {}
    exp = experiment_id(settings)
    bundle = ScoringBundle.from_training(result, templates=templates, catalog=catalog)
    tags = {
        "leadml.kind": spec.kind,
        "leadml.feature_hash": result.feature_hash,
        "leadml.latest_window_start": result.latest_origin.isoformat(),
        "leadml.data_window": f"{result.data_window[0]:%Y-%m-%d}..{result.data_window[1]:%Y-%m-%d}",
        **(extra_tags or {}),
    }
    with mlflow.start_run(
        experiment_id=exp,
        run_name=run_name or f"{spec.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        tags=tags,
    ) as run:
        mlflow.log_params(_params(result))
        metrics = _clean_metrics(result.metrics)
        if comparison.get("roc_auc") is not None:
            metrics.update(
                _clean_metrics(
                    {
                        f"champion_latest_{k}": v
                        for k, v in comparison.items()
                        if k in ("roc_auc", "ece", "brier")
                    }
                )
            )
        mlflow.log_metrics(metrics)
        for i, fold in enumerate(result.folds):
            mlflow.log_metrics(
                _clean_metrics(
                    {
                        f"fold_{k}": fold.metrics.get(k, math.nan)
                        for k in ("roc_auc", "pr_auc", "brier", "ece")
                    }
                ),
                step=i,
            )
        with tempfile.TemporaryDirectory(prefix="leadml-run-") as tmp:
            tdir = Path(tmp)
            known = result.predictions[result.predictions["label"].notna()].astype({"label": int})
            plots.calibration_plot(
                known, tdir / "plots" / "calibration.png", f"{spec.name}: calibration"
            )
            plots.gain_plot(
                known, tdir / "plots" / "gain_lift.png", f"{spec.name}: cumulative gain"
            )
            plots.importance_plot(
                plots.booster_importance(result.model.booster, list(spec.features)),
                tdir / "plots" / "importance.png",
            )
            plots.score_distribution_plot(known, tdir / "plots" / "score_distribution.png")
            (tdir / "model_card.md").write_text(model_card(result, run_id=run.info.run_id))
            folds = pd.DataFrame(
                [
                    {
                        "origin": f.origin,
                        "train_rows": f.train_rows,
                        "train_positives": f.train_positives,
                        "test_rows": f.test_rows,
                        "seconds": round(f.seconds, 2),
                        **f.metrics,
                    }
                    for f in result.folds
                ]
            )
            folds.to_csv(tdir / "backtest_folds.csv", index=False)
            (tdir / "features.json").write_text(json.dumps(list(spec.features), indent=1))
            (tdir / "spec.json").write_text(spec.model_dump_json(indent=1))
            mlflow.log_artifacts(str(tdir))
            bundle_dir = bundle.save(tdir / "bundle")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=BundleModel(),
                artifacts={"bundle": str(bundle_dir)},
                signature=signature_for(bundle),
                input_example=bundle.input_example(),
                registered_model_name=spec.name if register else None,
                pip_requirements=pip_requirements(),
            )
        version = (
            str(info.registered_model_version)
            if register and info.registered_model_version
            else None
        )
        if version:
            _tag_new_version(spec, version, result, comparison)
    return LoggedVersion(run.info.run_id, spec.name, version, info.model_uri, metrics, comparison)


def _tag_new_version(spec: Any, version: str, result: Any, comparison: dict[str, Any]) -> None:
    cl = client()
    tags = {
        "leadml.gate.max_roc_auc_drop": spec.gate.max_roc_auc_drop,
        "leadml.gate.max_ece": spec.gate.max_ece,
        "leadml.gate.min_roc_auc": spec.gate.min_roc_auc,
        "leadml.latest_window_start": result.latest_origin.isoformat(),
        "leadml.feature_hash": result.feature_hash,
        "leadml.compared_champion_version": comparison.get("version", ""),
        "leadml.champion_latest_roc_auc": comparison.get("roc_auc", ""),
    }
    for k in ("roc_auc", "latest_roc_auc", "ece", "latest_ece", "brier", "roc_auc_vs_oracle"):
        if k in result.metrics and not math.isnan(result.metrics[k]):
            tags[f"leadml.metric.{k}"] = round(float(result.metrics[k]), 6)
    for k, v in tags.items():
        cl.set_model_version_tag(spec.name, version, k, str(v))
    cl.set_registered_model_alias(spec.name, CHALLENGER, version)


# ------------------------------------------------------------------ registry


def _version(name: str, version: str | None, alias: str = CHALLENGER) -> Any:
    cl = client()
    try:
        if version is None:
            return cl.get_model_version_by_alias(name, alias)
        return cl.get_model_version(name, str(version))
    except Exception:
        what = f"version {version}" if version else f"alias @{alias}"
        raise RegistryError(
            f"registered model {name!r} has no {what}; list versions with `leadml models`"
        ) from None


def _alias_version(name: str, alias: str) -> str | None:
    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def _history(name: str) -> list[str]:
    tags = client().get_registered_model(name).tags
    try:
        return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
    except json.JSONDecodeError:
        return []


@dataclass
class GateCheck:
    criterion: str
    ok: bool
    detail: str


def gate_checks(name: str, version: str) -> list[GateCheck]:
    """The promotion gate of ``version`` (thresholds stored on it at registration)."""
    mv = _version(name, version)
    t = mv.tags
    metrics = client().get_run(mv.run_id).data.metrics if mv.run_id else {}
    checks: list[GateCheck] = []
    max_ece = float(t.get("leadml.gate.max_ece", "nan"))
    ece = metrics.get("ece", math.nan)
    checks.append(
        GateCheck("max_ece", bool(ece <= max_ece), f"backtest ECE {ece:.4f} (limit {max_ece:.4f})")
    )
    min_auc = float(t.get("leadml.gate.min_roc_auc", "0.5"))
    auc = metrics.get("latest_roc_auc", math.nan)
    checks.append(
        GateCheck(
            "min_roc_auc",
            bool(auc >= min_auc),
            f"ROC AUC on the latest window {auc:.4f} (minimum {min_auc:.4f})",
        )
    )
    champion = _alias_version(name, CHAMPION)
    if champion is not None and champion != str(version):
        compared = t.get("leadml.compared_champion_version", "")
        max_drop = float(t.get("leadml.gate.max_roc_auc_drop", "0"))
        if compared != champion:
            checks.append(
                GateCheck(
                    "max_roc_auc_drop",
                    False,
                    f"version {version} was compared with champion "
                    f"{compared or 'none'}, but the champion is now "
                    f"{champion}; retrain to compare on the same window, or --force with a reason",
                )
            )
        else:
            champ_auc = float(t.get("leadml.champion_latest_roc_auc") or "nan")
            drop = champ_auc - auc
            checks.append(
                GateCheck(
                    "max_roc_auc_drop",
                    bool(drop <= max_drop),
                    f"ROC AUC {auc:.4f} vs champion v{champion} {champ_auc:.4f} on the same "
                    f"latest window (drop {drop:+.4f}, allowed {max_drop:.4f})",
                )
            )
    return checks


@dataclass
class PromotionResult:
    name: str
    version: str
    previous: str | None
    checks: list[GateCheck]
    forced: bool


def promote(
    name: str, version: str | None = None, *, force: bool = False, reason: str | None = None
) -> PromotionResult:
    """Move alias ``champion`` to ``version`` (default: the ``challenger``) if the gate holds.

    Raises :class:`RegistryError` naming each failed criterion; with ``force``
    (which needs a ``reason``) the move happens anyway and the reason is recorded.
    """
    if force and not (reason and reason.strip()):
        raise RegistryError("--force needs --reason TEXT (it is recorded on the version)")
    mv = _version(name, version)
    v = str(mv.version)
    checks = gate_checks(name, v)
    failed = [c for c in checks if not c.ok]
    if failed and not force:
        lines = [f"{name} version {v} does not pass the promotion gate:"]
        lines += [f"  - {c.criterion}: {c.detail}" for c in failed]
        lines.append("fix the model, or promote with --force --reason TEXT")
        raise RegistryError("\n".join(lines))
    previous = _alias_version(name, CHAMPION)
    cl = client()
    cl.set_registered_model_alias(name, CHAMPION, v)
    history = _history(name)
    if not history and previous:
        history = [previous]
    if not history or history[-1] != v:
        history.append(v)
    cl.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    cl.set_model_version_tag(name, v, "leadml.promoted_at", now)
    if force:
        cl.set_model_version_tag(name, v, "leadml.forced", "true")
        cl.set_model_version_tag(name, v, "leadml.force_reason", reason)
        cl.set_model_version_tag(
            name, v, "leadml.failed_checks", "; ".join(c.criterion for c in failed)
        )
    if _alias_version(name, CHALLENGER) == v:
        cl.delete_registered_model_alias(name, CHALLENGER)
    return PromotionResult(name, v, previous, checks, force)


def rollback(name: str) -> tuple[str, str]:
    """Restore the champion before the current one; returns (from, to) versions."""
    current = _alias_version(name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    history = _history(name)
    while history and history[-1] != current:
        history.pop()  # aliases moved outside leadml: trust the alias
    if len(history) < 2:
        raise RegistryError(
            f"{name} has no earlier champion than version {current} to roll back to"
        )
    history.pop()
    target = history[-1]
    cl = client()
    cl.set_registered_model_alias(name, CHAMPION, target)
    cl.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    cl.set_model_version_tag(
        name, current, "leadml.rolled_back_at", datetime.now(UTC).isoformat(timespec="seconds")
    )
    return current, target


# The columns of `leadml models` (one row per registered version), besides run_id.
MODEL_COLUMNS = [
    "name",
    "version",
    "aliases",
    "created",
    "roc_auc",
    "latest_roc_auc",
    "ece",
    "brier",
    "vs_oracle",
]


def list_versions(names: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """One row per registered version: aliases, creation time, headline metrics.

    ``names=None`` lists every registered model (the built-in two and any trained
    from a table with ``leadml train --table``)."""
    cl = client()
    rows = []
    if names is None:
        names = sorted(rm.name for rm in cl.search_registered_models())
    for name in names:
        try:
            rm = cl.get_registered_model(name)
        except Exception:
            continue
        aliases: dict[str, list[str]] = {}
        for alias, ver in (rm.aliases or {}).items():
            aliases.setdefault(str(ver), []).append(alias)
        for mv in cl.search_model_versions(f"name = '{name}'"):
            t = mv.tags
            rows.append(
                {
                    "name": name,
                    "version": int(mv.version),
                    "aliases": ",".join(sorted(aliases.get(str(mv.version), []))),
                    "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime(
                        "%Y-%m-%d %H:%M"
                    ),
                    "roc_auc": _num(t.get("leadml.metric.roc_auc")),
                    "latest_roc_auc": _num(t.get("leadml.metric.latest_roc_auc")),
                    "ece": _num(t.get("leadml.metric.ece")),
                    "brier": _num(t.get("leadml.metric.brier")),
                    "vs_oracle": _num(t.get("leadml.metric.roc_auc_vs_oracle")),
                    "run_id": mv.run_id,
                }
            )
    return pd.DataFrame(rows, columns=[*MODEL_COLUMNS, "run_id"]).sort_values(
        ["name", "version"], ignore_index=True
    )


def _num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan
